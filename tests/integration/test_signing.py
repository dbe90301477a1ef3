"""Signing and soft verification against a real registry with the real cosign (FR-010/014).

Only the crashing/hanging cosign cases use a fake: a real script named ``cosign`` on PATH,
because a real cosign cannot be made to crash or hang on demand (the test names say so).
A missing cosign fails these tests; CI installs it (ci/install-tools.sh).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from shatag._testing.localregistry import LocalRegistry
from shatag.config import Settings
from shatag.errors import ConfigError, SignatureRequired, SoftVerifyToolError, ToolFailure
from shatag.supplychain import signing
from tests.conftest import App, InvResult
from tests.integration._signing_support import (
    build_and_push,
    env_with_tools,
    fake_tool,
    generate_key_pair,
    tag_digest,
    tool_path,
)

pytestmark = pytest.mark.needs_cosign

PASSWORD_A = "canary-pw-A-7f3e91"  # must never show up in any output
PASSWORD_B = "canary-pw-B-2c8d44"
SHA_X = "1" * 40
SHA_Y = "2" * 40


@dataclass
class World:
    registry: LocalRegistry
    root: Path
    key_a: tuple[Path, Path]
    key_b: tuple[Path, Path]
    env: dict[str, str]
    repo: str

    def settings(self, **overrides: object) -> Settings:
        raw: dict[str, object] = {
            "canonical_repository": self.repo,
            "staging_repository": self.repo + "-staging",
            "cosign_key": str(self.key_a[0]),
            "cosign_public_key": str(self.key_a[1]),
            "tool_timeout_sec": 60.0,
        }
        raw.update(overrides)
        return Settings.from_mapping(raw)

    def push(self, tag: str, label: str) -> str:
        digest = build_and_push(self.root, f"{self.repo}:{tag}", label)
        return f"{self.repo}@{digest}"


@pytest.fixture(scope="module")
def world(registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory) -> World:
    tool_path("cosign")
    root = tmp_path_factory.mktemp("signing")
    return World(
        registry=registry,
        root=root,
        key_a=generate_key_pair(root / "key-a", PASSWORD_A),
        key_b=generate_key_pair(root / "key-b", PASSWORD_B),
        env={**env_with_tools("cosign"), "COSIGN_PASSWORD": PASSWORD_A},
        repo=f"{registry.address}/signing",
    )


@pytest.fixture(scope="module")
def signed_image(world: World) -> str:
    image = world.push(SHA_X, "signed")
    signing.sign_image(world.settings().signing, image, env=world.env)
    return image


def test_fr010_sign_by_digest_leaves_sha_tag_unchanged(world: World) -> None:
    image = world.push("3" * 40, "tag-unchanged")
    digest = image.rpartition("@")[2]
    started = time.monotonic()
    signing.sign_image(world.settings().signing, image, env=world.env)
    elapsed = time.monotonic() - started
    assert tag_digest(world.registry, "signing", "3" * 40) == digest
    assert elapsed < 30, f"signing took {elapsed:.1f}s"


def test_fr014_signed_with_a_verifies_with_a(world: World, signed_image: str) -> None:
    started = time.monotonic()
    result = signing.verify_signature(world.settings().signing, signed_image, env=world.env)
    elapsed = time.monotonic() - started
    assert (result.status, result.reason) == ("verified", "n/a")
    assert elapsed < 30, f"verification took {elapsed:.1f}s"


def test_fr014_signed_with_a_verified_with_b_is_invalid(world: World, signed_image: str) -> None:
    settings = world.settings(cosign_public_key=str(world.key_b[1]))
    result = signing.verify_signature(settings.signing, signed_image, env=world.env)
    assert (result.status, result.reason) == ("unverified", "invalid")
    assert "no matching signatures" in result.detail


def test_fr014_unsigned_image_is_no_signature(world: World) -> None:
    image = world.push("4" * 40, "unsigned")
    result = signing.verify_signature(world.settings().signing, image, env=world.env)
    assert (result.status, result.reason) == ("unverified", "no_signature")


def test_fr014_missing_public_key_file_is_key_not_found(world: World, signed_image: str) -> None:
    settings = world.settings(cosign_public_key=str(world.root / "nope.pub"))
    result = signing.verify_signature(settings.signing, signed_image, env=world.env)
    assert (result.status, result.reason) == ("unverified", "key_not_found")


def test_fr014_no_trust_configured_is_key_not_found(world: World, signed_image: str) -> None:
    settings = world.settings(cosign_public_key="")
    result = signing.verify_signature(settings.signing, signed_image, env=world.env)
    assert (result.status, result.reason) == ("unverified", "key_not_found")


def test_fr014_unreadable_public_key_is_key_not_found(world: World, signed_image: str) -> None:
    # A private key where the public one belongs: cosign says "loading public key: ...".
    settings = world.settings(cosign_public_key=str(world.key_a[0]))
    result = signing.verify_signature(settings.signing, signed_image, env=world.env)
    assert (result.status, result.reason) == ("unverified", "key_not_found")


def test_fr014_cosign_absent_from_path_is_tool_missing(
    world: World, signed_image: str, tmp_path: Path
) -> None:
    env = {"PATH": str(tmp_path), "HOME": world.env["HOME"]}
    result = signing.verify_signature(world.settings().signing, signed_image, env=env)
    assert (result.status, result.reason) == ("unverified", "tool_missing")
    signing.enforce_policy(world.settings().signing, result)  # soft: no exception


def test_fr014_enforce_and_unsigned_fails_with_code(world: World) -> None:
    image = world.push("5" * 40, "enforce-unsigned")
    settings = world.settings(signature_policy="enforce")
    result = signing.verify_signature(settings.signing, image, env=world.env)
    with pytest.raises(SignatureRequired) as excinfo:
        signing.enforce_policy(settings.signing, result)
    assert excinfo.value.code == "SIGNATURE_REQUIRED"
    assert excinfo.value.exit_status != 0


def test_fr014_enforce_and_signed_passes(world: World, signed_image: str) -> None:
    settings = world.settings(signature_policy="enforce")
    signing.enforce_policy(
        settings.signing, signing.verify_signature(settings.signing, signed_image, env=world.env)
    )


def test_fr014_registry_unreachable_is_soft_verify_tool_error(world: World) -> None:
    # A real cosign against a real closed port: "connection refused", exit 1.
    settings = world.settings()
    image = "127.0.0.1:9/signing@sha256:" + "a" * 64
    with pytest.raises(SoftVerifyToolError) as excinfo:
        signing.verify_signature(settings.signing, image, env=world.env)
    assert excinfo.value.code == "SOFT_VERIFY_TOOL_ERROR"
    assert "connection refused" in str(excinfo.value)


def test_fr014_fake_crashing_cosign_is_soft_verify_tool_error(
    world: World, signed_image: str, tmp_path: Path
) -> None:
    bindir = fake_tool(
        tmp_path,
        "cosign",
        'if [ "$1" = version ]; then echo "GitVersion:    v2.6.5"; exit 0; fi\n'
        "echo 'panic: runtime error: garbage \\x00\\xff' >&2\necho '{not json' \nexit 2\n",
    )
    env = {**world.env, "PATH": f"{bindir}:/usr/bin:/bin"}
    with pytest.raises(SoftVerifyToolError, match="exit 2"):
        signing.verify_signature(world.settings().signing, signed_image, env=env)


def test_fr014_fake_cosign_crashing_everywhere_is_soft_verify_tool_error(
    world: World, signed_image: str, tmp_path: Path
) -> None:
    bindir = fake_tool(tmp_path, "cosign", "echo '%%garbage%%'\nexit 2\n")
    env = {**world.env, "PATH": f"{bindir}:/usr/bin:/bin"}
    with pytest.raises(SoftVerifyToolError):
        signing.verify_signature(world.settings().signing, signed_image, env=env)


def test_fr014_fake_cosign_exit0_with_garbage_is_not_verified(
    world: World, signed_image: str, tmp_path: Path
) -> None:
    bindir = fake_tool(tmp_path, "cosign", "echo 'Verified OK (not really)'\nexit 0\n")
    env = {**world.env, "PATH": f"{bindir}:/usr/bin:/bin"}
    with pytest.raises(SoftVerifyToolError):
        signing.verify_signature(world.settings().signing, signed_image, env=env)


def test_fr014_fake_hanging_cosign_is_soft_verify_tool_error(
    world: World, signed_image: str, tmp_path: Path
) -> None:
    bindir = fake_tool(
        tmp_path,
        "cosign",
        'if [ "$1" = version ]; then echo "GitVersion:    v2.6.5"; exit 0; fi\nexec sleep 60\n',
    )
    env = {**world.env, "PATH": f"{bindir}:/usr/bin:/bin"}
    settings = world.settings(tool_timeout_sec=2.0)
    started = time.monotonic()
    with pytest.raises(SoftVerifyToolError, match="did not answer within 2s"):
        signing.verify_signature(settings.signing, signed_image, env=env)
    assert time.monotonic() - started < 15


def test_fr014_tag_repointed_after_signing_is_not_verified(world: World) -> None:
    sha = "6" * 40
    original = world.push(sha, "tamper-original")
    signing.sign_image(world.settings().signing, original, env=world.env)
    assert signing.verify_signature(world.settings().signing, original, env=world.env).verified
    # Someone re-points the SHA tag to a different image after signing.
    build_and_push(world.root, f"{world.repo}:{sha}", "tamper-other")
    new_digest = tag_digest(world.registry, "signing", sha)
    assert f"{world.repo}@{new_digest}" != original
    result = signing.verify_signature(
        world.settings().signing, f"{world.repo}@{new_digest}", env=world.env
    )
    assert result.status == "unverified"
    assert result.reason == "no_signature"


def test_fr014_signature_copied_to_other_image_is_invalid(world: World, signed_image: str) -> None:
    """A real signature of image X placed where image Y's signature belongs: cosign exit 12."""
    import urllib.request

    other = world.push("7" * 40, "copied-sig")
    src_tag = "sha256-" + signed_image.rpartition("sha256:")[2] + ".sig"
    dst_tag = "sha256-" + other.rpartition("sha256:")[2] + ".sig"
    accept = "application/vnd.oci.image.manifest.v1+json"
    req = urllib.request.Request(  # noqa: S310
        f"{world.registry.url}/v2/signing/manifests/{src_tag}", headers={"Accept": accept}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
        body = resp.read()
    assert json.loads(body)["layers"]
    put = urllib.request.Request(  # noqa: S310
        f"{world.registry.url}/v2/signing/manifests/{dst_tag}",
        data=body,
        method="PUT",
        headers={"Content-Type": accept},
    )
    with urllib.request.urlopen(put, timeout=5):  # noqa: S310
        pass
    result = signing.verify_signature(world.settings().signing, other, env=world.env)
    assert (result.status, result.reason) == ("unverified", "invalid")


def test_fr010_password_never_in_captured_output(
    world: World,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    image = world.push("8" * 40, "password")
    seen: list[str] = []
    signing.sign_image(world.settings().signing, image, env=world.env)
    # Wrong password: cosign fails; the error we raise must not carry either password.
    wrong_env = {**world.env, "COSIGN_PASSWORD": PASSWORD_B}
    with pytest.raises(ToolFailure) as excinfo:
        signing.sign_image(world.settings().signing, image, env=wrong_env)
    seen += [str(excinfo.value), excinfo.value.command, excinfo.value.output]
    # A key path that does not exist is a configuration error, raised before cosign runs.
    with pytest.raises(ConfigError):
        signing.sign_image(
            world.settings(cosign_key=str(tmp_path / "missing.key")).signing, image, env=world.env
        )
    captured = capsys.readouterr()
    seen += [captured.out, captured.err, caplog.text]
    for text in seen:
        assert PASSWORD_A not in text
        assert PASSWORD_B not in text
    assert "cosign sign" in caplog.text  # the command was logged, without the password


# --- the CLI, as CI runs it ---------------------------------------------------------------


def _cli_env(world: World, shatag_env: dict[str, str], **extra: str) -> dict[str, str]:
    return {
        **shatag_env,
        "INVOKE_SHATAG_COSIGN_KEY": str(world.key_a[0]),
        "INVOKE_SHATAG_COSIGN_PUBLIC_KEY": str(world.key_a[1]),
        "COSIGN_PASSWORD": PASSWORD_A,
        **extra,
    }


def _push_for(env: dict[str, str], world: World, sha: str, label: str) -> str:
    repo = env["INVOKE_SHATAG_CANONICAL_REPOSITORY"]
    return f"{repo}@{build_and_push(world.root, f'{repo}:{sha}', label)}"


def test_fr014_cli_verify_without_cosign_is_tool_missing_exit0(
    world: World, shatag_env: dict[str, str], inv: Callable[..., InvResult], tmp_path: Path
) -> None:
    env = _cli_env(world, shatag_env, SHATAG_TOOLS_DIR=str(tmp_path / "no-tools"))
    env["PATH"] = "/usr/bin:/bin"
    _push_for(env, world, SHA_X, "cli-no-cosign")
    result = inv(["verify", f"--sha={SHA_X}"], env)
    assert result.returncode == 0, result.stderr
    record = result.record
    assert (record["signature_status"], record["signature_reason"]) == (
        "unverified",
        "tool_missing",
    )


def test_fr014_cli_enforce_unsigned_fails_with_code(
    world: World, shatag_env: dict[str, str], inv: Callable[..., InvResult]
) -> None:
    env = _cli_env(world, shatag_env, INVOKE_SHATAG_SIGNATURE_POLICY="enforce")
    _push_for(env, world, SHA_Y, "cli-enforce")
    result = inv(["verify", f"--sha={SHA_Y}"], env)
    assert result.returncode != 0
    assert "error: SIGNATURE_REQUIRED:" in result.stderr
    assert result.record["error_code"] == "SIGNATURE_REQUIRED"
    assert "Traceback" not in result.stderr


def test_fr014_cli_fake_crashing_cosign_fails_soft_verify_tool_error(
    world: World, shatag_env: dict[str, str], inv: Callable[..., InvResult], tmp_path: Path
) -> None:
    bindir = fake_tool(tmp_path / "fake", "cosign", "echo 'garbage' >&2\nexit 2\n")
    env = _cli_env(world, shatag_env, SHATAG_TOOLS_DIR=str(tmp_path / "no-tools"))
    env["PATH"] = f"{bindir}:/usr/bin:/bin"
    _push_for(env, world, SHA_X, "cli-crash")
    result = inv(["verify", f"--sha={SHA_X}"], env)
    assert result.returncode != 0
    assert "error: SOFT_VERIFY_TOOL_ERROR:" in result.stderr
    assert result.record["error_code"] == "SOFT_VERIFY_TOOL_ERROR"


def test_fr010_cli_build_sign_then_verify_and_coverage(
    world: World,
    shatag_env: dict[str, str],
    inv: Callable[..., InvResult],
    make_app: Callable[..., App],
) -> None:
    tool_path("syft")
    app = make_app('{"version": "signed"}')
    env = _cli_env(world, shatag_env, INVOKE_SHATAG_CONTEXT=str(app.path))
    build = inv(["build", f"--sha={app.sha}", "--branch=main", "--sign"], env)
    assert build.returncode == 0, build.stderr
    record = build.record
    assert (record["signature_status"], record["signature_reason"]) == ("verified", "n/a")
    assert record["sbom_status"] == "generated"
    assert app.sha in record["sbom_ref"]
    assert record["sbom_digest"].startswith("sha256:")
    metadata = json.loads((Path(env["INVOKE_SHATAG_METADATA_DIR"]) / f"{app.sha}.json").read_text())
    assert metadata["sbom_digest"] == record["sbom_digest"]

    verify = inv(["verify", f"--sha={app.sha}"], env)
    assert verify.returncode == 0, verify.stderr
    assert verify.record["signature_status"] == "verified"
    assert verify.record["image_digest"] == record["image_digest"]
    assert "sbom attestation verified (n/a)" in verify.stderr

    # The deploy record reports the signature and the SBOM attestation of the same digest.
    config = world.root / "deploy.yaml"
    tfvars = world.root / "image.auto.tfvars.json"
    config.write_text(
        "shatag:\n  environments:\n    files:\n      repository_type: canonical\n"
        f"      targets:\n        - {{kind: tfvars, path: {tfvars}}}\n"
    )
    deploy = inv(["-f", str(config), "deploy", f"--sha={app.sha}", "--env=files"], env)
    assert deploy.returncode == 0, deploy.stderr
    assert (deploy.record["signature_status"], deploy.record["signature_reason"]) == (
        "verified",
        "n/a",
    )
    assert (
        deploy.record["sbom_attestation_status"],
        deploy.record["sbom_attestation_reason"],
    ) == ("verified", "n/a")
    assert json.loads(tfvars.read_text())["image_digest"] == record["image_digest"]

    cov = inv(["signatures"], env)
    assert cov.returncode == 0, cov.stderr
    assert cov.record["total"] == 1
    assert cov.record["verified_pct"] == 100.0
    assert cov.record["criterion_met"] is False  # 1 SHA is not 30
    for text in (
        build.stdout,
        build.stderr,
        verify.stdout,
        verify.stderr,
        cov.stdout,
        deploy.stdout,
        deploy.stderr,
    ):
        assert PASSWORD_A not in text
