"""SBOM with the real syft, attestation with the real cosign, on a real registry (FR-008).

A missing syft or cosign fails these tests (CI installs both with ci/install-tools.sh).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shatag._testing.localregistry import LocalRegistry
from shatag.config import Settings
from shatag.core import parse_repository
from shatag.errors import ToolFailure
from shatag.supplychain import sbom, signing
from shatag.supplychain.registry import RegistryClient
from tests.conftest import App, InvResult
from tests.integration._signing_support import (
    build_and_push,
    env_with_tools,
    fake_tool,
    generate_key_pair,
    tag_digest,
    tool_path,
)

pytestmark = [pytest.mark.needs_syft, pytest.mark.needs_cosign]

PASSWORD = "canary-sbom-pw-91ac"
SHA = "ab" * 20


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tool_path("cosign")
    return generate_key_pair(tmp_path_factory.mktemp("sbom-keys") / "k", PASSWORD)


def _settings(registry: LocalRegistry, tmp_path: Path, keys: tuple[Path, Path]) -> Settings:
    return Settings.from_mapping(
        {
            "canonical_repository": f"{registry.address}/sbom",
            "staging_repository": f"{registry.address}/sbom-staging",
            "sbom_dir": str(tmp_path / "sbom"),
            "cosign_key": str(keys[0]),
            "cosign_public_key": str(keys[1]),
        }
    )


def test_fr008_sbom_names_sha_lists_busybox_and_keeps_digest(
    registry: LocalRegistry, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    tool_path("syft")
    settings = _settings(registry, tmp_path, keys)
    digest = build_and_push(tmp_path, f"{settings.canonical}:{SHA}", "sbom")
    env = {**env_with_tools("syft", "cosign"), "COSIGN_PASSWORD": PASSWORD}

    started = time.monotonic()
    result = sbom.generate_sbom(settings.sbom, settings.canonical, SHA, digest, env=env)
    elapsed = time.monotonic() - started

    assert result.status == "generated", result.detail
    path = Path(result.path)
    assert path.is_file()
    assert SHA in path.name
    assert result.sbom_ref == str(path)
    assert result.sbom_digest.startswith("sha256:")
    doc = json.loads(path.read_bytes())
    assert doc["spdxVersion"].startswith("SPDX-")
    names = {p["name"] for p in doc["packages"]}
    assert "busybox" in names, names
    files = {f.get("fileName") for f in doc.get("files", [])}
    assert "bin/busybox" in files or "/bin/busybox" in files, files
    # The image was read, not changed: the SHA tag still points at the same digest.
    assert tag_digest(registry, "sbom", SHA) == digest
    assert elapsed < 60, f"syft took {elapsed:.1f}s"

    # Attach it (signed) and verify the attestation; the digest still does not move.
    image = f"{settings.canonical}@{digest}"
    assert sbom.verify_sbom_attestation(settings.signing, image, env=env).reason == "no_signature"
    sbom.attest_sbom(settings.signing, image, result, env=env)
    verified = sbom.verify_sbom_attestation(settings.signing, image, env=env)
    assert (verified.status, verified.reason) == ("verified", "n/a")
    assert tag_digest(registry, "sbom", SHA) == digest
    # An attestation checked against another key is invalid, not verified.
    other_pub = generate_key_pair(tmp_path / "other", "x-other-pw")[1]
    wrong = Settings.from_mapping(
        {
            "canonical_repository": str(settings.canonical),
            "staging_repository": str(settings.staging),
            "cosign_public_key": str(other_pub),
        }
    )
    assert sbom.verify_sbom_attestation(wrong.signing, image, env=env).reason == "invalid"


def test_fr008_sbom_without_syft_is_tool_missing(
    registry: LocalRegistry, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    settings = _settings(registry, tmp_path, keys)
    digest = build_and_push(tmp_path, f"{settings.canonical}:{'cd' * 20}", "sbom-nosyft")
    result = sbom.generate_sbom(
        settings.sbom, settings.canonical, "cd" * 20, digest, env={"PATH": str(tmp_path)}
    )
    assert result.status == "tool_missing"
    assert not sbom.sbom_path(settings.sbom, "cd" * 20).exists()


def test_fr008_syft_failing_is_tool_failure(
    tmp_path: Path, keys: tuple[Path, Path], registry: LocalRegistry
) -> None:
    """A real syft against a closed port: it runs and fails -> TOOL_FAILURE, no SBOM file."""
    tool_path("syft")
    settings = _settings(registry, tmp_path, keys)
    repo = parse_repository("127.0.0.1:9/sbom")
    with pytest.raises(ToolFailure) as excinfo:
        sbom.generate_sbom(
            settings.sbom, repo, SHA, "sha256:" + "e" * 64, env=env_with_tools("syft")
        )
    assert excinfo.value.code == "TOOL_FAILURE"
    assert not sbom.sbom_path(settings.sbom, SHA).exists()


def test_fr008_fr010_signing_does_not_change_digest(
    registry: LocalRegistry, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    settings = _settings(registry, tmp_path, keys)
    sha = "ef" * 20
    digest = build_and_push(tmp_path, f"{settings.canonical}:{sha}", "sign-digest")
    env = {**env_with_tools("cosign"), "COSIGN_PASSWORD": PASSWORD}
    signing.sign_image(settings.signing, f"{settings.canonical}@{digest}", env=env)
    assert tag_digest(registry, "sbom", sha) == digest


def _container_package(sbom_file: Path) -> dict[str, Any]:
    doc = json.loads(sbom_file.read_text())
    roots = [p for p in doc["packages"] if p.get("primaryPackagePurpose") == "CONTAINER"]
    assert len(roots) == 1, roots
    return dict(roots[0])


def test_fr008_build_scans_the_image_alongside_the_push_and_names_its_pushed_config(
    inv: Callable[..., InvResult], shatag_env: dict[str, str], make_app: Callable[..., App]
) -> None:
    """A fresh build's SBOM comes from the local scan (started with the push): it names the
    image ID, which the registry's manifest for the SHA tag carries as its config digest."""
    tool_path("syft")
    app = make_app('{"version": "sbom-local"}')
    env = {**shatag_env, "INVOKE_SHATAG_CONTEXT": str(app.path)}
    result = inv(["build", f"--sha={app.sha}", "--branch=main"], env)
    assert result.returncode == 0, result.stderr
    record = result.record
    assert record["sbom_status"] == "generated"
    root = _container_package(Path(record["sbom_ref"]))
    repo = parse_repository(record["repository"])
    pushed_config = RegistryClient(repo, env={}).config_digest(app.sha, "linux/amd64")
    assert root["versionInfo"] == record["pre_push_digest"] == pushed_config
    assert root["name"] == f"{record['repository']}:{app.sha}"
    names = {p["name"] for p in json.loads(Path(record["sbom_ref"]).read_text())["packages"]}
    assert "busybox" in names
    assert "scanning the registry instead" not in result.stderr


def test_fr008_fake_syft_refusing_the_daemon_falls_back_to_the_registry_scan(
    inv: Callable[..., InvResult],
    shatag_env: dict[str, str],
    make_app: Callable[..., App],
    tmp_path: Path,
) -> None:
    """syft that cannot reach the engine (a wrapper refusing ``docker:`` sources, then the real
    syft): the build still gets its SBOM, read from the registry by the pushed digest."""
    real = tool_path("syft")
    refuse = 'case "$*" in *docker:*) echo "fake: no docker daemon here" >&2; exit 1;; esac\n'
    bindir = fake_tool(tmp_path / "fake", "syft", refuse + f'exec {real} "$@"\n')
    app = make_app('{"version": "sbom-fallback"}')
    env = {
        **shatag_env,
        "INVOKE_SHATAG_CONTEXT": str(app.path),
        "PATH": f"{bindir}:{shatag_env['PATH']}",
    }
    result = inv(["build", f"--sha={app.sha}", "--branch=main"], env)
    assert result.returncode == 0, result.stderr
    record = result.record
    assert record["sbom_status"] == "generated"
    assert "scanning the registry instead" in result.stderr
    assert _container_package(Path(record["sbom_ref"]))["versionInfo"] == record["image_digest"]
