"""A bounded loopback request loop and a docker target site for the proxy tests (issue 12).

:class:`Load` sends ``GET /api.json`` to ``127.0.0.1:<port>`` at a fixed rate, a new connection
per request (as a stream of independent clients), and keeps every outcome:
failed (no answer, or not 200) and which release answered (the body names it).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from shatag._testing.localregistry import free_port
from tests.conftest import InvResult, inv_argv
from tests.reliability.conftest import Built, Ledger, World, rinv

RATE = 60.0  # requests per second, >= 50 as issue 12 asks
WORKERS = 8
HARD_LIMIT_SEC = 600.0  # a loop never runs longer than this, whatever happens


@dataclass
class Load:
    """Requests go out on a fixed schedule (``rate`` per second) from a small pool of workers,
    so one slow answer does not lower the offered rate."""

    port: int
    rate: float = RATE
    results: list[tuple[float, bool, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _pool: ThreadPoolExecutor | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _started: float = 0.0
    _ended: float = 0.0

    def __enter__(self) -> Load:
        self._started = time.monotonic()
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="load")
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, a: type[BaseException] | None, b: BaseException | None, c: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._ended = time.monotonic()
        self.results.sort()

    def _loop(self) -> None:
        assert self._pool is not None
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        deadline = next_at + HARD_LIMIT_SEC
        while not self._stop.is_set() and time.monotonic() < deadline:
            self._pool.submit(self._one, time.monotonic())
            next_at += interval
            pause = next_at - time.monotonic()
            if pause > 0:
                self._stop.wait(pause)

    def _one(self, started: float) -> None:
        url = f"http://127.0.0.1:{self.port}/api.json"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = response.read().decode(errors="replace")
                ok = response.status == 200
            release = _release(body) if ok else f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            ok, release = False, f"HTTP {exc.code}"
        except OSError as exc:
            ok, release = False, type(exc).__name__
        with self._lock:
            self.results.append((started, ok, release))

    @property
    def sent(self) -> int:
        return len(self.results)

    @property
    def failed(self) -> int:
        return sum(1 for _, ok, _ in self.results if not ok)

    def answered_by(self, release: str) -> int:
        return sum(1 for _, ok, rel in self.results if ok and rel == release)

    @property
    def releases(self) -> Counter[str]:
        return Counter(rel for _, ok, rel in self.results if ok)

    @property
    def achieved_rate(self) -> float:
        span = (self._ended or time.monotonic()) - self._started
        return self.sent / span if span > 0 else 0.0

    @property
    def longest_gap(self) -> float:
        """The longest time between two successful answers (seconds)."""
        times = [t for t, ok, _ in self.results if ok]
        if len(times) < 2:
            return 0.0
        return max(b - a for a, b in itertools.pairwise(times))

    def errors(self) -> Counter[str]:
        return Counter(rel for _, ok, rel in self.results if not ok)


def _release(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:40]
    return str(data.get("release", "?")) if isinstance(data, dict) else "?"


def docker(*args: str, check: bool = True) -> str:
    out = subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=check, timeout=120
    )
    return out.stdout.strip()


@dataclass
class DockerSite:
    """One environment with one docker target behind the proxy (or ``proxy: false``)."""

    world: World
    dir: Path
    config: Path
    name: str
    port: int
    env_name: str = "px"
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        # runtime_dir as a variable, as CI would set it: it wins over any file (issue 23).
        runtime = {"INVOKE_SHATAG_RUNTIME_DIR": str(self.runtime)}
        return {**self.world.env, **runtime, **self.extra_env}

    @property
    def state(self) -> Path:
        return self.dir / "state"

    @property
    def runtime(self) -> Path:
        """``runtime_dir``: beside the site's directory, shared by the sites of one test (the
        host's runtime state is outside any checkout, issue 23, item 1)."""
        return self.dir.parent / "runtime"

    @property
    def home(self) -> Path:
        """The proxy's home on the host."""
        return self.runtime / "proxy" / self.env_name / self.name

    def inv(self, ledger: Ledger, *args: str, timeout: float = 600) -> InvResult:
        return rinv(ledger, ["-f", str(self.config), *args], self.env, timeout=timeout)

    def argv(self, *args: str) -> list[str]:
        return inv_argv("-f", str(self.config), *args)

    def deploy(self, ledger: Ledger, built: Built) -> InvResult:
        return self.inv(ledger, "deploy", f"--sha={built.sha}", f"--env={self.env_name}")

    def rollback(self, ledger: Ledger, built: Built) -> InvResult:
        return self.inv(ledger, "rollback", f"--sha={built.sha}", f"--env={self.env_name}")

    def history(self) -> list[dict[str, Any]]:
        path = self.state / self.env_name / "history.jsonl"
        if not path.exists():
            return []
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip().startswith("{")]

    def current_sha(self) -> str:
        ok = [r for r in self.history() if r.get("result") == "ok"]
        return str(ok[-1]["sha"]) if ok else ""

    def app_containers(self, running_only: bool = False) -> list[str]:
        argv = ["ps", "--format", "{{.Names}}", "--filter", f"label=shatag.target={self.name}"]
        argv += ["--filter", "label=shatag.role=app"]
        if not running_only:
            argv.insert(1, "-a")
        return [n for n in docker(*argv).split() if n]

    def serving_container(self) -> str:
        """The app container the proxy forwards to (the upstream file it reads per request)."""
        path = self.home / "upstream"
        try:
            return path.read_text().strip().rpartition(":")[0]
        except OSError:
            return ""

    def label(self, container: str, key: str) -> str:
        return docker("inspect", "--format", f'{{{{index .Config.Labels "{key}"}}}}', container)

    def journal_pending(self) -> bool:
        return (self.state / self.env_name / "pending.json").exists()

    def cleanup(self) -> None:
        ids = docker("ps", "-aq", "--filter", f"label=shatag.target={self.name}").split()
        if ids:
            docker("rm", "-f", *ids, check=False)
        for suffix in ("", "-proxy", "-shatag-prev"):
            docker("rm", "-f", self.name + suffix, check=False)
        docker("network", "rm", self.name + "-shatag-net", check=False)


def make_docker_site(
    world: World, root: Path, ledger: Ledger, *, proxy: bool = True, **target: Any
) -> DockerSite:
    # The post-switch watch (issue 23, 5 s by default) at 1 s unless a test sets it: the
    # switches under traffic are what these sites test, the watch has tests of its own.
    target.setdefault("watch_sec", 1)
    d = root / f"px-{uuid.uuid4().hex[:6]}"
    d.mkdir(parents=True)
    ledger.watch(d)
    name = f"shatag-rel-{uuid.uuid4().hex[:8]}"
    port = free_port()
    spec = {
        "shatag": {
            "state_dir": str(d / "state"),
            "deploy_lock_timeout_sec": 120,
            "environments": {
                "px": {
                    "repository_type": "canonical",
                    "targets": [
                        {
                            "kind": "docker",
                            "name": name,
                            "port": port,
                            "container_port": 8080,
                            "health_path": "/healthz",
                            "health_timeout_sec": 8,
                            "proxy": proxy,
                            **target,
                        }
                    ],
                }
            },
        }
    }
    config = d / "shatag.yaml"
    config.write_text(json.dumps(spec))
    return DockerSite(world, d, config, name, port)


@contextlib.contextmanager
def docker_site(world: World, root: Path, ledger: Ledger, **settings: Any) -> Iterator[DockerSite]:
    """:func:`make_docker_site`, removed (containers, proxy, network) when the block ends."""
    site = make_docker_site(world, root, ledger, **settings)
    try:
        yield site
    finally:
        site.cleanup()


def release_of(releases: dict[str, Built], sha: str) -> str:
    """The label of the release built from ``sha`` ("?" for none)."""
    return next((k for k, v in releases.items() if v.sha == sha), "?")
