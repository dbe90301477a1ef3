"""Reliability suite (issue 6): faults, hostile input, kills, concurrency, auth/TLS, secrets.

Everything here drives real components (dockerd, ``docker-registry``, cosign) through the real
CLI. The few faults a real component cannot produce on demand (an HTTP 500 or a stalled answer
from the registry, a cosign that crashes or hangs) come from small stand-ins named ``fault_*``.

Every test records what it expected and what it saw in the session :class:`Ledger`, together
with the counts the issue asks for (inputs tried, faults injected, kills survived, leaks found).
At the end of the session the ledger is written as JSON (``$SHATAG_RELIABILITY_JSON``, default
``build/reliability/results.json``); ``ci/reliability_report.py`` renders it as the summary
table and ``docs/reliability.md``. Each ``inv`` run's stdout/stderr, and every directory the
product wrote, is scanned for the session's canary secrets when the session finishes.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

from shatag._testing.localregistry import LocalRegistry
from shatag.core import parse_repository
from shatag.supplychain.registry import RegistryClient
from tests.conftest import ROOT, App, InvResult, cli_env, inv_argv, run_inv
from tests.conftest import new_app as new_example_app

RESULTS_ENV = "SHATAG_RELIABILITY_JSON"
DEFAULT_RESULTS = ROOT / "build" / "reliability" / "results.json"
# Canary secrets: a registry password and a cosign key password. They must never show up in
# anything the product prints or writes.
CANARY_REGISTRY = f"canaryReg-{uuid.uuid4().hex[:16]}"
CANARY_COSIGN = f"canaryCosign-{uuid.uuid4().hex[:16]}"
CANARIES = (CANARY_REGISTRY, CANARY_COSIGN)

SDL_TEXT = """\
---
# Akash SDL (hand-maintained; shatag only touches the image line)
version: "2.0"
services:
  api:
    image: ghcr.io/example/api:latest  # pinned by shatag
    expose:
      - port: 8080
        as: 80
"""
TFVARS_TEXT = '{\n  "region": "eu-west",\n  "image_sha": "",\n  "image_digest": ""\n}\n'


# -- the ledger -------------------------------------------------------------------------------


@dataclass
class Outcome:
    scenario: str
    expected: str
    observed: str
    passed: bool
    test: str = ""


@dataclass
class Ledger:
    outcomes: list[Outcome] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    #: Measured values the report lists under Figures (e.g. the git ledger's lock wait).
    figures: dict[str, str] = field(default_factory=dict)
    captured: list[tuple[str, str]] = field(default_factory=list)
    scan_dirs: list[Path] = field(default_factory=list)
    skip_dirs: list[Path] = field(default_factory=list)
    failed_tests: list[str] = field(default_factory=list)
    current_test: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, scenario: str, expected: str, observed: str, passed: bool) -> bool:
        with self._lock:
            self.outcomes.append(Outcome(scenario, expected, observed, passed, self.current_test))
        return passed

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def figure(self, label: str, value: str) -> None:
        with self._lock:
            self.figures[label] = value

    def capture(self, label: str, text: str) -> None:
        with self._lock:
            self.captured.append((label, text))

    def watch(self, path: Path) -> None:
        """Scan ``path`` (a directory the product writes into) for canaries at the end."""
        with self._lock:
            self.scan_dirs.append(path)

    def exclude(self, path: Path) -> None:
        """A credential store (docker config, key files): holds secrets by design."""
        with self._lock:
            self.skip_dirs.append(path.resolve())

    def leaks(self) -> list[str]:
        """Every place a canary was found: captured output, then files of watched dirs."""
        found: list[str] = []
        for label, text in self.captured:
            found += [f"{label}: {c}" for c in CANARIES if c in text]
        for base in self.scan_dirs:
            if not base.exists():
                continue
            for path in sorted(p for p in base.rglob("*") if p.is_file()):
                resolved = path.resolve()
                if any(resolved.is_relative_to(skip) for skip in self.skip_dirs):
                    continue
                try:
                    if path.stat().st_size > 20_000_000:
                        continue
                    data = path.read_bytes()
                except OSError:
                    continue
                found += [f"{path}: {c}" for c in CANARIES if c.encode() in data]
        return found

    def as_json(self, leaks: list[str]) -> dict[str, Any]:
        counts = {
            "inputs_tried": self.counts["inputs_tried"],
            "faults_injected": self.counts["faults_injected"],
            "kills_survived": self.counts["kills_survived"],
            "kills_attempted": self.counts["kills_attempted"],
            "leaks_found": len(leaks),
            "outputs_scanned": len(self.captured),
            "hypothesis_examples": self.counts["hypothesis_examples"],
        }
        return {
            "counts": counts,
            "figures": dict(self.figures),
            "outcomes": [asdict(o) for o in self.outcomes],
            "failed_tests": self.failed_tests,
            "leaks": leaks,
        }


LEDGER = Ledger()
_LEDGER = LEDGER


@pytest.fixture(scope="session")
def ledger() -> Ledger:
    return _LEDGER


# The files measured longest (issue 27: 150-230 s each, about half the session), longest first.
# pytest-xdist (``--dist loadfile``) hands files out in collection order, so these start first
# and the two workers end together instead of one waiting on the other's last long file.
LONGEST_FILES = (
    "test_proxy_switch.py",
    "test_proxy_switch_signals.py",
    "test_properties.py",
    "test_post_switch_watch.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first (above); tests marked ``after_all`` (the canary scan of
    everything the others printed and wrote) after all the others, in any selection."""
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
    items.sort(key=lambda item: item.get_closest_marker("after_all") is not None)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _LEDGER.current_test = item.nodeid


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed and report.nodeid not in _LEDGER.failed_tests:
        _LEDGER.failed_tests.append(report.nodeid)
    # Property tests are pure functions: one row each, from pytest's own verdict.
    if report.when == "call" and "test_properties.py::" in report.nodeid:
        name = report.nodeid.split("::", 1)[1].removeprefix("test_")
        observed = "5,000 examples passed"
        if report.failed:
            longrepr = str(report.longrepr)
            falsifying = [ln for ln in longrepr.splitlines() if "Failing test case" in ln]
            observed = "FAILED: " + (falsifying[0] if falsifying else longrepr[-200:])
        _LEDGER.record(
            f"property: {name}",
            "any input: a value of the documented shape or one of our error codes, never "
            "another exception",
            observed,
            report.passed,
        )


def results_path() -> Path:
    """Where this process writes the session's results: ``$SHATAG_RELIABILITY_JSON``, or under
    pytest-xdist one part per worker (``results.gw0.json`` ...) that the controller merges."""
    target = Path(os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS)
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return target.with_name(f"{target.stem}.{worker}{target.suffix}") if worker else target


def _parts(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f"{target.stem}.gw*{target.suffix}"))


def _is_xdist_controller(session: pytest.Session) -> bool:
    return session.config.pluginmanager.getplugin("dsession") is not None


def pytest_sessionstart(session: pytest.Session) -> None:
    if _is_xdist_controller(session):
        for stale in _parts(results_path()):
            stale.unlink()


def merge_results(parts: list[dict[str, Any]], failed: list[str]) -> dict[str, Any]:
    """One session's results from its workers' parts: every row, count, figure, failed test
    and leak of each; plus the row of the canary scan every worker made at its session end
    (the ``after_all`` test sees only its own worker's outputs, and not after the others).
    ``failed``: the failures the controller saw, a crashed worker's (which wrote no part)
    among them."""
    merged: dict[str, Any] = {"counts": Counter(), "figures": {}, "outcomes": []}
    merged.update(failed_tests=list(failed), leaks=[], tests_collected=0)
    for part in parts:
        merged["counts"].update(part["counts"])
        merged["figures"].update(part["figures"])
        merged["outcomes"] += part["outcomes"]
        merged["failed_tests"] += [t for t in part["failed_tests"] if t not in failed]
        merged["leaks"] += part["leaks"]
        merged["tests_collected"] = max(merged["tests_collected"], part["tests_collected"])
    merged["counts"] = dict(merged["counts"])
    scanned = merged["counts"].get("outputs_scanned", 0)
    row = Outcome(
        "secrets: canary passwords, every worker's outputs and files at its session end",
        "never in stdout, stderr, logs, metadata, SBOM, history, targets, GitHub outputs",
        f"{len(merged['leaks'])} leaks in {scanned} outputs of {len(parts)} workers",
        not merged["leaks"],
    )
    merged["outcomes"].append(asdict(row))
    return merged


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    del exitstatus
    target = results_path()
    if _is_xdist_controller(session):
        parts = _parts(target)
        if parts or _LEDGER.failed_tests:
            merged = merge_results([json.loads(p.read_text()) for p in parts], _LEDGER.failed_tests)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(merged, indent=2) + "\n")
            for part in parts:
                part.unlink()
        return
    if not _LEDGER.outcomes and not _LEDGER.captured:
        return
    leaks = _LEDGER.leaks()
    target.parent.mkdir(parents=True, exist_ok=True)
    data = _LEDGER.as_json(leaks)
    data["tests_collected"] = session.testscollected
    target.write_text(json.dumps(data, indent=2) + "\n")


# -- running the CLI --------------------------------------------------------------------------


def rinv(
    ledger: Ledger,
    args: list[str],
    env: dict[str, str],
    *,
    timeout: float = 600,
    cwd: Path | None = None,
) -> InvResult:
    """The real CLI (as CI runs it, in ``cwd``); its output is kept for the canary scan."""
    result = run_inv(args, env, timeout=timeout, cwd=cwd)
    ledger.capture(f"inv {' '.join(args)[:80]}", result.stdout + "\n" + result.stderr)
    return result


def error_code(result: InvResult) -> str:
    """The code of the ``error: CODE: …`` line on stderr ('' when there is none)."""
    for line in result.stderr.splitlines():
        if line.startswith("error: "):
            return line.split(":", 2)[1].strip()
    return ""


def describe(result: InvResult) -> str:
    code = error_code(result)
    return f"exit {result.returncode}" + (f", {code}" if code else "")


def docker_out(*args: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    return out.stdout.strip()


class _Runs(Protocol):
    @property
    def env(self) -> dict[str, str]: ...

    def argv(self, *args: str) -> list[str]: ...


def start_inv(site: _Runs, *args: str) -> subprocess.Popen[bytes]:
    """The real CLI of ``site`` started in its own session (a test signals or kills it, or
    its whole group, at an event of the run)."""
    return subprocess.Popen(
        site.argv(*args),
        env=site.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


# -- a world: one repository with images A, B, C built by the real `inv build` ----------------


@dataclass
class Built:
    sha: str
    digest: str
    metadata: Path

    def pinned(self, repository: str) -> str:
        return f"{repository}:{self.sha}@{self.digest}"


@dataclass
class World:
    env: dict[str, str]
    app: App
    canonical: str
    staging: str
    root: Path
    images: list[Built] = field(default_factory=list)

    def client(self) -> RegistryClient:
        return RegistryClient(parse_repository(self.canonical), env={}, retries=1)

    def build(self, ledger: Ledger, content: str) -> Built:
        sha = self.app.commit(content, f"content {content}")
        env = {**self.env, "INVOKE_SHATAG_CONTEXT": str(self.app.path)}
        result = rinv(ledger, ["build", f"--sha={sha}", "--branch=main"], env)
        assert result.returncode == 0, result.stderr
        return Built(sha, result.record["image_digest"], self.root / "metadata" / f"{sha}.json")


def world_env(registry: LocalRegistry, root: Path, name: str) -> dict[str, str]:
    return {**cli_env(registry, root, name), "USER": "reliability"}


def new_app(root: Path) -> App:
    app = new_example_app(root / "app")
    (app.path / "www" / "healthz").write_text("ok\n")
    return app


@pytest.fixture(scope="session")
def world(
    registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory, ledger: Ledger
) -> World:
    root = tmp_path_factory.mktemp("rel-world")
    name = f"rel-{uuid.uuid4().hex[:8]}"
    env = world_env(registry, root, name)
    ledger.watch(root)
    w = World(
        env, new_app(root), f"{registry.address}/{name}", f"{registry.address}/{name}-staging", root
    )
    for label in ("A", "B", "C"):
        w.images.append(w.build(ledger, f'{{"release": "{label}"}}'))
    return w


# -- a site: an environment with SDL + tfvars file targets ------------------------------------


@dataclass
class Snapshot:
    sdl: str
    tfvars: str
    history: bytes

    def history_records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.history.split(b"\n"):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    out.append({"torn": line.decode("utf-8", "replace")})
        return out


@dataclass
class Site:
    world: World
    dir: Path
    config: Path
    sdl: Path
    tfvars: Path
    state: Path
    env_name: str = "rel"
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**self.world.env, **self.extra_env}

    def inv(
        self, ledger: Ledger, *args: str, env: dict[str, str] | None = None, timeout: float = 600
    ) -> InvResult:
        return rinv(
            ledger, ["-f", str(self.config), *args], {**self.env, **(env or {})}, timeout=timeout
        )

    def argv(self, *args: str) -> list[str]:
        return inv_argv("-f", str(self.config), *args)

    def deploy(self, ledger: Ledger, built: Built, *extra: str, **kw: Any) -> InvResult:
        return self.inv(
            ledger, "deploy", f"--sha={built.sha}", f"--env={self.env_name}", *extra, **kw
        )

    def rollback(self, ledger: Ledger, built: Built | None = None, **kw: Any) -> InvResult:
        sha = [f"--sha={built.sha}"] if built else []
        return self.inv(ledger, "rollback", *sha, f"--env={self.env_name}", **kw)

    @property
    def history_path(self) -> Path:
        return self.state / self.env_name / "history.jsonl"

    def snapshot(self) -> Snapshot:
        history = self.history_path.read_bytes() if self.history_path.exists() else b""
        return Snapshot(self.sdl.read_text(), self.tfvars.read_text(), history)

    def expected_files(self, built: Built | None) -> tuple[str, str]:
        """The SDL and tfvars text when ``built`` is deployed (None: never deployed)."""
        if built is None:
            return SDL_TEXT, TFVARS_TEXT
        pinned = built.pinned(self.world.canonical)
        sdl = SDL_TEXT.replace("ghcr.io/example/api:latest", pinned)
        data = json.loads(TFVARS_TEXT)
        return sdl, json.dumps(data)  # tfvars compared parsed, see `tfvars_is`

    def sdl_is(self, snap: Snapshot, built: Built | None) -> bool:
        return snap.sdl == self.expected_files(built)[0]

    def tfvars_is(self, snap: Snapshot, built: Built | None) -> bool:
        try:
            data = json.loads(snap.tfvars)
        except ValueError:
            return False
        if built is None:
            return snap.tfvars == TFVARS_TEXT
        return bool(
            data.get("region") == "eu-west"
            and data.get("image_sha") == built.sha
            and data.get("image_digest") == built.digest
        )


@pytest.fixture
def make_site(world: World, tmp_path: Path, ledger: Ledger) -> Callable[..., Site]:
    counter = iter(range(100))

    def factory(apply: str = "", lock_timeout: float = 60.0, **extra: Any) -> Site:
        d = tmp_path / f"site-{next(counter)}"
        d.mkdir()
        ledger.watch(d)
        sdl = d / "deploy.yaml"
        sdl.write_text(SDL_TEXT)
        tfvars = d / "image.auto.tfvars.json"
        tfvars.write_text(TFVARS_TEXT)
        spec = {
            "shatag": {
                "state_dir": str(d / "state"),
                "deploy_lock_timeout_sec": lock_timeout,
                **extra,
                "environments": {
                    "rel": {
                        "repository_type": "canonical",
                        "apply": apply,
                        "targets": [
                            {"kind": "sdl", "path": str(sdl), "service": "api"},
                            {"kind": "tfvars", "path": str(tfvars)},
                        ],
                    }
                },
            }
        }
        config = d / "shatag.yaml"
        config.write_text(json.dumps(spec))
        return Site(world, d, config, sdl, tfvars, d / "state")

    return factory


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@pytest.fixture
def fresh_env(registry: LocalRegistry, tmp_path: Path, ledger: Ledger) -> dict[str, str]:
    """An environment pointed at fresh, empty repositories (hostile-input checks)."""
    name = f"relx-{uuid.uuid4().hex[:8]}"
    ledger.watch(tmp_path)
    env = world_env(registry, tmp_path, name)
    env["INVOKE_SHATAG_STATE_DIR"] = str(tmp_path / "state")
    return env
