"""Concurrency (issue 6): two deploys of one environment, two builds of one SHA, at once."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import InvResult, inv_argv
from tests.reliability._shim import HeldApply, has_open
from tests.reliability.conftest import Ledger, Site, World, describe, error_code, wait_for


def _start(env: Any, argvs: list[list[str]]) -> list[subprocess.Popen[str]]:
    """Start every command at once."""
    return [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for argv in argvs
    ]


def _finish(procs: list[subprocess.Popen[str]], ledger: Ledger) -> list[InvResult]:
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        ledger.capture("concurrent run", out + err)
        results.append(InvResult(proc.returncode, out, err))
    return results


def _together(env: Any, argvs: list[list[str]], ledger: Ledger) -> list[InvResult]:
    """Start every command at once; wait for all."""
    return _finish(_start(env, argvs), ledger)


def test_two_deploys_at_once_without_waiting(
    ledger: Ledger, world: World, make_site: Callable[..., Site], tmp_path: Path
) -> None:
    a, b, c = world.images
    held = HeldApply(tmp_path / "apply-started", tmp_path / "go")
    site = make_site(apply=held.command, lock_timeout=0)
    held.go.touch()
    assert site.deploy(ledger, a).returncode == 0
    held.go.unlink()
    held.started.unlink()
    before = site.snapshot()
    procs = _start(
        site.env,
        [site.argv("deploy", f"--sha={img.sha}", f"--env={site.env_name}") for img in (b, c)],
    )
    # The winner is held in its apply step (holding the lock) until the other has given up.
    winner = held.winner(procs)
    others = [p for p in procs if p is not winner]
    gave_up = wait_for(lambda: all(p.poll() is not None for p in others), 120)
    in_apply = winner is not None and winner.poll() is None
    held.go.touch()
    results = _finish(procs, ledger)
    winners = [img for img, r in zip((b, c), results, strict=True) if r.returncode == 0]
    codes = sorted(error_code(r) for r in results if r.returncode != 0)
    after = site.snapshot()
    added = after.history_records()[len(before.history_records()) :]
    ok = (
        gave_up
        and in_apply
        and len(winners) == 1
        and codes == ["DEPLOY_LOCKED"]
        and site.sdl_is(after, winners[0])
        and site.tfvars_is(after, winners[0])
        and [r["sha"] for r in added] == [winners[0].sha]
    )
    ledger.record(
        "two deploys of one environment at once (lock timeout 0)",
        "one wins, the other fails DEPLOY_LOCKED; targets and history show only the winner",
        f"{[describe(r) for r in results]} (the loser gave up while the winner held the lock "
        f"in its apply step: {gave_up and in_apply}); history +{len(added)}",
        ok,
    )
    assert ok, [r.stderr[-300:] for r in results]


def test_two_deploys_at_once_waiting(
    ledger: Ledger, world: World, make_site: Callable[..., Site], tmp_path: Path
) -> None:
    a, b, c = world.images
    held = HeldApply(tmp_path / "apply-started", tmp_path / "go")
    site = make_site(apply=held.command, lock_timeout=60)
    held.go.touch()
    assert site.deploy(ledger, a).returncode == 0
    held.go.unlink()
    held.started.unlink()
    before = len(site.snapshot().history_records())
    procs = _start(
        site.env,
        [site.argv("deploy", f"--sha={img.sha}", f"--env={site.env_name}") for img in (b, c)],
    )
    # The winner is held in its apply step until the other is seen waiting on the lock file.
    lock_file = (site.state / site.env_name / "deploy.lock").resolve()
    winner = held.winner(procs)
    other = next(p for p in procs if p is not winner)
    waiting = winner is not None and wait_for(lambda: has_open(other.pid, lock_file), 120)
    held.go.touch()
    results = _finish(procs, ledger)
    after = site.snapshot()
    added = after.history_records()[before:]
    last = next(img for img in (b, c) if added and img.sha == added[-1]["sha"])
    serialized = (
        len(added) == 2
        and added[0]["finished_at"] <= added[1]["started_at"]
        and added[1]["previous_sha"] == added[0]["sha"]
    )
    ok = (
        waiting
        and all(r.returncode == 0 for r in results)
        and serialized
        and site.sdl_is(after, last)
        and site.tfvars_is(after, last)
    )
    ledger.record(
        "two deploys of one environment at once (lock timeout 60s)",
        "the second waits for the lock: both succeed one after the other; targets = the later",
        f"{[describe(r) for r in results]}; the second seen waiting on the lock while the "
        f"first held it: {waiting}; serialized={serialized}",
        ok,
    )
    assert ok, (json.dumps(added, indent=1), [r.stderr[-300:] for r in results])


def test_two_builds_of_one_sha_at_once(ledger: Ledger, world: World) -> None:
    env = {**world.env, "INVOKE_SHATAG_CONTEXT": str(world.app.path)}
    client = world.client()
    observed = []
    ok = True
    for round_ in range(2):
        sha = world.app.commit(f'{{"race": {round_}}}', f"race {round_}")
        results = _together(
            env,
            [inv_argv("build", f"--sha={sha}", "--branch=main") for _ in range(2)],
            ledger,
        )
        final = client.manifest_digest(sha)
        short = client.manifest_digest(sha[:12])
        claims = []
        for r in results:
            if r.returncode == 0:
                claims.append(("ok", r.record["image_digest"], r.record["reused"]))
            else:
                claims.append((error_code(r), "", False))
        silent_flip = any(status == "ok" and digest != final for status, digest, _ in claims)
        round_ok = (
            final is not None
            and short == final
            and not silent_flip
            and all(status in ("ok", "DIGEST_MISMATCH") for status, _, _ in claims)
            and any(status == "ok" for status, _, _ in claims)
        )
        ok = ok and round_ok
        observed.append(
            f"round {round_}: "
            + ", ".join(
                f"{s}{' (reused)' if reused else ''}{' ' + d[7:19] if d else ''}"
                for s, d, reused in claims
            )
            + f" -> tag {final[7:19] if final else None}, short tag same={short == final}"
        )
        if not round_ok:
            observed.append(str([r.stderr[-400:] for r in results]))
    ledger.record(
        "two builds of one SHA at once (x2)",
        "the tag ends at one digest; the other build reports DIGEST_MISMATCH or reuse of it; "
        "no success claims a digest the tag does not hold",
        "; ".join(observed),
        ok,
    )
    assert ok, observed
