"""Promote: the release serving in one environment moves to the next, by digest, through gates.

``promote --to=production [--sha=…]`` deploys the digest the *source* environment (the target's
``promotion.from``) recorded for the SHA -- by default the SHA it serves now -- through the one
path of :func:`shatag.app.deploy.run_switch` (the target's lock, recovery, registry HEAD, the
digest guard, the verification step and its policy, the switch). History records
``action=promote`` and ``promoted_from``.

The gates run under the target's lock, in this order; the first that holds the release refuses
with PROMOTION_BLOCKED naming it, and nothing is changed:

1. ``current`` -- the SHA is the source environment's current release (a SHA it was rolled
   back from, or never ran, is refused);
2. ``soak`` -- it has served there, deployed successfully and not rolled back, for at least
   ``soak_sec``: measured from the ledger's records, so any runner sees the same (git backend);
3. ``mainline`` -- a canonical target takes only main-line code (FR-016): a SHA the source
   runs from the staging repository must be reachable from a ``main_branches`` head;
4. ``checks`` -- each command (an argument list, no shell) exits 0 within
   ``check_timeout_sec``, with ``SHATAG_PROMOTE_*`` variables naming the SHA, the digest and
   both environments.

Then, if the two environments pull from different repositories, the image is copied into the
target's (:mod:`shatag.supplychain.copy`: same digest, no rebuild), and the switch runs.
``--plan`` evaluates every gate and says what would change, changing nothing.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from shatag._sys import source as source_mod
from shatag._sys import subproc
from shatag.app.deploy import (
    DeployRecord,
    LineSink,
    PlanRecord,
    Route,
    TargetPlan,
    plan_switch,
    run_switch,
)
from shatag.app.policy import check_image, refuse_quarantined
from shatag.config import EnvironmentConfig, PromotionConfig, Settings
from shatag.core import (
    ImageRef,
    RepositoryType,
    ensure_immutable_tag,
    parse_repository,
    validate_sha,
)
from shatag.errors import ConfigError, PromotionBlocked, ShatagError, ToolFailure
from shatag.ledger import Ledger, open_ledger
from shatag.ledger.history import HistoryRecord, initiated_by
from shatag.supplychain.copy import CopyReport, check_tags_free, copy_image
from shatag.supplychain.registry import open_registry
from shatag.targets import TargetContext, make_target

log = logging.getLogger("shatag.promote")

GateState = Literal["pass", "fail", "not run"]


@dataclass(frozen=True, slots=True)
class PromoteRequest:
    """What ``inv promote`` asks for: the target environment and the SHA (``None``: the one the
    source environment serves)."""

    to: str
    sha: str | None = None


@dataclass(frozen=True, slots=True)
class Gate:
    """One gate's state: ``pass``, ``fail`` (and why), or ``not run`` (an earlier one failed)."""

    name: str
    state: GateState
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"gate": self.name, "state": self.state, "detail": self.detail}

    def line(self) -> str:
        return f"gate {self.name}: {self.state} — {self.detail}"


@dataclass(frozen=True, slots=True)
class Candidate:
    """The release the source environment offers: its record and since when it serves."""

    source: str
    record: HistoryRecord | None
    since: str = ""
    #: Why the asked-for SHA is not the source's current release ("" when it is).
    refused: str = ""

    @property
    def sha(self) -> str:
        return self.record.sha if self.record else ""


@dataclass(slots=True)
class PromoteResult:
    """A promotion done: the switch's record, the gates it passed, the copy if one ran."""

    record: DeployRecord
    gates: tuple[Gate, ...]
    copy: CopyReport | None = None

    def as_dict(self) -> dict[str, Any]:
        data = self.record.as_dict()
        data["gates"] = [g.as_dict() for g in self.gates]
        if self.copy is not None:
            data.update(self.copy.as_dict())
        return data


@dataclass(slots=True)
class PromotePlan:
    """What ``promote --plan`` found: every gate, the copy it would make, the target changes."""

    source: str
    target: str
    sha: str
    digest: str
    gates: tuple[Gate, ...]
    copy_from: str = ""
    copy_to: str = ""
    changes: tuple[TargetPlan, ...] = ()
    plan: PlanRecord | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def blocked(self) -> bool:
        return any(g.state != "pass" for g in self.gates)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "phase": "plan",
            "action": "promote",
            "env": self.target,
            "promoted_from": self.source,
            "image_sha": self.sha,
            "image_digest": self.digest,
            "gates": [g.as_dict() for g in self.gates],
            "blocked": self.blocked,
            "copy": {"from": self.copy_from, "to": self.copy_to} if self.copy_to else None,
            "changes": [{"target": c.target, "change": c.change} for c in self.changes],
        }
        return data

    def human_lines(self) -> list[str]:
        lines = [f"plan: promote {self.sha or '(nothing)'} {self.source} -> {self.target}"]
        lines += [f"plan: {g.line()}" for g in self.gates]
        if self.copy_to:
            lines.append(f"plan: copy {self.digest} {self.copy_from} -> {self.copy_to}")
        for change in self.changes:
            lines.append(f"plan: {change.target}")
            text = change.change.rstrip("\n")
            lines.extend(text.splitlines() if text else ["  (no change)"])
        lines += [f"plan: {note}" for note in self.notes]
        verdict = "blocked" if self.blocked else "would promote"
        lines.append(f"plan: {verdict} — nothing was changed")
        return lines


# -- reading the source environment ---------------------------------------------------------


def parse_time(stamp: str) -> datetime | None:
    """A history timestamp (``2026-01-02T03:04:05.678Z``) as an aware datetime.

    >>> parse_time("2026-01-02T03:04:05.678Z").year, parse_time("junk")
    (2026, None)
    """
    try:
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def candidate(source: str, newest_first: list[HistoryRecord], sha: str | None) -> Candidate:
    """What ``source`` offers for ``sha`` (``None``: its current release): the record of the
    release it serves, since when (the oldest successful record of its latest unbroken run:
    a redeploy does not restart the soak, a failed attempt that was undone does not break it),
    or why ``sha`` is not it."""
    ok = [r for r in newest_first if r.ok]
    if not ok:
        return Candidate(source, None, refused=f"{source!r} has no successful deployment")
    current = ok[0]
    since = current
    for record in ok[1:]:
        if record.sha != current.sha:
            break
        since = record
    if sha is None or sha == current.sha:
        return Candidate(source, current, since.finished_at or since.started_at)
    return Candidate(source, None, refused=_not_current(source, ok, sha, current))


def _not_current(source: str, ok: list[HistoryRecord], sha: str, current: HistoryRecord) -> str:
    ran = next((i for i, r in enumerate(ok) if r.sha == sha), None)
    now = f"it serves {current.sha} since {current.finished_at}"
    if ran is None:
        return f"{sha} never ran successfully in {source!r} ({now})"
    back = next((r for r in reversed(ok[:ran]) if r.action == "rollback"), None)
    if back is not None:
        return (
            f"{sha} was rolled back in {source!r} at {back.finished_at} by {back.initiated_by} "
            f"(to {back.sha}); {now}"
        )
    return f"{sha} is no longer the current release of {source!r} ({now})"


# -- the gates --------------------------------------------------------------------------------


def _soak_gate(promo: PromotionConfig, offer: Candidate, now: datetime) -> Gate:
    since = parse_time(offer.since)
    if since is None:
        return Gate("soak", "fail", f"{offer.source!r} recorded no time for {offer.sha}")
    served = (now - since).total_seconds()
    if served < promo.soak_sec:
        left = promo.soak_sec - served
        return Gate(
            "soak",
            "fail",
            f"{offer.sha[:12]} has served {offer.source!r} for {served:.0f}s since "
            f"{offer.since}; soak_sec is {promo.soak_sec:g}: {left:.0f}s to go",
        )
    return Gate(
        "soak",
        "pass",
        f"served {offer.source!r} for {served:.0f}s (soak_sec {promo.soak_sec:g}) without a "
        "rollback",
    )


def _needs_copy(settings: Settings, envcfg: EnvironmentConfig, record: HistoryRecord) -> bool:
    """Whether the target pulls from another repository than the one the source ran: a
    staging environment also takes canonical images, a canonical one only canonical."""
    target = settings.repository(envcfg.repository_type)
    if record.repository in ("", str(target)):
        return False
    return not (
        envcfg.repository_type is RepositoryType.STAGING
        and record.repository == str(settings.canonical)
    )


def _mainline_gate(
    settings: Settings, envcfg: EnvironmentConfig, record: HistoryRecord, env: Mapping[str, str]
) -> Gate | None:
    """FR-016 for a canonical target fed from the staging repository: main-line code only."""
    if envcfg.repository_type is not RepositoryType.CANONICAL or not _needs_copy(
        settings, envcfg, record
    ):
        return None
    heads = ", ".join(settings.main_branches)
    git = source_mod.probe(settings.context, env)
    if git is None:
        return Gate(
            "mainline",
            "fail",
            f"{settings.context} is not a git checkout, so nothing shows {record.sha[:12]} is on "
            f"{heads}; {envcfg.name!r} takes main-line code only (FR-016)",
        )
    ref = source_mod.main_branch_holding(git, record.sha, settings.main_branches, env)
    if ref is None:
        return Gate(
            "mainline",
            "fail",
            f"{record.sha} is not reachable from a head of {heads} in {git.toplevel}; "
            f"{envcfg.name!r} pulls from the canonical repository, which takes main-line code "
            "only (FR-016): merge it first",
        )
    return Gate("mainline", "pass", f"{record.sha[:12]} is on {ref}")


def check_env(envcfg: EnvironmentConfig, offer: Candidate, record: HistoryRecord) -> dict[str, str]:
    """The variables every check runs with."""
    return {
        "SHATAG_PROMOTE_SHA": record.sha,
        "SHATAG_PROMOTE_DIGEST": record.digest,
        "SHATAG_PROMOTE_IMAGE_REF": record.image_ref,
        "SHATAG_PROMOTE_FROM": offer.source,
        "SHATAG_PROMOTE_TO": envcfg.name,
        "SHATAG_IMAGE_SHA": record.sha,
        "SHATAG_IMAGE_DIGEST": record.digest,
    }


def _checks_gate(
    settings: Settings,
    envcfg: EnvironmentConfig,
    promo: PromotionConfig,
    offer: Candidate,
    *,
    env: Mapping[str, str],
    on_line: LineSink | None,
) -> Gate:
    assert offer.record is not None  # noqa: S101 -- the caller checked the current gate
    extra = check_env(envcfg, offer, offer.record)
    for index, argv in enumerate(promo.checks, start=1):
        shown = shlex.join(argv)
        try:
            subproc.run(
                list(argv),
                timeout=promo.check_timeout_sec,
                env={**env, **extra},
                on_line=on_line,
                cwd=str(settings.base_dir),
            )
        except ToolFailure as exc:
            return Gate(
                "checks",
                "fail",
                f"check {index}/{len(promo.checks)} `{shown}` failed ({exc.code}: {exc.message})",
            )
    if not promo.checks:
        return Gate("checks", "pass", "no checks configured")
    return Gate("checks", "pass", f"{len(promo.checks)} check(s) exited 0")


def evaluate(
    settings: Settings,
    envcfg: EnvironmentConfig,
    offer: Candidate,
    *,
    env: Mapping[str, str],
    run_checks: bool = True,
    on_line: LineSink | None = None,
    now: datetime | None = None,
) -> tuple[Gate, ...]:
    """Every gate in order; after the first failure the rest are ``not run``."""
    promo = _promotion(envcfg)
    gates: list[Gate] = []
    record = offer.record
    if record is None:
        gates.append(Gate("current", "fail", offer.refused))
    else:
        gates.append(
            Gate("current", "pass", f"{record.sha[:12]} is the current release of {offer.source!r}")
        )
        gates.append(_soak_gate(promo, offer, now or datetime.now(UTC)))
        mainline = _mainline_gate(settings, envcfg, record, env)
        if mainline is not None:
            gates.append(mainline)
    if all(g.state == "pass" for g in gates) and record is not None:
        if run_checks:
            gates.append(_checks_gate(settings, envcfg, promo, offer, env=env, on_line=on_line))
        else:
            gates.append(Gate("checks", "not run", f"{len(promo.checks)} check(s) run at promote"))
    for name in ("soak", "checks"):
        if not any(g.name == name for g in gates):
            gates.append(Gate(name, "not run", "an earlier gate holds the release"))
    return tuple(gates)


def _promotion(envcfg: EnvironmentConfig) -> PromotionConfig:
    if envcfg.promotion is None:
        raise ConfigError(
            f"environment {envcfg.name!r} declares no promotion: add "
            f"shatag.environments.{envcfg.name}.promotion: {{from: <env>, soak_sec: …}}, "
            "or deploy to it"
        )
    return envcfg.promotion


def blocked(target: str, gates: tuple[Gate, ...]) -> PromotionBlocked | None:
    failed = next((g for g in gates if g.state == "fail"), None)
    if failed is None:
        return None
    return PromotionBlocked(
        f"promotion to {target!r} held by gate {failed.name}: {failed.detail}. Nothing was changed"
    )


# -- the use case ---------------------------------------------------------------------------


def promote(
    settings: Settings,
    request: PromoteRequest,
    *,
    env: Mapping[str, str],
    on_line: LineSink | None = None,
) -> PromoteResult:
    """Promote into ``request.to``; see the module docstring."""
    sha = ensure_immutable_tag(validate_sha(request.sha)) if request.sha is not None else None
    envcfg = settings.environment(request.to)
    promo = _promotion(envcfg)
    source_cfg = settings.environment(promo.source)
    passed: list[Gate] = []
    copies: list[CopyReport] = []
    offers: list[Candidate] = []

    def choose(ledger: Ledger) -> str:  # under the target's lock
        source = open_ledger(settings.state, source_cfg.name, environ=env)
        offer = candidate(source_cfg.name, source.newest(limit=500), sha)
        gates = evaluate(settings, envcfg, offer, env=env, on_line=on_line)
        refusal = blocked(envcfg.name, gates)
        if refusal is not None:
            raise refusal
        assert offer.record is not None  # noqa: S101 -- the current gate passed
        passed.extend(gates)
        offers.append(offer)
        refuse_quarantined(ledger, offer.record.sha)  # before the copy (issue 25)
        if _needs_copy(settings, envcfg, offer.record):
            _policy_before_copy(settings, envcfg, offer.record, env=env)
            copies.append(_copy(settings, envcfg, offer.record, env=env))
        return offer.record.sha

    def expected(_ledger: Ledger, image: ImageRef) -> tuple[str, str] | None:
        record = offers[-1].record
        assert record is not None  # noqa: S101 -- choose() ran first
        return record.digest, f"the deployment history of {source_cfg.name!r}"

    route = Route(
        action="promote",
        holder=f"promote {(sha or 'current')[:12]} from {source_cfg.name} by {initiated_by(env)}",
        choose=choose,
        expected=expected,
        mismatch_advice="the target repository's tag names another image than the one that "
        "served in the source environment. Nothing was promoted; investigate the registry",
        promoted_from=source_cfg.name,
    )
    record = run_switch(settings, envcfg, route, env=env, on_line=on_line)
    return PromoteResult(record, tuple(passed), copies[-1] if copies else None)


def _policy_before_copy(
    settings: Settings, envcfg: EnvironmentConfig, record: HistoryRecord, *, env: Mapping[str, str]
) -> None:
    """The target's verification policy, checked on the source repository's copy (the
    signatures travel with the digest) so that a refusal leaves the target repository as it
    was; the deploy path checks it again on the copy."""
    if envcfg.verify is None and settings.signature_policy != "enforce":
        return  # nothing can refuse: soft verification only records
    image = ImageRef(parse_repository(record.repository), record.sha, record.digest)
    check_image(settings, envcfg, image, env=env)


def _copy(
    settings: Settings, envcfg: EnvironmentConfig, record: HistoryRecord, *, env: Mapping[str, str]
) -> CopyReport:
    source = open_registry(settings.registry, parse_repository(record.repository), env=env)
    target_repo = settings.repository(envcfg.repository_type)
    target = open_registry(settings.registry, target_repo, env=env)
    report = copy_image(source, target, record.sha, record.digest)
    log.info("%s", report.human_line())
    return report


def plan_promotion(
    settings: Settings, request: PromoteRequest, *, env: Mapping[str, str]
) -> PromotePlan:
    """Every gate's state (checks included: they only read) and what would change."""
    sha = ensure_immutable_tag(validate_sha(request.sha)) if request.sha is not None else None
    envcfg = settings.environment(request.to)
    promo = _promotion(envcfg)
    source = open_ledger(settings.state, promo.source, environ=env, stale_ok=True)
    offer = candidate(promo.source, source.newest(limit=500), sha)
    gates = evaluate(settings, envcfg, offer, env=env)
    record = offer.record
    plan = PromotePlan(
        promo.source,
        envcfg.name,
        record.sha if record else sha or "",
        record.digest if record else "",
        gates,
    )
    if record is None or plan.blocked:
        return plan
    if _needs_copy(settings, envcfg, record):
        target_repo = settings.repository(envcfg.repository_type)
        plan.copy_from, plan.copy_to = record.repository, str(target_repo)
        try:
            target = open_registry(settings.registry, target_repo, env=env)
            check_tags_free(target, record.sha, record.digest)
        except ShatagError as exc:
            plan.notes.append(f"the copy would fail: {exc.code}: {exc.message}")
        image = ImageRef(target_repo, record.sha, record.digest)
        ctx = TargetContext(
            env=env, env_name=envcfg.name, attempt="plan", state_dir=settings.state_dir
        )
        plan.changes = tuple(
            TargetPlan(spec.label, make_target(spec, ctx).plan(image)) for spec in envcfg.targets
        )
        return plan
    route = Route(
        action="promote",
        holder="plan",
        choose=lambda _ledger: record.sha,
        expected=lambda _ledger, _image: (record.digest, f"the history of {promo.source!r}"),
        mismatch_advice="the tag was re-pointed; nothing would be promoted",
        promoted_from=promo.source,
    )
    plan.plan = plan_switch(settings, envcfg, route, env=env)
    plan.changes = plan.plan.changes
    return plan


def soak_left(promo: PromotionConfig, offer: Candidate, now: float | None = None) -> float:
    """Seconds until ``offer`` has soaked (0: it has), for the board."""
    since = parse_time(offer.since)
    if since is None:
        return promo.soak_sec
    served = (now if now is not None else time.time()) - since.timestamp()
    return max(0.0, promo.soak_sec - served)
