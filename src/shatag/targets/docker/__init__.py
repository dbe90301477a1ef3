"""A container on the local Docker Engine, switched behind a health gate.

By default (``proxy: true``) the switch goes through a Caddy reverse proxy that shatag runs:
:mod:`shatag.targets.docker.gated` and :mod:`shatag.targets.docker.proxy`
(issue 12). With ``proxy: false``
the class :class:`DockerTarget` below keeps the stop-then-start switch on the published port,
where the new container must publish the same host port as the old one, so the switch is:

1. ``prepare``: pull the image by digest (``repo:<sha>@sha256:…``: the tag is only a label, the
   digest decides what is pulled and run); nothing running changes.
2. ``apply``: stop the old container ``<name>`` and rename it ``<name>-shatag-prev`` (kept, not
   removed); start the new one as ``<name>`` on ``127.0.0.1:<port>``; wait until it is healthy
   (its ``HEALTHCHECK`` status polled, else an HTTP GET of ``health_path``), bounded by
   ``health_timeout_sec``. Not healthy in time, or exited: its logs go into the error, it is
   removed, and the old one is renamed back and started again -- :class:`DeployFailed`.
   The image's ``HEALTHCHECK`` command is also run at once through ``docker exec``, so a
   healthy service passes the gate without waiting for the engine's first scheduled check.
3. ``restore`` (a later step failed): the same undo.
4. ``commit``: remove ``<name>-shatag-prev``; only now is the old container gone.

Every container we start carries ``shatag.*`` labels (sha, digest, env, attempt), so
:func:`recover` can tell after a ``kill -9`` whether ``<name>`` is the interrupted
attempt's container (remove it) or not (leave it alone).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final

from shatag._sys.docker import DockerEngine, is_running, labels_of
from shatag.core import ImageRef, PinFormat
from shatag.errors import ConfigError, DeployFailed
from shatag.limits import clip, number, whole
from shatag.targets import Observed, Target, TargetContext, TargetKind
from shatag.targets._spec import KindSpec, check_keys, converted, names_in_journal, parse_pin
from shatag.targets.docker.app import (
    check_names,
    parse_env,
    parse_secrets,
    parse_volumes,
    validate_container_name,
)
from shatag.targets.docker.gated import (
    AppSpec,
    GatedDockerTarget,
    Verdict,
    app_run_argv,
    finish_gated,
    gate_look,
    health_command_of,
    http_probe,
    recover_gated,
    secret_values,
    wait_healthy,
)
from shatag.targets.docker.owned import check_owned, owner_labels
from shatag.targets.docker.proxy import NETWORK_SUFFIX, PROXY_SUFFIX, ProxySpec, proxy_home
from shatag.targets.docker.proxy_image import DEFAULT_PROXY_IMAGE

if TYPE_CHECKING:
    from python_on_whales import Container, DockerClient

NAME: Final = "docker"
KEYS: Final = frozenset(
    {
        "kind",
        "name",
        "port",
        "container_port",
        "health_path",
        "health_timeout_sec",
        "pin",
        # issue 12: the proxy-gated switch and the application's settings
        "proxy",
        "proxy_image",
        "env",
        "secrets",
        "volumes",
    }
)
PREV_SUFFIX: Final = "-shatag-prev"
LABEL_SHA: Final = "shatag.sha"
LABEL_DIGEST: Final = "shatag.digest"
LABEL_ENV: Final = "shatag.env"
LABEL_ATTEMPT: Final = "shatag.attempt"
STOP_TIMEOUT_SEC: Final = 10
_LOG_TAIL: Final = 20


@dataclass(frozen=True, slots=True)
class DockerSpec(KindSpec):
    """The validated configuration of one ``docker`` target."""

    KIND_NAME: ClassVar[str] = NAME
    name: str
    port: int
    container_port: int
    health_path: str = "/healthz"
    health_timeout_sec: float = 30.0
    pin: PinFormat = "tag+digest"
    proxy: bool = True
    proxy_image: str = DEFAULT_PROXY_IMAGE
    env: tuple[tuple[str, str], ...] = ()
    secrets: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()

    @property
    def claims(self) -> tuple[str, ...]:
        """Host-global names this target owns: configured once across environments."""
        return (f"docker container name {self.name!r}",)

    def matches_journal(self, entry: Mapping[str, Any]) -> bool:
        """An entry of this kind about the same container (or one that names none)."""
        return names_in_journal(entry, NAME, name=self.name)

    @property
    def app(self) -> AppSpec:
        return AppSpec(
            name=self.name,
            port=self.port,
            container_port=self.container_port,
            health_path=self.health_path,
            health_timeout_sec=self.health_timeout_sec,
            env=self.env,
            secrets=self.secrets,
            volumes=self.volumes,
        )

    @property
    def label(self) -> str:
        return f"{NAME}:{self.name}"

    @property
    def edits(self) -> Path | None:
        return None


def parse(where: str, raw: Mapping[str, Any]) -> DockerSpec:
    check_keys(where, raw, KEYS, NAME)
    pin = parse_pin(where, raw)
    if "port" not in raw or "container_port" not in raw or "name" not in raw:
        raise ConfigError(f"{where}: a docker target needs name, port and container_port")
    # A docker container name shatag can derive -proxy/-shatag-net/release names from (issue 12);
    # ``--help`` or ``../x`` is not one (issue 14, item 8).
    name = validate_container_name(raw.get("name"), where)
    # Every number range-checked: NaN, infinities, booleans, 0 and negatives are refused
    # (issue 14, item 8).
    port = whole(raw["port"], "port", f"{where}.port")
    container_port = whole(raw["container_port"], "container_port", f"{where}.container_port")
    health_timeout = number(
        raw.get("health_timeout_sec", 30.0), "health_timeout_sec", f"{where}.health_timeout_sec"
    )
    proxy = raw.get("proxy", True)
    if isinstance(proxy, str) and proxy.lower() in ("true", "false"):
        proxy = proxy.lower() == "true"
    if not isinstance(proxy, bool):
        raise ConfigError(f"{where}.proxy must be true or false, not {clip(proxy, 60)}")
    image = raw.get("proxy_image") or DEFAULT_PROXY_IMAGE
    if not isinstance(image, str) or any(c.isspace() for c in image) or image.startswith("-"):
        raise ConfigError(f"{where}.proxy_image must be an image reference, not {clip(image, 60)}")
    env = parse_env(raw.get("env"), where)
    secrets = parse_secrets(raw.get("secrets"), where)
    check_names(env, secrets, where)
    volumes = parse_volumes(raw.get("volumes"), where)
    spec = converted(
        where,
        lambda: DockerSpec(
            name=name,
            port=port,
            container_port=container_port,
            health_path=str(raw.get("health_path", "/healthz")),
            health_timeout_sec=health_timeout,
            pin=pin,
            proxy=proxy,
            proxy_image=image,
            env=env,
            secrets=secrets,
            volumes=volumes,
        ),
    )
    if not spec.health_path.startswith("/") or any(c.isspace() for c in spec.health_path):
        raise ConfigError(f"{where}.health_path must start with / and hold no whitespace")
    return spec


class DockerTarget:
    """``proxy: false``: stop the old container, then start the new one on the same port (a
    short gap, measured in docs/reliability.md).

    The switch drives the docker CLI through :class:`shatag._sys.docker.DockerEngine` (what
    ``prepare`` needs in one look; stop, rename, run, remove), as the gated switch does:
    python-on-whales re-inspected a container on nearly every attribute read, and its import
    (0.2-0.3 s of CPU) was on the path of every switch (issue 17). It is still the client (the
    engine's :attr:`~shatag._sys.docker.DockerEngine.client`) for a pull, the logs of a failed
    start and the undo."""

    #: The stop-then-start switch always replaces the container.
    unchanged: bool = False

    def __init__(self, config: DockerSpec, ctx: TargetContext) -> None:
        self.config = config
        self.name = config.name
        self.prev_name = config.name + PREV_SUFFIX
        # The switch itself runs the docker CLI through shatag._sys.subproc (its own process
        # group while a switch holds the signals); python-on-whales is imported only for a
        # pull, the logs of a failed start, or an undo.
        self._engine = DockerEngine(ctx.env)
        self._env_name = ctx.env_name
        self._attempt = ctx.attempt
        self._image: ImageRef | None = None
        self._had_old = False
        self._old_running = False
        self._applied = False
        self._old: dict[str, Any] | None = None
        self._stale: dict[str, Any] | None = None
        self._env = ctx.env
        self._secrets: tuple[str, ...] = ()
        self._daemon_wait_until: float | None = None

    @property
    def label(self) -> str:
        return self.config.label

    @property
    def _docker(self) -> DockerClient:
        return self._engine.client

    # -- life cycle -------------------------------------------------------------------------

    def plan(self, image: ImageRef) -> str:
        """``<label>: <running image> → <new image>`` (inspects, changes nothing)."""
        old = self._engine.inspect("container", self.name)
        was = "nothing" if old is None else str((old.get("Config") or {}).get("Image"))
        return f"{self.label}: {was} → {image.pinned}"

    def prepare(self, image: ImageRef) -> None:
        self._image = image
        self._secrets = secret_values(self.config.app, self._env, self.label)
        proxy = self.name + PROXY_SUFFIX
        self._engine.remember(
            {"container": (self.name, self.prev_name, proxy), "image": (image.pinned,)}
        )
        names = (self.name, self.prev_name)
        seen = {name: self._engine.inspect("container", name) for name in names}
        for name, found in seen.items():
            if found is not None:
                check_owned(
                    "container",
                    name,
                    labels_of(found),
                    env_name=self._env_name,
                    target=self.name,
                )
        self._refuse_behind_proxy(self._engine.inspect("container", proxy))
        old = seen[self.name]
        self._old = old
        self._stale = seen[self.prev_name]
        self._had_old = old is not None
        self._old_running = is_running(old)
        # Content-addressed: an image present locally under this digest is these exact bytes,
        # so a rollback to a recent release starts without a registry round trip.
        if self._engine.inspect("image", image.pinned) is not None:
            return
        from python_on_whales.exceptions import DockerException

        try:
            self._docker.image.pull(image.pinned, quiet=True)
        except DockerException as exc:
            raise DeployFailed(
                f"{self.label}: could not pull {image.pinned}: {_docker_error(exc)}; check that "
                "the registry is reachable and this engine may pull from it"
            ) from None

    def apply(self) -> None:
        image = self._image
        if image is None:
            raise RuntimeError("apply() before prepare()")
        # Applied from the first change on: if the old container is parked and the daemon goes
        # away before it is back, restore() (and the journal) must still undo it.
        self._applied = True
        try:
            self._park_old()
            new = self._start(image)
        except DeployFailed as exc:
            self._undo()
            self._applied = False
            raise DeployFailed(
                f"{self.label}: could not start {image.pinned}: {exc.message}; the previous "
                "container was restored"
            ) from None
        self._applied = True
        problem = self._wait_healthy(new)
        if problem is not None:
            logs = self._logs(str(new.get("Id") or self.name))
            self._undo()
            self._applied = False
            raise DeployFailed(
                f"{self.label}: {image.pinned} {problem}; it was removed and the previous "
                f"container restored. Last log lines: {logs}"
            )

    def restore(self) -> None:
        if self._applied:
            self._undo()
            self._applied = False

    def commit(self) -> None:
        self._applied = False
        self._engine.remove(self.prev_name)  # ``rm -f``: absent already is fine

    def journal(self) -> dict[str, Any]:
        return {
            "kind": NAME,
            "name": self.name,
            "had_old": self._had_old,
            "old_running": self._old_running,
            "attempt": self._attempt,
        }

    # -- steps ------------------------------------------------------------------------------

    def _park_old(self) -> None:
        """Stop the old container and keep it aside as ``<name>-shatag-prev``."""
        stale = self._stale  # inspected by prepare(), under the same environment lock
        old = self._old
        if stale is not None:
            # Left by a crash that recovery did not see (no journal): <name> is the live one.
            if old is None:
                self._engine.run("rename", str(stale["Id"]), self.name)
            else:
                self._engine.run("rm", "--force", str(stale["Id"]))
            old = self._engine.inspect("container", self.name)
        if old is None:
            return
        self._engine.run("stop", "--time", str(STOP_TIMEOUT_SEC), str(old["Id"]))
        self._engine.run("rename", str(old["Id"]), self.prev_name)

    def _start(self, image: ImageRef) -> dict[str, Any]:
        argv = app_run_argv(
            self.config.app,
            image,
            container=self.name,
            placement=["--publish", f"127.0.0.1:{self.config.port}:{self.config.container_port}"],
            env_name=self._env_name,
            attempt=self._attempt,
        )
        result = self._engine.run(*argv, check=False, secrets=self._secrets)
        if result.returncode != 0:
            raise DeployFailed(" ".join(result.stderr.split())[-500:] or "docker run failed")
        started = self._engine.inspect("container", self.name)
        if started is None:
            raise DeployFailed(f"{self.name} disappeared as it started")
        return started

    def _wait_healthy(self, container: Mapping[str, Any]) -> str | None:
        """``None`` once healthy; else what went wrong.

        With a ``HEALTHCHECK`` the image's own check command is also run right away (``docker
        exec``, the same command, user and timeout), so the gate opens when the service first
        passes it rather than at the engine's first scheduled probe one interval later; the
        engine's verdict counts too (``healthy`` opens, ``unhealthy`` or an exit fails).
        """
        check = health_command_of(container)
        ident = str(container.get("Id") or self.name)
        first = [container]  # the first look is the inspection _start() just made

        def look(deadline: float) -> tuple[Verdict, str]:
            try:
                current = first.pop() if first else self._engine.inspect("container", ident)
            except DeployFailed as exc:  # the daemon went away while we waited
                return "fail", f"could not be health-checked: {exc.message}"
            if current is None:
                return "fail", "disappeared while starting"
            return self._health_step(ident, current, check, deadline)

        return wait_healthy(look, self.config.health_timeout_sec)

    def _health_step(
        self,
        ident: str,
        container: Mapping[str, Any],
        check: tuple[list[str], float] | None,
        deadline: float,
    ) -> tuple[Verdict, str]:
        """One look at a starting container: the HTTP probe on the published port."""
        return gate_look(
            container,
            probe=self._probe,
            probed=self.config.health_path,
            run_check=lambda command, limit: self._engine.exec_status(
                ident, command, timeout=limit
            ),
            check=check,
            deadline=deadline,
        )

    def _probe(self) -> str:
        return http_probe(f"127.0.0.1:{self.config.port}", self.config.health_path, timeout=1.0)

    def _logs(self, container: str) -> str:
        from python_on_whales.exceptions import DockerException

        try:
            text = str(self._docker.container.logs(container, tail=_LOG_TAIL))
        except DockerException:
            return "(logs unavailable)"
        lines = [line for line in text.splitlines() if line.strip()]
        return " | ".join(lines[-_LOG_TAIL:])[-1500:] or "(no output)"

    def _refuse_behind_proxy(self, found: Mapping[str, Any] | None) -> None:
        """``proxy: false`` on a target the proxy serves: its proxy holds the port, and taking
        it means a gap in service that an operator must choose, not a side effect of a deploy
        (``proxy: false`` → proxy is migrated automatically; the reverse is not)."""
        proxy = self.name + PROXY_SUFFIX
        if not owner_labels(self._env_name, self.name, "proxy").items() <= labels_of(found).items():
            return  # none, or not ours: not this target's proxy
        raise ConfigError(
            f"{self.label} has `proxy: false`, but its release is served through {proxy!r}, "
            "which holds the port; nothing was changed. Keep the proxy (remove `proxy: false`), "
            f"or take the service down on purpose first: `docker rm -f {proxy}` and this "
            f"target's application containers (label shatag.target={self.name}), "
            f"`docker network rm {self.name}{NETWORK_SUFFIX}`, then deploy again"
        )

    def _undo(self) -> None:
        """Remove the new container (if any) and bring the parked old one back.

        An undo that fails -- the docker daemon went away mid-switch, say a ``systemctl
        restart docker`` -- waits for the daemon to answer again, at most
        ``health_timeout_sec`` over the whole run, and tries once more: the previous container
        (stopped by this switch, so the daemon does not restart it) is then back when this run
        ends, not down until the next run's recovery (issue 27)."""
        try:
            self._restore()
        except DeployFailed as exc:
            if not self._daemon_answers_again():
                raise DeployFailed(
                    f"{exc.message}; the previous container may be left stopped as "
                    f"{self.prev_name}: the next deploy or rollback of {self._env_name!r} puts "
                    "it back"
                ) from None
            self._restore()

    def _restore(self) -> None:
        _restore_previous(
            self._docker,
            self.name,
            attempt=self._attempt,
            had_old=self._had_old,
            old_running=self._old_running,
        )

    def _daemon_answers_again(self) -> bool:
        """True once ``docker version`` reaches the daemon, within this run's wait budget."""
        if self._daemon_wait_until is None:
            self._daemon_wait_until = time.monotonic() + self.config.health_timeout_sec
        while True:
            left = self._daemon_wait_until - time.monotonic()
            try:
                probe = self._engine.run(
                    "version", "--format", "{{.Server.Version}}", check=False, timeout=10
                )
                if probe.returncode == 0:
                    return True
            except DeployFailed:  # did not answer within 10 s
                pass
            if left <= 0:
                return False
            time.sleep(min(0.5, left))


def _inspect(docker: DockerClient, name: str) -> Container | None:
    from python_on_whales.exceptions import DockerException, NoSuchContainer

    try:
        return docker.container.inspect(name)
    except NoSuchContainer:
        return None
    except DockerException as exc:  # the daemon went away, permissions, ...
        raise DeployFailed(
            f"docker inspect {name} failed: {_docker_error(exc)}; check that the docker daemon "
            "is running"
        ) from None


def _docker_error(exc: Exception) -> str:
    stderr = getattr(exc, "stderr", None)
    text = str(stderr).strip() if stderr else str(exc).strip()
    return " ".join(text.split())[-500:]


def _restore_previous(
    docker: DockerClient, name: str, *, attempt: str, had_old: bool, old_running: bool
) -> str:
    """Put ``<name>`` back as it was before ``attempt`` touched it.

    Docker failures here (the daemon gone, another environment renaming or removing the same
    container meanwhile) are :class:`DeployFailed` naming what to check (issue 14, item 9).
    """
    from python_on_whales.exceptions import DockerException

    try:
        return _restore_steps(
            docker, name, attempt=attempt, had_old=had_old, old_running=old_running
        )
    except DockerException as exc:
        raise DeployFailed(
            f"could not restore container {name}: {_docker_error(exc)}. Is another environment "
            f"deploying a container named {name}? Check `docker ps -a --filter name={name}`"
        ) from None


def _restore_steps(
    docker: DockerClient, name: str, *, attempt: str, had_old: bool, old_running: bool
) -> str:
    from python_on_whales.exceptions import DockerException

    done: list[str] = []
    current = _inspect(docker, name)
    if (
        current is not None
        and attempt
        and (current.config.labels or {}).get(LABEL_ATTEMPT) == attempt
    ):
        docker.container.remove(current, force=True)
        done.append(f"removed the new {name}")
        current = None
    parked = _inspect(docker, name + PREV_SUFFIX)
    if parked is not None and current is None:
        docker.container.rename(parked, name)
        done.append(f"renamed {name + PREV_SUFFIX} back to {name}")
        current = parked
    if current is not None and had_old and old_running and not current.state.running:
        try:
            docker.container.start(name)
            done.append(f"started {name}")
        except DockerException as exc:
            raise DeployFailed(
                f"could not restart the previous container {name}: {_docker_error(exc)}; "
                f"start it by hand with `docker start {name}`"
            ) from None
    return "; ".join(done) or "nothing to do"


def recover(entry: Mapping[str, Any], ctx: TargetContext) -> str:
    """Undo an interrupted switch described by a journal entry (after ``kill -9``)."""
    if entry.get("mode") == "proxy":
        return recover_gated(entry, env=ctx.env, runtime_dir=ctx.runtime_dir)
    docker = DockerEngine(ctx.env).client
    return _restore_previous(
        docker,
        str(entry["name"]),
        attempt=str(entry.get("attempt", "")),
        had_old=bool(entry.get("had_old")),
        old_running=bool(entry.get("old_running")),
    )


def finish(entry: Mapping[str, Any], ctx: TargetContext) -> str:
    """Complete an interrupted commit: drop the parked previous container."""
    from python_on_whales.exceptions import DockerException

    if entry.get("mode") == "proxy":
        return finish_gated(entry, env=ctx.env, runtime_dir=ctx.runtime_dir)
    docker = DockerEngine(ctx.env).client
    name = str(entry["name"]) + PREV_SUFFIX
    if _inspect(docker, name) is None:
        return "nothing to do"
    with contextlib.suppress(DockerException):
        docker.container.remove(name, force=True)
    return f"removed {name}"


def make(spec: DockerSpec, ctx: TargetContext) -> Target:
    if not spec.proxy:
        return DockerTarget(spec, ctx)
    proxy = ProxySpec(
        env_name=ctx.env_name,
        target=spec.name,
        image=spec.proxy_image,
        port=spec.port,
        home=proxy_home(ctx.runtime_dir, ctx.env_name, spec.name),
    )
    return GatedDockerTarget(
        spec.app, proxy, env=ctx.env, env_name=ctx.env_name, attempt=ctx.attempt, label=spec.label
    )


def _observe(spec: DockerSpec, ctx: TargetContext, image: ImageRef | None) -> Observed:
    """What runs (``status``): :mod:`shatag.targets.docker.observe`."""
    from shatag.targets.docker.observe import observe

    return observe(spec, ctx, image)


KIND: Final = TargetKind(NAME, KEYS, parse, make, recover, finish, observe=_observe)
