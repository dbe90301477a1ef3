"""``status``: does what runs match what the ledger says is current? (issue 23, item 5)

The ledger's current release of the environment (the newest successful deploy or rollback) is
compared, per configured target, with what the target's kind reads from the running system
(:func:`shatag.targets.observe`): the docker kind -- the container the proxy forwards to, the
digest it runs, its health through the proxy; kubernetes -- the Deployment's image, every ready
pod's ``imageID`` digest, the rollout complete; file targets -- the reference pinned in the
file. Nothing is changed, nothing is locked.

The result: :class:`StatusRecord` (one JSON record, one line per target). Its :meth:`problem`
is the error the run ends with: ``TARGET_DOWN`` when any target is down (exit status 4), else
``DRIFT`` when any drifted (exit status 3); in sync (or nothing recorded yet): none, exit 0. A
kind that cannot observe (``unobservable``) is reported and does not fail the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shatag.config import Settings
from shatag.core import ImageRef, parse_repository
from shatag.errors import Drift, ShatagError, TargetDown
from shatag.ledger import open_ledger
from shatag.ledger.history import HistoryRecord
from shatag.ledger.statedir import check_state_dir
from shatag.targets import ObservedState, TargetContext, observe


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """One target: its label, the state, what runs and why."""

    target: str
    state: ObservedState
    running: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {
            "target": self.target,
            "state": self.state,
            "running": self.running,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class StatusRecord:
    """The answer of ``status --env=E``."""

    env: str
    current: HistoryRecord | None
    targets: tuple[TargetStatus, ...]
    #: The git ledger's remote was down: compared with its last fetched copy (how old).
    ledger_stale: str = ""

    @property
    def state(self) -> str:
        """``down`` if any target is down, else ``drift`` if any drifted, else ``in_sync``
        (``none``: the ledger records no release)."""
        states = {t.state for t in self.targets}
        for worst in ("down", "drift"):
            if worst in states:
                return worst
        return "none" if self.current is None else "in_sync"

    def as_dict(self) -> dict[str, Any]:
        current = self.current
        return {
            "phase": "status",
            "env": self.env,
            "state": self.state,
            "image_sha": current.sha if current else "",
            "image_digest": current.digest if current else "",
            "image_ref": current.image_ref if current else "",
            "deployed_at": current.finished_at if current else "",
            "targets": [t.as_dict() for t in self.targets],
            "ledger_stale": self.ledger_stale,
        }

    def human_lines(self) -> list[str]:
        """One line per target, then the summary."""
        lines = [
            f"status: {t.target}: {t.state.replace('_', ' ')} — {t.detail}" for t in self.targets
        ]
        current = self.current
        recorded = (
            f"the ledger's current release is {current.image_ref or current.sha} "
            f"({current.action} at {current.finished_at or '?'})"
            if current
            else "the ledger records no successful deployment"
        )
        lines.append(f"status: {self.env}: {self.state.replace('_', ' ')}; {recorded}")
        if self.ledger_stale:
            lines.append(f"status: warning: {self.ledger_stale}")
        return lines

    def problem(self) -> ShatagError | None:
        """The error ``status`` ends with (``None``: exit 0)."""
        down = [t.target for t in self.targets if t.state == "down"]
        drifted = [t.target for t in self.targets if t.state == "drift"]
        if down:
            return TargetDown(
                f"{', '.join(down)} of {self.env!r} runs nothing or does not answer its health "
                "check (see the status lines); deploy or roll back to bring it back"
            )
        if drifted:
            return Drift(
                f"{', '.join(drifted)} of {self.env!r} does not run the release the ledger "
                "says is current (see the status lines): something changed it outside shatag, "
                "or a deploy did not finish; deploy or roll back to bring it in line"
            )
        return None


def current_image(record: HistoryRecord | None) -> ImageRef | None:
    """The ledger's current release as the reference the targets should run."""
    if record is None or not record.repository:
        return None
    return ImageRef(parse_repository(record.repository), record.sha, record.digest)


def status(settings: Settings, env_name: str | None, *, env: Mapping[str, str]) -> StatusRecord:
    """Compare each target of the environment with the ledger's current release."""
    envcfg = settings.environment(env_name)
    if settings.state_backend == "local":
        check_state_dir(settings.state_dir, envcfg.name, write=False)
    ledger = open_ledger(settings.state, envcfg.name, environ=env, stale_ok=True)
    current = ledger.current()
    image = current_image(current)
    ctx = TargetContext(
        env=env, env_name=envcfg.name, attempt="status", state_dir=settings.state_dir
    )
    found: list[TargetStatus] = []
    for spec in envcfg.targets:
        seen = observe(spec, ctx, image)
        state: ObservedState = "none" if image is None else seen.state
        found.append(TargetStatus(spec.label, state, seen.running, seen.detail))
    return StatusRecord(
        env=envcfg.name, current=current, targets=tuple(found), ledger_stale=ledger.stale
    )
