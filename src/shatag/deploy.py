"""Deploy: put the image of one git SHA, pinned by its validated digest, on every target.

Order of checks (each failure changes nothing): SHA shape (MISSING_SHA / POLICY_VIOLATION) →
environment → the environment's deploy lock (DEPLOY_LOCKED) → the SHA tag in the registry by
HEAD, no pull (MISSING_TAG; a canonical environment refuses a SHA found only in staging with
POLICY_VIOLATION) → digest guard against ``--metadata`` or history (DIGEST_MISMATCH) → soft
signature verification. Then, still under the lock:

* every target is *prepared* (files read, new content rendered, image pulled by digest);
* a journal (``<state_dir>/<env>/pending.json``) records how to undo, durably, before any
  visible change -- a ``kill -9`` from here on is undone by the next deploy of the environment;
* every target is *applied* in order, then the environment's ``apply`` command runs with
  ``SHATAG_IMAGE_REF``/``_SHA``/``_DIGEST`` in its environment;
* any failure restores every applied target (files rewritten, the old container back) and is
  recorded as ``result=failed``; success is appended to history, then targets *commit*.

A deploy never rolls back implicitly: a failure restores the state *before this attempt*, it
never goes to some earlier release. :mod:`shatag.rollback` is the dedicated path (FR-013).
"""

from __future__ import annotations

import json
import logging
import shlex
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from shatag import _run
from shatag._fs import atomic_write_text
from shatag.config import EnvironmentConfig, Settings
from shatag.core import Repository, RepositoryType, ensure_immutable_tag, validate_sha
from shatag.errors import (
    ConfigError,
    DeployFailed,
    DigestMismatch,
    InvalidInput,
    MissingTag,
    PolicyViolation,
    ShatagError,
    ToolFailure,
)
from shatag.history import Action, HistoryRecord, HistoryStore, initiated_by, known_digest, utc_now
from shatag.lock import env_lock
from shatag.registry import RegistryClient
from shatag.targets import ImageRef, Target, finish, make_target, recover

log = logging.getLogger("shatag.deploy")

JOURNAL_FILE: Final = "pending.json"
LineSink = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class DeployRequest:
    sha: str
    env: str = "local"
    metadata: Path | None = None


@dataclass(frozen=True, slots=True)
class SignatureOutcome:
    status: str
    reason: str
    detail: str = ""
    #: The SBOM attestation (``cosign attest --type spdxjson``) of the same digest (FR-008).
    sbom_attestation_status: str = "unverified"
    sbom_attestation_reason: str = "n/a"


@dataclass(frozen=True, slots=True)
class DeployRecord:
    """What a deploy or rollback did: the deploy/rollback log line and the history entry."""

    action: Action
    env: str
    image_sha: str
    image_digest: str
    image_ref: str
    repository: str
    repository_type: str
    previous_sha: str
    signature_status: str
    signature_reason: str
    duration_sec: float
    initiated_by: str
    started_at: str
    finished_at: str
    targets: tuple[str, ...] = field(default_factory=tuple)
    apply_command: bool = False
    recovered: tuple[str, ...] = field(default_factory=tuple)
    sbom_attestation_status: str = "unverified"
    sbom_attestation_reason: str = "n/a"

    def as_dict(self) -> dict[str, Any]:
        """The JSON log line (deploy-log / rollback-log keys of REQUIREMENTS.md, and more)."""
        data: dict[str, Any] = {
            "phase": self.action,
            "env": self.env,
            "image_sha": self.image_sha,
            "image_digest": self.image_digest,
            "image_ref": self.image_ref,
            "repository": self.repository,
            "repository_type": self.repository_type,
            "previous_sha": self.previous_sha,
            "signature_status": self.signature_status,
            "signature_reason": self.signature_reason,
            "sbom_attestation_status": self.sbom_attestation_status,
            "sbom_attestation_reason": self.sbom_attestation_reason,
            f"{self.action}_duration_sec": self.duration_sec,
            "initiated_by": self.initiated_by,
            "started_at": self.started_at,
            "timestamp": self.finished_at,
            "targets": list(self.targets),
        }
        if self.recovered:
            data["recovered"] = list(self.recovered)
        return data

    def human_line(self) -> str:
        verb = "deployed" if self.action == "deploy" else "rolled back"
        was = self.previous_sha or "nothing"
        return f"{verb}: {self.env} {self.image_ref} (was {was})"


# -- the use case ---------------------------------------------------------------------------


def deploy(
    settings: Settings,
    request: DeployRequest,
    *,
    env: Mapping[str, str],
    on_line: LineSink | None = None,
) -> DeployRecord:
    """Deploy ``request.sha`` to ``request.env``; see the module docstring."""
    sha = ensure_immutable_tag(validate_sha(request.sha))
    envcfg = settings.environment(request.env)
    with env_lock(
        settings.state_dir,
        envcfg.name,
        timeout=settings.deploy_lock_timeout_sec,
        holder=f"deploy {sha[:12]} by {initiated_by(env)}",
    ):
        recovered = recover_interrupted(settings, envcfg.name, env=env)
        image = resolve_image(settings, envcfg, sha, env=env)
        expected = _expected_digest(settings, envcfg, image, request.metadata)
        if expected is not None and expected[0] != image.digest:
            raise DigestMismatch(
                f"{image.repository}:{sha} now points at {image.digest}, but {expected[1]} "
                f"recorded {expected[0]}: the tag was re-pointed after it was built. Nothing "
                "was deployed; investigate the registry before deploying this SHA"
            )
        signature = verify(settings, image, env=env)
        return switch(
            settings,
            envcfg,
            image,
            action="deploy",
            signature=signature,
            env=env,
            on_line=on_line,
            recovered=recovered,
        )


def resolve_image(
    settings: Settings,
    envcfg: EnvironmentConfig,
    sha: str,
    *,
    env: Mapping[str, str],
    staging_only: type[ShatagError] = PolicyViolation,
) -> ImageRef:
    """Find ``<repo>:<sha>`` in the registry by HEAD (no pull) under the repository policy.

    A canonical environment takes canonical images only (FR-012/016): a SHA found only in
    staging raises ``staging_only`` (POLICY_VIOLATION for deploy; rollback's contract calls it
    MISSING_TAG). A staging environment takes staging images, and canonical ones (which passed
    the stricter route) too.
    """
    own_type = envcfg.repository_type
    own = settings.repository(own_type)
    digest = _client(settings, own, env).manifest_digest(sha)
    if digest is not None:
        return ImageRef(own, sha, digest)
    other_type = (
        RepositoryType.STAGING if own_type is RepositoryType.CANONICAL else RepositoryType.CANONICAL
    )
    other = settings.repository(other_type)
    other_digest = _client(settings, other, env).manifest_digest(sha)
    if other_digest is not None and own_type is RepositoryType.STAGING:
        return ImageRef(other, sha, other_digest)
    if other_digest is not None:
        raise staging_only(
            f"{sha} is not in the canonical repository {own}; it exists only in the staging "
            f"repository {other} (a non-main branch build). Environment {envcfg.name!r} takes "
            "canonical images only (FR-016): merge to a main branch and build it there"
        )
    raise MissingTag(
        f"{own}:{sha} is not in the registry (checked by HEAD on the manifest); build and push "
        f"it first: inv build --sha={sha}"
    )


def verify(settings: Settings, image: ImageRef, *, env: Mapping[str, str]) -> SignatureOutcome:
    """Soft signature verification (FR-014); ``enforce`` policy may raise."""
    # signing hook
    from shatag.signing import enforce_policy, verify_signature

    result = verify_signature(settings, image.by_digest, env=env)
    enforce_policy(settings, result)
    # The attestation is checked with the same cosign and trust: where the signature could
    # not be checked (no cosign, no key) neither can the attestation, so no second call.
    attestation_status: str = result.status
    attestation_reason: str = result.reason
    if result.reason not in ("tool_missing", "key_not_found"):
        from shatag.sbom import verify_sbom_attestation

        attestation = verify_sbom_attestation(settings, image.by_digest, env=env)
        attestation_status, attestation_reason = attestation.status, attestation.reason
    return SignatureOutcome(
        result.status, result.reason, result.detail, attestation_status, attestation_reason
    )


def switch(
    settings: Settings,
    envcfg: EnvironmentConfig,
    image: ImageRef,
    *,
    action: Action,
    signature: SignatureOutcome,
    env: Mapping[str, str],
    on_line: LineSink | None = None,
    recovered: tuple[str, ...] = (),
) -> DeployRecord:
    """Write ``image`` to every target of ``envcfg`` and run its apply step, all or nothing.

    The caller holds the environment's lock.
    """
    started = time.monotonic()
    started_at = utc_now()
    attempt = uuid.uuid4().hex
    store = HistoryStore(settings.state_dir, envcfg.name)
    current = store.current()
    base = HistoryRecord(
        action=action,
        env=envcfg.name,
        sha=image.sha,
        digest=image.digest,
        result="ok",
        image_ref=image.pinned,
        repository=str(image.repository),
        repository_type=_repo_type(settings, image.repository),
        previous_sha=current.sha if current else "",
        signature_status=signature.status,
        signature_reason=signature.reason,
        initiated_by=initiated_by(env),
        started_at=started_at,
        targets=tuple(t.label for t in envcfg.targets),
        attempt=attempt,
    )
    targets = [
        make_target(t, env=env, env_name=envcfg.name, attempt=attempt) for t in envcfg.targets
    ]
    for target in targets:
        target.prepare(image)  # may fail; nothing visible has changed yet
    journal = _journal_path(settings, envcfg.name)
    atomic_write_text(
        journal,
        json.dumps(
            {
                "attempt": attempt,
                "action": action,
                "sha": image.sha,
                "digest": image.digest,
                "started_at": started_at,
                "targets": [t.journal() for t in targets],
            }
        ),
    )
    applied: list[Target] = []
    try:
        for target in targets:
            # Listed before apply(): a target whose apply failed half-way (and whose own undo
            # failed) is restored too; restore() is a no-op for a target that changed nothing.
            applied.append(target)
            target.apply()
        if envcfg.apply:
            _run_apply(envcfg, image, action=action, env=env, on_line=on_line)
    except BaseException as exc:
        problems = _restore_all(applied)
        error = exc if isinstance(exc, ShatagError) else None
        store.append(
            _finished(
                base,
                started,
                result="failed",
                error_code=error.code if error else type(exc).__name__,
                error=(error.message if error else str(exc))[:2000],
            )
        )
        if not problems:
            journal.unlink(missing_ok=True)
        # else: keep the journal, so the next deploy/rollback of this environment restores
        # what this one could not (e.g. the docker daemon went away mid-switch).
        if problems:
            raise DeployFailed(
                f"{exc}; restoring the previous state also failed: {'; '.join(problems)}"
            ) from None
        raise
    record = _finished(base, started, result="ok")
    store.append(record)
    for target in targets:
        try:
            target.commit()
        except Exception as exc:  # noqa: BLE001 -- the deploy is done and recorded
            log.warning("%s: cleanup after the switch failed: %s", target.label, exc)
    journal.unlink(missing_ok=True)
    from shatag.metrics import record_deploy, record_rollback

    if action == "rollback":
        record_rollback(settings, record.repository_type)
    else:
        record_deploy(settings, record.repository_type)
    return DeployRecord(
        action=action,
        env=envcfg.name,
        image_sha=record.sha,
        image_digest=record.digest,
        image_ref=record.image_ref,
        repository=record.repository,
        repository_type=record.repository_type,
        previous_sha=record.previous_sha,
        signature_status=record.signature_status,
        signature_reason=record.signature_reason,
        duration_sec=record.duration_sec,
        initiated_by=record.initiated_by,
        started_at=record.started_at,
        finished_at=record.finished_at,
        targets=record.targets,
        apply_command=bool(envcfg.apply),
        recovered=recovered,
        sbom_attestation_status=signature.sbom_attestation_status,
        sbom_attestation_reason=signature.sbom_attestation_reason,
    )


def recover_interrupted(
    settings: Settings, env_name: str, *, env: Mapping[str, str]
) -> tuple[str, ...]:
    """Finish what a killed deploy of ``env_name`` left behind (the caller holds the lock).

    If history recorded the attempt as done, its cleanup is completed (roll forward); otherwise
    every target is put back as it was before the attempt, and the attempt is recorded as
    failed (``INTERRUPTED``).
    """
    journal = _journal_path(settings, env_name)
    try:
        data = json.loads(journal.read_text())
    except FileNotFoundError:
        return ()
    except (OSError, ValueError):
        log.warning("unreadable deploy journal %s ignored", journal)
        journal.unlink(missing_ok=True)
        return ()
    store = HistoryStore(settings.state_dir, env_name)
    attempt = str(data.get("attempt", ""))
    done = store.find_attempt(attempt) if attempt else None
    entries = [e for e in data.get("targets", []) if isinstance(e, dict)]
    notes: list[str] = []
    if done is not None and done.ok:
        notes += [finish(e, env=env) for e in entries]
    else:
        notes += [recover(e, env=env) for e in reversed(entries)]
        if done is None and data.get("sha") and data.get("digest"):
            store.append(
                HistoryRecord(
                    action="rollback" if data.get("action") == "rollback" else "deploy",
                    env=env_name,
                    sha=str(data["sha"]),
                    digest=str(data["digest"]),
                    result="failed",
                    started_at=str(data.get("started_at", "")),
                    finished_at=utc_now(),
                    error_code="INTERRUPTED",
                    error="the deploy process was killed; its targets were restored",
                    attempt=attempt,
                )
            )
    journal.unlink(missing_ok=True)
    log.warning("recovered interrupted deploy %s of %s: %s", attempt, env_name, "; ".join(notes))
    return tuple(notes)


# -- plumbing -------------------------------------------------------------------------------


def _client(settings: Settings, repository: Repository, env: Mapping[str, str]) -> RegistryClient:
    return RegistryClient(
        repository,
        env=env,
        timeout=settings.registry_timeout_sec,
        retries=settings.registry_retries,
    )


def _repo_type(settings: Settings, repository: Repository) -> str:
    return (
        RepositoryType.CANONICAL.value
        if repository == settings.canonical
        else RepositoryType.STAGING.value
    )


def _journal_path(settings: Settings, env_name: str) -> Path:
    return settings.state_dir / env_name / JOURNAL_FILE


def _expected_digest(
    settings: Settings, envcfg: EnvironmentConfig, image: ImageRef, metadata: Path | None
) -> tuple[str, str] | None:
    """``(digest, where it was recorded)`` for the digest guard, or ``None`` if unknown."""
    if metadata is not None:
        return _metadata_digest(envcfg, image, metadata)
    found = known_digest(settings.state_dir, image.sha, str(image.repository))
    if found is None:
        return None
    return found[1], f"the deployment history of {found[0]!r}"


def _metadata_digest(envcfg: EnvironmentConfig, image: ImageRef, path: Path) -> tuple[str, str]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidInput(f"metadata file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"metadata file {path} is unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"metadata file {path} does not hold a JSON object")
    if data.get("image_sha") != image.sha:
        raise InvalidInput(
            f"metadata file {path} describes {data.get('image_sha')!r}, not {image.sha}"
        )
    repository = data.get("repository")
    if repository and repository != str(image.repository):
        raise PolicyViolation(
            f"metadata file {path} says {image.sha} was built into {repository} "
            f"({data.get('repository_type', 'unknown')}), but environment {envcfg.name!r} "
            f"deploys from {image.repository}"
        )
    digest = data.get("image_digest")
    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        raise InvalidInput(f"metadata file {path} has no image_digest")
    return digest, f"metadata file {path}"


def _run_apply(
    envcfg: EnvironmentConfig,
    image: ImageRef,
    *,
    action: Action,
    env: Mapping[str, str],
    on_line: LineSink | None,
) -> None:
    try:
        argv = shlex.split(envcfg.apply)
    except ValueError as exc:
        raise ConfigError(
            f"shatag.environments.{envcfg.name}.apply cannot be parsed: {exc}"
        ) from None
    if not argv:
        return
    extra = {
        "SHATAG_IMAGE_REF": image.pinned,
        "SHATAG_IMAGE_SHA": image.sha,
        "SHATAG_IMAGE_DIGEST": image.digest,
        "SHATAG_IMAGE_REPOSITORY": str(image.repository),
        "SHATAG_ENV": envcfg.name,
        "SHATAG_ACTION": action,
    }
    try:
        _run.run(argv, timeout=envcfg.apply_timeout_sec, env={**env, **extra}, on_line=on_line)
    except ToolFailure as exc:
        raise DeployFailed(
            f"the apply command of environment {envcfg.name!r} failed ({exc.message}); every "
            "target was restored to its previous content"
        ) from None


def _restore_all(applied: list[Target]) -> list[str]:
    problems: list[str] = []
    for target in reversed(applied):
        try:
            target.restore()
        except Exception as exc:  # noqa: BLE001 -- keep restoring the others, report all
            problems.append(f"{target.label}: {exc}")
    return problems


def _finished(base: HistoryRecord, started: float, **changes: Any) -> HistoryRecord:
    return replace(
        base,
        finished_at=utc_now(),
        duration_sec=round(time.monotonic() - started, 3),
        **changes,
    )
