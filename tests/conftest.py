"""Shared fixtures: real components, isolated world.

* ``registry`` — a throwaway ``docker-registry serve`` on a free 127.0.0.1 port (session).
* ``make_app`` — factory: a git repo holding a copy of ``examples/api`` with the content you
  choose, one commit per call; returns its path and SHA.
* ``shatag_env`` — the environment for a CLI run pointed at fresh repositories of ``registry``
  through ``INVOKE_SHATAG_*`` variables (as a new user would), with HOME isolated.
* ``inv`` — runs the real CLI (``python -m invoke`` with the project's tasks.py) and parses its
  JSON lines.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from shatag._testing.localregistry import LocalRegistry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "api"
#: The docker target keeps its proxy's live state under ``runtime_dir`` on the host (issue 23,
#: default /var/lib/shatag); the tests keep theirs in a directory of the run (:func:`runtime`).
RUNTIME_ENV = "INVOKE_SHATAG_RUNTIME_DIR"
TOOLS_BIN = Path(os.environ.get("SHATAG_TOOLS_DIR", Path.home() / ".cache/shatag/tools")) / "bin"


def required_tool(name: str) -> str:
    """The real ``name`` (a pinned test tool): the tools dir first, then PATH. Missing →
    AssertionError, never a skip."""
    cached = TOOLS_BIN / name
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    found = shutil.which(name)
    if found is None:
        msg = f"{name} is required: `bash ci/install-tools.sh {name}` builds it into {cached}"
        raise AssertionError(msg)
    return found


def tools_path(base: str | None = None) -> str:
    """PATH with the pinned cosign/syft tools dir first."""
    return os.pathsep.join([str(TOOLS_BIN), base or os.environ.get("PATH", os.defpath)])


@pytest.fixture(scope="session", autouse=True)
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every deploy of the session -- CLI runs through :data:`RUNTIME_ENV`, in-process ones
    through the built-in default -- keeps its runtime state in one directory of this run,
    removed with the run's temporary files, never in the host's /var/lib/shatag."""
    from shatag._defaults import DEFAULTS

    path = tmp_path_factory.mktemp("runtime")
    saved = os.environ.get(RUNTIME_ENV), DEFAULTS["runtime_dir"]
    os.environ[RUNTIME_ENV] = DEFAULTS["runtime_dir"] = str(path)
    yield path
    if saved[0] is None:
        os.environ.pop(RUNTIME_ENV, None)
    else:
        os.environ[RUNTIME_ENV] = saved[0]
    DEFAULTS["runtime_dir"] = saved[1]


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    reg = LocalRegistry(tmp_path_factory.mktemp("registry"))
    reg.start()
    yield reg
    reg.stop()


@dataclass
class App:
    path: Path
    shas: list[str] = field(default_factory=list)

    @property
    def sha(self) -> str:
        return self.shas[-1]

    def commit(self, content: str, message: str = "change") -> str:
        (self.path / "www" / "api.json").write_text(content + "\n")
        (self.path / "www" / "index.html").write_text(content + "\n")
        _git(self.path, "add", "-A")
        _git(self.path, "commit", "-q", "-m", message)
        sha = _git(self.path, "rev-parse", "HEAD")
        self.shas.append(sha)
        return sha


def _git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "shatag tests",
        "GIT_AUTHOR_EMAIL": "tests@shatag.invalid",
        "GIT_COMMITTER_NAME": "shatag tests",
        "GIT_COMMITTER_EMAIL": "tests@shatag.invalid",
    }
    out = subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True, timeout=30
    )
    return out.stdout.strip()


def new_app(path: Path, branch: str = "main") -> App:
    """A git repository (no commit yet) holding a copy of ``examples/api`` at ``path``."""
    shutil.copytree(EXAMPLE, path, ignore=shutil.ignore_patterns(".gitignore"))
    _git(path, "init", "-q", "-b", branch)
    return App(path)


def cli_env(registry: LocalRegistry, root: Path, name: str) -> dict[str, str]:
    """The environment of a CLI run, as a new user sets it: ``INVOKE_SHATAG_*`` pointing at the
    repositories ``name`` and ``name``-staging of ``registry``, HOME isolated under ``root``,
    the pinned tools first on PATH."""
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": tools_path(),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "INVOKE_SHATAG_CANONICAL_REPOSITORY": f"{registry.address}/{name}",
        "INVOKE_SHATAG_STAGING_REPOSITORY": f"{registry.address}/{name}-staging",
        "INVOKE_SHATAG_METADATA_DIR": str(root / "metadata"),
        "INVOKE_SHATAG_SBOM_DIR": str(root / "sbom"),
    }
    for key in ("DOCKER_HOST", "SHATAG_BUILDER", "SHATAG_TOOLS_DIR", RUNTIME_ENV):
        if key in os.environ:
            env[key] = os.environ[key]
    env.update(coverage_env())
    return env


def coverage_env() -> dict[str, str]:
    """Coverage's variables, so a CLI run started by a test is measured too (``nox -s unit``
    etc. run pytest under ``coverage run`` with subprocess measurement; elsewhere: empty)."""
    return {k: v for k, v in os.environ.items() if k.startswith("COVERAGE_")}


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[..., App]:
    """``make_app(content="v1")`` → an App (git repo of examples/api) with one commit."""
    busybox = EXAMPLE / "bin" / "busybox"
    if not busybox.exists():
        pytest.fail("examples/api/bin/busybox is missing: run `bash ci/setup.sh` first")
    counter = iter(range(1000))

    def factory(content: str = '{"version": "v1"}', branch: str = "main") -> App:
        app = new_app(tmp_path / f"app{next(counter)}", branch)
        app.commit(content, "initial")
        return app

    return factory


@pytest.fixture
def shatag_env(registry: LocalRegistry, tmp_path: Path) -> dict[str, str]:
    """Environment for one CLI run against fresh repositories (unique names per test)."""
    env = cli_env(registry, tmp_path, f"app-{uuid.uuid4().hex[:10]}")
    env["INVOKE_SHATAG_STATE_DIR"] = str(tmp_path / "state")
    return env


@dataclass
class InvResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]

    @property
    def record(self) -> dict[str, Any]:
        records = self.records
        assert records, f"no JSON line on stdout:\n{self.stdout}\n--- stderr:\n{self.stderr}"
        return records[-1]


# The build-log keys REQUIREMENTS.md lists (issue 2): every build record carries them.
BUILD_LOG_KEYS: frozenset[str] = frozenset(
    {
        "phase",
        "image_sha",
        "short_sha",
        "image_digest",
        "repository",
        "repository_type",
        "arch",
        "signature_status",
        "signature_reason",
        "build_duration_sec",
        "pre_push_digest",
        "post_push_digest",
        "digest_verification",
        "reused",
        "created_at",
    }
)


def inv_argv(*args: str) -> list[str]:
    """The real CLI's command line, as CI runs it: ``inv --search-root ROOT <args>``."""
    return [sys.executable, "-m", "invoke", "--search-root", str(ROOT), *args]


def run_inv(
    args: list[str], env: dict[str, str], *, cwd: Path | None = None, timeout: float = 600
) -> InvResult:
    """The real CLI, as CI runs it: ``inv --search-root ROOT <args>``."""
    proc = subprocess.run(
        inv_argv(*args),
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return InvResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def inv() -> Callable[..., InvResult]:
    return run_inv
