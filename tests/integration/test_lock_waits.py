"""Issue 24, item 5: waits that say what they wait for, against real git and real flock.

A waiter on the git ledger's lock (a bare repository stands for the application's remote; the
lock left by a runner on another machine is pushed with plain git) and on the local ``flock``
writes progress lines on stderr naming the holder, since when and (git) when it expires; the
default lock wait outlasts one lock TTL, so a lock left by a killed runner is waited out.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.synchronize
import os
import re
import time
from pathlib import Path

import pytest

from shatag._defaults import DEFAULTS
from shatag.config import Settings
from shatag.ledger.git import GitLedger
from shatag.ledger.git_lock import PROGRESS_SEC, LockInfo
from shatag.ledger.lock import env_lock
from tests._gitremote import GitRemote, git

ENV = "production"


def _push_foreign_lock(remote: GitRemote, expires_unix: float) -> None:
    """A lock left by a runner on another machine (killed while holding it), with plain git."""
    clone = remote.clone()
    info = LockInfo(
        env=ENV,
        holder="deploy cccc by someone",
        host="other-runner",
        pid=4242,
        token="t",
        acquired_at="2026-01-01T00:00:00.000Z",
        expires_at="2026-01-01T00:01:00.000Z",
        expires_unix=expires_unix,
        where="https://github.com/o/r/actions/runs/1",
    )
    blob = git(clone, "hash-object", "-w", "--stdin", stdin=info.to_json() + "\n")
    tree = git(clone, "mktree", stdin=f"100644 blob {blob}\tlock.json\n")
    commit = git(clone, "commit-tree", tree, "-m", "lock")
    git(clone, "push", "-q", "origin", f"{commit}:refs/shatag-lock/{ENV}")


def _waiting(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting for")]


def test_the_default_lock_wait_outlasts_one_lock_ttl() -> None:
    settings = Settings.from_mapping({})
    assert settings.deploy_lock_timeout_sec >= settings.state_lock_ttl_sec + 10
    assert DEFAULTS["deploy_lock_timeout_sec"] == settings.deploy_lock_timeout_sec


def test_a_waiter_on_a_foreign_git_lock_says_whom_it_waits_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The lock of a runner killed on another machine, 3.5 s before it expires: the waiter
    prints the holder, since when and the expiry at once, then takes the lock over."""
    remote = GitRemote(tmp_path)
    _push_foreign_lock(remote, time.time() + 3.5)
    ledger = GitLedger(remote.clone(), "origin", env=dict(os.environ))
    caplog.set_level(logging.WARNING, logger="shatag.ledger")
    started = time.monotonic()
    with ledger.lock(ENV, timeout=30, holder="next deploy") as info:
        waited = time.monotonic() - started
        assert info.holder == "next deploy"
    lines = _waiting(caplog)
    assert 2.5 < waited < 3.5 + PROGRESS_SEC
    assert lines, caplog.text
    first = lines[0]
    assert f"waiting for the deploy lock of {ENV} (refs/shatag-lock/{ENV})" in first
    assert "deploy cccc by someone on other-runner pid 4242" in first
    assert "actions/runs/1" in first
    assert "since 2026-01-01T00:00:00.000Z" in first
    assert re.search(r"expires in [0-9]s", first), first
    assert re.search(r"waiting up to (29|30)s more", first), first
    assert len(lines) == 1, "one line per PROGRESS_SEC, not one per poll"
    assert remote.refs() == {}


def test_a_waiter_that_does_not_wait_prints_no_progress(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from shatag.errors import DeployLocked

    remote = GitRemote(tmp_path)
    _push_foreign_lock(remote, time.time() + 3600)
    ledger = GitLedger(remote.clone(), "origin", env=dict(os.environ))
    caplog.set_level(logging.WARNING, logger="shatag.ledger")
    with pytest.raises(DeployLocked), ledger.lock(ENV, timeout=0, holder="x"):
        pass
    assert _waiting(caplog) == []


def _hold_flock(state: str, ready: multiprocessing.synchronize.Event, seconds: float) -> None:
    with env_lock(Path(state), ENV, timeout=5, holder="deploy aaaa by ci"):
        ready.set()
        time.sleep(seconds)


def test_a_waiter_on_the_local_flock_says_whom_it_waits_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_flock, args=(str(tmp_path), ready, 2.0))
    holder.start()
    try:
        assert ready.wait(30)
        caplog.set_level(logging.WARNING, logger="shatag.lock")
        with env_lock(tmp_path, ENV, timeout=30, holder="deploy bbbb"):
            pass
    finally:
        holder.join(30)
    lines = _waiting(caplog)
    assert len(lines) == 1, caplog.text
    assert f"waiting for the deploy lock of {ENV}: held by pid {holder.pid}" in lines[0]
    assert "deploy aaaa by ci, for " in lines[0]
    assert re.search(r"waiting up to (29|30)s more", lines[0]), lines[0]
