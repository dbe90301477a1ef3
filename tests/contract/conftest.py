"""Contract-suite fixtures: the contracts in specs/, a real registry, and a runner for ``inv``.

Everything runs for real: ``docker-registry serve`` on a free loopback port, the docker
daemon, and the task collection through ``python -m invoke`` exactly as CI calls it (the
root ``tasks.py``, a runtime config file with ``-f``). Nothing is stubbed: each JSON line a
contract test validates was printed by the real task.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import coverage_env

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS_DIR = ROOT / "specs" / "003-tag-api-container" / "contracts"
CONTRACT_NAMES = (
    "build-workflow",
    "deploy-workflow",
    "rollback-workflow",
    "digest-verification",
    "signature-verification",
    "sbom-linkage",
)


def load_contract(name: str) -> dict[str, Any]:
    data = yaml.safe_load((CONTRACTS_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict), name
    return data


@pytest.fixture(scope="session")
def contracts() -> dict[str, dict[str, Any]]:
    return {name: load_contract(name) for name in CONTRACT_NAMES}


def new_sha() -> str:
    return secrets.token_hex(20)


@dataclass
class InvResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[dict[str, Any]]:
        """Every stdout line; stdout carries only JSON lines (a non-JSON line fails here)."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def line(self, phase: str) -> dict[str, Any]:
        found = [rec for rec in self.lines if rec.get("phase") == phase]
        assert len(found) == 1, f"expected one {phase} line, got {self.stdout!r} / {self.stderr!r}"
        return found[0]

    def describe(self) -> str:
        return f"$ {' '.join(self.argv)}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Registry:
    host: str
    process: subprocess.Popen[bytes]


def _start_registry(root: Path, *, readonly: bool = False) -> Registry:
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("docker-registry is required (bash ci/setup.sh installs it)")
    root.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    maintenance = "maintenance: {readonly: {enabled: true}}, " if readonly else ""
    config = root / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: error}\n"
        f"storage: {{{maintenance}filesystem: {{rootdirectory: {root / 'data'}}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n",
        encoding="utf-8",
    )
    with (root / "registry.log").open("wb") as log:
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
    host = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://{host}/v2/", timeout=1):
                return Registry(host, proc)
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"docker-registry did not start; see {root / 'registry.log'}")
            time.sleep(0.1)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = _start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.process.terminate()
    reg.process.wait(timeout=10)


@pytest.fixture(scope="session")
def readonly_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry in maintenance read-only mode: reads answer, every push is refused."""
    reg = _start_registry(tmp_path_factory.mktemp("ro-registry"), readonly=True)
    yield reg
    reg.process.terminate()
    reg.process.wait(timeout=10)


@dataclass
class World:
    """One isolated project: build context, config file, state and metadata dirs."""

    root: Path
    registry: Registry
    env: dict[str, str]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def canonical(self) -> str:
        return str(self.config["canonical_repository"])

    @property
    def staging(self) -> str:
        return str(self.config["staging_repository"])

    def write_context(self, content: str | None = None, dockerfile: str | None = None) -> None:
        """A FROM-scratch context; distinct ``content`` gives a distinct image."""
        context = Path(self.config["context"])
        context.mkdir(parents=True, exist_ok=True)
        (context / "payload.txt").write_text(content or secrets.token_hex(16), encoding="utf-8")
        (context / "Dockerfile").write_text(
            dockerfile or "FROM scratch\nCOPY payload.txt /payload.txt\n", encoding="utf-8"
        )

    def git(self, *args: str) -> str:
        """``git`` in the context, a repository on ``main`` (issue 24: an image is a commit)."""
        context = Path(self.config["context"])
        who = ["-c", "user.name=contract", "-c", "user.email=contract@example.invalid"]
        done = subprocess.run(
            ["git", "-C", str(context), *who, *args],
            check=True, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        return done.stdout.strip()

    def commit(self, content: str | None = None) -> str:
        """A new commit on ``main`` of the context as it is with fresh ``payload.txt`` content (a
        distinct image); returns its SHA."""
        payload = Path(self.config["context"]) / "payload.txt"
        payload.write_text(content or secrets.token_hex(16), encoding="utf-8")
        self.git("add", "-A")
        self.git("commit", "-q", "-m", "contract")
        return self.git("rev-parse", "HEAD")

    def inv(self, *args: str, config: Mapping[str, Any] | None = None) -> InvResult:
        """Run the real task collection: ``python -m invoke -r ROOT -f CONFIG <args>``."""
        merged = {**self.config, **(config or {})}
        config_file = self.root / f"invoke-{secrets.token_hex(4)}.yaml"
        config_file.write_text(yaml.safe_dump({"shatag": merged}), encoding="utf-8")
        argv = [sys.executable, "-m", "invoke", "-r", str(ROOT), "-f", str(config_file), *args]
        proc = subprocess.run(  # noqa: PLW1510 -- the exit status is what we test
            argv, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=600
        )
        return InvResult(argv[3:], proc.returncode, proc.stdout, proc.stderr)

    def build(self, sha: str | None = None, *flags: str, branch: str = "main") -> InvResult:
        """``inv build`` of ``sha`` (default: a new commit on ``main``)."""
        return self.inv("build", f"--sha={sha or self.commit()}", f"--branch={branch}", *flags)


def _child_env(home: Path) -> dict[str, str]:
    """The environment a task sees: PATH and docker access, no CI variables, no secrets."""
    keep = ("PATH", "DOCKER_HOST", "SHATAG_TOOLS_DIR", "LANG", "LC_ALL")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["HOME"] = str(home)
    env.setdefault("PATH", os.defpath)
    tools = Path(os.environ.get("SHATAG_TOOLS_DIR", str(Path.home() / ".cache/shatag/tools")))
    if (tools / "bin").is_dir():
        env["PATH"] = f"{tools / 'bin'}{os.pathsep}{env['PATH']}"
    env.update(coverage_env())
    return env


@pytest.fixture
def make_world(tmp_path: Path, registry: Registry) -> Callable[..., World]:
    """Factory: ``make_world(registry=..., **config_overrides)`` → an isolated :class:`World`."""

    def make(reg: Registry | None = None, **overrides: Any) -> World:
        reg = reg or registry
        root = tmp_path / f"world-{secrets.token_hex(3)}"
        (root / "home").mkdir(parents=True)
        name = f"c{secrets.token_hex(4)}"
        config: dict[str, Any] = {
            "canonical_repository": f"{reg.host}/{name}/api",
            "staging_repository": f"{reg.host}/{name}/api-staging",
            "context": str(root / "context"),
            "metadata_dir": str(root / "build" / "metadata"),
            "sbom_dir": str(root / "build" / "sbom"),
            "state_dir": str(root / ".shatag"),
            "registry_retries": 1,
            "registry_timeout_sec": 5.0,
            "environments": {
                "production": {
                    "repository_type": "canonical",
                    "targets": [
                        {"kind": "tfvars", "path": str(root / "infra" / "image.auto.tfvars.json")}
                    ],
                },
                "preview": {
                    "repository_type": "staging",
                    "targets": [
                        {"kind": "tfvars", "path": str(root / "infra" / "preview.auto.tfvars.json")}
                    ],
                },
            },
        }
        config.update(overrides)
        world = World(root=root, registry=reg, env=_child_env(root / "home"), config=config)
        world.write_context()
        world.git("init", "-q", "-b", "main")
        return world

    return make


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    return make_world()
