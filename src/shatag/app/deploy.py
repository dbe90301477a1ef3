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
never goes to some earlier release. :mod:`shatag.app.rollback` is the
dedicated command (FR-013), and
it takes the same path: :func:`run_switch` is the one sequence above for both, a :class:`Route`
says what differs (how the SHA is chosen, the digest it must match, the wording of the errors).
The environment's state (history, lock, journal) is reached through :mod:`shatag.ledger`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from shatag._sys import signals, subproc
from shatag.app.policy import attest_switch, check_image, refuse_quarantined
from shatag.config import EnvironmentConfig, Settings
from shatag.core import (
    ImageRef,
    Repository,
    RepositoryType,
    ensure_immutable_tag,
    parse_repository,
    validate_sha,
)
from shatag.errors import (
    DeployFailed,
    DigestMismatch,
    InvalidInput,
    LedgerDenied,
    MissingTag,
    PolicyViolation,
    ShatagError,
    StateError,
    ToolFailure,
)
from shatag.ledger import Ledger, open_ledger
from shatag.ledger.history import Action, HistoryRecord, initiated_by, utc_now
from shatag.ledger.journal import Journal
from shatag.ledger.statedir import check_state_dir
from shatag.ledger.statedir import describe as describe_os_error
from shatag.masking import register_public
from shatag.supplychain.evidence import SignatureOutcome
from shatag.supplychain.metadata import load_metadata
from shatag.supplychain.registry import RegistryClient, open_registry
from shatag.targets import (
    Target,
    TargetContext,
    TargetSpec,
    finish,
    make_target,
    observe,
    recover,
)

log = logging.getLogger("shatag.deploy")

LineSink = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class DeployRequest:
    """What ``inv deploy`` asks for: the SHA, the environment and the metadata to check."""

    sha: str
    #: ``None``: ``default_env``, or the built-in ``local`` when no environment is configured.
    env: str | None = None
    metadata: Path | None = None


class Release:
    """The release a deploy or rollback put (or would put) in place, read from its
    :class:`~shatag.ledger.history.HistoryRecord` (``release``): the fields that
    :class:`DeployRecord` and :class:`PlanRecord` share, in the order of their JSON lines."""

    __slots__ = ()
    release: HistoryRecord

    @property
    def action(self) -> Action:
        return self.release.action

    @property
    def env(self) -> str:
        return self.release.env

    @property
    def image_sha(self) -> str:
        return self.release.sha

    @property
    def image_digest(self) -> str:
        return self.release.digest

    @property
    def image_ref(self) -> str:
        return self.release.image_ref

    @property
    def repository(self) -> str:
        return self.release.repository

    @property
    def repository_type(self) -> str:
        return self.release.repository_type

    @property
    def previous_sha(self) -> str:
        return self.release.previous_sha

    @property
    def signature_status(self) -> str:
        return self.release.signature_status

    @property
    def signature_reason(self) -> str:
        return self.release.signature_reason

    def _release_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "image_sha": self.image_sha,
            "image_digest": self.image_digest,
            "image_ref": self.image_ref,
            "repository": self.repository,
            "repository_type": self.repository_type,
            "previous_sha": self.previous_sha,
            "signature_status": self.signature_status,
            "signature_reason": self.signature_reason,
        }


@dataclass(frozen=True, slots=True)
class DeployRecord(Release):
    """What a deploy or rollback did: the deploy/rollback log line; ``release`` is the
    history entry it appended, the rest what history does not keep."""

    release: HistoryRecord
    apply_command: bool = False
    recovered: tuple[str, ...] = field(default_factory=tuple)
    sbom_attestation_status: str = "unverified"
    sbom_attestation_reason: str = "n/a"
    manifest_kind: str = "image"  # FR-015: "index" = one amd64 image plus attestations
    #: Problems that did not fail the command (metrics); printed as ``warning: …``.
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def duration_sec(self) -> float:
        return self.release.duration_sec

    @property
    def initiated_by(self) -> str:
        return self.release.initiated_by

    @property
    def started_at(self) -> str:
        return self.release.started_at

    @property
    def finished_at(self) -> str:
        return self.release.finished_at

    @property
    def targets(self) -> tuple[str, ...]:
        return self.release.targets

    @property
    def unchanged(self) -> tuple[str, ...]:
        return self.release.unchanged

    def as_dict(self) -> dict[str, Any]:
        """The JSON log line: the keys of the deploy-/rollback-workflow contracts
        (specs/003-tag-api-container/contracts/), and more."""
        data: dict[str, Any] = {
            "phase": self.action,
            **self._release_dict(),
            "sbom_attestation_status": self.sbom_attestation_status,
            "sbom_attestation_reason": self.sbom_attestation_reason,
            f"{self.action}_duration_sec": self.duration_sec,
            "initiated_by": self.initiated_by,
            "started_at": self.started_at,
            "timestamp": self.finished_at,
            "targets": list(self.targets),
            "manifest_kind": self.manifest_kind,
        }
        if self.recovered:
            data["recovered"] = list(self.recovered)
        if self.unchanged:
            data["unchanged"] = list(self.unchanged)
        if self.release.promoted_from:
            data["promoted_from"] = self.release.promoted_from
        return data

    def human_line(self) -> str:
        verb = {"deploy": "deployed", "rollback": "rolled back"}.get(self.action, "promoted")
        if self.release.promoted_from:
            verb += f" from {self.release.promoted_from}"
        was = self.previous_sha or "nothing"
        same = f"; already serving, left as it was: {', '.join(self.unchanged)}"
        return f"{verb}: {self.env} {self.image_ref} (was {was}){same if self.unchanged else ''}"


# -- the use case ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """What differs between a deploy and a rollback; everything else is :func:`run_switch`."""

    action: Action
    #: Who holds the lock, for a waiter's message.
    holder: str
    #: The SHA to put in place, chosen under the lock (a rollback reads it from history).
    choose: Callable[[Ledger], str]
    #: ``(digest, where it was recorded)`` the registry digest must equal, if known.
    expected: Callable[[Ledger, ImageRef], tuple[str, str] | None]
    #: The end of the DIGEST_MISMATCH message: what it means and what to do.
    mismatch_advice: str
    #: The error for a SHA found only in staging by a canonical environment.
    staging_only: type[ShatagError] = PolicyViolation
    #: ``action=promote``: the environment the release comes from (recorded in history).
    promoted_from: str = ""

    #: What :meth:`check` found per SHA in this command (a walk-back checks before choosing).
    checked: dict[str, tuple[ImageRef, SignatureOutcome]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def checked_image(
        self, settings: Settings, envcfg: EnvironmentConfig, ledger: Ledger, env: Mapping[str, str]
    ) -> tuple[ImageRef, SignatureOutcome]:
        """The chosen SHA, :meth:`check`-ed: what :func:`run_switch` (under the lock) and
        :func:`plan_switch` check alike."""
        return self.check(settings, envcfg, ledger, env, self.choose(ledger))

    def check(
        self,
        settings: Settings,
        envcfg: EnvironmentConfig,
        ledger: Ledger,
        env: Mapping[str, str],
        sha: str,
    ) -> tuple[ImageRef, SignatureOutcome]:
        """``sha`` not quarantined, resolved in the registry, its digest guarded, the
        environment's verify policy met (:mod:`shatag.app.policy`); once per SHA."""
        if sha in self.checked:
            return self.checked[sha]
        refuse_quarantined(ledger, sha)
        register_public([sha])
        image = resolve_image(settings, envcfg, sha, env=env, staging_only=self.staging_only)
        register_public([image.digest, image.pinned])
        expected = self.expected(ledger, image)
        if expected is not None and expected[0] != image.digest:
            recorded, where = expected
            raise DigestMismatch(
                f"the registry holds {image.repository}:{image.sha} as {image.digest}, but "
                f"{where} recorded {recorded} for it: {self.mismatch_advice}"
            )
        self.checked[sha] = image, check_image(settings, envcfg, image, env=env)
        return self.checked[sha]


def _publish_names(envcfg: EnvironmentConfig) -> None:
    """The environment's and its targets' names are printed and recorded in clear: a
    "secret" equal to one is not masked (issue 24, item 3) -- masking it would turn the
    docker target's own ``shatag.target`` label into ``***`` (NOT_OWNED)."""
    register_public([envcfg.name, *(name for t in envcfg.targets for name in (t.label, *t.claims))])


def recorded_elsewhere(ledger: Ledger, image: ImageRef, *, own: str = "") -> tuple[str, str] | None:
    """``(digest, where)`` the environments' histories recorded for the image's SHA in its
    repository, if any: the digest guard of deploy and rollback.

    A record is data anyone with write access to the ledger may have written (issue 24, item
    4), so a conflicting record blocks only what it must: the record of the ``own``
    environment, if it ran the SHA, decides; else, when some environment ran the registry's
    digest, a conflicting record elsewhere is a warning naming it; only when none did does
    the first conflicting record stand (and the error names it)."""
    found = ledger.records_of(image.sha, str(image.repository))
    ran_here = next(((env, r) for env, r in found if env == own), None)
    if ran_here is not None:
        return ran_here[1].digest, describe_record(*ran_here)
    agreeing = [(env, r) for env, r in found if r.digest == image.digest]
    conflicting = [(env, r) for env, r in found if r.digest != image.digest]
    if agreeing:
        for env, record in conflicting:
            log.warning(
                "ignored %s: it says %s ran as %s, but the registry holds %s, as %s recorded",
                describe_record(env, record),
                image.sha,
                record.digest,
                image.digest,
                describe_record(*agreeing[0]),
            )
        return image.digest, describe_record(*agreeing[0])
    if conflicting:
        return conflicting[0][1].digest, describe_record(*conflicting[0])
    return None


def describe_record(env: str, record: HistoryRecord) -> str:
    """How an error or warning names one history record: environment, attempt, time, who."""
    when = _shown(record.finished_at or record.started_at) or "at an unknown time"
    return (
        f"the {record.action} record of attempt {_shown(record.attempt) or '-'} ({when}, by "
        f"{_shown(record.initiated_by)}) in the deployment history of {env!r}"
    )


def _shown(text: str) -> str:
    """A field of a record (anyone may have written it) as one short printable line."""
    return "".join(c if c.isprintable() else "?" for c in text[:80])


def deploy(
    settings: Settings,
    request: DeployRequest,
    *,
    env: Mapping[str, str],
    on_line: LineSink | None = None,
) -> DeployRecord:
    """Deploy ``request.sha`` to ``request.env``; see the module docstring."""
    envcfg, route = deploy_route(settings, request, env=env)
    return run_switch(settings, envcfg, route, env=env, on_line=on_line)


def deploy_route(
    settings: Settings, request: DeployRequest, *, env: Mapping[str, str]
) -> tuple[EnvironmentConfig, Route]:
    """The environment and the :class:`Route` of a deploy (run it, or :func:`plan_switch` it)."""
    sha = ensure_immutable_tag(validate_sha(request.sha))
    envcfg = settings.environment(request.env)

    def expected(ledger: Ledger, image: ImageRef) -> tuple[str, str] | None:
        if request.metadata is not None:
            return _metadata_digest(envcfg, image, request.metadata)
        return recorded_elsewhere(ledger, image, own=envcfg.name)

    route = Route(
        action="deploy",
        holder=f"deploy {sha[:12]} by {initiated_by(env)}",
        choose=lambda _ledger: sha,
        expected=expected,
        mismatch_advice="either the tag was re-pointed after that record was written, or the "
        "record is wrong. Nothing was deployed; compare the registry with that record before "
        "deploying this SHA",
    )
    return envcfg, route


def run_switch(
    settings: Settings,
    envcfg: EnvironmentConfig,
    route: Route,
    *,
    env: Mapping[str, str],
    on_line: LineSink | None = None,
) -> DeployRecord:
    """The one path of deploy and rollback: under the environment's lock, recover a killed
    attempt, resolve the SHA in the registry, guard its digest, verify it, switch."""
    if settings.state_backend == "local":
        check_state_dir(settings.state_dir, envcfg.name)  # STATE_ERROR before any change
    _publish_names(envcfg)
    ledger = open_ledger(settings.state, envcfg.name, environ=env)
    with ledger.lock(timeout=settings.deploy_lock_timeout_sec, holder=route.holder):
        shared = settings.state_backend != "local"
        recovered = recover_interrupted(
            ledger,
            env=env,
            trusted=envcfg.targets if shared else None,
            runtime_dir=settings.runtime_dir,
            envcfg=envcfg,
            state_dir=settings.state_dir,
        )
        image, signature = route.checked_image(settings, envcfg, ledger, env)
        record = switch(
            settings,
            envcfg,
            image,
            action=route.action,
            signature=signature,
            env=env,
            on_line=on_line,
            recovered=recovered,
            ledger=ledger,
            promoted_from=route.promoted_from,
        )
    warning = attest_switch(settings, envcfg, record.release, signature, env=env)
    return replace(record, warnings=(*record.warnings, warning)) if warning else record


@dataclass(frozen=True, slots=True)
class TargetPlan:
    """What one target would change: a unified diff, or ``old → new`` for a container."""

    target: str
    change: str


@dataclass(frozen=True, slots=True)
class PlanRecord(Release):
    """What a deploy or rollback would do (``--plan``); nothing was changed. ``release``: the
    history entry it would start from (not written)."""

    release: HistoryRecord
    changes: tuple[TargetPlan, ...]
    apply: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The JSON line: ``phase=plan`` (never mistaken for a done deploy)."""
        return {
            "phase": "plan",
            "action": self.action,
            **self._release_dict(),
            "changes": [{"target": c.target, "change": c.change} for c in self.changes],
            "apply": list(self.apply),
        }

    def human_lines(self) -> list[str]:
        """The per-target changes for a person, then what was *not* done."""
        lines: list[str] = []
        for change in self.changes:
            lines.append(f"plan: {change.target}")
            text = change.change.rstrip("\n")
            lines.extend(text.splitlines() if text else ["  (no change)"])
        if self.apply:
            lines.append(f"plan: then run {shlex.join(self.apply)}")
        was = self.previous_sha or "nothing"
        lines.append(
            f"plan: {self.action} {self.env} {self.image_ref} (was {was}) — nothing was changed"
        )
        return lines


def plan_switch(
    settings: Settings,
    envcfg: EnvironmentConfig,
    route: Route,
    *,
    env: Mapping[str, str],
) -> PlanRecord:
    """Every check :func:`run_switch` makes (registry, repository policy, digest guard,
    signature), then each target's :meth:`~shatag.targets.Target.plan`. Changes nothing: no
    lock, no recovery, no file, no container, no history (issue 13, item 5)."""
    _publish_names(envcfg)
    ledger = open_ledger(settings.state, envcfg.name, environ=env)
    image, signature = route.checked_image(settings, envcfg, ledger, env)
    # state_dir and runtime_dir: the docker kind finds its proxy (and what it serves) there;
    # without them a serving target was planned as "nothing →" (issue 23, item 7).
    ctx = TargetContext(
        env=env,
        env_name=envcfg.name,
        attempt="plan",
        state_dir=settings.state_dir,
        runtime_dir=settings.runtime_dir,
    )
    changes = tuple(
        TargetPlan(spec.label, make_target(spec, ctx).plan(image)) for spec in envcfg.targets
    )
    release = _release(
        settings, envcfg, image, action=route.action, signature=signature, ledger=ledger
    )
    return PlanRecord(release=release, changes=changes, apply=envcfg.apply)


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
    own_client = open_registry(settings.registry, own, env=env)
    digest = own_client.manifest_digest(sha)
    if digest is not None:
        return _single_platform(own_client, sha, digest, settings.platform)
    other_type = (
        RepositoryType.STAGING if own_type is RepositoryType.CANONICAL else RepositoryType.CANONICAL
    )
    other = settings.repository(other_type)
    other_client = open_registry(settings.registry, other, env=env)
    other_digest = other_client.manifest_digest(sha)
    if other_digest is not None and own_type is RepositoryType.STAGING:
        return _single_platform(other_client, sha, other_digest, settings.platform)
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


def _single_platform(client: RegistryClient, sha: str, digest: str, platform: str) -> ImageRef:
    """FR-015: the tag holds one ``platform`` image (or an index of one plus attestations)."""
    from shatag.supplychain.manifests import check_single_platform

    checked = check_single_platform(client, sha, expected_digest=digest, platform=platform)
    return ImageRef(client.repository, sha, digest, checked.kind)


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
    ledger: Ledger | None = None,
    promoted_from: str = "",
) -> DeployRecord:
    """Write ``image`` to every target of ``envcfg`` and run its apply step, all or nothing.

    The caller holds the environment's lock.
    """
    from shatag.masking import register_target_secrets

    register_target_secrets(envcfg.targets, env)  # the docker target's ``secrets`` (item 4)
    started = time.monotonic()
    started_at = utc_now()
    attempt = os.urandom(16).hex()  # not uuid4: importing uuid loads platform (issue 17)
    ledger = ledger or open_ledger(settings.state, envcfg.name, environ=env)
    base = replace(
        _release(settings, envcfg, image, action=action, signature=signature, ledger=ledger),
        initiated_by=initiated_by(env),
        started_at=started_at,
        targets=tuple(t.label for t in envcfg.targets),
        attempt=attempt,
        promoted_from=promoted_from,
    )
    ctx = TargetContext(
        env=env,
        env_name=envcfg.name,
        attempt=attempt,
        state_dir=settings.state_dir,
        runtime_dir=settings.runtime_dir,
    )
    # Targets that edit one file are merged: every edit applied together (issue 14, item 2).
    from shatag.targets.files import merge_shared_files  # lazy: a container deploy never needs it

    targets = merge_shared_files([make_target(t, ctx) for t in envcfg.targets])
    for target in targets:
        target.prepare(image)  # may fail; nothing visible has changed yet
    _write_journal(ledger, base, targets)
    applied = _apply_all(
        targets,
        envcfg,
        image,
        ledger=ledger,
        base=base,
        started=started,
        env=env,
        on_line=on_line,
        cwd=settings.base_dir,
    )
    unchanged = tuple(t.label for t in targets if t.unchanged)
    record = _finished(base, started, result="ok", unchanged=unchanged)
    _record_or_undo(ledger, record, applied, envcfg, image)
    _commit_all(targets, ledger, envcfg)
    from shatag.metrics import record_deploy, record_rollback

    if action == "rollback":
        warning = record_rollback(settings.metrics, record.repository_type)
    else:
        warning = record_deploy(settings.metrics, record.repository_type)
    return DeployRecord(
        release=record,
        apply_command=bool(envcfg.apply),
        recovered=recovered,
        sbom_attestation_status=signature.sbom_attestation_status,
        sbom_attestation_reason=signature.sbom_attestation_reason,
        manifest_kind=image.kind,
        warnings=(warning,) if warning else (),
    )


def _release(
    settings: Settings,
    envcfg: EnvironmentConfig,
    image: ImageRef,
    *,
    action: Action,
    signature: SignatureOutcome,
    ledger: Ledger,
) -> HistoryRecord:
    """The history record of putting ``image`` on ``envcfg`` (``result=ok`` until it fails):
    what a switch starts from and a plan shows."""
    current = ledger.current()
    return HistoryRecord(
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
    )


def _write_journal(ledger: Ledger, base: HistoryRecord, targets: list[Target]) -> None:
    """Record durably how to undo the attempt, before any visible change."""
    try:
        ledger.write_journal(
            {
                "attempt": base.attempt,
                "action": base.action,
                "sha": base.sha,
                "digest": base.digest,
                "started_at": base.started_at,
                "targets": [t.journal() for t in targets],
                # What the next runner records if it finds this release fully applied.
                "release": dict(base.as_line()),
            }
        )
    except OSError as exc:
        raise StateError(
            f"cannot write the deploy journal of {base.env!r}: {describe_os_error(exc)}; "
            "nothing was changed"
        ) from None


def _apply_all(
    targets: list[Target],
    envcfg: EnvironmentConfig,
    image: ImageRef,
    *,
    ledger: Ledger,
    base: HistoryRecord,
    started: float,
    env: Mapping[str, str],
    on_line: LineSink | None,
    cwd: Path,
) -> list[Target]:
    """Apply every target in order, then the apply command; the targets applied. Any failure
    (a signal included) restores them and records the attempt as failed, then propagates."""
    applied: list[Target] = []
    try:
        for target in targets:
            # Listed before apply(): a target whose apply failed half-way (and whose own undo
            # failed) is restored too; restore() is a no-op for a target that changed nothing.
            applied.append(target)
            target.apply()
        if envcfg.apply:
            _run_apply(envcfg, image, action=base.action, env=env, on_line=on_line, cwd=cwd)
        # From here on a SIGTERM/SIGINT/SIGHUP is noted, not raised: the switch completes.
        signals.hold_to_end()
    except BaseException as exc:
        where = applied[-1].label if applied else "the apply command"
        with signals.hold():  # the undo runs to its end, whatever signal comes next
            problems = _restore_all(applied)
            failure = _os_failure(exc, where, undone=not problems)
            # A ledger that refuses the record or a state fs that fails the append is logged;
            # the original failure is what the operator needs (issue 14, item 9).
            _record_failure(ledger, base, started, failure or exc)
            if not problems:
                ledger.clear_journal()
            # else: keep the journal, so the next deploy/rollback of this environment restores
            # what this one could not (e.g. the docker daemon went away mid-switch).
        if problems:
            raise DeployFailed(
                f"{failure or exc}; restoring the previous state also failed: {'; '.join(problems)}"
            ) from None
        if failure is not None:
            raise failure from None
        raise
    return applied


#: A file system that cannot take a write: a full disk, a quota, a read-only mount.
_NO_ROOM: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def _os_failure(exc: BaseException, where: str, *, undone: bool) -> ShatagError | None:
    """The documented error for an OSError a target let through mid-switch (issue 24, item 7):
    STATE_ERROR when the file system is full or read-only (the docker target's proxy state
    lives in the state dir), else DEPLOY_FAILED -- never an ``OSError`` code in history."""
    if not isinstance(exc, OSError):
        return None
    place = f" ({exc.filename})" if exc.filename else ""
    then = "; every target was put back on the previous release" if undone else ""
    if exc.errno in _NO_ROOM:
        return StateError(
            f"{where}: a write failed{place}: {describe_os_error(exc)}{then}. Free space (in "
            "the state directory, or the file system named) and deploy again"
        )
    return DeployFailed(f"{where}: {describe_os_error(exc)}{place}{then}")


def _commit_all(targets: list[Target], ledger: Ledger, envcfg: EnvironmentConfig) -> None:
    """The switch is recorded: let every target clean up (a failure is a warning), then drop
    the journal -- or keep it, so the next run finishes the cleanup (history has the attempt)."""
    cleaned = True
    for target in targets:
        try:
            target.commit()
        except Exception as exc:  # noqa: BLE001 -- the deploy is done and recorded
            cleaned = False
            log.warning(
                "%s: cleanup after the switch failed: %s; the next deploy or rollback of %s "
                "finishes it",
                target.label,
                exc,
                envcfg.name,
            )
    if cleaned:
        ledger.clear_journal()


def _record_failure(
    ledger: Ledger, base: HistoryRecord, started: float, exc: BaseException
) -> None:
    error = exc if isinstance(exc, ShatagError) else None
    try:
        ledger.append(
            _finished(
                base,
                started,
                result="failed",
                error_code=error.code if error else type(exc).__name__,
                error=(error.message if error else str(exc))[:2000],
            )
        )
    except (OSError, ShatagError) as append_error:  # the failure is what the operator needs
        log.warning("the failed attempt was not recorded in history: %s", append_error)


def _unrecorded(
    applied: list[Target],
    ledger: Ledger,
    envcfg: EnvironmentConfig,
    image: ImageRef,
    exc: OSError,
) -> ShatagError:
    """The targets switched but history could not record it: put them back, say what."""
    problems = _restore_all(applied)
    if not problems:
        # Left behind on a read-only state dir: the next deploy's recovery finds the targets
        # already back and records the attempt as not finished.
        with contextlib.suppress(OSError, ShatagError):
            ledger.clear_journal()
    what = f"history could not record the switch to {image.pinned} ({describe_os_error(exc)})"
    applied_note = (
        f"; the apply command had already run with the new image: run it again for the "
        f"previous release (or deploy again) to bring {envcfg.name!r} back in line"
        if envcfg.apply
        else ""
    )
    if problems:
        return StateError(
            f"{what}, and undoing the switch failed: {'; '.join(problems)}; the next deploy or "
            f"rollback of {envcfg.name!r} retries the undo{applied_note}"
        )
    return StateError(
        f"{what}, so the switch was undone: every target is back on the previous release"
        f"{applied_note}. Free space or fix the state directory, then deploy again"
    )


def recover_interrupted(
    ledger: Ledger,
    *,
    env: Mapping[str, str],
    trusted: tuple[TargetSpec, ...] | None = None,
    runtime_dir: Path | None = None,
    envcfg: EnvironmentConfig | None = None,
    state_dir: Path = Path(".shatag"),
) -> tuple[str, ...]:
    """Finish what a killed deploy of the ledger's environment left behind (the caller holds
    the lock), from any checkout (issue 23, item 6).

    If history recorded the attempt as done, its cleanup is completed (roll forward). If it
    did not, but the attempt's release is fully applied -- every target of the journal observes
    its digest, healthy (:func:`shatag.targets.observe`, against ``envcfg``'s targets), and no
    apply command whose outcome nothing can observe was configured -- it is finished: each
    target's cleanup runs and the release is recorded ``ok`` with a ``note`` naming the killed
    attempt. Otherwise every target is put back as it was before the attempt, and the attempt
    is recorded as failed (``INTERRUPTED``), saying why and what was undone. ``trusted``: when
    the journal comes from a shared ledger (anyone who may push its refs could have written
    it), only entries naming one of these configured targets are acted on -- a journal cannot
    make this runner write an arbitrary file.
    """
    journal = ledger.read_journal()
    if journal is None:
        return ()
    attempt = journal.get("attempt", "")
    done = ledger.find_attempt(attempt) if attempt else None
    entries = journal.get("targets", [])
    # state_dir and runtime_dir: the docker kind finds its proxy there (the bug plan_switch
    # had, b112132).
    ctx = TargetContext(env=env, env_name=ledger.env, attempt=attempt, state_dir=state_dir)
    if runtime_dir is not None:  # where the proxy's home is (else the default)
        ctx = replace(ctx, runtime_dir=runtime_dir)
    notes: list[str] = []
    if trusted is not None:
        kept = [e for e in entries if _names_a_target(e, trusted)]
        notes += [
            f"ignored a journal entry for {e.get('kind')!r} {e.get('path') or e.get('name')!r}: "
            "not a target of this environment"
            for e in entries
            if e not in kept
        ]
        entries = kept
    if done is not None and done.ok:
        notes += [finish(e, ctx) for e in entries]
    elif done is None:
        release, why = _applied_release(journal, entries, envcfg, ctx)
        if release is not None:
            notes += _finish_applied(ledger, release, entries, ctx)
        else:
            notes += _undo_interrupted(ledger, journal, entries, ctx, why)
    else:
        notes += [recover(e, ctx) for e in reversed(entries)]
    ledger.clear_journal()
    log.warning("recovered interrupted deploy %s of %s: %s", attempt, ledger.env, "; ".join(notes))
    return tuple(notes)


def _applied_release(
    journal: Journal,
    entries: list[dict[str, Any]],
    envcfg: EnvironmentConfig | None,
    ctx: TargetContext,
) -> tuple[HistoryRecord | None, str]:
    """The record a killed attempt would have appended, when its release is fully applied
    (every target of the journal observes its digest and is healthy); else ``None`` and why."""
    release = _journal_release(journal, ctx)
    if envcfg is None:
        why = "its targets were not observed"
    elif release is None:
        why = "its journal does not describe the release it applied"
    elif envcfg.apply:
        why = (
            "the apply command's outcome cannot be observed (the attempt may have been killed "
            "before or while it ran)"
        )
    elif not entries:
        why = "its journal names no target"
    else:
        why = _not_running(release, entries, envcfg.targets, ctx)
    return (release, "") if release is not None and not why else (None, why)


def _journal_release(journal: Journal, ctx: TargetContext) -> HistoryRecord | None:
    """The ``release`` record of a journal, if it is the journal's own (same environment,
    attempt, SHA and digest; a journal written before issue 23 has none)."""
    raw = journal.get("release")
    release = HistoryRecord.from_json(json.dumps(raw)) if raw is not None else None
    if release is None or (release.env, release.attempt, release.sha, release.digest) != (
        ctx.env_name,
        ctx.attempt,
        journal.get("sha"),
        journal.get("digest"),
    ):
        return None
    return release


def _not_running(
    release: HistoryRecord,
    entries: list[dict[str, Any]],
    specs: tuple[TargetSpec, ...],
    ctx: TargetContext,
) -> str:
    """Why not every target of ``entries`` runs ``release`` healthy; ``""``: they all do."""
    try:
        image = ImageRef(parse_repository(release.repository), release.sha, release.digest)
    except ShatagError:
        return "its journal does not name a valid image"
    for entry in entries:
        matching = [s for s in specs if s.matches_journal(entry)]
        if not matching:
            name = entry.get("name") or entry.get("path")
            return f"{entry.get('kind')!r} {name!r} is not a configured target"
        for spec in matching:
            seen = observe(spec, ctx, image)
            if seen.state != "in_sync":
                return f"{spec.label} does not run it ({seen.state}: {seen.detail})"
    return ""


def _finish_applied(
    ledger: Ledger, release: HistoryRecord, entries: list[dict[str, Any]], ctx: TargetContext
) -> list[str]:
    """Record the fully applied release of a killed attempt as ``ok``, then finish each
    target's cleanup (what ``commit`` would have done: retire the previous release)."""
    killed = f"attempt {ctx.attempt} (started {release.started_at or 'at an unknown time'})"
    ledger.append(
        replace(
            release,
            result="ok",
            finished_at=utc_now(),
            note=(
                f"the runner of {killed} was interrupted after its apply; the next run found "
                f"every target running {release.digest}, healthy, and finished it"
            ),
        )
    )
    done = [finish(e, ctx) for e in entries]
    return [f"finished {killed}: every target runs {release.image_ref}", *done]


def _undo_interrupted(
    ledger: Ledger,
    journal: Journal,
    entries: list[dict[str, Any]],
    ctx: TargetContext,
    why: str,
) -> list[str]:
    """Put every target of a killed, unrecorded attempt back; record it ``INTERRUPTED``."""
    undone = [recover(e, ctx) for e in reversed(entries)]
    if journal.get("sha") and journal.get("digest"):
        raw = journal.get("release")
        release = HistoryRecord.from_json(json.dumps(raw)) if raw is not None else None
        ledger.append(
            HistoryRecord(
                action=journal.get("action", "deploy"),
                env=ledger.env,
                sha=journal.get("sha", ""),
                digest=journal.get("digest", ""),
                result="failed",
                image_ref=release.image_ref if release else "",
                repository=release.repository if release else "",
                previous_sha=release.previous_sha if release else "",
                initiated_by=release.initiated_by if release else "unknown",
                started_at=journal.get("started_at", ""),
                finished_at=utc_now(),
                error_code="INTERRUPTED",
                error=(
                    "the deploy did not finish (its process was killed, or its result "
                    f"could not be recorded) and was not finished by the next run: {why}; "
                    f"its targets were restored ({'; '.join(undone) or 'nothing to undo'})"
                )[:2000],
                attempt=ctx.attempt,
            )
        )
    return undone


# -- plumbing -------------------------------------------------------------------------------


def _names_a_target(entry: Mapping[str, Any], specs: tuple[TargetSpec, ...]) -> bool:
    """Whether a journal entry is about one of ``specs``: each kind decides (same kind, and the
    same file or container name where the entry names one; kubernetes: namespace, deployment,
    container, kubeconfig, context)."""
    return any(spec.matches_journal(entry) for spec in specs)


def _repo_type(settings: Settings, repository: Repository) -> str:
    return (
        RepositoryType.CANONICAL.value
        if repository == settings.canonical
        else RepositoryType.STAGING.value
    )


def _metadata_digest(envcfg: EnvironmentConfig, image: ImageRef, path: Path) -> tuple[str, str]:
    data = load_metadata(path)
    if data is None:
        raise InvalidInput(f"metadata file {path} does not exist")
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
    digest = data.get("image_digest", "")
    if not digest.startswith("sha256:"):
        raise InvalidInput(f"metadata file {path} has no image_digest")
    return digest, f"metadata file {path}"


def _run_apply(
    envcfg: EnvironmentConfig,
    image: ImageRef,
    *,
    action: Action,
    env: Mapping[str, str],
    on_line: LineSink | None,
    cwd: Path,
) -> None:
    """Run the environment's apply command — an argument list, never through a shell — in the
    configuration file's directory, with the image in ``SHATAG_IMAGE_*`` variables."""
    if not envcfg.apply:
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
        subproc.run(
            list(envcfg.apply),
            timeout=envcfg.apply_timeout_sec,
            env={**env, **extra},
            on_line=on_line,
            cwd=str(cwd),
        )
    except ToolFailure as exc:
        raise DeployFailed(
            f"the apply command of environment {envcfg.name!r} failed ({exc.message}); every "
            "target was restored to its previous content"
        ) from None


def _record_or_undo(
    ledger: Ledger,
    record: HistoryRecord,
    applied: list[Target],
    envcfg: EnvironmentConfig,
    image: ImageRef,
) -> None:
    """Append the successful ``record``. If the local state dir cannot take it (full,
    read-only: an OSError), the switch is undone and STATE_ERROR says so (issue 14, item 1).
    If a shared ledger *refuses* it (LEDGER_DENIED), what
    history does not show must not run: every applied target goes back as it was. If it could
    not tell (LEDGER_UNAVAILABLE: the push timed out and the refetch failed), the record may
    have landed: targets and journal stay, and the next deploy or rollback of the environment
    completes the attempt (recorded) or undoes it (not recorded)."""
    try:
        ledger.append(record)
    except OSError as exc:
        # The local state dir filled up or went away after the switch (issue 14, item 1):
        # undo it now rather than leave targets that history does not know about.
        raise _unrecorded(applied, ledger, envcfg, image, exc) from None
    except LedgerDenied as exc:
        problems = _restore_all(applied)
        if not problems:
            with contextlib.suppress(ShatagError):
                ledger.clear_journal()
        undone = "every target was restored" if not problems else "; ".join(problems)
        raise LedgerDenied(f"{exc.message}; the deploy was not recorded, so {undone}") from None
    except ShatagError as exc:
        raise type(exc)(
            f"{exc.message}; whether the deploy was recorded is unknown: the targets stay "
            "switched and the deploy journal stays, so the next deploy or rollback of this "
            "environment completes or undoes it"
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
