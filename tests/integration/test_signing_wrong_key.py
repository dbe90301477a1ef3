"""Issue 24, item 7 (signature messages): an image signed by a key that is not the trusted one,
with the real cosign (two real key pairs) and a real registry.

Under ``soft`` it is used, but never silently: a warning on stderr says it is signed by a key
that is not trusted. Under ``enforce`` the refusal says exactly that, not "sign it" (it *is*
signed).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from shatag._testing.localregistry import LocalRegistry
from shatag.config import Settings
from shatag.errors import SignatureRequired
from shatag.supplychain import signing
from shatag.supplychain.evidence import verify_image
from tests.conftest import InvResult
from tests.integration._signing_support import (
    build_and_push,
    env_with_tools,
    generate_key_pair,
    tool_path,
)

pytestmark = pytest.mark.needs_cosign

PASSWORD_A = "canary-pw-A-24wk"
PASSWORD_B = "canary-pw-B-24wk"
SHA = "7" * 40
NOT_TRUSTED = "signed by a key that is not trusted"


class Keys:
    def __init__(self, root: Path) -> None:
        self.a = generate_key_pair(root / "key-a", PASSWORD_A)
        self.b = generate_key_pair(root / "key-b", PASSWORD_B)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    tool_path("cosign")
    return Keys(tmp_path_factory.mktemp("wrong-key"))


def _signed_with_a(root: Path, keys: Keys, repo: str, label: str) -> tuple[str, Settings]:
    """A pushed image signed with key A, and settings that trust only key B."""
    image = f"{repo}@{build_and_push(root, f'{repo}:{SHA}', label)}"
    signer = Settings.from_mapping(
        {"canonical_repository": repo, "cosign_key": str(keys.a[0]), "tool_timeout_sec": 60.0}
    )
    signing.sign_image(
        signer.signing, image, env={**env_with_tools("cosign"), "COSIGN_PASSWORD": PASSWORD_A}
    )
    trusting_b = Settings.from_mapping(
        {
            "canonical_repository": repo,
            "cosign_public_key": str(keys.b[1]),
            "tool_timeout_sec": 60.0,
        }
    )
    return image, trusting_b


def test_soft_policy_warns_about_a_signature_by_an_untrusted_key(
    registry: LocalRegistry, tmp_path: Path, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    repo = f"{registry.address}/wrong-key-soft"
    image, settings = _signed_with_a(tmp_path, keys, repo, "soft")
    caplog.set_level(logging.WARNING, logger="shatag.supplychain")
    outcome = verify_image(settings.signing, image, env=env_with_tools("cosign"))
    assert (outcome.status, outcome.reason) == ("unverified", "invalid")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, caplog.text
    assert image in warnings[0]
    assert NOT_TRUSTED in warnings[0]
    assert str(keys.b[1]) in warnings[0]
    assert "soft" in warnings[0]


def test_soft_policy_does_not_warn_about_an_unsigned_image(
    registry: LocalRegistry, tmp_path: Path, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    repo = f"{registry.address}/wrong-key-unsigned"
    image = f"{repo}@{build_and_push(tmp_path, f'{repo}:{SHA}', 'unsigned')}"
    settings = Settings.from_mapping(
        {"canonical_repository": repo, "cosign_public_key": str(keys.b[1])}
    )
    caplog.set_level(logging.WARNING, logger="shatag.supplychain")
    outcome = verify_image(settings.signing, image, env=env_with_tools("cosign"))
    assert (outcome.status, outcome.reason) == ("unverified", "no_signature")
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_enforce_says_the_key_is_not_trusted_not_sign_it(
    registry: LocalRegistry, tmp_path: Path, keys: Keys
) -> None:
    repo = f"{registry.address}/wrong-key-enforce"
    image, soft = _signed_with_a(tmp_path, keys, repo, "enforce")
    settings = Settings.from_mapping(
        {
            "canonical_repository": repo,
            "cosign_public_key": str(keys.b[1]),
            "signature_policy": "enforce",
            "tool_timeout_sec": 60.0,
        }
    )
    assert soft.signing.policy == "soft"
    with pytest.raises(SignatureRequired) as info:
        verify_image(settings.signing, image, env=env_with_tools("cosign"))
    message = info.value.message
    assert NOT_TRUSTED in message
    assert "inv build --sign" not in message
    assert "no matching signatures" in message


def test_enforce_on_an_unsigned_image_still_says_sign_it(
    registry: LocalRegistry, tmp_path: Path, keys: Keys
) -> None:
    repo = f"{registry.address}/wrong-key-enforce-unsigned"
    image = f"{repo}@{build_and_push(tmp_path, f'{repo}:{SHA}', 'enforce-unsigned')}"
    settings = Settings.from_mapping(
        {
            "canonical_repository": repo,
            "cosign_public_key": str(keys.b[1]),
            "signature_policy": "enforce",
        }
    )
    with pytest.raises(SignatureRequired) as info:
        verify_image(settings.signing, image, env=env_with_tools("cosign"))
    assert "is not signed" in info.value.message
    assert "inv build --sign" in info.value.message
    assert NOT_TRUSTED not in info.value.message


@pytest.mark.parametrize("policy", ["soft", "enforce"])
def test_cli_deploy_of_an_image_signed_by_an_untrusted_key(
    shatag_env: dict[str, str],
    inv: Callable[..., InvResult],
    tmp_path: Path,
    keys: Keys,
    policy: str,
) -> None:
    """``inv deploy`` as CI runs it: soft deploys and warns on stderr; enforce refuses."""
    repo = shatag_env["INVOKE_SHATAG_CANONICAL_REPOSITORY"]
    image, _ = _signed_with_a(tmp_path, keys, repo, f"cli-{policy}")
    tfvars = tmp_path / "image.auto.tfvars.json"
    tfvars.write_text('{"image_sha": ""}\n')
    config = tmp_path / "shatag.yaml"
    config.write_text(
        json.dumps(
            {
                "shatag": {
                    "signature_policy": policy,
                    "cosign_public_key": str(keys.b[1]),
                    "environments": {
                        "wk": {
                            "repository_type": "canonical",
                            "targets": [{"kind": "tfvars", "path": str(tfvars)}],
                        }
                    },
                }
            }
        )
    )
    result = inv(["-f", str(config), "deploy", f"--sha={SHA}", "--env=wk"], shatag_env)
    warned = [ln for ln in result.stderr.splitlines() if NOT_TRUSTED in ln]
    if policy == "soft":
        assert result.returncode == 0, result.stderr
        assert (result.record["signature_status"], result.record["signature_reason"]) == (
            "unverified",
            "invalid",
        )
        assert json.loads(tfvars.read_text())["image_digest"] == image.rpartition("@")[2]
        assert len(warned) == 1, result.stderr
        assert warned[0].startswith("shatag: warning: ")
    else:
        assert result.returncode != 0
        assert "error: SIGNATURE_REQUIRED:" in result.stderr
        assert NOT_TRUSTED in result.stderr
        assert "inv build --sign" not in result.stderr
        assert json.loads(tfvars.read_text()) == {"image_sha": ""}
    assert PASSWORD_A not in result.stdout + result.stderr
