"""What an image must prove before it is put in place: the environment's ``verify:`` policy and
the quarantine marks of its ledger (issue 25; docs/signatures.md).

Called by :meth:`shatag.app.deploy.Route.check` -- the one check of deploy, rollback and
``--plan`` -- before any target changes:

* :func:`refuse_quarantined`: a SHA whose newest mark in the environment's ledger is a
  quarantine is refused (QUARANTINED, the reason, who and when);
* :func:`check_image`: without ``verify:`` the global ``signature_policy`` applies as before
  (:func:`shatag.supplychain.evidence.verify_image`); with it, every rule is checked against
  the configured signers and every unmet rule is named in one error: SIGNATURE_REQUIRED when
  the signature rule is among them, else POLICY_VIOLATION.

A provenance counts only when its attestation verifies with a trusted signer *and* it names
the deployed SHA, the image's digest as its subject and (``source_repository``) the
configured repository: a tag re-pointed to another image, or an attestation copied from
another build, is refused even though its signature is valid.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from shatag.config import EnvironmentConfig, Settings, SigningConfig, VerifyPolicy
from shatag.core import ImageRef
from shatag.errors import PolicyViolation, Quarantined, ShatagError, SignatureRequired
from shatag.ledger import Ledger
from shatag.ledger.history import HistoryRecord
from shatag.supplychain.evidence import SignatureOutcome, verify_image
from shatag.supplychain.sbom import verify_sbom_attestation
from shatag.supplychain.signing import SignatureResult, verify_signature

log = logging.getLogger("shatag.policy")

_OFF = SignatureResult("unverified", "n/a", "signature: off")


def refuse_quarantined(ledger: Ledger, sha: str) -> None:
    """QUARANTINED when the newest quarantine mark of ``sha`` in the ledger is not lifted."""
    mark = ledger.quarantine_of(sha)
    if mark is not None:
        raise Quarantined(quarantine_message(ledger.env, mark))


def quarantine_message(env: str, mark: HistoryRecord) -> str:
    return (
        f"{mark.sha} is quarantined in {env!r} since {mark.finished_at} by {mark.initiated_by}: "
        f"{mark.reason or 'no reason given'}. Nothing was changed; lift it with "
        f"`inv unquarantine --sha={mark.sha} --env={env}` once it is safe"
    )


def attest_switch(
    settings: Settings,
    envcfg: EnvironmentConfig,
    release: HistoryRecord,
    signature: SignatureOutcome,
    *,
    env: Mapping[str, str],
) -> str | None:
    """After a recorded deploy/rollback of an environment with ``attest_deployments: true``:
    attach the signed deployment attestation (item 5). A failure is the returned warning."""
    if not envcfg.attest_deployments:
        return None
    from shatag.supplychain import deployments  # lazy: most environments attest nothing

    policy = envcfg.verify
    rules = (
        f"verify: signature={policy.signature} sbom={'required' if policy.sbom else 'optional'} "
        f"provenance={'required' if policy.needs_provenance else 'optional'}"
        if policy is not None
        else f"signature_policy: {settings.signature_policy}"
    )
    predicate = deployments.deployment_predicate(
        env=envcfg.name,
        action=release.action,
        sha=release.sha,
        previous_sha=release.previous_sha,
        targets=release.targets,
        initiated_by=release.initiated_by,
        started_at=release.started_at,
        finished_at=release.finished_at,
        checks={
            "policy": rules,
            "signature": f"{signature.status}/{signature.reason}",
            "sbom_attestation": (
                f"{signature.sbom_attestation_status}/{signature.sbom_attestation_reason}"
            ),
            "quarantine": "not quarantined",
        },
    )
    image = f"{release.repository}@{release.digest}"
    try:
        deployments.attest_deployment(settings.signing, image, predicate, env=env)
    except ShatagError as exc:
        return (
            f"the deployment attestation was not attached to {image} ({exc.code}: "
            f"{exc.message}); the {release.action} itself succeeded and is recorded"
        )
    return None


def check_image(
    settings: Settings, envcfg: EnvironmentConfig, image: ImageRef, *, env: Mapping[str, str]
) -> SignatureOutcome:
    """The environment's verification of ``image``; raises when a rule is unmet."""
    if envcfg.verify is None:
        return verify_image(settings.signing, image.by_digest, env=env)
    return check_policy(settings.signing, envcfg.name, envcfg.verify, image, env=env)


def trust(signing: SigningConfig, policy: VerifyPolicy) -> list[SigningConfig]:
    """One cosign trust configuration per signer (``signers`` empty: the global trust)."""
    base = replace(signing, policy="soft")
    if not policy.signers:
        return [base]
    return [
        replace(
            base,
            cosign_public_key=s.key,
            keyless_identity=s.identity,
            keyless_issuer=s.issuer,
        )
        for s in policy.signers
    ]


def _first_verified(
    trusts: list[SigningConfig], check: Callable[[SigningConfig], SignatureResult]
) -> SignatureResult:
    """The first signer's verified answer, else the first signer's failure."""
    first: SignatureResult | None = None
    for config in trusts:
        result = check(config)
        if result.verified:
            return result
        first = first or result
    assert first is not None  # noqa: S101 -- trust() returns at least one configuration
    return first


@dataclass(frozen=True, slots=True)
class _Provenance:
    """The provenance verdict: cosign's answer and what the best statement got wrong."""

    result: SignatureResult
    #: ``(rule, problem)`` of the best statement ('' rule: it passed).
    problems: tuple[tuple[str, str], ...]


def _check_provenance(
    trusts: list[SigningConfig], policy: VerifyPolicy, image: ImageRef, env: Mapping[str, str]
) -> _Provenance:
    from shatag.supplychain import provenance  # lazy: only a verify: provenance rule needs it

    seen: list[tuple[str, str]] = []
    first: SignatureResult | None = None
    for config in trusts:
        result, statements = provenance.verify_provenance(config, image.by_digest, env=env)
        first = first or result
        for statement in statements:
            problems = [
                ("provenance", p)
                for p in provenance.check_statement(statement, digest=image.digest, sha=image.sha)
            ]
            named = provenance.provenance_repository(statement)
            if policy.source_repository and _repo(named) != _repo(policy.source_repository):
                problems.append(
                    (
                        "source_repository",
                        f"the provenance names {named or 'no repository'!r}, "
                        f"not {policy.source_repository!r}",
                    )
                )
            if not problems:
                return _Provenance(result, ())
            seen = seen or problems
    assert first is not None  # noqa: S101 -- trust() returns at least one configuration
    return _Provenance(first, tuple(seen))


def _repo(url: str) -> str:
    return url.strip().removesuffix("/").removesuffix(".git").lower()


def check_policy(
    signing: SigningConfig,
    env_name: str,
    policy: VerifyPolicy,
    image: ImageRef,
    *,
    env: Mapping[str, str],
) -> SignatureOutcome:
    """Check every rule of ``policy`` (the cosign calls side by side); raise naming each unmet
    rule, or return the verdicts for the record."""
    trusts = trust(signing, policy)
    by_digest = image.by_digest
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="shatag-policy") as pool:
        sig_f = (
            pool.submit(_first_verified, trusts, lambda c: verify_signature(c, by_digest, env=env))
            if policy.signature != "off"
            else None
        )
        sbom_f = (
            pool.submit(
                _first_verified, trusts, lambda c: verify_sbom_attestation(c, by_digest, env=env)
            )
            if policy.signature != "off" or policy.sbom
            else None
        )
        prov_f = (
            pool.submit(_check_provenance, trusts, policy, image, env)
            if policy.needs_provenance
            else None
        )
        signature = sig_f.result() if sig_f else _OFF
        sbom = sbom_f.result() if sbom_f else _OFF
        prov = prov_f.result() if prov_f else None
    unmet = _unmet(policy, signature, sbom, prov)
    if unmet:
        raise _refusal(env_name, image, unmet)
    log.info("%s passes the verify policy of %s", image.pinned, env_name)
    return SignatureOutcome(signature.status, signature.reason, sbom.status, sbom.reason)


def _unmet(
    policy: VerifyPolicy,
    signature: SignatureResult,
    sbom: SignatureResult,
    prov: _Provenance | None,
) -> list[tuple[str, str]]:
    """``(rule, why)`` of every rule the image does not meet."""
    unmet: list[tuple[str, str]] = []
    if policy.signature == "required" and not signature.verified:
        unmet.append(
            ("signature", f"required, but no trusted signature verifies ({_why(signature)})")
        )
    if policy.sbom and not sbom.verified:
        unmet.append(("sbom", f"required, but no trusted SBOM attestation verifies ({_why(sbom)})"))
    if prov is not None:
        if not prov.result.verified:
            unmet.append(
                (
                    "provenance",
                    "required, but no trusted provenance attestation verifies "
                    f"({_why(prov.result)})",
                )
            )
        else:
            unmet += list(prov.problems)
    return unmet


def _why(result: SignatureResult) -> str:
    detail = result.detail.strip()
    return f"{result.reason}: {detail[:300]}" if detail else result.reason


def _refusal(
    env_name: str, image: ImageRef, unmet: list[tuple[str, str]]
) -> PolicyViolation | SignatureRequired:
    rules = "; ".join(f"{rule}: {why}" for rule, why in unmet)
    message = (
        f"environment {env_name!r} refuses {image.pinned}: its verify policy is not met "
        f"({rules}). Nothing was changed; sign and attest this image (`inv build --sign`) or "
        f"change shatag.environments.{env_name}.verify"
    )
    if any(rule == "signature" for rule, _why in unmet):
        return SignatureRequired(message)
    return PolicyViolation(message)
