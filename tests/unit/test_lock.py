"""Per-environment deploy lock (issue 4): bounded wait, then DEPLOY_LOCKED; the per-SHA build
lock (one push of a SHA at a time)."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from shatag.errors import DeployLocked, PushFailure
from shatag.ledger.lock import build_lock, env_lock


def _hold(state_dir: str, ready: multiprocessing.synchronize.Event, seconds: float) -> None:
    with env_lock(Path(state_dir), "prod", timeout=0, holder="deploy aaaa"):
        ready.set()
        time.sleep(seconds)


def test_second_holder_fails_after_bounded_wait(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold, args=(str(tmp_path), ready, 3.0))
    proc.start()
    try:
        assert ready.wait(10)
        start = time.monotonic()
        with pytest.raises(DeployLocked) as info, env_lock(tmp_path, "prod", timeout=0.5):
            pass
        waited = time.monotonic() - start
        assert 0.4 <= waited < 2.0
        assert "deploy aaaa" in info.value.message
        assert f"pid {proc.pid}" in info.value.message
        assert info.value.code == "DEPLOY_LOCKED"
    finally:
        proc.join(10)


def test_waiter_gets_the_lock_when_holder_finishes(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold, args=(str(tmp_path), ready, 0.5))
    proc.start()
    try:
        assert ready.wait(10)
        with env_lock(tmp_path, "prod", timeout=10):
            assert not proc.is_alive() or proc.exitcode is None
    finally:
        proc.join(10)


def test_lock_released_when_holder_is_killed(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold, args=(str(tmp_path), ready, 60.0))
    proc.start()
    assert ready.wait(10)
    proc.kill()  # SIGKILL: the kernel drops the flock
    proc.join(10)
    with env_lock(tmp_path, "prod", timeout=2):
        pass


def test_environments_lock_independently(tmp_path: Path) -> None:
    with env_lock(tmp_path, "prod", timeout=0), env_lock(tmp_path, "staging", timeout=0):
        pass


def test_build_lock_serialises_pushes_of_one_sha_and_names_the_code(tmp_path: Path) -> None:
    with build_lock(tmp_path, "127.0.0.1:5000/api", "a" * 40, timeout=0, holder="first"):
        with (
            pytest.raises(PushFailure) as caught,
            build_lock(tmp_path, "127.0.0.1:5000/api", "a" * 40, timeout=0),
        ):
            pass
        assert "first" in caught.value.message
        # another SHA, or the same SHA in another repository, does not wait
        with build_lock(tmp_path, "127.0.0.1:5000/api", "b" * 40, timeout=0):
            pass
        with build_lock(tmp_path, "127.0.0.1:5000/other", "a" * 40, timeout=0):
            pass


def test_build_lock_in_an_unusable_state_dir_lets_the_build_go_on(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with build_lock(blocker / "state", "127.0.0.1:5000/api", "a" * 40, timeout=0):
        pass
