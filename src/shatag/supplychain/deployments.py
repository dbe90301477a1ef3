"""Deployment records as signed attestations on the image's digest (issue 25, item 5).

With ``attest_deployments: true`` on an environment, a successful deploy or rollback attaches
``cosign attest --type`` :data:`PREDICATE_TYPE` to the digest it put in place: the environment,
the action, the targets, the previous SHA, who and when, and the checks that passed. ``inv
verify --sha=…`` lists them from the registry alone (:func:`list_deployments`). Attaching is
best effort: a failure is a warning, never a failed deploy (the deploy is done and recorded).

>>> p = deployment_predicate(env="prod", action="deploy", sha="a", previous_sha="",
...     targets=("tfvars:x",), initiated_by="me", started_at="s", finished_at="f",
...     checks={"signature": "verified/n/a"})
>>> p["environment"], p["targets"], p["checks"]["signature"]
('prod', ['tfvars:x'], 'verified/n/a')
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from shatag.config import SigningConfig
from shatag.supplychain.signing import attest_predicate, verify_attestation_statements

#: shatag's own predicate type for "this digest was deployed".
PREDICATE_TYPE: Final = "https://shatag.dev/attestation/deployment/v1"


def deployment_predicate(
    *,
    env: str,
    action: str,
    sha: str,
    previous_sha: str,
    targets: tuple[str, ...],
    initiated_by: str,
    started_at: str,
    finished_at: str,
    checks: Mapping[str, str],
) -> dict[str, Any]:
    """The predicate of one deployment attestation."""
    return {
        "environment": env,
        "action": action,
        "image_sha": sha,
        "previous_sha": previous_sha,
        "targets": list(targets),
        "initiated_by": initiated_by,
        "started_at": started_at,
        "finished_at": finished_at,
        "checks": dict(checks),
    }


def attest_deployment(
    signing: SigningConfig,
    image_by_digest: str,
    predicate: Mapping[str, Any],
    *,
    env: Mapping[str, str],
) -> None:
    """Attach ``predicate`` signed to the digest; raises like ``cosign attest`` does."""
    with tempfile.TemporaryDirectory(prefix="shatag-deployment-") as tmp:
        path = Path(tmp) / "deployment.json"
        path.write_text(json.dumps(dict(predicate), sort_keys=True) + "\n")
        attest_predicate(signing, image_by_digest, path, env=env, predicate_type=PREDICATE_TYPE)


@dataclass(frozen=True, slots=True)
class Deployment:
    """Where and when a digest was deployed, as its verified attestation says."""

    environment: str
    action: str
    finished_at: str
    initiated_by: str
    previous_sha: str

    def human_line(self) -> str:
        was = self.previous_sha[:12] or "nothing"
        return (
            f"{self.action}: {self.environment} at {self.finished_at} by {self.initiated_by} "
            f"(was {was})"
        )


def list_deployments(
    signing: SigningConfig, image_by_digest: str, *, env: Mapping[str, str]
) -> list[Deployment]:
    """The verified deployment attestations of the digest, oldest first (none: ``[]``)."""
    result, statements = verify_attestation_statements(
        signing, image_by_digest, env=env, predicate_type=PREDICATE_TYPE
    )
    if not result.verified:
        return []
    out: list[Deployment] = []
    for statement in statements:
        body = statement.get("predicate")
        if statement.get("predicateType") != PREDICATE_TYPE or not isinstance(body, dict):
            continue
        out.append(
            Deployment(
                environment=str(body.get("environment", "")),
                action=str(body.get("action", "")),
                finished_at=str(body.get("finished_at", "")),
                initiated_by=str(body.get("initiated_by", "")),
                previous_sha=str(body.get("previous_sha", "")),
            )
        )
    return sorted(out, key=lambda d: d.finished_at)
