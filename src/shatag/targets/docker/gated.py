"""The docker target's traffic-gated switch through the proxy (issue 12).

Names, all derived from the target's ``name`` and all labelled with the environment and target
(:func:`shatag.targets.docker.owned.owner_labels`); a container or network of that name
*without* our labels is refused (``NOT_OWNED``) and left untouched:

* ``<name>-<sha12>-<attempt6>``: one application container per release attempt, on the network
  only (nothing published);
* ``<name>-proxy``: Caddy, publishing ``127.0.0.1:<port>`` (see :mod:`shatag.targets.docker.proxy`);
* ``<name>-shatag-net``: the user-defined bridge network they share;
* ``<name>`` / ``<name>-shatag-prev``: only met when migrating from ``proxy: false``.

The switch:

1. ``prepare``: the proxy's host-level lock (one switch of it at a time on the host, from any
   checkout) and its home in the host's ``runtime_dir``, an old home in a checkout adopted
   (:meth:`~shatag.targets.docker.proxy.Proxy.adopt_home`, issue 23); ownership checks; pull
   the image by digest; the proxy image present (built if it
   is the default); network and proxy up (re-created if missing, pointed at what served); the
   serving container is the one the proxy forwards to. If it runs this digest with these
   settings, the deploy is a **no-op** (``unchanged``): same container, nothing restarted.
2. ``apply``: start the new container unpublished; gate it -- the HTTP ``health_path`` on its
   own address and ``container_port`` answers 2xx **and**, if the image has a HEALTHCHECK, that
   passes too (its command run at once through ``docker exec``, the engine's verdict counted) --
   bounded by ``health_timeout_sec``. A failed gate removes the new container: traffic never
   moved. Then the proxy is pointed at it (the upstream file Caddy reads per request, replaced
   atomically: no reload) and ``health_path`` is checked once more *through the proxy*; if that
   fails the proxy is pointed back. Then the **watch** (issue 23, item 4): for ``watch_sec``
   the new container must stay up (no exit, no restart), not be ``unhealthy`` and answer
   ``health_path``, while the old one keeps running; else :class:`DeployFailed`, and the
   caller's ``restore`` moves traffic back.
3. ``restore``: proxy back to the old container (still running: it is only stopped in commit),
   the new one removed.
4. ``commit`` (history already records the deploy): once the old container holds no connection
   (its requests in flight have finished, at most ``drain_timeout_sec`` after the switch) it is
   stopped and removed -- its connections reset and it is killed at once when requests are
   still in flight at that bound, so a cut response reaches its client as an error -- and so
   is any other container of this target the proxy does not forward to.

Killed at any point, the journal entry lets the next deploy/rollback finish the commit (history
recorded it) or undo the switch (it did not); throughout, the old container serves until the
proxy forwards to the new one, so the service keeps answering.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from shatag._sys.docker import DockerEngine, is_running, labels_of
from shatag.core import ImageRef
from shatag.errors import ConfigError, DeployFailed
from shatag.targets.docker.app import app_fingerprint
from shatag.targets.docker.owned import LABEL_ENV, LABEL_TARGET, check_owned, owner_labels
from shatag.targets.docker.proxy import (
    Proxy,
    ProxySpec,
    established,
    proxy_home,
    reset_established,
)
from shatag.targets.docker.proxy_image import ensure_proxy_image, proxy_image_ref

PREV_SUFFIX: Final = "-shatag-prev"
LABEL_SHA: Final = "shatag.sha"
LABEL_DIGEST: Final = "shatag.digest"
LABEL_ATTEMPT: Final = "shatag.attempt"
LABEL_APP_CONFIG: Final = "shatag.app-config"
STOP_TIMEOUT_SEC: Final = 10
#: The default ``drain_timeout_sec``: the longest a request in flight at the switch may take.
DRAIN_TIMEOUT_SEC: Final = 30.0
#: The default ``watch_sec``: how long a new release is watched after traffic moved to it.
WATCH_SEC: Final = 5.0
PROGRESS_EVERY_SEC: Final = 3.0  # a progress line at most this often while shatag waits
_POLL_SEC: Final = 0.1
_WATCH_POLL_SEC: Final = 0.25
_DEFAULT_CHECK_TIMEOUT_SEC: Final = 30.0

# Human progress lines on stderr (through the CLI's masking handler) while a switch waits; at
# INFO, which this logger lets through whatever the root level (warnings only by default).
progress_log = logging.getLogger("shatag.progress")
progress_log.setLevel(logging.INFO)

#: One look at a starting container: open the gate, fail it, or look again.
Verdict = Literal["ok", "fail", "wait"]


class Progress:
    """Says ``<what>: <status> (<n>s)`` at most every :data:`PROGRESS_EVERY_SEC` while waiting
    (the first line only once the wait has lasted that long: a quick step prints nothing)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.started = time.monotonic()
        self._said = self.started

    def tick(self, status: str) -> None:
        now = time.monotonic()
        if now - self._said >= PROGRESS_EVERY_SEC:
            self._said = now
            progress_log.info("%s: %s (%.0fs)", self.what, status, now - self.started)


def wait_healthy(
    look: Callable[[float], tuple[Verdict, str]], timeout_sec: float, *, what: str = ""
) -> str | None:
    """Poll ``look(deadline)`` until it opens (``None``) or fails the gate (its status), or
    ``timeout_sec`` passes (the last status said). Both docker switches gate through here;
    ``what`` names the wait in the progress lines.
    """
    deadline = time.monotonic() + timeout_sec
    ticker = Progress(what or "waiting for the health gate")
    while True:
        verdict, status = look(deadline)
        if verdict != "wait":
            return None if verdict == "ok" else status
        if time.monotonic() >= deadline:
            return f"was not healthy within {timeout_sec:g}s (last status: {status})"
        ticker.tick(f"{status}; gives up in {deadline - time.monotonic():.0f}s")
        time.sleep(_POLL_SEC)


def watch_release(look: Callable[[], str | None], window_sec: float, *, what: str) -> str | None:
    """After traffic moved: call ``look()`` (``None``: still fine, else what went wrong) for
    ``window_sec`` (like Kubernetes' ``minReadySeconds``); the first problem, or ``None`` when
    the release stayed up the whole window. Both docker switches watch through here."""
    if window_sec <= 0:
        return None
    deadline = time.monotonic() + window_sec
    ticker = Progress(what)
    while True:
        problem = look()
        if problem is not None:
            return problem
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ticker.tick(f"healthy so far; {left:.0f}s of the {window_sec:g}s window left")
        time.sleep(min(_WATCH_POLL_SEC, left))


def watch_look(
    data: Mapping[str, Any] | None, restarts: int, probe: Callable[[], str], probed: str
) -> str | None:
    """One look at a release that passed its gate (``docker inspect`` JSON ``data``): an exit,
    a restart (``RestartCount`` above ``restarts``), the engine's ``unhealthy`` or a failed HTTP
    ``probe`` (of ``probed``) is a problem.

    >>> watch_look({"State": {"Running": True}, "RestartCount": 0}, 0, lambda: "ok", "/h")
    >>> watch_look({"State": {"Running": True}, "RestartCount": 1}, 0, lambda: "ok", "/h")
    'restarted (1 time since the switch)'
    >>> watch_look({"State": {"Running": True}, "RestartCount": 0}, 0, lambda: "HTTP 500", "/h")
    '/h answered HTTP 500'
    """
    if data is None:
        return "disappeared"
    state = data.get("State") or {}
    count = int(data.get("RestartCount") or 0)
    if state.get("Restarting") or not state.get("Running"):
        return f"exited with status {state.get('ExitCode')}"
    if count > restarts:
        n = count - restarts
        return f"restarted ({n} time{'s' if n > 1 else ''} since the switch)"
    health = state.get("Health")
    if isinstance(health, Mapping) and health.get("Status") == "unhealthy":
        return "was reported unhealthy by its HEALTHCHECK"
    answer = probe()
    return None if answer == "ok" else f"{probed} answered {answer}"


def gate_look(
    data: Mapping[str, Any],
    *,
    probe: Callable[[], str],
    probed: str,
    run_check: Callable[[list[str], float], int],
    check: tuple[list[str], float] | None,
    deadline: float,
) -> tuple[Verdict, str]:
    """One look at a starting container (``docker inspect`` JSON ``data``), for both switches.

    An exit (or a restart) or the engine's ``unhealthy`` fails the gate. The HTTP ``probe`` of
    ``health_path`` (``probed`` names it in the status) always counts: a wrong
    ``container_port`` waits here. Then the engine's ``healthy`` opens it, or the image's own
    HEALTHCHECK ``check`` run at once through ``run_check(command, timeout)`` (same command,
    its timeout bounded by ``deadline``), so a healthy service does not wait for the engine's
    first scheduled probe one interval later.
    """
    state = data.get("State") or {}
    if not state.get("Running") or state.get("Restarting"):
        return "fail", f"exited with status {state.get('ExitCode')} before becoming healthy"
    health = state.get("Health")
    engine = str(health.get("Status")) if isinstance(health, Mapping) else ""
    if engine == "unhealthy":
        return "fail", "was reported unhealthy by its HEALTHCHECK"
    answer = probe()
    if answer != "ok":
        return "wait", f"{probed}: {answer}"
    if check is None or engine in ("", "healthy"):
        return "ok", "healthy"
    command, timeout = check
    left = max(1.0, deadline - time.monotonic())
    if run_check(command, min(timeout, left)) == 0:
        return "ok", "its HEALTHCHECK command passed"
    return "wait", "starting (its HEALTHCHECK command has not passed yet)"


def http_probe(hostport: str, path: str, *, timeout: float) -> str:
    """``ok`` for a 2xx answer of ``http://<hostport><path>``, else ``HTTP <code>`` or
    ``no answer (<error>)``."""
    try:
        with urllib.request.urlopen(f"http://{hostport}{path}", timeout=timeout) as response:
            return "ok" if 200 <= response.status < 300 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return f"no answer ({type(exc).__name__})"


@dataclass(frozen=True, slots=True)
class AppSpec:
    """What the gated switch needs to know about one docker target."""

    name: str
    port: int
    container_port: int
    health_path: str
    health_timeout_sec: float
    env: tuple[tuple[str, str], ...] = ()
    secrets: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    #: How long the new release is watched after traffic moved (the old one kept ready).
    watch_sec: float = WATCH_SEC
    #: The longest a request in flight at the switch may take on the old release.
    drain_timeout_sec: float = DRAIN_TIMEOUT_SEC

    @property
    def fingerprint(self) -> str:
        return app_fingerprint(
            self.env, self.secrets, self.volumes, self.container_port, self.health_path
        )


def secret_values(spec: AppSpec, env: Mapping[str, str], label: str) -> tuple[str, ...]:
    """The values of the target's secrets from the deploying process (never shown)."""
    missing = [name for name in spec.secrets if name not in env]
    if missing:
        raise ConfigError(
            f"{label}: the secret variable(s) {', '.join(missing)} are not set in the deploying "
            "process's environment; export them (values are passed through, never recorded)"
        )
    return tuple(env[name] for name in spec.secrets)


def app_run_args(spec: AppSpec) -> list[str]:
    """``docker run`` options for the application settings (secrets by name only)."""
    argv: list[str] = []
    for key, value in spec.env:
        argv += ["--env", f"{key}={value}"]
    for name in spec.secrets:
        argv += ["--env", name]  # the docker CLI reads the value from its own environment
    for volume in spec.volumes:
        argv += ["--volume", volume]
    return argv


def app_run_argv(
    spec: AppSpec,
    image: ImageRef,
    *,
    container: str,
    placement: list[str],
    env_name: str,
    attempt: str,
) -> list[str]:
    """The ``docker run`` of one release of ``spec`` as ``container``, for both switches;
    ``placement`` is where it listens (``--network`` behind the proxy, ``--publish`` without).
    """
    labels = {
        **owner_labels(env_name, spec.name, "app"),
        LABEL_SHA: image.sha,
        LABEL_DIGEST: image.digest,
        LABEL_ATTEMPT: attempt,
        LABEL_APP_CONFIG: spec.fingerprint,
    }
    argv = [
        "run",
        "--detach",
        "--name",
        container,
        *placement,
        # The image's HEALTHCHECK keeps its command; probing every second instead of the
        # default 30 s lets the gate open as soon as the service answers.
        "--health-interval",
        "1s",
        # A tiny init as PID 1 forwards SIGTERM: a server that installs no handler (busybox
        # httpd, many scripts) otherwise ignores it as PID 1 and every switch waits the full
        # stop timeout before SIGKILL.
        "--init",
        "--pull",
        "never",
        # Set at start: a container that crashes while starting shows as restarting, which
        # the health gate treats as a failure; after a daemon restart it comes back.
        "--restart",
        "unless-stopped",
    ]
    for key, value in labels.items():
        argv += ["--label", f"{key}={value}"]
    argv += app_run_args(spec)  # secrets by name: no value on the command line
    argv.append(image.pinned)
    return argv


class GatedDockerTarget:
    def __init__(
        self,
        spec: AppSpec,
        proxy: ProxySpec,
        *,
        env: Mapping[str, str],
        env_name: str,
        attempt: str,
        label: str,
    ) -> None:
        self.spec = spec
        self.label = label
        self._env = env
        self._env_name = env_name
        self._attempt = attempt
        # The gated switch drives docker through its CLI alone (one call per step, several
        # inspections in one): it never needs python-on-whales, so it does not import it.
        self._docker = DockerEngine(env)
        _ = self._docker.cmd  # no docker CLI: said now, before any step
        self._proxy = Proxy(proxy, self._docker)
        # One switch of this proxy at a time on the host, from any checkout: the gate and the
        # drain of the switch ahead are what a second one may have to wait for.
        self._lock = self._proxy.lock(spec.health_timeout_sec + DRAIN_TIMEOUT_SEC + 60.0)
        #: What adopting an old home in a checkout did (``""``: nothing to adopt).
        self.migrated = ""
        self._image: ImageRef | None = None
        self._old: str = ""
        self._old_dial: str = ""
        self._old_pid = 0
        self._routed_at = 0.0  # time.monotonic() when the proxy was pointed at the new one
        self._legacy = False
        self._prev_seen = False
        self._new = ""
        self._switched = False
        self._secrets: tuple[str, ...] = ()
        #: True when the release already served with these settings: nothing was changed.
        self.unchanged = False

    # -- life cycle -------------------------------------------------------------------------

    def plan(self, image: ImageRef) -> str:
        """``<label>: <serving image> → <new image>`` (inspects, changes nothing)."""
        routed = self._proxy.routed()
        data = self._docker.inspect("container", routed.rpartition(":")[0]) if routed else None
        was = str(((data or {}).get("Config") or {}).get("Image") or "nothing")
        return f"{self.label}: {was} → {image.pinned} (through {self._proxy.spec.name})"

    def prepare(self, image: ImageRef) -> None:
        self._image = image
        self._secrets = secret_values(self.spec, self._env, self.label)
        self._new = f"{self.spec.name}-{image.sha[:12]}-{self._attempt[:6]}"
        name = self.spec.name
        self._hold_host_lock()
        try:
            self._prepare(image, name)
        except BaseException:
            self._lock.release()
            raise

    def _hold_host_lock(self) -> None:
        """The proxy's home on the host, its host-level lock held (another checkout's switch of
        this target waits), and an old home in a checkout adopted (issue 23, item 1)."""
        self._proxy.prepare_home()
        self._lock.acquire()
        try:
            self.migrated = self._proxy.adopt_home()
        except BaseException:
            self._lock.release()
            raise

    def _prepare(self, image: ImageRef, name: str) -> None:
        self._look_once(image)
        for candidate in (name, name + PREV_SUFFIX, self._new):
            self._check(candidate)
        self._prev_seen = self._docker.inspect("container", name + PREV_SUFFIX) is not None
        self._proxy.check_ownership()
        self._pull(image)
        image_ref = ensure_proxy_image(self._docker, self._proxy.spec.image, self._env)
        if image_ref != self._proxy.spec.image:  # the default, built here: its own tag
            self._proxy = Proxy(
                dataclasses.replace(self._proxy.spec, image=image_ref), self._docker
            )
        self._proxy.ensure_network()
        legacy = self._docker.inspect("container", name)
        self._legacy = legacy is not None
        if self._legacy:
            return  # the proxy cannot start while the old container holds the port
        self._old_dial = self._serving() or ""
        self._old = self._old_dial.rsplit(":", 1)[0] if self._old_dial else ""
        self._proxy.ensure(self._old_dial or None)  # re-created or restarted if need be
        current = self._docker.inspect("container", self._old) if self._old else None
        self._old_pid = int(((current or {}).get("State") or {}).get("Pid") or 0)
        labels = labels_of(current)
        self.unchanged = bool(
            current is not None
            and is_running(current)
            and labels.get(LABEL_DIGEST) == image.digest
            and labels.get(LABEL_APP_CONFIG) == self.spec.fingerprint
        )

    def apply(self) -> None:
        image = self._image
        if image is None:
            raise RuntimeError("apply() before prepare()")
        if self.unchanged:
            return
        self._start(image)
        problem = self._gate()
        if problem is not None:
            logs = self._logs(self._new)
            self._docker.remove(self._new)
            raise DeployFailed(
                f"{self.label}: {image.pinned} {problem}; traffic was not moved and the new "
                f"container was removed. Last log lines: {logs}"
            )
        self._switched = True
        if self._legacy:
            self._migrate()
        else:
            self._proxy.route(self._new_dial)
        self._routed_at = time.monotonic()
        through = self._through_proxy()
        if through != "ok":
            raise DeployFailed(
                f"{self.label}: {image.pinned} passed its health gate but {self.spec.health_path} "
                f"through the proxy answered {through}; traffic was moved back"
            )
        problem = self._watch()
        if problem is not None:
            logs = self._logs(self._new)
            if self._legacy:
                back = f"given back to {self.spec.name} (the proxy removed)"
            else:
                back = f"moved back to {self._old}" if self._old else "taken off it"
            raise DeployFailed(
                f"{self.label}: {image.pinned} passed its health gate, then {problem} within "
                f"{self.spec.watch_sec:g}s of taking traffic (watch_sec); traffic was {back} "
                f"and the new container removed. Last log lines: {logs}"
            )

    def restore(self) -> None:
        if not self._new:
            self._lock.release()
            return
        if self._switched and self._legacy:
            self._proxy.destroy()
            _restore_legacy(self._docker, self.spec.name)
        elif self._switched:
            self._route_back()
        self._switched = False
        try:
            self._remove_attempt()
        finally:
            self._lock.release()

    def _route_back(self) -> None:
        """Point the proxy back at the old container. The upstream file is replaced
        atomically, so a write that fails (a full state disk: issue 24, item 7) left it as it
        was: if it still names the old container, traffic never moved and the new one can go."""
        try:
            self._proxy.route(self._old_dial or None)
        except OSError:
            if self._proxy.routed() != (self._old_dial or None):
                raise

    def commit(self) -> None:
        try:
            self._commit()
        finally:
            self._lock.release()

    def _commit(self) -> None:
        if self.unchanged:
            return
        _retire(
            self._docker,
            self._env_name,
            self.spec.name,
            keep=self._new,
            drain=self._old_dial,
            drain_pid=self._old_pid,
            since=self._routed_at,
            legacy=self._legacy or self._prev_seen,
            drain_timeout=self.spec.drain_timeout_sec,
        )

    def journal(self) -> dict[str, Any]:
        return {
            "kind": "docker",
            "mode": "proxy",
            "name": self.spec.name,
            "attempt": self._attempt,
            "old": self._old,
            "old_dial": self._old_dial,
            "new": "" if self.unchanged else self._new,
            "new_dial": "" if self.unchanged else self._new_dial,
            "legacy": self._legacy,
            "drain_timeout_sec": self.spec.drain_timeout_sec,
            "proxy": self._proxy.spec.as_dict(),
        }

    # -- steps ------------------------------------------------------------------------------

    def _look_once(self, image: ImageRef) -> None:
        """Three docker calls, side by side, for everything :meth:`prepare` inspects (it made
        twelve, one after the other)."""
        routed = self._proxy.routed()
        name, proxy = self.spec.name, self._proxy.spec
        serving = routed.rpartition(":")[0] if routed else ""
        self._docker.remember(
            {
                "container": (name, name + PREV_SUFFIX, self._new, proxy.name, serving),
                "network": (proxy.network,),
                "image": (image.pinned, proxy_image_ref(proxy.image, self._env)),
            }
        )

    def _check(self, name: str) -> None:
        data = self._docker.inspect("container", name)
        if data is not None:
            check_owned(
                "container", name, labels_of(data), env_name=self._env_name, target=self.spec.name
            )

    def _pull(self, image: ImageRef) -> None:
        if self._docker.inspect("image", image.pinned) is not None:
            return
        result = self._docker.run("pull", "--quiet", image.pinned, check=False, timeout=600)
        if result.returncode != 0:
            raise DeployFailed(
                f"{self.label}: could not pull {image.pinned}: {result.stderr.strip()[-300:]}; "
                "check that the registry is reachable and this engine may pull from it"
            )

    @property
    def _new_dial(self) -> str:
        return f"{self._new}:{self.spec.container_port}"

    def _serving(self) -> str | None:
        """``name:port`` of the application container traffic goes to (the proxy's upstream),
        if that container exists."""
        routed = self._proxy.routed()
        if routed is None:
            return None
        name = routed.rsplit(":", 1)[0]
        data = self._docker.inspect("container", name)
        if data is None:
            return None
        check_owned(
            "container", name, labels_of(data), env_name=self._env_name, target=self.spec.name
        )
        return routed

    def _start(self, image: ImageRef) -> None:
        argv = app_run_argv(
            self.spec,
            image,
            container=self._new,
            placement=["--network", self._proxy.spec.network],
            env_name=self._env_name,
            attempt=self._attempt,
        )
        result = self._docker.run(*argv, check=False, secrets=self._secrets)
        if result.returncode != 0:
            self._docker.remove(self._new)
            raise DeployFailed(
                f"{self.label}: could not start {image.pinned}: {result.stderr.strip()[-400:]}; "
                "traffic was not moved"
            )

    def _gate(self) -> str | None:
        """``None`` once the new container passes its gate; else what went wrong."""
        check: list[tuple[list[str], float] | None] = []  # the HEALTHCHECK, read at first look

        def look(deadline: float) -> tuple[Verdict, str]:
            data = self._docker.inspect("container", self._new)
            if data is None:
                return "fail", "disappeared while starting"
            if not check:
                check.append(health_command_of(data))
            address = _address(data, self._proxy.spec.network)
            hostport = f"{address}:{self.spec.container_port}"
            return gate_look(
                data,
                probe=lambda: self._probe(hostport) if address else "no address",
                probed=f"{self.spec.health_path} on port {self.spec.container_port}",
                run_check=lambda command, limit: self._docker.exec_status(
                    self._new, command, timeout=limit
                ),
                check=check[0],
                deadline=deadline,
            )

        return wait_healthy(
            look, self.spec.health_timeout_sec, what=f"{self.label}: gating {self._new}"
        )

    def _watch(self) -> str | None:
        """``None`` once the new container stayed up and healthy for ``watch_sec`` after the
        switch (the old one still running, ready to take traffic back); else what happened."""
        first = self._docker.inspect("container", self._new)
        restarts = int((first or {}).get("RestartCount") or 0)
        address = _address(first or {}, self._proxy.spec.network)
        hostport = f"{address}:{self.spec.container_port}"

        def look() -> str | None:
            return watch_look(
                self._docker.inspect("container", self._new),
                restarts,
                probe=lambda: self._probe(hostport) if address else "no address",
                probed=self.spec.health_path,
            )

        what = f"{self.label}: watching {self._new} (old release {self._old or 'none'} kept)"
        return watch_release(look, self.spec.watch_sec, what=what)

    def _through_proxy(self) -> str:
        """``health_path`` through the proxy's published port; a connection-level failure is
        retried briefly (the first switch of a freshly started proxy)."""
        deadline = time.monotonic() + 3.0
        while True:
            status = self._probe(f"127.0.0.1:{self._proxy.spec.port}")
            if status == "ok" or status.startswith("HTTP") or time.monotonic() >= deadline:
                return status
            time.sleep(_POLL_SEC)

    def _probe(self, hostport: str) -> str:
        return http_probe(hostport, self.spec.health_path, timeout=2.0)

    def _logs(self, name: str) -> str:
        result = self._docker.run("logs", "--tail", "20", name, check=False)
        text = result.stdout + result.stderr
        for value in self._secrets:
            if len(value) >= 4:
                text = text.replace(value, "***")
        lines = [line for line in text.splitlines() if line.strip()]
        return " | ".join(lines[-20:])[-1500:] or "(no output)"

    def _migrate(self) -> None:
        """From ``proxy: false``: the old container holds the port, so it is stopped (kept as
        ``<name>-shatag-prev``) and the proxy started in its place -- a one-time short gap."""
        name = self.spec.name
        self._docker.run("stop", "--time", str(STOP_TIMEOUT_SEC), name, check=False)
        self._docker.run("rename", name, name + PREV_SUFFIX)
        self._proxy.ensure(self._new_dial)

    def _remove_attempt(self) -> None:
        _remove_attempt(self._docker, self._attempt, self._new, keep=self._old)


def _drain(
    docker: DockerEngine,
    dial: str,
    pid: int = 0,
    since: float = 0.0,
    bound: float = DRAIN_TIMEOUT_SEC,
) -> bool:
    """Wait until the container of ``dial`` (``name:port``), which the proxy no longer
    forwards to since ``since`` (``time.monotonic()``; 0: unknown, now), has finished the
    requests it was given: no established connection to its port; at most ``bound`` seconds
    after ``since`` (``drain_timeout_sec``). ``pid``: its process, if known. ``False`` when
    connections were still open at the bound (they are cut: the caller kills the container)."""
    name, _, port = dial.rpartition(":")
    if not pid:
        data = docker.inspect("container", name)
        pid = int(((data or {}).get("State") or {}).get("Pid") or 0)
    if not pid or not port.isdigit():
        return True
    since = since or time.monotonic()
    # A request that read the old upstream just before the switch is still dialling.
    settle = since + _POLL_SEC - time.monotonic()
    time.sleep(min(max(settle, 0.0), _POLL_SEC))
    deadline = since + bound
    ticker = Progress(f"draining {name}")
    while True:
        busy = established(pid, int(port))
        if not busy:  # 0, or None: /proc unreadable, nothing to wait for
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            # Reset, not just killed: see reset_established (a cut must read as an error).
            reset = reset_established(pid, int(port))
            progress_log.info(
                "draining %s: %d connection(s) still open after %gs (drain_timeout_sec): cut%s",
                name,
                busy,
                bound,
                "" if reset is None else f" ({reset} reset)",
            )
            return False
        ticker.tick(f"{busy} request(s) in flight; cut in {left:.0f}s")
        time.sleep(_POLL_SEC)


def _remove_attempt(docker: DockerEngine, attempt: str, name: str, keep: str) -> list[str]:
    """Remove what this attempt started. A ``docker run`` cut short by a signal may still be
    carried out by the daemon a moment later, so absence is confirmed a few times (~1 s)."""
    removed: list[str] = []
    quiet = 0
    deadline = time.monotonic() + 5.0
    while quiet < 3 and time.monotonic() < deadline:
        found = [n for n in docker.names(f"label={LABEL_ATTEMPT}={attempt}") if n != keep]
        if name and name != keep and docker.inspect("container", name) is not None:
            found.append(name)
        for stray in dict.fromkeys(found):
            docker.remove(stray)
            removed.append(stray)
        quiet = 0 if found else quiet + 1
        if quiet < 3:
            time.sleep(0.3)
    return removed


def _retire(
    docker: DockerEngine,
    env_name: str,
    target: str,
    keep: str,
    drain: str = "",
    *,
    drain_pid: int = 0,
    since: float = 0.0,
    legacy: bool = True,
    drain_timeout: float = DRAIN_TIMEOUT_SEC,
) -> list[str]:
    """Stop and remove every application container of ``target`` except ``keep``; the one of
    ``drain`` (the previous upstream) only once it has drained (see :func:`_drain`) -- or, at
    ``drain_timeout`` with requests still in flight, its connections reset by :func:`_drain` and
    killed at once (SIGKILL): a response cut there must reach its client as an error, not as a
    clean end after a graceful stop.
    ``legacy=False``: the caller knows there is no ``<name>-shatag-prev`` to look for."""
    removed: list[str] = []
    for name in docker.names(
        f"label={LABEL_ENV}={env_name}", f"label={LABEL_TARGET}={target}", "label=shatag.role=app"
    ):
        if name == keep:
            continue
        drained = True
        if drain and drain.rpartition(":")[0] == name:
            drained = _drain(docker, drain, drain_pid, since, drain_timeout)
        if drained:
            docker.run("stop", "--time", str(STOP_TIMEOUT_SEC), name, check=False)
        else:
            docker.run("kill", "--signal", "KILL", name, check=False)
        docker.remove(name)
        removed.append(name)
    prev = target + PREV_SUFFIX
    data = docker.inspect("container", prev) if legacy else None
    if data is not None and labels_of(data).get(LABEL_ENV) == env_name:
        docker.remove(prev)
        removed.append(prev)
    return removed


def _restore_legacy(docker: DockerEngine, name: str) -> None:
    if docker.inspect("container", name + PREV_SUFFIX) is not None:
        if docker.inspect("container", name) is None:
            docker.run("rename", name + PREV_SUFFIX, name)
        docker.run("start", name, check=False)


def _address(data: Mapping[str, Any], network: str) -> str:
    networks = ((data.get("NetworkSettings") or {}).get("Networks")) or {}
    entry = networks.get(network) or {}
    return str(entry.get("IPAddress") or "")


def health_command_of(data: Mapping[str, Any]) -> tuple[list[str], float] | None:
    """:func:`health_command` of a container's or image's ``docker inspect`` JSON."""
    healthcheck = (data.get("Config") or {}).get("Healthcheck") or {}
    return health_command(healthcheck.get("Test"), healthcheck.get("Timeout"))


def health_command(
    test: Sequence[str] | None, timeout_ns: int | None
) -> tuple[list[str], float] | None:
    """A ``HEALTHCHECK`` (docker's ``Test`` list, ``Timeout`` in ns) as an exec argument list and
    its timeout in seconds; ``None`` when there is nothing to run.

    >>> health_command(["CMD-SHELL", "curl -f localhost"], 2_000_000_000)
    (['/bin/sh', '-c', 'curl -f localhost'], 2.0)
    >>> health_command(["NONE"], None) is None
    True
    """
    test = list(test or [])
    if len(test) < 2 or test[0] not in ("CMD", "CMD-SHELL"):
        return None  # NONE, inherited-only or empty: nothing of our own to run
    command = test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", test[1]]
    seconds = timeout_ns / 1e9 if timeout_ns and timeout_ns > 0 else _DEFAULT_CHECK_TIMEOUT_SEC
    return command, seconds


# -- after a kill ---------------------------------------------------------------------------


def _journalled_proxy(
    entry: Mapping[str, Any], docker: DockerEngine, runtime_dir: Path | None
) -> Proxy:
    """The proxy of a journal entry, its home in ``runtime_dir`` when given (an entry written
    before issue 23 names a home in its checkout); the caller adopts an old home under the
    host lock."""
    spec = ProxySpec.from_dict(entry["proxy"])
    if runtime_dir is not None:
        spec = dataclasses.replace(spec, home=proxy_home(runtime_dir, spec.env_name, spec.target))
    proxy = Proxy(spec, docker)
    proxy.prepare_home()
    return proxy


def _under_host_lock(
    entry: Mapping[str, Any],
    env: Mapping[str, str],
    runtime_dir: Path | None,
    step: Callable[[Mapping[str, Any], DockerEngine, Proxy], str],
) -> str:
    """``step`` on the journalled proxy, under the host lock of its runtime state, its home
    adopted first (an install from before issue 23 kept it in a checkout)."""
    docker = DockerEngine(env)
    proxy = _journalled_proxy(entry, docker, runtime_dir)
    lock = proxy.lock(DRAIN_TIMEOUT_SEC + 120.0)
    lock.acquire()
    try:
        proxy.adopt_home()
        return step(entry, docker, proxy)
    finally:
        lock.release()


def recover_gated(
    entry: Mapping[str, Any], *, env: Mapping[str, str], runtime_dir: Path | None = None
) -> str:
    """Undo an interrupted gated switch: traffic back to the old container, the new removed."""
    return _under_host_lock(entry, env, runtime_dir, _recover_gated)


def _recover_gated(entry: Mapping[str, Any], docker: DockerEngine, proxy: Proxy) -> str:
    name, old, new = str(entry["name"]), str(entry.get("old", "")), str(entry.get("new", ""))
    old_dial = str(entry.get("old_dial", ""))
    attempt = str(entry.get("attempt", ""))
    done: list[str] = []
    if entry.get("legacy"):
        if docker.inspect("container", name + PREV_SUFFIX) is not None:
            proxy.destroy()
            _restore_legacy(docker, name)
            done.append(f"removed the proxy, restored {name}")
    else:
        old_ok = bool(old_dial) and is_running(docker.inspect("container", old))
        back = old_dial if old_ok else None
        if proxy.routed() != back:
            done.append(f"proxy back to {old or 'nothing'}")
        proxy.ensure(back)
    if attempt or new:
        done += [f"removed {n}" for n in _remove_attempt(docker, attempt, new, keep=old)]
    return "; ".join(done) or "nothing to do"


def finish_gated(
    entry: Mapping[str, Any], *, env: Mapping[str, str], runtime_dir: Path | None = None
) -> str:
    """Complete an interrupted commit: traffic on the new container, the others retired."""
    return _under_host_lock(entry, env, runtime_dir, _finish_gated)


def _finish_gated(entry: Mapping[str, Any], docker: DockerEngine, proxy: Proxy) -> str:
    spec = proxy.spec
    new = str(entry.get("new", "")) or str(entry.get("old", ""))
    dial = str(entry.get("new_dial", "")) or str(entry.get("old_dial", ""))
    if not new or not dial or docker.inspect("container", new) is None:
        return "nothing to do"
    proxy.ensure(dial)
    removed = _retire(
        docker,
        spec.env_name,
        spec.target,
        keep=new,
        drain=str(entry.get("old_dial", "")),
        drain_timeout=float(entry.get("drain_timeout_sec") or DRAIN_TIMEOUT_SEC),
    )
    return f"retired {', '.join(removed)}" if removed else "nothing to do"
