"""Developer and CI commands. `nox -l` lists them; `nox` runs the whole suite (the README's
test command). Sessions reuse their venvs and install with uv when it is there."""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True
# The test suite (the README's test command, .ci/run). `coverage` combines what unit, contract,
# integration and kubernetes measured (issues 11, 16). `perf` comes last: a benchmark whose only
# pass/fail part is its asserted ratios (issue 7); SHATAG_SKIP_PERF=1 skips it.
nox.options.sessions = [
    "lint",
    "typecheck",
    "unit",
    "contract",
    "integration",
    "kubernetes",
    "coverage",
    "reliability",
    "perf",
]

ROOT = Path(__file__).parent
TOOLS_BIN = Path(os.environ.get("SHATAG_TOOLS_DIR", Path.home() / ".cache/shatag/tools")) / "bin"
PYTHON = "3.11"
# Compile bytecode at install time: where PYTHONDONTWRITEBYTECODE is set, every CLI start would
# otherwise recompile its imports (~0.4 s), which the perf session would measure as overhead.
os.environ.setdefault("UV_COMPILE_BYTECODE", "1")


SUITE_JSON = ROOT / "build" / "perf" / "suite.json"
# Line coverage data of the measured sessions (one file per process until `coverage` combines).
COVERAGE_FILE = ROOT / "build" / "coverage" / ".coverage"
# One id per `nox` invocation (sessions run in this process, one after the other).
_RUN_ID = f"{os.getpid()}-{time.time():.0f}"


def _timed(func: Callable[[nox.Session], None]) -> Callable[[nox.Session], None]:
    """Record how long a test session took in build/perf/suite.json (the perf session reports
    the wall time of the suite that ran before it in the same `nox` run: issue 7, item 6)."""

    @functools.wraps(func)
    def wrapper(session: nox.Session) -> None:
        started = time.monotonic()
        func(session)
        try:
            data = json.loads(SUITE_JSON.read_text())
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict) or data.get("run") != _RUN_ID:
            data = {"run": _RUN_ID, "when": datetime.now(UTC).strftime("%Y-%m-%d"), "sessions": {}}
        data["sessions"][session.name] = round(time.monotonic() - started, 1)
        data["total_sec"] = round(sum(data["sessions"].values()), 1)
        SUITE_JSON.parent.mkdir(parents=True, exist_ok=True)
        SUITE_JSON.write_text(json.dumps(data, indent=2) + "\n")

    return wrapper


def _install(session: nox.Session, *groups: str) -> None:
    """The package (editable) plus the given dependency groups of pyproject.toml."""
    args = ["-e", "."]
    for group in groups:
        args += ["--group", group]
    session.install(*args)


def _tools(session: nox.Session, *names: str) -> None:
    """Install the pinned test-only tools the session needs (fast no-op when present)."""
    session.run("bash", str(ROOT / "ci" / "install-tools.sh"), *names, external=True)


def _tools_env(session: nox.Session) -> dict[str, str]:
    """The pinned tools of ci/install-tools.sh come first on PATH."""
    return {
        "PATH": os.pathsep.join([str(TOOLS_BIN), session.env.get("PATH") or os.environ["PATH"]])
    }


# Issue 27: two pytest-xdist workers. Most of a docker test's time is spent waiting (on a health
# check, a drain, a held shim), so two at once fit 2 cores. ``loadfile`` keeps a file on one
# worker: its module fixtures build once, and tests that share a private daemon or a fixed
# bridge name never overlap. ``nox -s integration -- -n 0`` runs in one process.
WORKERS = ["-n", "2"]
BY_FILE = [*WORKERS, "--dist", "loadfile"]


def _pytest(session: nox.Session, *args: str) -> None:
    """pytest under ``coverage run`` (settings in pyproject.toml: parallel data files, and the
    CLI subprocesses the tests start -- xdist's workers among them -- are measured too)."""
    COVERAGE_FILE.parent.mkdir(parents=True, exist_ok=True)
    env = {**_tools_env(session), "COVERAGE_FILE": str(COVERAGE_FILE)}
    session.run("coverage", "run", "-m", "pytest", *args, *session.posargs, env=env)


@nox.session(python=PYTHON)
@_timed
def lint(session: nox.Session) -> None:
    """ruff check + format check; action.yml and the workflows against their schemas; actionlint."""
    _install(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # The GitHub Action's metadata (issue 13): validated against the action schema.
    session.run("check-jsonschema", "--builtin-schema", "vendor.github-actions", "action.yml")
    workflows = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    if workflows:
        session.run("check-jsonschema", "--builtin-schema", "vendor.github-workflows", *workflows)
        _tools(session, "actionlint")
        session.run(str(TOOLS_BIN / "actionlint"), *workflows, external=True)


@nox.session(python=PYTHON)
@_timed
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the library, the tests, tasks.py, this file and the k8s launcher."""
    _install(session, "typecheck")
    session.run("mypy", "src/shatag", "tasks.py", "noxfile.py", "tests", "ci/kube_cluster.py")


@nox.session(python=PYTHON)
@_timed
def unit(session: nox.Session) -> None:
    """Pure, fast tests: no subprocess, no network (plus the library's doctests)."""
    _install(session, "test")
    _pytest(session, *WORKERS, "tests/unit", "--doctest-modules", "src/shatag")


@nox.session(python=PYTHON)
@_timed
def contract(session: nox.Session) -> None:
    """The JSON the real tasks emit, validated against specs/…/contracts."""
    _install(session, "test")
    _tools(session, "cosign", "syft")
    _pytest(session, *WORKERS, "tests/contract")


@nox.session(python=PYTHON, tags=["slow"])
@_timed
def integration(session: nox.Session) -> None:
    """Real dockerd, registry, cosign and syft: build, sign, deploy, rollback."""
    _install(session, "test")
    _tools(session, "cosign", "syft", "buildx", "caddy", "tofu", "helm")
    _pytest(session, *BY_FILE, "tests/integration")


@nox.session(python=PYTHON)
@_timed
def coverage(session: nox.Session) -> None:
    """Line coverage of unit + contract + integration + kubernetes combined; fails below the
    ratchet (``fail_under`` in pyproject.toml). Run it after those sessions."""
    _install(session, "test")
    env = {"COVERAGE_FILE": str(COVERAGE_FILE)}
    session.run("coverage", "combine", env=env)
    session.run("coverage", "report", env=env)


@nox.session(python=PYTHON, tags=["slow"])
@_timed
def reliability(session: nox.Session) -> None:
    """Faults, hostile input, auth/TLS, kills and concurrency; writes docs/reliability.md."""
    _install(session, "test")
    _tools(session, "cosign", "syft", "caddy")
    results = ROOT / "build" / "reliability" / "results.json"
    results.unlink(missing_ok=True)
    env = {**_tools_env(session), "SHATAG_RELIABILITY_JSON": str(results)}
    # The report is written even when a scenario fails; the report step then fails the session.
    session.run(
        "pytest", *BY_FILE, "tests/reliability", *session.posargs, env=env, success_codes=[0, 1]
    )
    session.run("python", "ci/reliability_report.py", str(results))


@nox.session(python=PYTHON, tags=["slow"])
@_timed
def kubernetes(session: nox.Session) -> None:
    """A real single-node cluster on loopback (ci/kube_cluster.py): the Kubernetes targets."""
    _install(session, "test")
    # ci/install-kubernetes.sh: builds the pinned binaries once (10-40 min of Go on 2 cores, see
    # docs/performance-kubernetes.md), a 2 s no-op after that; etcd and the CNI plugins unpacked.
    _tools(session, "kubernetes")
    _pytest(session, "tests/kubernetes")


@nox.session(python=PYTHON, tags=["slow"])
def perf(session: nox.Session) -> None:
    """Side-by-side benchmarks; writes docs/performance*.md (SHATAG_SKIP_PERF=1 skips)."""
    if os.environ.get("SHATAG_SKIP_PERF") == "1":
        session.skip("SHATAG_SKIP_PERF=1")
    _install(session, "perf")
    _tools(session, "cosign", "syft", "buildx")
    # A benchmark script, not a pytest suite: it interleaves the compared commands, writes
    # docs/performance.md + docs/perf-validation.png and exits 1 when an asserted ratio misses.
    session.run("python", "-m", "tests.perf.bench", *session.posargs, env=_tools_env(session))
    # Issue 16: deploying to the test cluster vs kubectl by hand (docs/performance-kubernetes.md).
    _tools(session, "kubernetes")
    session.run("python", "-m", "tests.perf.bench_kubernetes", env=_tools_env(session))


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The main job on the embedded defaults: local registry, build, deploy, rollback."""
    _install(session)
    session.run("python", "ci/demo.py", *session.posargs, env=_tools_env(session))
