"""Signature coverage: is it safe to switch ``signature_policy`` to ``enforce``? (FR-014)

Looks at the last ``window`` (30) distinct SHAs that were built or deployed, newest first, and
for each takes its newest observation:

* build records — the metadata files ``<metadata_dir>/<sha>.json`` written by ``inv build``
  (``signature_status``/``signature_reason``, ``created_at``);
* deploy/rollback records — the history of every configured environment
  (:class:`shatag.ledger.Ledger`, ``signature_*``, ``finished_at``), including failed
  attempts, whose ``error_code`` SOFT_VERIFY_TOOL_ERROR counts as a tool failure.

A *tool failure* is an observation where the verifier could not answer: reason ``error``,
reason ``tool_missing`` (no cosign where verification ran) or error code
SOFT_VERIFY_TOOL_ERROR. The escalation criterion holds when at least ``window`` SHAs are known,
≥90 % of them are ``verified`` and <1 % are tool failures.

>>> report = summarize([Observation("a" * 40, "build", "2024-01-01", "verified", "n/a")], 1)
>>> (report.verified_pct, report.criterion_met)
(100.0, True)
"""

from __future__ import annotations

import heapq
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from shatag.config import Settings
from shatag.core import is_sha
from shatag.errors import InvalidInput
from shatag.ledger import open_ledger
from shatag.supplychain.metadata import load_metadata

WINDOW: Final = 30
MIN_VERIFIED_PCT: Final = 90.0
MAX_TOOL_FAILURE_PCT: Final = 1.0
TOOL_FAILURE_REASONS: Final = frozenset({"error", "tool_missing"})
TOOL_FAILURE_CODE: Final = "SOFT_VERIFY_TOOL_ERROR"
#: How much older than its ``created_at`` a metadata file's mtime may look (coarse clocks).
MTIME_SLACK_SEC: Final = 120.0
_NAME_LENGTH: Final = 40 + len(".json")

Source = Literal["build", "deploy", "rollback", "promote"]


@dataclass(frozen=True, slots=True)
class Observation:
    """The latest signature verdict known for one SHA, and where it was read."""

    sha: str
    source: Source
    when: str
    signature_status: str
    signature_reason: str
    error_code: str = ""
    where: str = ""

    @property
    def tool_failure(self) -> bool:
        return self.signature_reason in TOOL_FAILURE_REASONS or self.error_code == TOOL_FAILURE_CODE


@dataclass(frozen=True, slots=True)
class CoverageReport:
    """Signature coverage over the window of recent SHAs (``inv signatures``)."""

    window: int
    total: int
    verified: int
    tool_failures: int
    verified_pct: float
    tool_failure_pct: float
    criterion_met: bool
    reason: str
    sources: tuple[str, ...] = ()
    shas: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sources"] = list(self.sources)
        return {"phase": "signatures", **data}


def summarize(observations: Iterable[Observation], window: int = WINDOW) -> CoverageReport:
    """The newest observation of each of the newest ``window`` SHAs, and the criterion."""
    latest: dict[str, Observation] = {}
    for obs in sorted(observations, key=lambda o: o.when, reverse=True):
        if obs.sha not in latest:
            latest[obs.sha] = obs
    chosen = list(latest.values())[:window]
    total = len(chosen)
    verified = sum(1 for o in chosen if o.signature_status == "verified")
    failures = sum(1 for o in chosen if o.tool_failure)
    verified_pct = round(100.0 * verified / total, 1) if total else 0.0
    failure_pct = round(100.0 * failures / total, 1) if total else 0.0
    if total < window:
        met, reason = False, f"only {total} of the {window} SHAs needed have been built/deployed"
    elif verified_pct < MIN_VERIFIED_PCT:
        met, reason = False, f"{verified_pct}% verified, need at least {MIN_VERIFIED_PCT:g}%"
    elif failure_pct >= MAX_TOOL_FAILURE_PCT:
        met, reason = (
            False,
            f"{failure_pct}% tool failures, need less than {MAX_TOOL_FAILURE_PCT:g}%",
        )
    else:
        met, reason = True, "ready for signature_policy: enforce"
    return CoverageReport(
        window=window,
        total=total,
        verified=verified,
        tool_failures=failures,
        verified_pct=verified_pct,
        tool_failure_pct=failure_pct,
        criterion_met=met,
        reason=reason,
        shas=[asdict(o) for o in chosen],
    )


def build_observations(
    settings: Settings, *, window: int | None = None, others: Iterable[Observation] = ()
) -> list[Observation]:
    """One observation per readable ``<sha>.json`` metadata file -- with ``window``, only the
    files that can still be among the ``window`` newest SHAs (``others`` included).

    ``inv build`` stamps ``created_at`` before it writes the file, so a file's modification
    time is never older than its ``created_at``: files are read newest first, and reading stops
    at the first one modified (minus :data:`MTIME_SLACK_SEC`) before the ``window``-th newest
    observation so far (issue 17: ``inv signatures`` no longer reads every build ever made).
    """
    out: list[Observation] = []
    directory = settings.metadata_dir
    if not directory.is_dir():
        return out
    # Per file: a length/suffix check and one stat; the SHA check and the Path object wait
    # until a file is read (3,000 Path joins cost more than the 3,000 stats).
    candidates: list[tuple[float, str]] = []
    with os.scandir(directory) as entries:
        for entry in entries:
            name = entry.name
            if len(name) == _NAME_LENGTH and name.endswith(".json"):
                try:
                    candidates.append((entry.stat().st_mtime, name))
                except OSError:  # removed since the listing
                    continue
    candidates.sort(reverse=True)
    newest: dict[str, str] = {}
    for obs in others:
        newest[obs.sha] = max(newest.get(obs.sha, ""), obs.when)
    threshold = ""
    for count, (mtime, name) in enumerate(candidates):
        if not is_sha(name[:-5]):
            continue
        if window is not None and len(newest) >= window:
            if count % 16 == 0 or not threshold:
                threshold = heapq.nlargest(window, newest.values())[-1]
            if threshold and _iso(mtime + MTIME_SLACK_SEC) < threshold:
                break
        found = _build_observation(directory / name)
        if found is not None:
            out.append(found)
            newest[found.sha] = max(newest.get(found.sha, ""), found.when)
    return out


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))


def _build_observation(path: Path) -> Observation | None:
    try:
        data = load_metadata(path)
    except InvalidInput:
        return None
    if data is None:
        return None
    return Observation(
        sha=str(data.get("image_sha") or path.stem),
        source="build",
        when=str(data.get("created_at", "")),
        signature_status=str(data.get("signature_status", "unverified")),
        signature_reason=str(data.get("signature_reason", "")),
        error_code=str(data.get("error_code", "")),
        where=str(path),
    )


def history_observations(
    settings: Settings, limit: int = 500, *, env: Mapping[str, str] | None = None
) -> list[Observation]:
    """Deploy and rollback attempts of every configured environment (newest ``limit`` each)."""
    out: list[Observation] = []
    for env_name in settings.environments:
        ledger = open_ledger(settings.state, env_name, environ=env)
        for record in ledger.newest(limit=limit):
            if not is_sha(record.sha) or not record.is_switch:
                continue
            out.append(
                Observation(
                    sha=record.sha,
                    source="rollback"
                    if record.action == "rollback"
                    else ("promote" if record.action == "promote" else "deploy"),
                    when=record.finished_at or record.started_at,
                    signature_status=record.signature_status,
                    signature_reason=record.signature_reason,
                    error_code=record.error_code,
                    where=f"history:{env_name}",
                )
            )
    return out


def coverage(
    settings: Settings, window: int = WINDOW, *, env: Mapping[str, str] | None = None
) -> CoverageReport:
    """Coverage over build metadata and deployment history (see the module docstring).
    ``env``: what git runs with when the history is on git (``state_backend: git``)."""
    deploys = history_observations(settings, env=env)
    builds = build_observations(settings, window=window, others=deploys)
    report = summarize([*builds, *deploys], window)
    history = (
        f"history:git {settings.state_remote} refs/shatag/*"
        if settings.state_backend == "git"
        else f"history:{settings.state_dir}"
    )
    sources = (f"metadata:{settings.metadata_dir}", history)
    return CoverageReport(**{**asdict(report), "sources": sources})


def format_report(report: CoverageReport) -> str:
    """The human summary line(s) of a report."""
    verdict = "MET" if report.criterion_met else "NOT MET"
    lines = [
        f"signature coverage over the last {report.total}/{report.window} SHAs: "
        f"{report.verified_pct}% verified, {report.tool_failure_pct}% tool failures",
        f"escalation criterion (>= {MIN_VERIFIED_PCT:g}% verified, < {MAX_TOOL_FAILURE_PCT:g}% "
        f"tool failures): {verdict} — {report.reason}",
    ]
    return "\n".join(lines)
