"""Auth + TLS (issue 6): a registry with htpasswd auth and a self-signed certificate.

The fixture creates a CA and a server certificate for 127.0.0.1 with ``openssl``, a bcrypt
htpasswd file (password: the session's canary), starts a real ``docker-registry`` with both,
and installs the CA as ``/etc/docker/certs.d/127.0.0.1:PORT/ca.crt`` -- where the docker daemon
looks, and where shatag looks, for that registry. Credentials come from ``docker login`` into a
throwaway ``DOCKER_CONFIG``. Then build, deploy and rollback must work; wrong or missing
credentials must fail REGISTRY_AUTH before anything changes.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shatag._testing.localregistry import LocalRegistry, free_port
from shatag.supplychain.registry import DEFAULT_CERTS_DIR
from tests.reliability.conftest import (
    CANARY_REGISTRY,
    Built,
    Ledger,
    Site,
    World,
    describe,
    error_code,
    new_app,
    rinv,
    world_env,
)

USER = "shatag-ci"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@dataclass
class SecureRegistry:
    registry: LocalRegistry
    ca: Path
    good: Path  # DOCKER_CONFIG after `docker login`
    bad: Path  # DOCKER_CONFIG with a wrong password
    empty: Path  # DOCKER_CONFIG without credentials


@pytest.fixture(scope="module")
def secure_registry(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SecureRegistry]:
    bcrypt = pytest.importorskip("bcrypt")
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("secure-registry")
    port = free_port()
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=shatag reliability CA",
        cwd=d,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1",
        cwd=d,
    )  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext",
        cwd=d,
    )  # fmt: skip
    hashed = bcrypt.hashpw(CANARY_REGISTRY.encode(), bcrypt.gensalt(rounds=5)).decode()
    (d / "htpasswd").write_text(f"{USER}:{hashed}\n")
    certs = DEFAULT_CERTS_DIR / f"127.0.0.1:{port}"
    certs.mkdir(parents=True, exist_ok=True)
    shutil.copy(d / "ca.crt", certs / "ca.crt")
    reg = LocalRegistry(
        d / "registry",
        port=port,
        htpasswd=d / "htpasswd",
        cert=d / "server.crt",
        key=d / "server.key",
    )
    reg.start()
    good, bad, empty = d / "cfg-good", d / "cfg-bad", d / "cfg-empty"
    for cfg in (good, bad, empty):
        cfg.mkdir()
    subprocess.run(
        ["docker", "--config", str(good), "login", "-u", USER, "--password-stdin", reg.address],
        input=CANARY_REGISTRY,
        text=True,
        check=True,
        capture_output=True,
        timeout=60,
    )
    wrong = base64.b64encode(f"{USER}:wrong-{uuid.uuid4().hex[:6]}".encode()).decode()
    (bad / "config.json").write_text(json.dumps({"auths": {reg.address: {"auth": wrong}}}))
    (empty / "config.json").write_text("{}")
    try:
        yield SecureRegistry(reg, d / "ca.crt", good, bad, empty)
    finally:
        reg.stop()
        shutil.rmtree(certs, ignore_errors=True)


@pytest.fixture
def secure_world(
    secure_registry: SecureRegistry, tmp_path: Path, ledger: Ledger
) -> tuple[World, dict[str, str]]:
    ledger.watch(tmp_path)
    ledger.exclude(secure_registry.good)  # the credential store itself
    ledger.exclude(secure_registry.bad)
    name = f"sec-{uuid.uuid4().hex[:8]}"
    env = world_env(secure_registry.registry, tmp_path, name)
    gh = tmp_path / "github"
    gh.mkdir()
    env |= {
        "DOCKER_CONFIG": str(secure_registry.good),
        # Go tools (cosign, syft) trust the same CA the way an operator's system would.
        "SSL_CERT_FILE": str(secure_registry.ca),
        "SHATAG_DEBUG": "1",  # the most verbose output: every command line is logged
        "GITHUB_ACTIONS": "true",
        "GITHUB_OUTPUT": str(gh / "output"),
        "GITHUB_STEP_SUMMARY": str(gh / "summary.md"),
    }
    world = World(
        env,
        new_app(tmp_path),
        f"{secure_registry.registry.address}/{name}",
        f"{secure_registry.registry.address}/{name}-staging",
        tmp_path,
    )
    return world, env


def test_auth_and_tls_build_deploy_rollback(
    ledger: Ledger,
    secure_registry: SecureRegistry,
    secure_world: tuple[World, dict[str, str]],
    make_site: Callable[..., Site],
) -> None:
    world, env = secure_world
    built: list[Built] = []
    for label in ("S1", "S2"):
        img = world.build(ledger, f'{{"release": "{label}"}}')
        built.append(img)
    site = make_site()
    site.world = world
    s1, s2 = built
    deploy1 = site.deploy(ledger, s1)
    deploy2 = site.deploy(ledger, s2)
    rollback = site.rollback(ledger)
    history = site.inv(ledger, "history", f"--env={site.env_name}")
    snap = site.snapshot()
    ok = (
        all(r.returncode == 0 for r in (deploy1, deploy2, rollback, history))
        and site.sdl_is(snap, s1)
        and site.tfvars_is(snap, s1)
    )
    ledger.record(
        "htpasswd + self-signed TLS registry, credentials from docker login",
        "build, deploy, rollback all work over TLS with the docker config's credentials",
        f"builds ok; deploy {describe(deploy1)}, {describe(deploy2)}; rollback "
        f"{describe(rollback)}; targets at S1={site.sdl_is(snap, s1)}",
        ok,
    )
    assert ok, [r.stderr[-400:] for r in (deploy1, deploy2, rollback, history)]

    # wrong and missing credentials: REGISTRY_AUTH before anything changes
    before = site.snapshot()
    results = {}
    for label, cfg in (
        ("wrong password", secure_registry.bad),
        ("no credentials", secure_registry.empty),
    ):
        ledger.count("faults_injected")
        site.extra_env = {"DOCKER_CONFIG": str(cfg)}
        results[f"deploy, {label}"] = site.deploy(ledger, s2)
        results[f"rollback, {label}"] = site.rollback(ledger, s2)
        sha = world.app.commit(f'{{"auth": "{label}"}}', label)
        results[f"build, {label}"] = rinv(
            ledger,
            ["build", f"--sha={sha}", "--branch=main"],
            {**env, "DOCKER_CONFIG": str(cfg), "INVOKE_SHATAG_CONTEXT": str(world.app.path)},
        )
    site.extra_env = {}
    unchanged = site.snapshot() == before
    ok = all(error_code(r) == "REGISTRY_AUTH" for r in results.values()) and unchanged
    ledger.record(
        "registry refuses credentials (401: wrong password, none)",
        "REGISTRY_AUTH naming `docker login`, for deploy, rollback and build; nothing changed",
        "; ".join(f"{k}: {describe(r)}" for k, r in results.items()) + f"; unchanged={unchanged}",
        ok and all("docker login" in r.stderr for r in results.values()),
    )
    assert ok, {k: r.stderr[-300:] for k, r in results.items()}
