"""The reverse proxy in front of a docker target: Caddy, run and managed by shatag (issue 12).

Traffic for a docker target reaches the application only through one Caddy container per
target, ``<name>-proxy``. It publishes the target's ``port`` on ``127.0.0.1`` and forwards to
exactly one application container, by container name, over a user-defined docker network
(``<name>-shatag-net``) that shatag creates and labels. Application containers publish nothing.

This module is that container: its spec (:class:`ProxySpec`, journalled) and :class:`Proxy`,
which creates, starts, repairs and re-points it through the docker client
(:class:`shatag._sys.docker.DockerEngine`). How traffic moves (an upstream file Caddy reads per
request) and why the admin endpoint is a unix socket: :mod:`shatag.targets.docker.caddy`. The
image it runs: :mod:`shatag.targets.docker.proxy_image`.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from shatag._sys import subproc
from shatag._sys.docker import DockerEngine, is_running, labels_of
from shatag._sys.fs import atomic_write_text
from shatag.errors import DeployFailed, DeployLocked, StateError, ToolFailure
from shatag.targets.docker.caddy import (
    ADMIN_SOCKET,
    CONFIG_FILE,
    LISTEN_PORT,
    MOUNT,
    UPSTREAM_FILE,
    CaddyAdmin,
    caddy_config,
    parse_upstream,
)
from shatag.targets.docker.owned import check_owned, owner_labels
from shatag.targets.docker.proxy_image import DEFAULT_PROXY_IMAGE

PROXY_SUFFIX: Final = "-proxy"
NETWORK_SUFFIX: Final = "-shatag-net"
#: A proxy created ahead of replacing the running one (:meth:`Proxy._create`).
STAGED_SUFFIX: Final = "-shatag-next"
START_TIMEOUT_SEC: Final = 20.0
#: On the proxy container: what it was started with (:attr:`ProxySpec.fingerprint`).
LABEL_PROXY_SPEC: Final = "shatag.proxy-spec"
#: In a home moved from a checkout (:meth:`Proxy.adopt_home`): the old path the proxy names.
MIGRATED_FILE: Final = "migrated-from"
LOCK_POLL_SEC: Final = 0.1
HOLDER_BYTES: Final = 512

log = logging.getLogger(__name__)


def mount_source(data: Mapping[str, Any] | None) -> str:
    """The host directory a proxy container (``docker inspect`` JSON) mounts at ``/run/shatag``.

    >>> mount_source({"Mounts": [{"Source": "/h/p", "Destination": "/run/shatag"}]})
    '/h/p'
    >>> mount_source(None)
    ''
    """
    for mount in (data or {}).get("Mounts") or ():
        if isinstance(mount, Mapping) and mount.get("Destination") == MOUNT:
            return str(mount.get("Source") or "")
    return ""


class HostLock:
    """An exclusive ``flock`` on a file in the runtime directory: one switch of a proxy at a
    time on this host, whichever checkout deploys it (the deploy lock is per state directory,
    that is per checkout with the local ledger). Held from ``prepare`` to ``commit`` or
    ``restore``; the kernel drops it when the process ends, so a killed deploy leaves none."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._fd = -1

    def acquire(self) -> None:
        if self._fd >= 0:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + self.timeout
        said = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self._holder(fd)
                    os.close(fd)
                    raise DeployLocked(
                        f"another deploy on this host has been switching {self.path.stem} for "
                        f"over {self.timeout:g}s ({holder}); retry when it has finished"
                    ) from None
                if not said:
                    log.warning(
                        "waiting for another deploy's switch of %s (%s)",
                        self.path.stem,
                        self._holder(fd),
                    )
                    said = True
                time.sleep(LOCK_POLL_SEC)
        # Who holds it, for the one who waits: overwritten in place, never truncated (on ext4 a
        # truncated file is flushed on close: 3 ms instead of 2 us).
        mine = f"pid {os.getpid()} in {os.getcwd()}"[:HOLDER_BYTES].encode(errors="replace")
        os.pwrite(fd, mine[:HOLDER_BYTES].ljust(HOLDER_BYTES), 0)
        self._fd = fd

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            text = os.pread(fd, HOLDER_BYTES, 0).decode(errors="replace").strip()
        except OSError:
            text = ""
        return text or "holder unknown"

    def release(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)  # closing drops the flock


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


def reset_established(pid: int, port: int) -> int | None:
    """Reset (``ss -K``: the kernel sends RST) every established TCP connection to ``port`` in
    the network namespace of process ``pid``; how many, or ``None`` when that could not be done
    (no ``nsenter``/``ss``, no right to enter the namespace, a kernel without
    ``CONFIG_INET_DIAG_DESTROY``).

    Why not just kill the process: its kernel then closes the connection in order (FIN), and a
    response without a length that ends at the close (``Connection: close``, HTTP/1.0 style)
    reads as complete to the proxy, which ends its own response to the client cleanly. A reset
    is an error to the proxy in the middle of a body, so it aborts the client's response: the
    client sees a cut, never a clean end (issue 23, item 4)."""
    argv = ["nsenter", "--target", str(pid), "--net", "--", "ss", "-K", "-t", "-n", "-H"]
    argv += ["state", "established", "sport", "=", f":{port}"]
    try:
        result = subproc.run(argv, timeout=10.0, check=True)
    except ToolFailure as exc:
        log.info("could not reset the connections to port %d of pid %d: %s", port, pid, exc)
        return None
    return len([line for line in result.stdout.splitlines() if line.strip()])


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
        """What a running proxy was started with (its :data:`LABEL_PROXY_SPEC`); see
        :meth:`accepts` for what it must match, else it is recreated (a short gap)."""
        return f"{self.image}|127.0.0.1:{self.port}|{self.home}|{os.getuid()}:{os.getgid()}"

    def accepts(self, label: str | None, migrated_from: str = "") -> bool:
        """Whether a proxy labelled ``label`` (its :attr:`fingerprint`) runs as this spec asks.

        Nothing in it depends on the checkout that deploys (issue 23, item 1): the home is the
        host's runtime directory, or ``migrated_from``, the old home the running proxy still
        names but whose directory was moved to the runtime directory (:meth:`Proxy.adopt_home`);
        the default image counts as one, whichever caddy binary each clone built it from
        (``shatag-proxy:caddy-<id>``: the id names the binary's path, another in each clone).

        >>> spec = ProxySpec("prod", "api", "shatag-proxy:caddy-aa", 8000, "/var/lib/s/api")
        >>> ids = f"{os.getuid()}:{os.getgid()}"
        >>> spec.accepts(f"shatag-proxy:caddy-bb|127.0.0.1:8000|/var/lib/s/api|{ids}")
        True
        >>> spec.accepts(f"shatag-proxy:caddy-aa|127.0.0.1:8000|/ci/w/.shatag/api|{ids}")
        False
        >>> spec.accepts(f"caddy:2|127.0.0.1:8000|/var/lib/s/api|{ids}")
        False
        >>> spec.accepts(f"shatag-proxy:caddy-aa|127.0.0.1:8000|/ci/.shatag/api|{ids}",
        ...              migrated_from="/ci/.shatag/api")
        True
        """
        parts = (label or "").split("|")
        if len(parts) != 4:
            return False
        image, bind, home, ids = parts
        want = self.fingerprint.split("|")
        homes = {self.home, migrated_from} - {""}
        return (_image_key(image), bind, ids) == (_image_key(want[0]), want[1], want[3]) and (
            home in homes
        )

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


def _image_key(image: str) -> str:
    """The default proxy image family for any ``shatag-proxy:caddy-<id>``, else ``image``."""
    return DEFAULT_PROXY_IMAGE if image.startswith(DEFAULT_PROXY_IMAGE + ":caddy-") else image


def proxy_home(runtime_dir: Path, env_name: str, target: str) -> str:
    """The proxy's home on the host: ``<runtime_dir>/proxy/<env>/<name>`` (issue 23, item 1),
    the same for every checkout that deploys the target on this docker host."""
    return str((runtime_dir / "proxy" / env_name / target).resolve())


class Proxy:
    """``<target>-proxy``: created, started, repaired and re-pointed by shatag."""

    def __init__(self, spec: ProxySpec, docker: DockerEngine) -> None:
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
        replace = False
        if data is not None:
            check_owned(
                "container",
                self.spec.name,
                labels_of(data),
                env_name=self.spec.env_name,
                target=self.spec.target,
            )
            if not self.spec.accepts(labels_of(data).get(LABEL_PROXY_SPEC), self.migrated_from()):
                replace, data = True, None  # another image/port/home: recreate (short gap)
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
        self._create(replace=replace)
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

    # -- the home on the host (issue 23, item 1) -----------------------------------------

    def migrated_from(self) -> str:
        """The old home (in a checkout) the running proxy was started with and whose directory
        :meth:`adopt_home` moved here; ``""`` when it was started with this home."""
        try:
            return (self.home / MIGRATED_FILE).read_text().strip()
        except OSError:
            return ""

    def adopt_home(self) -> str:
        """Bring the home of a proxy started by shatag before issue 23 (``<state_dir>/<env>/
        proxy/<name>`` in some checkout) to the host's runtime directory, without touching the
        running proxy: the directory is *moved* (``rename``), and the proxy's bind mount follows
        it, so it goes on reading its upstream file and answering on its admin socket, now at
        the new place (0 failed requests). The old path becomes a symbolic link to the new
        home, so a restart of that container (daemon restart, reboot) still finds it, until the
        checkout is cleaned; the proxy is re-created with the new home the next time it must be
        (another port or image, or it does not answer). Where ``rename`` cannot (another file
        system, no permission), the files are copied instead and :meth:`ensure` re-creates the
        proxy: a gap of well under a second (docs/docker-target.md).

        Costs one ``docker inspect``, and only when the home has no upstream file yet (a first
        deploy or the first after an upgrade). Returns what was done (``""``: nothing)."""
        if (self.home / UPSTREAM_FILE).exists():
            return ""
        data = self.docker.inspect("container", self.spec.name)
        old = Path(mount_source(data) or self.home)
        if old == self.home or not (old / UPSTREAM_FILE).is_file() or old.is_symlink():
            return ""
        check_owned(
            "container",
            self.spec.name,
            labels_of(data),
            env_name=self.spec.env_name,
            target=self.spec.target,
        )
        self.prepare_home(create=False)
        try:
            with contextlib.suppress(FileNotFoundError):
                self.home.rmdir()  # an empty one (fails, rightly, when it holds anything)
            os.rename(old, self.home)
        except OSError:
            self._home()
            for name in (UPSTREAM_FILE, CONFIG_FILE):
                with contextlib.suppress(OSError):
                    atomic_write_text(self.home / name, (old / name).read_text())
            return f"copied the proxy's files from {old} (the proxy is re-created)"
        with contextlib.suppress(OSError):
            old.symlink_to(self.home, target_is_directory=True)
        atomic_write_text(self.home / MIGRATED_FILE, f"{old}\n")
        return f"moved the proxy's home from {old} to {self.home} (the proxy kept running)"

    def prepare_home(self, *, create: bool = True) -> None:
        """The runtime directory up to the home's parent (``0755``), and the home (``0700``);
        ``STATE_ERROR`` when this user may not create them."""
        try:
            self.home.parent.mkdir(parents=True, exist_ok=True)
            if create:
                self._home()
        except OSError as exc:
            raise StateError(
                f"cannot create the docker proxy's home {self.home} "
                f"({exc.strerror or exc}): shatag keeps what the running proxy reads on the "
                "host, outside any checkout; create the runtime directory for this user "
                f"(sudo install -d -o $USER {self.home.parents[2]}) or set runtime_dir to a "
                "directory it may write"
            ) from None

    def lock(self, timeout: float) -> HostLock:
        """The host-level lock of this proxy's switch: ``<home>.lock`` beside the home."""
        return HostLock(self.home.with_name(self.home.name + ".lock"), timeout)

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

    def _create(self, *, replace: bool = False) -> None:
        """Run the proxy. ``replace``: a running one of another spec holds the port; the new
        one is created first (as ``<name>-shatag-next``), so the gap between removing the old
        one and starting the new one is no ``docker create`` longer (issue 23, item 1)."""
        if not replace:
            self._run("run", "--detach", "--name", self.spec.name)
            return
        staged = self.spec.name + STAGED_SUFFIX
        if (data := self.docker.inspect("container", staged)) is not None:
            check_owned(
                "container",
                staged,
                labels_of(data),
                env_name=self.spec.env_name,
                target=self.spec.target,
            )
            self.docker.remove(staged)
        self._run("create", "--name", staged)
        self.docker.remove(self.spec.name)  # the old proxy lets go of the port: the gap
        with contextlib.suppress(FileNotFoundError):
            (self.home / ADMIN_SOCKET).unlink()  # its socket, when it had this home
        started = self.docker.run("start", staged, check=False)
        renamed = self.docker.run("rename", staged, self.spec.name, check=False)
        if started.returncode != 0 or renamed.returncode != 0:
            self.docker.remove(staged)
            raise DeployFailed(
                f"could not start the proxy {self.spec.name} from {self.spec.image}: "
                f"{(started.stderr + renamed.stderr).strip()[-400:]}; is "
                f"127.0.0.1:{self.spec.port} free?"
            )

    def _run(self, *command: str) -> None:
        """``docker run``/``create`` of the proxy; ``command`` names the verb and the name."""
        if command[0] == "run":
            with contextlib.suppress(FileNotFoundError):
                (self.home / ADMIN_SOCKET).unlink()  # a stale socket of an earlier proxy
        argv = [
            *command,
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
            self.docker.remove(command[-1])
            raise DeployFailed(
                f"could not start the proxy {self.spec.name} from {self.spec.image}: "
                f"{result.stderr.strip()[-400:]}; is 127.0.0.1:{self.spec.port} free?"
            )

    def destroy(self) -> None:
        self.docker.remove(self.spec.name)
