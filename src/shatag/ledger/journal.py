"""The crash journal of a deploy in progress: its typed shape and the one reader of it.

Kept apart from the :mod:`shatag.ledger` seam so that both backends (the local files and
:mod:`shatag.ledger.git`) use it without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from shatag.ledger.history import Action


class Journal(TypedDict, total=False):
    """The crash journal of the deploy in progress (``pending.json``, or ``journal.json`` on
    the git ledger): how to undo it, written by :func:`shatag.app.deploy.switch` with every key
    before any visible change. Read back through :func:`checked_journal`, where a journal left
    by another version (or anyone who may push the ledger's refs) may lack any key."""

    attempt: str
    action: Action
    sha: str
    digest: str
    started_at: str
    #: Each target's own :meth:`~shatag.targets.Target.journal` entry; its kind reads it back.
    targets: list[dict[str, Any]]
    #: The history record the attempt would append (``result: ok``, as a JSON object): what the
    #: next runner records when it finds the release fully applied (issue 23, item 6).
    release: dict[str, Any]


def checked_journal(data: Mapping[str, object]) -> Journal:
    """The :class:`Journal` in a JSON object read back, each key as the recovery reads it:
    ``attempt``/``started_at`` as text, an ``action`` other than ``rollback`` or ``promote``
    as ``deploy``, an empty ``sha``/``digest`` as missing, only the objects among
    ``targets``, ``release`` only as an object; unknown keys are dropped.

    >>> checked_journal({"attempt": 7, "sha": "", "action": "x", "targets": [{"k": 1}, 2]})
    {'attempt': '7', 'action': 'deploy', 'targets': [{'k': 1}]}
    """
    journal: Journal = {}
    if "attempt" in data:
        journal["attempt"] = str(data["attempt"])
    if "action" in data:
        action = data["action"]
        journal["action"] = (
            "rollback" if action == "rollback" else ("promote" if action == "promote" else "deploy")
        )
    if data.get("sha"):
        journal["sha"] = str(data["sha"])
    if data.get("digest"):
        journal["digest"] = str(data["digest"])
    if "started_at" in data:
        journal["started_at"] = str(data["started_at"])
    if "targets" in data:
        targets = data["targets"]
        entries = targets if isinstance(targets, list) else []
        journal["targets"] = [dict(e) for e in entries if isinstance(e, dict)]
    release = data.get("release")
    if isinstance(release, dict):
        journal["release"] = dict(release)
    return journal
