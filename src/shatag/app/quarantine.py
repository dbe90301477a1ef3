"""Quarantine: mark a SHA as not to be deployed in one environment, and lift the mark (issue 25).

A mark is a record of the environment's history (``action: quarantine`` / ``unquarantine``,
with who, when and the reason), so it is shared exactly like history: through the git backend
every runner sees it (``refs/shatag/<env>``), and ``inv history`` lists it. The newest mark of a
SHA decides: while it is a quarantine, deploy, rollback and ``--plan`` of that SHA fail
QUARANTINED and ``rollback`` without ``--sha`` skips it (:mod:`shatag.app.policy`). A mark is
never a release: it does not change what the environment runs, nor the rollback catalog's
``current``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from shatag.config import Settings
from shatag.core import validate_sha
from shatag.errors import InvalidInput
from shatag.ledger import open_ledger
from shatag.ledger.history import HistoryRecord, initiated_by, utc_now
from shatag.ledger.statedir import check_state_dir

Mark = Literal["quarantine", "unquarantine"]
MAX_REASON: int = 500


def mark(
    settings: Settings,
    action: Mark,
    sha: str,
    *,
    env_name: str | None,
    reason: str,
    env: Mapping[str, str],
) -> HistoryRecord | None:
    """Append a quarantine (or its lifting) of ``sha`` to the environment's history, under its
    deploy lock. ``None``: ``unquarantine`` of a SHA that is not quarantined (nothing written).
    """
    sha = validate_sha(sha)
    reason = " ".join(reason.split())
    if action == "quarantine" and not reason:
        raise InvalidInput('say why: --reason="…" is required to quarantine a SHA')
    if len(reason) > MAX_REASON:
        raise InvalidInput(f"--reason is {len(reason)} characters; keep it under {MAX_REASON}")
    envcfg = settings.environment(env_name)
    if settings.state_backend == "local":
        check_state_dir(settings.state_dir, envcfg.name)
    ledger = open_ledger(settings.state, envcfg.name, environ=env)
    who = initiated_by(env)
    with ledger.lock(
        timeout=settings.deploy_lock_timeout_sec, holder=f"{action} {sha[:12]} by {who}"
    ):
        if action == "unquarantine" and ledger.quarantine_of(sha) is None:
            return None
        now = utc_now()
        record = HistoryRecord(
            action=action,
            env=envcfg.name,
            sha=sha,
            digest="",
            result="ok",
            initiated_by=who,
            started_at=now,
            finished_at=now,
            reason=reason,
        )
        ledger.append(record)
    return record
