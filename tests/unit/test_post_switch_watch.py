"""The post-switch watch's loop and its settings (issue 23, item 4); the real switch under
traffic is tests/reliability/test_post_switch_watch.py."""

from __future__ import annotations

import logging
import time

import pytest

from shatag.errors import ConfigError
from shatag.targets.docker import parse
from shatag.targets.docker.gated import DRAIN_TIMEOUT_SEC, WATCH_SEC, Progress, watch_release

BASE = {"kind": "docker", "name": "api", "port": 8080, "container_port": 8080}


def test_the_watch_returns_the_first_problem_at_once() -> None:
    looks = iter([None, None, "exited with status 3", None])
    started = time.monotonic()
    assert watch_release(lambda: next(looks), 30.0, what="w") == "exited with status 3"
    assert time.monotonic() - started < 5.0  # not the whole window


def test_the_watch_lasts_its_window_when_nothing_goes_wrong() -> None:
    calls: list[float] = []

    def look() -> None:
        calls.append(time.monotonic())

    started = time.monotonic()
    assert watch_release(look, 0.6, what="w") is None
    assert 0.6 <= time.monotonic() - started < 2.0
    assert len(calls) >= 3  # looked several times in the window


def test_watch_sec_zero_turns_the_watch_off() -> None:
    def look() -> str:
        raise AssertionError("looked although the watch is off")

    assert watch_release(look, 0.0, what="w") is None


def test_progress_lines_only_once_a_wait_lasts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="shatag.progress")
    ticker = Progress("docker:api: watching api-1")
    ticker.tick("healthy so far")
    assert caplog.messages == []  # a quick step prints nothing
    ticker.started -= 10
    ticker._said -= 10  # as if the wait had lasted 10 s
    ticker.tick("healthy so far")
    assert caplog.messages == ["docker:api: watching api-1: healthy so far (10s)"]


def test_the_settings_and_their_defaults() -> None:
    spec = parse("t", BASE)
    assert (spec.watch_sec, spec.drain_timeout_sec) == (WATCH_SEC, DRAIN_TIMEOUT_SEC)
    assert (spec.app.watch_sec, spec.app.drain_timeout_sec) == (5.0, 30.0)
    spec = parse("t", {**BASE, "watch_sec": 0, "drain_timeout_sec": "2.5"})
    assert (spec.app.watch_sec, spec.app.drain_timeout_sec) == (0.0, 2.5)


@pytest.mark.parametrize(
    ("key", "value"),
    [("watch_sec", -1), ("watch_sec", True), ("drain_timeout_sec", 0), ("drain_timeout_sec", "x")],
)
def test_bad_settings_are_refused(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        parse("t", {**BASE, key: value})
