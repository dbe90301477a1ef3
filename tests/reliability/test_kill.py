"""SIGKILL at random points of deploy and rollback (issue 6).

Each run starts the real ``inv deploy``/``inv rollback`` and kills its process group with
SIGKILL as soon as one event of the run is seen (issue 27: an event, never a delay): the
process started, the journal written, the SDL switched, the tfvars switched, the ``apply``
command started (it touches a marker file), the history appended, the journal cleared. The
events are taken in turn, so each is hit by deploys and rollbacks alike. Afterwards, before
anything else runs:

* the SDL and tfvars files are each wholly old or wholly new (byte-for-byte / parsed);
* the history is the old history, or the old history plus one complete new record;

and the next deploy works and leaves the targets exactly at what it deployed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.reliability.conftest import Built, Ledger, Site, Snapshot, World, start_inv

LIVE_KILLS = 27  # the issue asks for at least 25 kills that land in a live process
MAX_RUNS = 45


def _history_ok(before: Snapshot, after: Snapshot, target: Built) -> tuple[bool, str]:
    old = before.history_records()
    new = after.history_records()
    if any("torn" in r for r in new[:-1]):
        return False, "a torn line inside the history"
    complete = [r for r in new if "torn" not in r]
    if complete == old:
        return True, "old"
    if complete[: len(old)] == old and len(complete) == len(old) + 1:
        added = complete[-1]
        return added.get("sha") == target.sha, f"old+1 ({added.get('result')})"
    return False, f"history changed unexpectedly: {len(old)} -> {len(complete)} records"


EVENTS = (
    "started",
    "journal written",
    "sdl switched",
    "tfvars switched",
    "apply started",
    "history appended",
    "journal cleared",
)


def _kill_at(
    site: Site, proc: subprocess.Popen[bytes], event: str, before: Snapshot, marker: Path
) -> tuple[bool, list[str]]:
    """Wait for the events of the run up to ``event`` and SIGKILL its group at once. Returns
    whether it was alive when killed, and the events seen (in the order they were seen)."""
    journal = site.state / site.env_name / "pending.json"
    seen: list[str] = ["started"]

    def history_grew() -> bool:
        path = site.history_path
        return path.exists() and path.stat().st_size > len(before.history)

    probes: dict[str, Callable[[], bool]] = {
        "started": lambda: True,
        "journal written": journal.exists,
        "sdl switched": lambda: site.sdl.read_text() != before.sdl,
        "tfvars switched": lambda: site.tfvars.read_text() != before.tfvars,
        "apply started": marker.exists,
        "history appended": history_grew,
        "journal cleared": lambda: "journal written" in seen and not journal.exists(),
    }

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for name in EVENTS:
            if name not in seen and probes[name]():
                seen.append(name)
        if event in seen:
            break
        if proc.poll() is not None:
            return False, seen
        time.sleep(0.002)
    alive = proc.poll() is None
    if alive:
        os.killpg(proc.pid, signal.SIGKILL)
    return alive, seen


def test_sigkill_during_deploy_and_rollback(
    ledger: Ledger, world: World, make_site: Callable[..., Site], tmp_path: Path
) -> None:
    # Not cryptographic: reproducible targets (set the seed to replay a run).
    rng = random.Random(int(os.environ.get("SHATAG_RELIABILITY_SEED", "6")))  # noqa: S311
    marker = tmp_path / "apply-started"
    site = make_site(apply=f"sh -c 'touch {marker}; sleep 0.3'")
    images = world.images
    # Baseline: every image deployed once (rollback targets need a recorded digest).
    current: Built | None = None
    for img in images:
        result = site.deploy(ledger, img)
        assert result.returncode == 0, result.stderr
        current = img
    killed_live = 0
    failures: list[str] = []
    states: dict[str, int] = {}
    hits: dict[str, int] = {}
    run = -1
    while killed_live < LIVE_KILLS and run < MAX_RUNS:
        run += 1
        assert current is not None
        target = rng.choice([i for i in images if i.sha != current.sha])
        action = "deploy" if run % 2 == 0 else "rollback"
        event = EVENTS[run % len(EVENTS)]
        before = site.snapshot()
        marker.unlink(missing_ok=True)
        proc = start_inv(site, action, f"--sha={target.sha}", f"--env={site.env_name}")
        alive, seen = _kill_at(site, proc, event, before, marker)
        if alive:
            hits[event] = hits.get(event, 0) + 1
        # the run was where it was killed: the event and every one before it, in order
        upto = EVENTS.index(event) + 1
        if alive and seen[:upto] != list(EVENTS[:upto]):
            failures.append(f"run {run} ({action}) killed at {event!r} after events {seen}")
        out, err = proc.communicate(timeout=60)
        ledger.capture(
            f"killed {action}", out.decode(errors="replace") + err.decode(errors="replace")
        )
        ledger.count("kills_attempted")
        after = site.snapshot()
        sdl = (
            "old"
            if site.sdl_is(after, current)
            else "new"
            if site.sdl_is(after, target)
            else "MIXED"
        )
        tfv = (
            "old"
            if site.tfvars_is(after, current)
            else "new"
            if site.tfvars_is(after, target)
            else "MIXED"
        )
        hist_ok, hist = _history_ok(before, after, target)
        key = f"sdl={sdl} tfvars={tfv} history={hist.split(' ')[0]}"
        states[key] = states.get(key, 0) + 1
        problems = []
        if "MIXED" in (sdl, tfv) or not hist_ok:
            problems.append(f"run {run} ({action}, alive={alive}): {key} {hist}")
        # the next deploy works and lands exactly
        follow = rng.choice(images)
        result = site.deploy(ledger, follow)
        final = site.snapshot()
        if result.returncode != 0 or not (
            site.sdl_is(final, follow) and site.tfvars_is(final, follow)
        ):
            problems.append(f"run {run}: next deploy {result.returncode}: {result.stderr[-300:]}")
        current = follow
        if alive and not problems:
            killed_live += 1
            ledger.count("kills_survived")
        failures += problems
    # the history stays a readable catalog after all this
    catalog = site.inv(ledger, "history", f"--env={site.env_name}", "--json", "--limit=0")
    ok = not failures and killed_live >= 25 and catalog.returncode == 0
    ledger.record(
        f"SIGKILL at each event of deploy/rollback in turn ({run + 1} runs)",
        ">= 25 kills of a live process; targets and history wholly old or wholly new; "
        "next deploy works",
        f"{killed_live} live kills survived; kills per event: "
        + ", ".join(f"{e} x{hits.get(e, 0)}" for e in EVENTS)
        + "; states: "
        + ", ".join(f"{k} x{v}" for k, v in sorted(states.items()))
        + (f"; problems: {failures[:3]}" if failures else ""),
        ok,
    )
    assert not failures, "\n".join(failures)
    assert killed_live >= 25, f"only {killed_live} kills landed in a live process"
    assert catalog.returncode == 0, catalog.stderr
