"""``inv verify --sha=…``: the signature status of one SHA-tagged image, nothing else (FR-014).

The tag is resolved to its digest in the registry (no pull; MISSING_TAG when absent), then
verified exactly as a deploy verifies it (:func:`shatag.supplychain.evidence.verify_image`): the
signature by digest, the policy (``soft`` reports, ``enforce`` raises SIGNATURE_REQUIRED for an
unverified image), the SBOM attestation. A cosign that gives no pass/fail answer raises
SOFT_VERIFY_TOOL_ERROR under either policy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from shatag.config import Settings
from shatag.core import RepositoryType, pinned_reference, validate_sha
from shatag.errors import MissingTag, ShatagError
from shatag.supplychain.deployments import Deployment, list_deployments
from shatag.supplychain.evidence import verify_image
from shatag.supplychain.registry import open_registry

log = logging.getLogger("shatag.verify")


@dataclass(frozen=True, slots=True)
class VerifyRecord:
    """The record ``inv verify`` prints: the image and its signature verdict."""

    image_sha: str
    image_digest: str
    image_ref: str
    repository: str
    repository_type: str
    signature_status: str
    signature_reason: str
    sbom_attestation_status: str
    sbom_attestation_reason: str
    signature_policy: str
    verify_duration_sec: float
    #: Where and when the digest was deployed, from its deployment attestations (issue 25,
    #: item 5); read only when an environment sets ``attest_deployments``. Human lines only:
    #: the JSON line is exactly the contract's.
    deployments: tuple[Deployment, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The verify log line: exactly the fields of the signature-verification contract."""
        data = asdict(self)
        return {"phase": "verify", **{k: data[k] for k in _LINE_FIELDS}}


# specs/003-tag-api-container/contracts/signature-verification.yaml (additionalProperties: false)
_LINE_FIELDS = (
    "image_sha",
    "image_ref",
    "image_digest",
    "repository",
    "repository_type",
    "signature_status",
    "signature_reason",
    "signature_policy",
)


def verify_sha(
    settings: Settings,
    sha: str,
    *,
    env: Mapping[str, str],
    repository_type: RepositoryType = RepositoryType.CANONICAL,
) -> VerifyRecord:
    """Verify the image tagged ``sha`` in the canonical (or staging) repository."""
    started = time.monotonic()
    sha = validate_sha(sha)
    repo = settings.repository(repository_type)
    digest = open_registry(settings.registry, repo, env=env).manifest_digest(sha)
    if digest is None:
        raise MissingTag(
            f"{repo.tag(sha)} is not in the registry; build and push it first (`inv build`)"
        )
    outcome = verify_image(settings.signing, f"{repo}@{digest}", env=env)
    return VerifyRecord(
        image_sha=sha,
        image_digest=digest,
        image_ref=pinned_reference(repo, sha, digest),
        repository=str(repo),
        repository_type=repository_type.value,
        signature_status=outcome.status,
        signature_reason=outcome.reason,
        sbom_attestation_status=outcome.sbom_attestation_status,
        sbom_attestation_reason=outcome.sbom_attestation_reason,
        signature_policy=settings.signature_policy,
        verify_duration_sec=round(time.monotonic() - started, 3),
        deployments=_deployments(settings, f"{repo}@{digest}", env),
    )


def _deployments(settings: Settings, image: str, env: Mapping[str, str]) -> tuple[Deployment, ...]:
    if not any(e.attest_deployments for e in settings.environments.values()):
        return ()
    try:
        return tuple(list_deployments(settings.signing, image, env=env))
    except ShatagError as exc:
        log.warning("could not read the deployment attestations of %s: %s", image, exc)
        return ()
