"""Rollback: re-deploy an earlier SHA without building anything (FR-007, FR-013).

This module never imports the build or docker-build code: the only registry calls are HEADs
(read access is enough), and the only engine call is the docker target's pull by digest.

* ``--sha`` given: that SHA; without it, the previous distinct successful deployment of the
  environment (:meth:`HistoryStore.previous`), else NO_ROLLBACK_TARGET.
* The SHA tag must exist in the environment's repository -- the canonical one for a canonical
  environment (FR-012) -- and its registry digest must equal the digest history recorded for
  that SHA (DIGEST_MISMATCH otherwise: a rebuilt or re-pointed tag is never a rollback).
* The same targets as deploy get the pinned reference; the history entry has
  ``action=rollback``, and ``rollback_total{repository_type}`` is counted.

>>> RollbackRequest(env="production").sha is None
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shatag.config import Settings
from shatag.core import ensure_immutable_tag, validate_sha
from shatag.deploy import (
    DeployRecord,
    LineSink,
    recover_interrupted,
    resolve_image,
    switch,
    verify,
)
from shatag.errors import DigestMismatch, MissingTag, NoRollbackTarget
from shatag.history import HistoryStore, initiated_by, known_digest
from shatag.lock import env_lock


@dataclass(frozen=True, slots=True)
class RollbackRequest:
    sha: str | None = None
    env: str = "local"


def rollback(
    settings: Settings,
    request: RollbackRequest,
    *,
    env: Mapping[str, str],
    on_line: LineSink | None = None,
) -> DeployRecord:
    """Roll ``request.env`` back to ``request.sha`` (default: the previous deployment)."""
    sha = ensure_immutable_tag(validate_sha(request.sha)) if request.sha is not None else None
    envcfg = settings.environment(request.env)
    with env_lock(
        settings.state_dir,
        envcfg.name,
        timeout=settings.deploy_lock_timeout_sec,
        holder=f"rollback {(sha or 'previous')[:12]} by {initiated_by(env)}",
    ):
        recovered = recover_interrupted(settings, envcfg.name, env=env)
        store = HistoryStore(settings.state_dir, envcfg.name)
        if sha is None:
            previous = store.previous()
            if previous is None:
                current = store.current()
                now = f"it runs {current.sha}" if current else "it has no successful deployment"
                raise NoRollbackTarget(
                    f"environment {envcfg.name!r} has no earlier successful deployment with a "
                    f"different SHA to roll back to ({now}); pass --sha=<40hex> explicitly"
                )
            sha = previous.sha
        image = resolve_image(settings, envcfg, sha, env=env, staging_only=MissingTag)
        recorded = store.digest_for(sha, str(image.repository))
        where = f"the deployment history of {envcfg.name!r}"
        if recorded is None:
            found = known_digest(settings.state_dir, sha, str(image.repository))
            if found is not None:
                recorded, where = found[1], f"the deployment history of {found[0]!r}"
        if recorded is not None and recorded != image.digest:
            raise DigestMismatch(
                f"{image.repository}:{sha} now points at {image.digest}, but {where} recorded "
                f"{recorded}: the tag was rebuilt or re-pointed, so this is not the release "
                "that ran. Nothing was changed; roll back by digest only after investigating"
            )
        signature = verify(settings, image, env=env)
        return switch(
            settings,
            envcfg,
            image,
            action="rollback",
            signature=signature,
            env=env,
            on_line=on_line,
            recovered=recovered,
        )
