"""What happens to an image after its SHA tag is in the registry: sign, SBOM, attest, verify.

Called by the build use case (``# signing/SBOM hook``). Every step works on
``repository@sha256:…``; none of them touches a tag (FR-010): cosign stores signatures and
attestations beside the manifest, syft only reads.

Order and failure policy:

1. ``--sign``: ``cosign sign`` by digest (skipped for a reused image that already verifies).
   A failed signing fails the build (the operator asked for it); the tags stay as they are.
2. SBOM (FR-008): the local scan started alongside the push (``local_sbom``, see
   :mod:`shatag.supplychain.sbom`),
   else syft scans the pushed digest from the registry; missing syft
   → ``sbom_status=tool_missing``; a syft that runs and fails → TOOL_FAILURE (the image
   stays pushed and unchanged; a rerun reuses it and generates the SBOM again).
3. With ``--sign`` and a generated SBOM: ``cosign attest --type spdxjson`` to the same digest;
   with ``--sign`` and the build's provenance inputs: ``cosign attest --type slsaprovenance1``
   (:mod:`shatag.supplychain.provenance`, issue 25). A failed attestation fails the build.
4. Soft verification (FR-014): the signature status goes into the record; a cosign that gives
   no pass/fail answer raises SOFT_VERIFY_TOOL_ERROR. The ``enforce`` policy is applied where an
   image is about to be used (deploy, rollback, ``inv verify``: :func:`verify_image`), not here.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from shatag.config import SbomConfig, SigningConfig
from shatag.core import Repository, validate_digest
from shatag.supplychain.sbom import (
    SbomResult,
    attest_sbom,
    generate_sbom,
    parse_spdx,
    sbom_path,
    verify_sbom_attestation,
)
from shatag.supplychain.signing import (
    SignatureResult,
    describe_unverified,
    enforce_policy,
    sign_image,
    verify_signature,
)

if TYPE_CHECKING:
    from shatag.supplychain.provenance import ProvenanceInputs

log = logging.getLogger("shatag.supplychain")

AttestationStatus = Literal["attached", "skipped"]
# Where cosign could not check the signature (no cosign, no trust configured), it cannot check
# the attestation either: its verdict stands for both, without a second call.
_NO_ANSWER_REASONS = frozenset({"tool_missing", "key_not_found"})


@dataclass(frozen=True, slots=True)
class SupplyChainResult:
    """What signing and attesting one pushed image produced."""

    signature: SignatureResult
    sbom: SbomResult


@dataclass(frozen=True, slots=True)
class SignatureOutcome:
    """The verdicts on an image about to be used: its signature and its SBOM attestation."""

    status: str
    reason: str
    #: The SBOM attestation (``cosign attest --type spdxjson``) of the same digest (FR-008).
    sbom_attestation_status: str = "unverified"
    sbom_attestation_reason: str = "n/a"


def verify_image(
    config: SigningConfig, image_by_digest: str, *, env: Mapping[str, str]
) -> SignatureOutcome:
    """Verify the signature, apply the policy, then verify the SBOM attestation (FR-008/014).

    The one verification of an image about to be used (``inv deploy``/``rollback``/``verify``):
    ``enforce`` raises SIGNATURE_REQUIRED for an unverified signature; a cosign that gives no
    pass/fail answer raises SOFT_VERIFY_TOOL_ERROR under either policy.

    The two cosign calls are read-only and independent, so they run side by side (issue 17,
    goal 5: the wall time of one call, not two); the outcome is the sequential one -- a failure
    of the signature check or of the policy wins, and the attestation's verdict is used only
    where the sequential order would have asked for it. Both calls have ended when this returns
    or raises.
    """
    attestation: list[SignatureResult | BaseException] = []

    def check_attestation() -> None:
        try:
            attestation.append(verify_sbom_attestation(config, image_by_digest, env=env))
        except BaseException as exc:  # noqa: BLE001 -- handed to the caller's thread
            attestation.append(exc)

    worker = threading.Thread(target=check_attestation, name="shatag-attestation", daemon=True)
    worker.start()
    try:
        signature = verify_signature(config, image_by_digest, env=env)
        enforce_policy(config, signature)
    finally:
        worker.join()
    if signature.reason == "invalid":  # soft: used anyway, but never silently (issue 24, item 7)
        log.warning(
            "warning: %s: %s; signature_policy 'soft' lets it through (with 'enforce' this stops)",
            image_by_digest,
            describe_unverified(config, signature),
        )
    verdict = signature
    if signature.reason not in _NO_ANSWER_REASONS:
        outcome = attestation[0]
        if isinstance(outcome, BaseException):
            raise outcome
        verdict = outcome
    return SignatureOutcome(signature.status, signature.reason, verdict.status, verdict.reason)


def after_push(
    signing: SigningConfig,
    sbom_config: SbomConfig,
    repository: Repository,
    sha: str,
    digest: str,
    *,
    sign: bool,
    reused: bool,
    env: Mapping[str, str],
    config_digest: str = "",
    local_sbom: Callable[[], bytes] | None = None,
    provenance: Callable[[], ProvenanceInputs] | None = None,
) -> SupplyChainResult:
    """Sign (optionally), generate + attest the SBOM, verify. See the module docstring."""
    image = f"{repository}@{validate_digest(digest)}"
    signed = False

    if sign:
        already = verify_signature(signing, image, env=env) if reused else None
        if already is None or not already.verified:
            sign_image(signing, image, env=env)
            signed = True

    sbom = _existing_sbom(sbom_config, sha, digest, config_digest) if reused else None
    if sbom is None:
        sbom = generate_sbom(
            sbom_config,
            repository,
            sha,
            digest,
            env=env,
            local=local_sbom,
            config_digest=config_digest,
        )

    attestation: AttestationStatus = "skipped"
    if sign and sbom.status == "generated" and (signed or not reused):
        attest_sbom(signing, image, sbom, env=env)
        attestation = "attached"
    if sign and provenance is not None and (signed or not reused):
        from shatag.supplychain.provenance import attest_provenance  # lazy: deploys never attest

        attest_provenance(signing, image, provenance(), env=env)

    signature = verify_signature(signing, image, env=env)
    log.info(
        "%s: signature %s/%s, sbom %s, attestation %s",
        image,
        signature.status,
        signature.reason,
        sbom.status,
        attestation,
    )
    return SupplyChainResult(signature, sbom)


def _existing_sbom(
    config: SbomConfig, sha: str, digest: str, config_digest: str
) -> SbomResult | None:
    """A reused image keeps the SBOM already generated for it, if it still matches."""
    path = sbom_path(config, sha)
    try:
        data = path.read_bytes()
        packages = parse_spdx(data, digest, config_digest)
    except (OSError, ValueError):
        return None
    return SbomResult(
        "generated",
        path=str(path),
        sbom_ref=str(path),
        sbom_digest="sha256:" + hashlib.sha256(data).hexdigest(),
        packages=packages,
    )
