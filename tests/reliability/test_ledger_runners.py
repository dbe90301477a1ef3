"""The git ledger end to end (issue 15): CI runners that share nothing but the application's
git remote.

A bare repository stands for the application's repository on GitHub; each runner is a fresh
shallow clone of it (what ``actions/checkout`` leaves), and every ``inv`` runs in its clone
with ``state_backend: git``. The targets are SDL and tfvars files in one shared directory (the
"infrastructure" every runner deploys to). Nothing is kept in a local state directory.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shatag._testing.localregistry import LocalRegistry
from tests._gitremote import GitRemote, git
from tests.conftest import InvResult, inv_argv
from tests.reliability._faults import copy_image
from tests.reliability._shim import HeldApply, PathShim
from tests.reliability.conftest import (
    Built,
    Ledger,
    Site,
    World,
    describe,
    error_code,
    rinv,
    wait_for,
)


class Fleet(GitRemote):
    """The application's remote, the runners cloned from it, and one site deployed to."""

    def __init__(self, site: Site, root: Path) -> None:
        super().__init__(root, "app.git")
        self.site = site

    def runner(self) -> Path:
        return self.clone()

    def inv(
        self, ledger: Ledger, runner: Path, *args: str, env: dict[str, str] | None = None
    ) -> InvResult:
        return rinv(
            ledger,
            ["-f", str(self.site.config), *args],
            {**self.site.env, **(env or {})},
            cwd=runner,
        )

    def deploy(self, ledger: Ledger, runner: Path, built: Built) -> InvResult:
        return self.inv(ledger, runner, "deploy", f"--sha={built.sha}", "--env=rel")

    def rollback(self, ledger: Ledger, runner: Path, built: Built | None = None) -> InvResult:
        sha = [f"--sha={built.sha}"] if built else []
        return self.inv(ledger, runner, "rollback", *sha, "--env=rel")

    def history(self, ledger: Ledger, runner: Path) -> list[dict[str, Any]]:
        result = self.inv(ledger, runner, "history", "--env=rel", "--json", "--limit=0")
        assert result.returncode == 0, result.stderr
        return result.records

    def targets_are(self, built: Built | None) -> bool:
        snap = self.site.snapshot()
        return self.site.sdl_is(snap, built) and self.site.tfvars_is(snap, built)


@pytest.fixture
def make_fleet(make_site: Callable[..., Site], tmp_path: Path) -> Callable[..., Fleet]:
    def factory(**site_kw: Any) -> Fleet:
        root = tmp_path / f"fleet-{uuid.uuid4().hex[:6]}"
        root.mkdir()
        site = make_site(state_backend="git", state_remote="origin", **site_kw)
        return Fleet(site, root)

    return factory


def test_three_runners_deploy_deploy_rollback(
    ledger: Ledger, world: World, make_fleet: Callable[..., Fleet]
) -> None:
    a, b, _c = world.images
    fleet = make_fleet()
    runners = [fleet.runner() for _ in range(3)]
    clock = [time.monotonic()]
    one = fleet.deploy(ledger, runners[0], a)
    clock.append(time.monotonic())
    two = fleet.deploy(ledger, runners[1], b)
    clock.append(time.monotonic())
    three = fleet.rollback(ledger, runners[2])  # a brand-new runner, no --sha
    clock.append(time.monotonic())
    ledger.figure(
        "git ledger: `inv deploy` / `inv rollback` wall time on a fresh clone (file targets; "
        "Python start, lock, fetch, journal, CAS append, release)",
        f"{clock[2] - clock[1]:.2f} s / {clock[3] - clock[2]:.2f} s",
    )
    rows = fleet.history(ledger, fleet.runner())
    signatures = fleet.inv(ledger, fleet.runner(), "signatures", "--json")
    deploy_obs = (
        [s for s in signatures.record.get("shas", []) if s.get("where") == "history:rel"]
        if signatures.returncode == 0
        else []
    )
    plain = fleet.runner()
    git(plain, "fetch", "-q", "origin", "refs/shatag/*:refs/shatag/*")
    subjects = git(plain, "log", "--format=%s", "refs/shatag/rel").splitlines()
    ok = (
        one.returncode == 0
        and two.returncode == 0
        and two.record["previous_sha"] == a.sha
        and three.returncode == 0
        and three.record["image_sha"] == a.sha
        and three.record["previous_sha"] == b.sha
        and fleet.targets_are(a)
        and [(r["action"], r["sha"], r["current"]) for r in rows]
        == [("rollback", a.sha, True), ("deploy", b.sha, False), ("deploy", a.sha, False)]
        and {s["sha"] for s in deploy_obs} == {a.sha, b.sha}
        and subjects
        == [
            f"shatag rollback {a.sha[:12]} to rel: ok",
            f"shatag deploy {b.sha[:12]} to rel: ok",
            f"shatag deploy {a.sha[:12]} to rel: ok",
        ]
        and set(fleet.refs()) == {"refs/shatag/rel"}  # no lock, no journal left
        and not fleet.site.state.exists()  # nothing kept on any runner
    )
    ledger.record(
        "git ledger: deploy A from runner 1, B from runner 2, rollback (no --sha) from runner 3",
        "rollback goes to A with previous_sha=B; history/signatures from a 4th clone show all "
        "three; `git log refs/shatag/rel` is the audit trail; no local state",
        f"{describe(one)}, {describe(two)}, {describe(three)} -> "
        f"{three.record.get('image_sha', '')[:12]}; history {len(rows)} rows; "
        f"signatures saw {len(deploy_obs)} deploy records; git log {len(subjects)} commits",
        ok,
    )
    assert ok, (one.stderr[-300:], two.stderr[-300:], three.stderr[-300:], rows, subjects)


def test_repointed_tag_is_digest_mismatch_from_any_runner(
    ledger: Ledger,
    world: World,
    make_fleet: Callable[..., Fleet],
    registry: LocalRegistry,
) -> None:
    a, b = world.images[0], world.images[1]
    src = world.canonical.split("/", 1)[1]
    dst = f"rel-ledger-{uuid.uuid4().hex[:8]}"
    for img in (a, b):
        assert copy_image(registry.address, src, img.sha, dst, img.sha) == img.digest
    fleet = make_fleet()
    fleet.site.extra_env = {
        "INVOKE_SHATAG_CANONICAL_REPOSITORY": f"{registry.address}/{dst}",
        "INVOKE_SHATAG_STAGING_REPOSITORY": f"{registry.address}/{dst}-staging",
    }
    assert fleet.deploy(ledger, fleet.runner(), a).returncode == 0
    assert fleet.deploy(ledger, fleet.runner(), b).returncode == 0
    before = fleet.refs()
    files = fleet.site.snapshot()  # B, pinned in the private repository
    copy_image(registry.address, dst, b.sha, dst, a.sha)  # the fault: A's tag now holds B
    ledger.count("faults_injected")
    results = {
        "deploy A (fresh runner)": fleet.deploy(ledger, fleet.runner(), a),
        "rollback (fresh runner)": fleet.rollback(ledger, fleet.runner()),
    }
    ok = (
        all(error_code(r) == "DIGEST_MISMATCH" for r in results.values())
        and (fleet.site.snapshot().sdl, fleet.site.snapshot().tfvars) == (files.sdl, files.tfvars)
        and b.sha in files.tfvars
        and fleet.refs() == before
    )
    ledger.record(
        "git ledger: SHA tag re-pointed, deploy/rollback from brand-new runners",
        "DIGEST_MISMATCH from each fresh clone (the guard reads the shared history); "
        "targets and ledger unchanged",
        "; ".join(f"{k}: {describe(r)}" for k, r in results.items()),
        ok,
    )
    assert ok, {k: r.stderr[-300:] for k, r in results.items()}


_WAITED = re.compile(r"waited ([0-9.]+)s for the deploy lock")


def test_two_runners_deploy_at_once(
    ledger: Ledger, world: World, make_fleet: Callable[..., Fleet], tmp_path: Path
) -> None:
    a, b, c = world.images
    held = HeldApply(tmp_path / "apply-started", tmp_path / "go")
    fleet = make_fleet(apply=held.command, lock_timeout=60)
    held.go.touch()
    assert fleet.deploy(ledger, fleet.runner(), a).returncode == 0
    held.go.unlink()
    held.started.unlink()
    runners = [fleet.runner(), fleet.runner()]
    git_shim = PathShim(tmp_path / "git-shim", "git")
    procs = [
        subprocess.Popen(
            inv_argv("-f", str(fleet.site.config), "deploy", f"--sha={img.sha}", "--env=rel"),
            cwd=runner,
            env=git_shim.env(fleet.site.env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for img, runner in zip((b, c), runners, strict=True)
    ]
    # The winner holds the lock in its apply step until the other runner is seen trying to
    # push the lock ref (a try while it is held: the other waits), not for a `sleep 1`.
    winner = held.winner(procs)
    other = next(p for p in procs if p is not winner)

    def other_tried_the_lock() -> bool:
        return any(
            pid == other.pid and words.startswith("push") and "refs/shatag-lock/rel" in words
            for pid, words in git_shim.callers()
        )

    tried = winner is not None and wait_for(other_tried_the_lock, 120)
    held.go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        ledger.capture("concurrent ledger deploy", out + err)
        results.append(InvResult(proc.returncode, out, err))
    rows = list(reversed(fleet.history(ledger, fleet.runner())))[1:]  # oldest first, after A
    waits = [float(m.group(1)) for r in results for m in _WAITED.finditer(r.stderr)]
    last = next((img for img in (b, c) if rows and img.sha == rows[-1]["sha"]), None)
    serialized = (
        len(rows) == 2
        and rows[0]["finished_at"] <= rows[1]["started_at"]
        and rows[1]["previous_sha"] == rows[0]["sha"]
        and rows[0]["previous_sha"] == a.sha
    )
    ok = (
        tried
        and all(r.returncode == 0 for r in results)
        and serialized
        and last is not None
        and fleet.targets_are(last)
        and set(fleet.refs()) == {"refs/shatag/rel"}
        and len(waits) == 1
    )
    if waits:
        ledger.figure(
            "git ledger: lock wait of the second of two runners deploying at once (the first held "
            "until the second was seen trying the lock)",
            f"{waits[0]:.1f} s",
        )
    ledger.record(
        "git ledger: two runners deploy one environment at once (lock timeout 60s)",
        "serialized on refs/shatag-lock/rel: both succeed, both recorded in order, targets = "
        "the later; lock released",
        f"{[describe(r) for r in results]}; the second seen pushing the lock ref while the "
        f"first held it: {tried}; serialized={serialized}; the second waited "
        f"{waits[0] if waits else '?'} s for the lock",
        ok,
    )
    assert ok, (rows, [r.stderr[-400:] for r in results])


def test_a_remote_that_refuses_pushes(
    ledger: Ledger, world: World, make_fleet: Callable[..., Fleet]
) -> None:
    a, b, _c = world.images
    fleet = make_fleet()
    assert fleet.deploy(ledger, fleet.runner(), a).returncode == 0
    before = fleet.refs()
    # 1. No write access at all (the token lacks contents: write): the lock push is refused.
    fleet.hook('echo "permission to push refs/shatag* denied" >&2\nexit 1\n')
    ledger.count("faults_injected")
    denied = fleet.deploy(ledger, fleet.runner(), b)
    untouched = fleet.targets_are(a) and fleet.refs() == before
    # 2. Only the history ref is protected: the targets were switched, then put back.
    fleet.hook(
        'while read old new ref; do [ "$ref" = refs/shatag/rel ] && '
        '{ echo "refs/shatag/rel is protected" >&2; exit 1; }; done; exit 0\n'
    )
    ledger.count("faults_injected")
    late = fleet.deploy(ledger, fleet.runner(), b)
    restored = fleet.targets_are(a) and fleet.refs() == before
    (fleet.bare / "hooks" / "pre-receive").unlink()
    after = fleet.deploy(ledger, fleet.runner(), b)
    ok = (
        error_code(denied) == "LEDGER_DENIED"
        and "pre-receive hook declined" in denied.stderr
        and untouched
        and error_code(late) == "LEDGER_DENIED"
        and "every target was restored" in late.stderr
        and restored
        and after.returncode == 0
        and fleet.targets_are(b)
    )
    ledger.record(
        "git ledger: the remote refuses the push (pre-receive hook: all refs / history only)",
        "LEDGER_DENIED before any target changes; when only the record is refused, targets "
        "restored; no lock or journal left; works again once allowed",
        f"all refs: {describe(denied)}, untouched={untouched}; history only: {describe(late)}, "
        f"restored={restored}; allowed again: {describe(after)}",
        ok,
    )
    assert ok, (denied.stderr[-400:], late.stderr[-400:], after.stderr[-400:])


def test_kill_9_on_one_runner_is_seen_by_the_next(
    ledger: Ledger, world: World, make_fleet: Callable[..., Fleet], tmp_path: Path
) -> None:
    a, b, c = world.images
    slow = tmp_path / "slow-apply"
    fleet = make_fleet(apply=f"sh -c 'if test -f {slow}; then sleep 60; fi'", lock_timeout=30)
    assert fleet.deploy(ledger, fleet.runner(), a).returncode == 0
    slow.write_text("the apply step hangs until killed\n")
    proc = subprocess.Popen(
        inv_argv("-f", str(fleet.site.config), "deploy", f"--sha={b.sha}", "--env=rel"),
        cwd=fleet.runner(),
        env=fleet.site.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    # Kill it once its journal is on the remote and the targets show B (mid-switch).
    landed = wait_for(
        lambda: "refs/shatag-journal/rel" in fleet.refs() and fleet.targets_are(b), 60
    )
    os.killpg(proc.pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    ledger.capture("killed ledger deploy", out.decode(errors="replace") + err.decode())
    left = set(fleet.refs())
    slow.unlink()
    started = time.monotonic()
    nxt = fleet.deploy(ledger, fleet.runner(), c)  # another runner
    took = time.monotonic() - started
    rows = fleet.history(ledger, fleet.runner())
    ok = (
        landed
        and left == {"refs/shatag/rel", "refs/shatag-lock/rel", "refs/shatag-journal/rel"}
        and nxt.returncode == 0
        and bool(nxt.record.get("recovered"))
        and nxt.record["previous_sha"] == a.sha
        and [(r["sha"], r["result"], r["error_code"]) for r in rows[:2]]
        == [(c.sha, "ok", ""), (b.sha, "failed", "INTERRUPTED")]
        and fleet.targets_are(c)
        and set(fleet.refs()) == {"refs/shatag/rel"}
    )
    ledger.figure(
        "git ledger: next deploy after a kill -9 on another runner (lock takeover, recovery, "
        "deploy)",
        f"{took:.1f} s",
    )
    ledger.record(
        "git ledger: kill -9 of a deploy on runner 1 mid-switch, next deploy from runner 2",
        "the next runner takes over the dead holder's lock, finds the journal, restores, "
        "records the attempt failed INTERRUPTED, then deploys; previous_sha = the last good",
        f"left behind: {sorted(r.split('/')[1] for r in left)}; next: {describe(nxt)} in "
        f"{took:.1f}s, recovered={len(nxt.record.get('recovered', []))} targets; history: "
        + ", ".join(f"{r['sha'][:7]} {r['result']} {r['error_code']}".strip() for r in rows[:3]),
        ok,
    )
    assert ok, (nxt.stderr[-600:], rows[:3], left)


def test_a_forged_journal_cannot_write_files_outside_the_targets(
    ledger: Ledger, world: World, make_fleet: Callable[..., Fleet], tmp_path: Path
) -> None:
    """Anyone who may push refs/shatag-journal/* could leave a journal naming any file; the
    next deploy restores only files that are targets of the environment."""
    a, b, _c = world.images
    fleet = make_fleet()
    assert fleet.deploy(ledger, fleet.runner(), a).returncode == 0
    victim = tmp_path / "not-a-target" / "authorized_keys"
    sdl = fleet.site.sdl
    journal = {
        "attempt": "forged",
        "action": "deploy",
        "sha": b.sha,
        "digest": b.digest,
        "targets": [
            {"kind": "tfvars", "path": str(victim), "previous": "ssh-ed25519 AAAA attacker\n"},
            {"kind": "sdl", "path": str(sdl), "previous": sdl.read_text()},
        ],
    }
    forger = fleet.runner()
    blob = subprocess.run(
        ["git", "hash-object", "-w", "--stdin"],
        cwd=forger,
        input=json.dumps(journal),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    tree = subprocess.run(
        ["git", "mktree"],
        cwd=forger,
        input=f"100644 blob {blob}\tjournal.json\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    commit = git(forger, "commit-tree", tree, "-m", "journal")
    git(forger, "push", "-q", "origin", f"{commit}:refs/shatag-journal/rel")
    ledger.count("faults_injected")
    result = fleet.deploy(ledger, fleet.runner(), b)
    notes = result.record.get("recovered", []) if result.returncode == 0 else []
    ok = (
        result.returncode == 0
        and not victim.exists()
        and any("not a target of this environment" in n for n in notes)
        and fleet.targets_are(b)
        and set(fleet.refs()) == {"refs/shatag/rel"}
    )
    ledger.record(
        "git ledger: a forged journal names a file that is not a target",
        "the next deploy ignores that entry (no file written outside the targets), restores "
        "only configured targets, deploys",
        f"{describe(result)}; outside file written={victim.exists()}; notes={notes}",
        ok,
    )
    assert ok, (result.stderr[-500:], notes)
