"""The release board (issue 26, item 4): per environment, in promotion order, what serves,
since when, its signature and provenance state, and what waits to be promoted into it.

Read-only: the ledgers (a git ledger whose remote is down answers from its last fetched copy,
and the board says so), one HEAD per serving digest for its attestation tag, nothing else; the
promotion checks are not run (``promote --plan`` runs them). ``board --html FILE`` writes the
same as one self-contained page (inline CSS, no script, no external asset) with each
environment's recent history.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shatag.app.promote import Gate, candidate, evaluate
from shatag.config import EnvironmentConfig, Settings
from shatag.core import parse_repository
from shatag.errors import ShatagError
from shatag.ledger import open_ledger
from shatag.ledger.history import HistoryRecord, utc_now
from shatag.supplychain.copy import cosign_tags
from shatag.supplychain.registry import open_registry

#: How many records of each environment's history the page shows.
HISTORY_ROWS = 10


@dataclass(slots=True)
class Lane:
    """One environment on the board."""

    env: str
    source: str
    current: HistoryRecord | None
    since: str
    provenance: str
    waiting: str = ""
    gates: tuple[Gate, ...] = ()
    recent: list[HistoryRecord] = field(default_factory=list)
    stale: str = ""

    @property
    def signature(self) -> str:
        if self.current is None:
            return "-"
        return f"{self.current.signature_status} ({self.current.signature_reason})"

    @property
    def held_by(self) -> str:
        held = next((g for g in self.gates if g.state == "fail"), None)
        if held is not None:
            return f"{held.name}: {held.detail}"
        return "ready: no gate holds it (checks run at promote)" if self.waiting else ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "promotes_from": self.source,
            "sha": self.current.sha if self.current else "",
            "digest": self.current.digest if self.current else "",
            "since": self.since,
            "signature": self.signature,
            "provenance": self.provenance,
            "waiting": self.waiting,
            "held_by": self.held_by,
            "gates": [g.as_dict() for g in self.gates],
        }

    def human_lines(self) -> list[str]:
        fed = f" (promotes from {self.source})" if self.source else ""
        if self.current is None:
            lines = [f"{self.env}{fed}: nothing deployed"]
        else:
            lines = [
                f"{self.env}{fed}: {self.current.sha[:12]} since {self.since} "
                f"({self.current.action}); signature {self.signature}; provenance "
                f"{self.provenance}"
            ]
        if self.waiting:
            lines.append(f"  waiting: {self.waiting[:12]} from {self.source} — {self.held_by}")
        if self.stale:
            lines.append(f"  note: {self.stale}")
        return lines


@dataclass(slots=True)
class Board:
    """Every environment's lane, in promotion order, and when the board was read."""

    lanes: list[Lane]
    generated_at: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "phase": "board",
            "generated_at": self.generated_at,
            "environments": [lane.as_dict() for lane in self.lanes],
        }

    def human_lines(self) -> list[str]:
        return [line for lane in self.lanes for line in lane.human_lines()]


def promotion_order(envs: Mapping[str, EnvironmentConfig]) -> list[EnvironmentConfig]:
    """Environments sources first (a chain staging → production reads left to right), each
    group in name order."""
    depth: dict[str, int] = {}

    def level(name: str) -> int:
        if name not in depth:
            promo = envs[name].promotion
            depth[name] = (
                0 if promo is None or promo.source not in envs else level(promo.source) + 1
            )
        return depth[name]

    return sorted(envs.values(), key=lambda e: (level(e.name), e.name))


def board(settings: Settings, *, env: Mapping[str, str]) -> Board:
    """The board of every configured environment."""
    lanes = [_lane(settings, envcfg, env) for envcfg in promotion_order(settings.environments)]
    return Board(lanes, utc_now())


def _lane(settings: Settings, envcfg: EnvironmentConfig, env: Mapping[str, str]) -> Lane:
    ledger = open_ledger(settings.state, envcfg.name, environ=env, stale_ok=True)
    records = ledger.newest(limit=500)
    here = candidate(envcfg.name, records, None)
    current = here.record
    lane = Lane(
        env=envcfg.name,
        source=envcfg.promotion.source if envcfg.promotion else "",
        current=current,
        since=here.since,
        provenance=_provenance(settings, current, env) if current else "-",
        recent=records[:HISTORY_ROWS],
        stale=ledger.stale,
    )
    if envcfg.promotion is not None:
        source = open_ledger(settings.state, envcfg.promotion.source, environ=env, stale_ok=True)
        offer = candidate(envcfg.promotion.source, source.newest(limit=500), None)
        if offer.record is not None and (current is None or offer.sha != current.sha):
            lane.waiting = offer.sha
            try:
                lane.gates = evaluate(settings, envcfg, offer, env=env, run_checks=False)
            except ShatagError as exc:  # a gate that cannot be evaluated is shown, not raised
                lane.gates = (Gate("board", "fail", f"{exc.code}: {exc.message}"),)
    return lane


def _provenance(settings: Settings, record: HistoryRecord, env: Mapping[str, str]) -> str:
    """Whether the serving digest has a cosign attestation (``sha256-<hex>.att``) beside it."""
    if not record.repository:
        return "unknown (no repository recorded)"
    try:
        client = open_registry(settings.registry, parse_repository(record.repository), env=env)
        found = client.manifest_digest(cosign_tags(record.digest)[1])
    except ShatagError as exc:
        return f"unknown ({exc.code})"
    return "attested" if found else "no attestation"


# -- the page -------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#1b1f24;background:#fff}
h1{font-size:1.4em;margin:0 0 .2em}.meta{color:#57606a;margin-bottom:1.5em}
.lanes{display:flex;gap:1em;flex-wrap:wrap}
.lane{border:1px solid #d0d7de;border-radius:8px;padding:1em;min-width:22em;flex:1}
.lane h2{margin:0 0 .5em;font-size:1.15em}.from{color:#57606a;font-weight:normal}
code{font:12px ui-monospace,monospace;background:#f6f8fa;padding:1px 4px;border-radius:4px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em;margin:0 0 .8em}
dt{color:#57606a}dd{margin:0;min-width:0;overflow-wrap:anywhere}.ok{color:#1a7f37}.bad{color:#cf222e}.wait{color:#9a6700}
table{border-collapse:collapse;width:100%;font-size:12px}
th,td{text-align:left;padding:2px 6px;border-bottom:1px solid #eaeef2}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def render_html(board_: Board) -> str:
    """The board as one static, self-contained HTML page."""
    lanes = "\n".join(_lane_html(lane) for lane in board_.lanes)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>shatag release board</title>"
        f"<style>{_CSS}</style></head><body>"
        "<h1>shatag release board</h1>"
        f'<div class="meta">generated {_e(board_.generated_at)} · environments in promotion '
        "order</div>"
        f'<div class="lanes">{lanes}</div></body></html>\n'
    )


def _lane_html(lane: Lane) -> str:
    fed = f' <span class="from">← {_e(lane.source)}</span>' if lane.source else ""
    if lane.current is None:
        facts = "<dd>nothing deployed</dd>"
        facts = f"<dt>serving</dt>{facts}"
    else:
        sig_class = "ok" if lane.current.signature_status == "verified" else "bad"
        facts = (
            f"<dt>serving</dt><dd><code>{_e(lane.current.sha)}</code></dd>"
            f"<dt>digest</dt><dd><code>{_e(lane.current.digest)}</code></dd>"
            f"<dt>since</dt><dd>{_e(lane.since)} ({_e(lane.current.action)})</dd>"
            f'<dt>signature</dt><dd class="{sig_class}">{_e(lane.signature)}</dd>'
            f"<dt>provenance</dt><dd>{_e(lane.provenance)}</dd>"
        )
    if lane.waiting:
        facts += (
            f'<dt>waiting</dt><dd class="wait"><code>{_e(lane.waiting[:12])}</code> from '
            f"{_e(lane.source)} — {_e(lane.held_by)}</dd>"
        )
    if lane.stale:
        facts += f"<dt>note</dt><dd>{_e(lane.stale)}</dd>"
    rows = "".join(
        f"<tr><td>{_e(r.finished_at or r.started_at)}</td><td>{_e(r.action)}"
        f"{' from ' + _e(r.promoted_from) if r.promoted_from else ''}</td>"
        f"<td><code>{_e(r.sha[:12])}</code></td><td>{_e(r.result)}"
        f"{' ' + _e(r.error_code) if r.error_code else ''}</td><td>{_e(r.initiated_by)}</td></tr>"
        for r in lane.recent
    )
    history = (
        "<table><thead><tr><th>finished (UTC)</th><th>action</th><th>sha</th><th>result</th>"
        f"<th>by</th></tr></thead><tbody>{rows}</tbody></table>"
        if rows
        else "<p>no history</p>"
    )
    return (
        f'<section class="lane" id="env-{_e(lane.env)}"><h2>{_e(lane.env)}{fed}</h2>'
        f"<dl>{facts}</dl><h3>recent history</h3>{history}</section>"
    )
