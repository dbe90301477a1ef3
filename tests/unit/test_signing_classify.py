"""The pure cosign-output classification (FR-014). Rows come from docs/signatures.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shatag.config import Settings, SigningConfig
from shatag.errors import ConfigError, SignatureRequired, SoftVerifyToolError
from shatag.supplychain.signing import (
    CosignVersion,
    SignatureResult,
    classify_verify,
    classify_verify_attestation,
    enforce_policy,
    parse_cosign_version,
    signing_flags,
    verification_flags,
)

DIGEST = "sha256:" + "5" * 64
WARN = (
    "WARNING: Skipping tlog verification is an insecure practice that lacks transparency.\n"
    "WARNING: Could not fetch trusted_root.json from the TUF repository.\n"
)


def _ok_stdout(digest: str = DIGEST) -> str:
    return json.dumps(
        [
            {
                "critical": {
                    "identity": {"docker-reference": "127.0.0.1:5000/api"},
                    "image": {"docker-manifest-digest": digest},
                    "type": "cosign container image signature",
                },
                "optional": None,
            }
        ]
    )


# Observed with cosign v2.6.5 (see docs/signatures.md, "how observed").
OBSERVED: list[tuple[int, str, str]] = [
    (10, "Error: no signatures found\nerror during command execution: no signatures found\n",
     "no_signature"),
    (12, "Error: no matching signatures: invalid signature when validating ASN.1 encoded "
     "signature\n", "invalid"),
    (12, "Error: no matching signatures: invalid or missing digest in claim: " + DIGEST + "\n",
     "invalid"),
    (1, "Error: loading public key: open nope.pub: no such file or directory\n", "key_not_found"),
    (1, "Error: loading public key: pem to public key: PEM decoding failed\n", "key_not_found"),
    # New bundle format (cosign v3 signatures; v2 and v3 verifying them): exit 1, not 12.
    (1, "Error: no matching attestations: failed to verify signature: could not verify envelope: "
     "accepted signatures do not match threshold, Found: 0, Expected 1\n", "invalid"),
    (1, "Error: no valid bundles exist in registry\n", "no_signature"),
]  # fmt: skip

TOOL_ERRORS: list[tuple[int, str]] = [
    (1, 'Error: Get "http://127.0.0.1:9/v2/": dial tcp 127.0.0.1:9: connect: connection refused\n'),
    (1, "Error: unknown flag: --bogus\n"),
    (1, "Error: --certificate-identity or --certificate-identity-regexp is required\n"),
    (2, "panic: runtime error: invalid memory address\n"),
    (2, "Error: no signatures found\n"),  # right words, wrong exit code: not trusted
    (11, "Error: image tag not found\n"),
    (1, "Error: trusted root is required when using new bundle format\n"),
    (137, ""),
    (-9, ""),
]


@pytest.mark.parametrize(("code", "stderr", "reason"), OBSERVED)
def test_fr014_observed_cosign_answers_classify(code: int, stderr: str, reason: str) -> None:
    result = classify_verify(code, "", WARN + stderr, digest=DIGEST)
    assert (result.status, result.reason) == ("unverified", reason)
    assert "WARNING" not in result.detail


@pytest.mark.parametrize(("code", "stderr"), TOOL_ERRORS)
def test_fr014_unclassified_answers_are_tool_errors(code: int, stderr: str) -> None:
    with pytest.raises(SoftVerifyToolError) as excinfo:
        classify_verify(code, "", WARN + stderr, digest=DIGEST)
    assert excinfo.value.code == "SOFT_VERIFY_TOOL_ERROR"


def test_fr014_exit0_with_payload_for_this_digest_is_verified() -> None:
    result = classify_verify(0, _ok_stdout(), WARN, digest=DIGEST)
    assert result == SignatureResult("verified", "n/a", "")


def test_fr014_exit0_naming_another_digest_is_invalid() -> None:
    result = classify_verify(0, _ok_stdout("sha256:" + "6" * 64), "", digest=DIGEST)
    assert (result.status, result.reason) == ("unverified", "invalid")


@pytest.mark.parametrize("stdout", ["", "Verified OK", "[]", "{}", "null", "[1"])
def test_fr014_exit0_without_the_json_list_is_a_tool_error(stdout: str) -> None:
    with pytest.raises(SoftVerifyToolError):
        classify_verify(0, stdout, "", digest=DIGEST)


@given(code=st.integers(min_value=-255, max_value=255), stdout=st.text(), stderr=st.text())
def test_fr014_never_verified_without_exit0_and_json(code: int, stdout: str, stderr: str) -> None:
    """Whatever cosign prints, only exit 0 + the JSON payload for the digest means verified."""
    try:
        result = classify_verify(code, stdout, stderr, digest=DIGEST)
    except SoftVerifyToolError:
        return
    if result.verified:
        assert code == 0
        payload = json.loads(stdout)
        assert payload
        assert all(p["critical"]["image"]["docker-manifest-digest"] == DIGEST for p in payload)
    else:
        assert result.reason in ("no_signature", "invalid", "key_not_found")
        assert code != 0 or json.loads(stdout)


@given(garbage=st.text())
def test_fr014_garbage_with_crash_exit_is_always_tool_error(garbage: str) -> None:
    with pytest.raises(SoftVerifyToolError):
        classify_verify(2, garbage, garbage, digest=DIGEST)


ATTEST_OBSERVED: list[tuple[int, str, str]] = [
    (1, "Error: no matching attestations: \nerror during command execution: no matching "
     "attestations: \n", "no_signature"),
    (1, "Error: none of the attestations matched the predicate type: cyclonedx, found: "
     "https://spdx.dev/Document\n", "no_signature"),
    (1, "Error: no matching attestations: accepted signatures do not match threshold, Found: 0, "
     "Expected 1\n", "invalid"),
    (1, "Error: loading public key: open x.pub: no such file or directory\n", "key_not_found"),
]  # fmt: skip


@pytest.mark.parametrize(("code", "stderr", "reason"), ATTEST_OBSERVED)
def test_fr008_observed_attestation_answers_classify(code: int, stderr: str, reason: str) -> None:
    result = classify_verify_attestation(code, "", WARN + stderr)
    assert (result.status, result.reason) == ("unverified", reason)


def test_fr008_attestation_network_failure_is_tool_error() -> None:
    with pytest.raises(SoftVerifyToolError):
        classify_verify_attestation(1, "", "Error: Get http://x/v2/: connection refused\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GitVersion:    v2.6.5\nGitCommit: unknown", CosignVersion(2, 6, 5)),
        ("GitVersion:    v3.0.2", CosignVersion(3, 0, 2)),
        ("GitVersion: 3.1.0-rc1", CosignVersion(3, 1, 0)),
        ("cosign banner only", None),
    ],
)
def test_parse_cosign_version(text: str, expected: CosignVersion | None) -> None:
    assert parse_cosign_version(text) == expected


@given(st.text())
def test_parse_cosign_version_never_raises(text: str) -> None:
    parse_cosign_version(text)


def _settings(**raw: object) -> SigningConfig:
    return Settings.from_mapping(raw).signing


def test_fr010_key_signing_flags_v2_v3(tmp_path: Path) -> None:
    key = tmp_path / "cosign.key"
    key.write_text("k")
    settings = _settings(cosign_key=str(key))
    v2 = signing_flags(settings, CosignVersion(2, 6, 5), {})
    v3 = signing_flags(settings, CosignVersion(3, 0, 2), {})
    assert v2 == ["--key", str(key), "--tlog-upload=false"]
    assert v3 == [*v2, "--use-signing-config=false"]
    assert "COSIGN_PASSWORD" not in " ".join(v2 + v3)


def test_fr010_keyless_only_under_oidc() -> None:
    settings = _settings()
    oidc = {"ACTIONS_ID_TOKEN_REQUEST_URL": "https://token.actions.githubusercontent.com/x"}
    assert signing_flags(settings, CosignVersion(2, 6, 5), oidc) == []
    with pytest.raises(ConfigError, match="cosign_key"):
        signing_flags(settings, CosignVersion(2, 6, 5), {})


def test_fr014_verification_flags() -> None:
    missing = verification_flags(_settings())
    assert isinstance(missing, SignatureResult)
    assert missing.reason == "key_not_found"
    keyless = verification_flags(
        _settings(
            keyless_identity="^https://github.com/o/r/",
            keyless_issuer="https://token.actions.githubusercontent.com",
        ),
    )
    assert keyless == [
        "--certificate-identity-regexp",
        "^https://github.com/o/r/",
        "--certificate-oidc-issuer",
        "https://token.actions.githubusercontent.com",
    ]
    kms = verification_flags(_settings(cosign_public_key="awskms:///alias/x"))
    assert kms == ["--key", "awskms:///alias/x", "--insecure-ignore-tlog"]
    root = Path("/tmp/root.json")
    with_root = verification_flags(_settings(cosign_public_key="awskms:///a"), root)
    assert with_root == [
        "--key",
        "awskms:///a",
        "--insecure-ignore-tlog",
        "--trusted-root",
        str(root),
    ]


@pytest.mark.parametrize("reason", ["no_signature", "invalid", "key_not_found", "tool_missing"])
def test_fr014_policy(reason: str) -> None:
    unverified = SignatureResult("unverified", reason, "x")  # type: ignore[arg-type]
    enforce_policy(_settings(), unverified)
    enforce_policy(_settings(signature_policy="enforce"), SignatureResult("verified", "n/a"))
    with pytest.raises(SignatureRequired):
        enforce_policy(_settings(signature_policy="enforce"), unverified)
