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
import http.client
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from shatag._sys.docker import DockerEngine, is_running, labels_of
from shatag._sys.fs import atomic_write_text
from shatag.errors import DeployFailed
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

PROXY_SUFFIX: Final = "-proxy"
NETWORK_SUFFIX: Final = "-shatag-net"
START_TIMEOUT_SEC: Final = 20.0
#: On the proxy container: what it was started with (:attr:`ProxySpec.fingerprint`).
LABEL_PROXY_SPEC: Final = "shatag.proxy-spec"


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
