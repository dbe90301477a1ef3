"""Per-environment deploy lock (issue 4): bounded wait, then DEPLOY_LOCKED."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from shatag.errors import DeployLocked
from shatag.lock import env_lock


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
