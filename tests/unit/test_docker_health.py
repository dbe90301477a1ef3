"""The docker target's health gate: the HEALTHCHECK parser and the verdict of one look.

Pure: the container is ``docker inspect`` JSON as the engine answers it and the engine a
recorder of ``docker exec`` calls; the real gate runs in tests/integration/test_deploy_rollback.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shatag.targets import TargetContext
from shatag.targets.docker import DockerSpec, DockerTarget
from shatag.targets.docker.gated import health_command


def test_cmd_form_runs_as_written_with_its_timeout() -> None:
    assert health_command(["CMD", "/bin/busybox", "wget", "-q"], 2_000_000_000) == (
        ["/bin/busybox", "wget", "-q"],
        2.0,
    )


def test_shell_form_runs_through_sh_and_timeout_defaults_to_dockers() -> None:
    assert health_command(["CMD-SHELL", "curl -f http://x/ || exit 1"], None) == (
        ["/bin/sh", "-c", "curl -f http://x/ || exit 1"],
        30.0,
    )


@pytest.mark.parametrize("test", [None, [], ["NONE"], ["CMD"], ["CMD-SHELL"], ["BOGUS", "x"]])
def test_nothing_to_run(test: list[str] | None) -> None:
    assert health_command(test, 1) is None


@given(st.none() | st.lists(st.text(max_size=20), max_size=6), st.none() | st.integers())
def test_any_healthcheck_parses_without_error(test: list[str] | None, timeout: int | None) -> None:
    parsed = health_command(test, timeout)
    if parsed is not None:
        command, seconds = parsed
        assert command
        assert seconds > 0
        assert test is not None
        assert test[0] in ("CMD", "CMD-SHELL")


class Engine:
    """Records ``docker exec`` calls and answers with a fixed status."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.calls: list[Sequence[str]] = []

    def exec_status(self, container: str, command: Sequence[str], *, timeout: float) -> int:
        assert timeout > 0
        self.calls.append(command)
        return self.status


def look(health: str | None, *, exec_status: int = 1, running: bool = True) -> tuple[Any, Engine]:
    target = DockerTarget(
        DockerSpec(name="api", port=8080, container_port=0, health_path="/healthz"),
        TargetContext(),
    )
    engine = Engine(exec_status)
    target._engine = engine  # type: ignore[assignment]
    target._probe = lambda: "ok"  # type: ignore[method-assign]  # health_path answers 2xx
    state: dict[str, Any] = {
        "Running": running,
        "Restarting": False,
        "ExitCode": 0 if running else 3,
    }
    if health is not None:
        state["Health"] = {"Status": health}
    check = (["/bin/busybox", "wget", "-q", "http://127.0.0.1:8080/healthz"], 2.0)
    return target._health_step("c0ffee", {"Id": "c0ffee", "State": state}, check, 1e12), engine


def test_the_images_check_passing_opens_the_gate_before_the_engines_first_probe() -> None:
    (verdict, _status), engine = look("starting", exec_status=0)
    assert verdict == "ok"
    assert engine.calls == [["/bin/busybox", "wget", "-q", "http://127.0.0.1:8080/healthz"]]


def test_a_failing_check_keeps_waiting() -> None:
    (verdict, status), _engine = look("starting", exec_status=1)
    assert verdict == "wait"
    assert "not passed yet" in status


def test_the_engines_verdict_counts_without_running_anything() -> None:
    (healthy, _), engine = look("healthy")
    (unhealthy, status), engine2 = look("unhealthy", exec_status=0)
    assert (healthy, unhealthy) == ("ok", "fail")
    assert "unhealthy" in status
    assert engine.calls == engine2.calls == []


def test_the_http_probe_counts_even_when_the_image_has_a_healthcheck() -> None:
    target = DockerTarget(
        DockerSpec(name="api", port=8080, container_port=0, health_path="/healthz"),
        TargetContext(),
    )
    engine = Engine(0)
    target._engine = engine  # type: ignore[assignment]
    target._probe = lambda: "HTTP 404"  # type: ignore[method-assign]
    state = {"Running": True, "Restarting": False, "ExitCode": 0, "Health": {"Status": "healthy"}}
    verdict, status = target._health_step("c0ffee", {"State": state}, None, deadline=1e12)
    assert (verdict, status) == ("wait", "/healthz: HTTP 404")


def test_an_exited_container_fails_whatever_its_check_says() -> None:
    (verdict, status), engine = look("starting", exec_status=0, running=False)
    assert verdict == "fail"
    assert "exited with status 3" in status
    assert engine.calls == []
