"""What happens to an image after its SHA tag is in the registry: sign, SBOM, attest, verify.

Called by the build use case (``# signing/SBOM hook``). Every step works on
``repository@sha256:…``; none of them touches a tag (FR-010): cosign stores signatures and
attestations beside the manifest, syft only reads.

Order and failure policy:

1. ``--sign``: ``cosign sign`` by digest (skipped for a reused image that already verifies).
   A failed signing fails the build (the operator asked for it); the tags stay as they are.
2. SBOM (FR-008): the local scan started alongside the push (``local_sbom``, see
   :mod:`shatag.sbom`), else syft scans the pushed digest from the registry; missing syft
   → ``sbom_status=tool_missing``; a syft that runs and fails → TOOL_FAILURE (the image
   stays pushed and unchanged; a rerun reuses it and generates the SBOM again).
3. With ``--sign`` and a generated SBOM: ``cosign attest --type spdxjson`` to the same digest.
4. Soft verification (FR-014): the signature status goes into the record; a cosign that gives
   no pass/fail answer raises SOFT_VERIFY_TOOL_ERROR. The ``enforce`` policy is applied where an
   image is about to be used (deploy, ``inv verify``), not here.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from shatag.config import Settings
from shatag.core import Repository, validate_digest
from shatag.sbom import SbomResult, attest_sbom, generate_sbom, parse_spdx, sbom_path
from shatag.signing import SignatureResult, sign_image, verify_signature

log = logging.getLogger("shatag.supplychain")

AttestationStatus = Literal["attached", "skipped"]


@dataclass(frozen=True, slots=True)
class SupplyChainResult:
    signature: SignatureResult
    sbom: SbomResult
    sbom_attestation: AttestationStatus
    signed: bool
    timings: Mapping[str, float]

    def as_record(self) -> dict[str, Any]:
        return {
            **self.signature.as_record(),
            **self.sbom.as_record(),
            "sbom_attestation": self.sbom_attestation,
            "signed": self.signed,
            **{f"{k}_duration_sec": round(v, 3) for k, v in self.timings.items()},
        }


def after_push(
    settings: Settings,
    repository: Repository,
    sha: str,
    digest: str,
    *,
    sign: bool,
    reused: bool,
    env: Mapping[str, str],
    config_digest: str = "",
    local_sbom: Callable[[], bytes] | None = None,
) -> SupplyChainResult:
    """Sign (optionally), generate + attest the SBOM, verify. See the module docstring."""
    image = f"{repository}@{validate_digest(digest)}"
    timings: dict[str, float] = {}
    signed = False

    if sign:
        already = None
        if reused:
            started = time.monotonic()
            already = verify_signature(settings, image, env=env)
            timings["verify_before_sign"] = time.monotonic() - started
        if already is None or not already.verified:
            started = time.monotonic()
            sign_image(settings, image, env=env)
            timings["sign"] = time.monotonic() - started
            signed = True

    started = time.monotonic()
    sbom = _existing_sbom(settings, sha, digest, config_digest) if reused else None
    if sbom is None:
        sbom = generate_sbom(
            settings,
            repository,
            sha,
            digest,
            env=env,
            local=local_sbom,
            config_digest=config_digest,
        )
    timings["sbom"] = time.monotonic() - started

    attestation: AttestationStatus = "skipped"
    if sign and sbom.status == "generated" and (signed or not reused):
        started = time.monotonic()
        attest_sbom(settings, image, sbom, env=env)
        timings["attest"] = time.monotonic() - started
        attestation = "attached"

    started = time.monotonic()
    signature = verify_signature(settings, image, env=env)
    timings["verify"] = time.monotonic() - started
    log.info(
        "%s: signature %s/%s, sbom %s, attestation %s",
        image,
        signature.status,
        signature.reason,
        sbom.status,
        attestation,
    )
    return SupplyChainResult(signature, sbom, attestation, signed, timings)


def _existing_sbom(
    settings: Settings, sha: str, digest: str, config_digest: str
) -> SbomResult | None:
    """A reused image keeps the SBOM already generated for it, if it still matches."""
    path = sbom_path(settings, sha)
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
