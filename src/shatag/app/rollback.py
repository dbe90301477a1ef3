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
from collections.abc import Mapping
from dataclasses import dataclass

from shatag.app.deploy import (
    DeployRecord,
    LineSink,
    Route,
    describe_record,
    recorded_elsewhere,
    resolve_image,
    run_switch,
)
from shatag.config import EnvironmentConfig, Settings
from shatag.core import ImageRef, ensure_immutable_tag, validate_sha
from shatag.errors import MissingTag, NoRollbackTarget
from shatag.ledger import Ledger
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
    """Roll ``request.env`` back to ``request.sha`` (default: the previous deployment)."""
    envcfg, route = rollback_route(settings, request, env=env)
    return run_switch(settings, envcfg, route, env=env, on_line=on_line)


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
        previous = _first_held(settings, envcfg, candidates, env=env)
        if previous is None:
            current = ledger.current()
            now = f"it runs {current.sha}" if current else "it has no successful deployment"
            raise NoRollbackTarget(
                f"environment {envcfg.name!r} has no earlier successful deployment with a "
                f"different SHA to roll back to ({now}; releases it was rolled back from, and "
                "records of SHAs the registry does not hold, are skipped); pass "
                "--sha=<40hex> explicitly"
            )
        return previous.sha

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


def _first_held(
    settings: Settings,
    envcfg: EnvironmentConfig,
    candidates: list[HistoryRecord],
    *,
    env: Mapping[str, str],
) -> HistoryRecord | None:
    """The nearest walk-back candidate whose SHA the environment's registry holds. A record
    naming a SHA that was never built (or was deleted) is data, not an instruction: it is
    skipped with a warning (issue 24, item 4)."""
    for candidate in candidates:
        try:
            resolve_image(settings, envcfg, candidate.sha, env=env, staging_only=MissingTag)
        except MissingTag:
            log.warning(
                "skipped %s as the rollback target: %s is not in the registry for %r",
                describe_record(envcfg.name, candidate),
                candidate.sha,
                envcfg.name,
            )
            continue
        return candidate
    return None
