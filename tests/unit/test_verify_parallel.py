"""``verify_image`` runs its two cosign checks side by side (issue 17, goal 5); its outcome must
be the one the sequential order gives (signature, policy, then attestation) for every verdict.

The two checks are replaced by fakes here (``_fake_`` in the names): what is under test is the
order of the verdicts, not cosign, which tests/reliability/test_cosign_faults.py and
tests/integration/test_signing.py drive for real.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

import pytest

from shatag.config import SigningConfig
from shatag.errors import ShatagError, SignatureRequired, SoftVerifyToolError
from shatag.supplychain import evidence
from shatag.supplychain.signing import SignatureResult, enforce_policy

IMAGE = "127.0.0.1:5000/api@sha256:" + "a" * 64

Verdict = SignatureResult | SoftVerifyToolError
VERDICTS: tuple[Verdict, ...] = (
    SignatureResult("verified", "n/a"),
    SignatureResult("unverified", "no_signature", "none"),
    SignatureResult("unverified", "invalid", "bad"),
    SignatureResult("unverified", "tool_missing", "no cosign"),
    SignatureResult("unverified", "key_not_found", "no key"),
    SoftVerifyToolError("cosign crashed"),
)


def _sequential(policy: str, signature: Verdict, attestation: Verdict) -> object:
    """The reference: what verify_image did before the checks ran side by side."""
    config = SigningConfig(policy=policy)  # type: ignore[arg-type]
    try:
        if isinstance(signature, ShatagError):
            raise signature
        enforce_policy(config, signature)
        result = signature
        if signature.reason not in evidence._NO_ANSWER_REASONS:
            if isinstance(attestation, ShatagError):
                raise attestation
            result = attestation
    except ShatagError as exc:
        return (type(exc), exc.code)
    return evidence.SignatureOutcome(
        signature.status, signature.reason, result.status, result.reason
    )


@pytest.mark.parametrize("policy", ["soft", "enforce"])
@pytest.mark.parametrize("signature", VERDICTS, ids=lambda v: getattr(v, "reason", "error"))
@pytest.mark.parametrize("attestation", VERDICTS, ids=lambda v: getattr(v, "reason", "error"))
def test_fake_cosign_verdicts_side_by_side_equal_sequential(
    monkeypatch: pytest.MonkeyPatch, policy: str, signature: Verdict, attestation: Verdict
) -> None:
    ended = threading.Event()

    def fake_signature(_config: SigningConfig, _image: str, *, env: Mapping[str, str]) -> object:
        if isinstance(signature, ShatagError):
            raise signature
        return signature

    def fake_attestation(_config: SigningConfig, _image: str, *, env: Mapping[str, str]) -> object:
        time.sleep(0.01)  # slower than the signature check: verify_image must wait for it
        ended.set()
        if isinstance(attestation, ShatagError):
            raise attestation
        return attestation

    monkeypatch.setattr(evidence, "verify_signature", fake_signature)
    monkeypatch.setattr(evidence, "verify_sbom_attestation", fake_attestation)
    config = SigningConfig(policy=policy)  # type: ignore[arg-type]
    try:
        got: object = evidence.verify_image(config, IMAGE, env={})
    except (SignatureRequired, SoftVerifyToolError) as exc:
        got = (type(exc), exc.code)
    assert got == _sequential(policy, signature, attestation)
    assert ended.is_set()  # both checks have ended when verify_image returns or raises
