"""Caddy, the reverse proxy in front of a docker target: its config and its admin socket.

**How traffic moves.** Caddy's config never changes for a switch. Its upstream is the placeholder
``{file./run/shatag/upstream}``, which Caddy resolves *per request* by reading that file; a
switch is shatag replacing the file atomically (write a temporary file, ``rename``). The next
request goes to the new container; requests in flight finish on the old one, which shatag
retires only once it holds no connection any more
(:func:`shatag.targets.docker.proxy.established`). A dial that fails (the old container stopping
just as a request picked it) is retried for up to 5 s and re-reads the file, so it lands on the
new one.

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
``<runtime_dir>/proxy/<env>/<name>/`` on the host, outside any checkout (mode 0700, owned by
the deploying user, and the proxy runs as that user; issue 23). Nothing on a network -- not
the application containers on the same docker network, not another host, not another local
user -- can reach it; only a process on the docker host with access to that directory can.
The directory also holds ``caddy.json`` (the proxy starts from it) and ``upstream``, so after
a daemon restart or host reboot (``--restart unless-stopped``) the proxy serves the release
that was serving.

>>> cfg = caddy_config()
>>> cfg["admin"]["listen"]
'unix//run/shatag/admin.sock'
>>> cfg["apps"]["http"]["servers"]["shatag"]["routes"][-1]["handle"][0]["upstreams"]
[{'dial': '{file./run/shatag/upstream}'}]
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from shatag.errors import DeployFailed

LISTEN_PORT: Final = 8080  # inside the proxy container: unprivileged, so the proxy runs as a user
MOUNT: Final = "/run/shatag"
ADMIN_SOCKET: Final = "admin.sock"
CONFIG_FILE: Final = "caddy.json"
UPSTREAM_FILE: Final = "upstream"
GRACE_PERIOD: Final = "30s"  # in-flight requests across a (rare) config change of the proxy
ADMIN_TIMEOUT_SEC: Final = 30.0


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
