"""Rollback: re-deploy an earlier SHA without building anything (FR-007, FR-013).

A rollback is a deploy of an earlier SHA chosen from history, with no build: it takes the one
path of :func:`shatag.app.deploy.run_switch` (lock, recovery, registry HEAD, digest guard, signature
check, switch). This module only chooses the SHA and names the errors of its contract. It never
imports the build or docker-build code: the only registry calls are HEADs (read access is
enough), and the only engine call is the docker target's pull by digest.

* ``--sha`` given: that SHA; without it, the release deployed before the current one, walking
  back past releases that were rolled back from (:func:`shatag.ledger.history.walk_back_target`;
  docs/operations/rollback.md), else NO_ROLLBACK_TARGET.
* The SHA tag must exist in the environment's repository -- the canonical one for a canonical
  environment (FR-012) -- and its registry digest must equal the digest history recorded for
  that SHA (DIGEST_MISMATCH otherwise: a rebuilt or re-pointed tag is never a rollback).
* The same targets as deploy get the pinned reference; the history entry has
  ``action=rollback``, and ``rollback_total{repository_type}`` is counted.

>>> RollbackRequest(env="production").sha is None
True
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from shatag.app.deploy import (
    DeployRecord,
    LineSink,
    Route,
    describe_record,
    recorded_elsewhere,
    run_switch,
)
from shatag.config import EnvironmentConfig, Settings
from shatag.core import ImageRef, ensure_immutable_tag, validate_sha
from shatag.errors import (
    LedgerUnavailable,
    MissingTag,
    NoRollbackTarget,
    PolicyViolation,
    Quarantined,
    ShatagError,
    SignatureRequired,
)
from shatag.ledger import Ledger, open_ledger
from shatag.ledger.history import HistoryRecord, initiated_by, walk_back_candidates

log = logging.getLogger("shatag.rollback")


@dataclass(frozen=True, slots=True)
class RollbackRequest:
    """What ``inv rollback`` asks for: the SHA (``None``: the previous one) and the environment."""

    sha: str | None = None
    #: ``None``: ``default_env``, or the built-in ``local`` when no environment is configured.
    env: str | None = None


def rollback(
    settings: Settings,
    request: RollbackRequest,
    *,
    env: Mapping[str, str],
    on_line: LineSink | None = None,
) -> DeployRecord:
    """Roll ``request.env`` back to ``request.sha`` (default: the previous deployment).

    With the git ledger's remote down the rollback refuses (LEDGER_UNAVAILABLE, nothing
    changed): the lock and the record live on that remote, and a rollback nobody else can see
    would be undone by the next deploy's view of history. The refusal says what the last
    fetched copy would roll back to, and how old that copy is (issue 23, item 6).
    """
    envcfg, route = rollback_route(settings, request, env=env)
    try:
        return run_switch(settings, envcfg, route, env=env, on_line=on_line)
    except LedgerUnavailable as exc:
        if settings.state_backend != "git":
            raise
        raise LedgerUnavailable(_offline_refusal(settings, envcfg, request, exc, env)) from None


def _offline_refusal(
    settings: Settings,
    envcfg: EnvironmentConfig,
    request: RollbackRequest,
    exc: LedgerUnavailable,
    env: Mapping[str, str],
) -> str:
    """The message of a rollback refused because the ledger's remote is unreachable: the SHA
    the copy's history names (``--sha``, else the nearest walk-back candidate). The registry
    and today's policy are not asked here: they are checked when the rollback runs."""
    head = (
        f"rollback of {envcfg.name!r} refused, nothing was changed: a rollback takes the "
        "deploy lock and records itself on the state remote, so it needs it"
    )
    try:
        copy = open_ledger(settings.state, envcfg.name, environ=env, stale_ok=True)
        if not copy.stale:  # the remote answers again: the failure was something else
            return exc.message
        sha = request.sha or _nearest(envcfg, copy)
    except ShatagError as why:
        return f"{head}: {exc.message}; this clone has no copy of the ledger either ({why.message})"
    return (
        f"{head}. By this clone's last fetched copy of the ledger the rollback would go to "
        f"{sha}: once the remote answers, run `rollback --env={envcfg.name} --sha={sha}` "
        f"({copy.stale})"
    )


def _nearest(envcfg: EnvironmentConfig, ledger: Ledger) -> str:
    """The nearest release the walk-back would try first, by history alone."""
    candidates = walk_back_candidates(ledger.iter_newest())
    if not candidates:
        raise NoRollbackTarget(f"the history of {envcfg.name!r} has no earlier release")
    return candidates[0].sha


def rollback_route(
    settings: Settings, request: RollbackRequest, *, env: Mapping[str, str]
) -> tuple[EnvironmentConfig, Route]:
    """The environment and the :class:`Route` of a rollback (run it, or plan it)."""
    sha = ensure_immutable_tag(validate_sha(request.sha)) if request.sha is not None else None
    envcfg = settings.environment(request.env)

    def choose(ledger: Ledger) -> str:
        if sha is not None:
            return sha
        candidates = walk_back_candidates(ledger.iter_newest())  # issue 14, item 11
        if not candidates:
            current = ledger.current()
            now = f"it runs {current.sha}" if current else "it has no successful deployment"
            raise NoRollbackTarget(
                f"environment {envcfg.name!r} has no earlier successful deployment with a "
                f"different SHA to roll back to ({now}; releases it was rolled back from, and "
                "records of SHAs the registry does not hold, are skipped); pass "
                "--sha=<40hex> explicitly"
            )
        return _first_passing(
            envcfg, candidates, lambda c: route.check(settings, envcfg, ledger, env, c)
        )

    def expected(ledger: Ledger, image: ImageRef) -> tuple[str, str] | None:
        return recorded_elsewhere(ledger, image, own=envcfg.name)

    route = Route(
        action="rollback",
        holder=f"rollback {(sha or 'previous')[:12]} by {initiated_by(env)}",
        choose=choose,
        expected=expected,
        mismatch_advice="either the tag was rebuilt or re-pointed, so this is not the release "
        "that ran, or the record is wrong. Nothing was changed; roll back by digest only after "
        "investigating",
        staging_only=MissingTag,
    )
    return envcfg, route


def _first_passing(
    envcfg: EnvironmentConfig, candidates: list[HistoryRecord], check: Callable[[str], object]
) -> str:
    """The nearest walk-back candidate that passes ``check`` (the route's registry lookup,
    quarantine and policy check); each one skipped is said on stderr; none: NO_ROLLBACK_TARGET
    naming why.

    A record naming a SHA the registry does not hold (never built, or deleted) is data, not an
    instruction: skipped with a warning naming the record (issue 24, item 4). A release that
    fails today's policy or is quarantined is skipped too (issue 25, item 3)."""
    skipped: list[str] = []
    for candidate in candidates:
        try:
            check(candidate.sha)
        except MissingTag:
            log.warning(
                "skipped %s as the rollback target: %s is not in the registry for %r",
                describe_record(envcfg.name, candidate),
                candidate.sha,
                envcfg.name,
            )
            skipped.append(f"{candidate.sha}: {MissingTag.code}: not in the registry")
            continue
        except (Quarantined, PolicyViolation, SignatureRequired) as exc:
            note = f"{candidate.sha}: {exc.code}: {_short(exc)}"
            log.warning("rollback skips %s", note)
            skipped.append(note)
            continue
        return candidate.sha
    raise NoRollbackTarget(
        "every earlier release fails today's checks, so there is nothing to roll back to "
        f"({'; '.join(skipped)}); pass --sha=<40hex> explicitly once one is fixed"
    )


def _short(exc: ShatagError) -> str:
    return exc.message if len(exc.message) <= 600 else exc.message[:600] + "…"
