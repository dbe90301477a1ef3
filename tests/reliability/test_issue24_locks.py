"""Issue 24, item 5: waits that say what they wait for, through the real CLI.

* git ledger, default settings: a runner on another machine was killed while holding the lock
  (its lock ref, host ``other-runner``, pushed to the remote with plain git, one default TTL
  left). The next runner used to wait 30 s printing nothing and fail DEPLOY_LOCKED; now it
  prints who holds the lock, since when and when it expires, outwaits the TTL and deploys.
* local state: a second deploy waiting on the ``flock`` of a running one says whom it waits for.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from shatag._defaults import DEFAULTS
from shatag.ledger.git_lock import LockInfo
from tests._gitremote import git
from tests.conftest import InvResult
from tests.reliability.conftest import Ledger, Site, World, describe
from tests.reliability.test_ledger_runners import Fleet

_WAITING = re.compile(r"^shatag: waiting for the deploy lock of rel\b.*$", re.MULTILINE)


def _without_lock_timeout(site: Site) -> None:
    """The site's configuration with ``deploy_lock_timeout_sec`` left at its default."""
    spec = json.loads(site.config.read_text())
    del spec["shatag"]["deploy_lock_timeout_sec"]
    site.config.write_text(json.dumps(spec))


def _push_foreign_lock(fleet: Fleet, ttl: float) -> LockInfo:
    """The lock of a runner on another machine, killed ``just now`` (one TTL left)."""
    clone = fleet.runner()
    now = time.time()
    info = LockInfo(
        env="rel",
        holder="deploy dead by ci",
        host="other-runner",
        pid=4242,
        token=uuid.uuid4().hex,
        acquired_at="2026-01-01T00:00:00.000Z",
        expires_at="(one TTL from now)",
        expires_unix=round(now + ttl, 3),
        where="https://github.com/o/r/actions/runs/7",
    )
    blob = git(clone, "hash-object", "-w", "--stdin", stdin=info.to_json() + "\n")
    tree = git(clone, "mktree", stdin=f"100644 blob {blob}\tlock.json\n")
    commit = git(clone, "commit-tree", tree, "-m", "lock of a killed runner")
    git(clone, "push", "-q", "origin", f"{commit}:refs/shatag-lock/rel")
    return info


def test_issue24_killed_runner_on_another_host_is_waited_out_with_progress(
    ledger: Ledger, world: World, make_site: Callable[..., Site], tmp_path: Path
) -> None:
    a = world.images[0]
    root = tmp_path / "fleet"
    root.mkdir()
    fleet = Fleet(make_site(state_backend="git", state_remote="origin"), root)
    _without_lock_timeout(fleet.site)
    ttl = float(DEFAULTS["state_lock_ttl_sec"])
    _push_foreign_lock(fleet, ttl)
    started = time.monotonic()
    result = fleet.deploy(ledger, fleet.runner(), a)
    took = time.monotonic() - started
    lines = _WAITING.findall(result.stderr)
    first = lines[0] if lines else ""
    ok = (
        result.returncode == 0
        and took >= ttl - 5
        and "deploy dead by ci on other-runner pid 4242" in first
        and "actions/runs/7" in first
        and "since 2026-01-01T00:00:00.000Z" in first
        and re.search(r"expires in [0-9]+s", first) is not None
        and 4 <= len(lines) <= 10  # one line every 10 s over the ~60 s wait
        and fleet.targets_are(a)
        and set(fleet.refs()) == {"refs/shatag/rel"}
    )
    ledger.figure(
        "git ledger: next deploy, default settings, after a runner on another host was killed "
        "holding the lock (waits out the 60 s TTL)",
        f"{took:.1f} s",
    )
    ledger.record(
        "#24.5 git lock of a runner killed on another host, default deploy_lock_timeout_sec "
        f"({DEFAULTS['deploy_lock_timeout_sec']:g}s) and state_lock_ttl_sec ({ttl:g}s)",
        "the next runner prints on stderr whom it waits for (holder, host, pid, run URL, since, "
        "expiry) every 10 s, outwaits the TTL, takes the lock over and deploys",
        f"{describe(result)} after {took:.1f}s; {len(lines)} progress lines; first: "
        f"{first[:240]!r}",
        ok,
    )
    assert ok, (describe(result), took, result.stderr[-1500:])


def test_issue24_local_lock_waiter_says_whom_it_waits_for(
    ledger: Ledger, world: World, make_site: Callable[..., Site]
) -> None:
    a, b, _ = world.images
    site = make_site(apply="sleep 3", lock_timeout=60)
    first = subprocess.Popen(
        site.argv("deploy", f"--sha={a.sha}", "--env=rel"),
        env=site.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = site.state / "rel" / "deploy.lock"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (lock.exists() and lock.stat().st_size > 0):
        time.sleep(0.05)  # the first deploy holds the lock (its holder record is written)
    second = site.deploy(ledger, b)
    out, err = first.communicate(timeout=300)
    ledger.capture("first local deploy", out + err)
    held = InvResult(first.returncode, out, err)
    lines = _WAITING.findall(second.stderr)
    line = lines[0] if lines else ""
    ok = (
        held.returncode == 0
        and second.returncode == 0
        and len(lines) == 1
        and f"held by pid {first.pid}" in line
        and "waiting up to" in line
        and re.search(r", for [0-9]+s", line) is not None
    )
    ledger.record(
        "#24.5 local deploy lock (flock) held by a running deploy (apply 3 s, timeout 60 s)",
        "the waiter prints on stderr whom it waits for (pid, holder, for how long) and how "
        "long it will wait; then deploys",
        f"first {describe(held)}, second {describe(second)}; {len(lines)} progress line(s): "
        f"{line[:200]!r}",
        ok,
    )
    assert ok, (describe(held), describe(second), second.stderr[-800:])
