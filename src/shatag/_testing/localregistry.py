"""A throwaway CNCF distribution registry on loopback, for the demo and the test suites.

Runs Debian's ``docker-registry serve CONFIG`` (distribution v2) on 127.0.0.1 with its own
storage directory; optionally with htpasswd auth and TLS. Not used by build/deploy themselves.

>>> cfg = registry_config(Path("/tmp/r"), 5000)
>>> "addr: 127.0.0.1:5000" in cfg
True
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def registry_config(
    storage: Path,
    port: int,
    *,
    htpasswd: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    readonly: bool = False,
) -> str:
    lines = [
        "version: 0.1",
        "log:",
        "  level: warn",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {storage}",
        "  delete:",
        "    enabled: false",
    ]
    if readonly:
        lines += ["  maintenance:", "    readonly:", "      enabled: true"]
    lines += [
        "http:",
        f"  addr: 127.0.0.1:{port}",
        "  headers:",
        "    X-Content-Type-Options: [nosniff]",
    ]
    if cert and key:
        lines += ["  tls:", f"    certificate: {cert}", f"    key: {key}"]
    if htpasswd:
        lines += ["auth:", "  htpasswd:", "    realm: shatag", f"    path: {htpasswd}"]
    return "\n".join(lines) + "\n"


@dataclass
class LocalRegistry:
    """``with LocalRegistry(workdir) as reg: reg.address`` → ``127.0.0.1:PORT``."""

    workdir: Path
    port: int = 0
    htpasswd: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    ca_file: Path | None = None
    readonly: bool = False
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        scheme = "https" if self.cert else "http"
        return f"{scheme}://{self.address}"

    def start(self, timeout: float = 20.0) -> LocalRegistry:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        storage = self.workdir / "storage"
        storage.mkdir(exist_ok=True)
        config = self.workdir / "config.yml"
        config.write_text(
            registry_config(
                storage,
                self.port,
                htpasswd=self.htpasswd,
                cert=self.cert,
                key=self.key,
                readonly=self.readonly,
            )
        )
        with (self.workdir / "registry.log").open("ab") as log:
            self._proc = subprocess.Popen(  # argument list, fixed binary
                ["docker-registry", "serve", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait(timeout)
        return self

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"registry exited: see {self.workdir / 'registry.log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"registry on {self.address} did not start within {timeout}s")

    def stop(self) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=10)
        self._proc = None

    def restart(self) -> None:
        """Stop and start again on the same port and storage (fault-injection tests)."""
        self.stop()
        self.start()

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
