"""The subprocess chokepoint: real (tiny) programs, no shell, bounded, masked, quick."""

from __future__ import annotations

import sys
import time

import pytest

from shatag._sys import subproc
from shatag.errors import ToolFailure, ToolMissing, ToolTimeout

PY = sys.executable


def test_collects_stdout_and_stderr_and_the_exit_code() -> None:
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    result = subproc.run([PY, "-c", code], timeout=30, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")


def test_a_failing_command_raises_tool_failure_with_its_output() -> None:
    with pytest.raises(ToolFailure) as caught:
        subproc.run([PY, "-c", "import sys; sys.exit('boom')"], timeout=30)
    assert caught.value.returncode == 1
    assert "boom" in caught.value.message


def test_stdin_is_empty_so_a_reader_does_not_wait() -> None:
    result = subproc.run([PY, "-c", "import sys; print(len(sys.stdin.read()))"], timeout=30)
    assert result.stdout == "0\n"


def test_a_command_past_its_timeout_is_killed() -> None:
    started = time.monotonic()
    with pytest.raises(ToolTimeout) as caught:
        subproc.run([PY, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert time.monotonic() - started < 10
    assert "0.5s" in caught.value.message


def test_a_missing_program_is_tool_missing() -> None:
    with pytest.raises(ToolMissing):
        subproc.run(["shatag-no-such-program"], timeout=5)


def test_secrets_are_masked_in_lines_and_results() -> None:
    lines: list[str] = []
    result = subproc.run(
        [PY, "-c", "print('token=hunter22')"],
        timeout=30,
        secrets=["hunter22"],
        on_line=lines.append,
    )
    assert result.stdout == "token=***\n"
    assert lines == ["token=***"]
    assert "hunter22" not in result.command


def test_tools_run_during_a_switch_are_out_of_reach_of_a_signal_to_the_whole_group() -> None:
    """A CI runner cancels a job with a signal to its process group; inside ``graceful`` the
    tools shatag runs are in their own group, so only shatag gets it and decides (undo, or
    finish the commit) -- the ``docker stop`` it waits on is not killed under it."""
    import os

    from shatag._sys import signals

    code = "import os; print(os.getpgid(0))"
    outside = subproc.run([PY, "-c", code], timeout=30)
    with signals.graceful():
        inside = subproc.run([PY, "-c", code], timeout=30)
    assert int(outside.stdout) == os.getpgrp()
    assert int(inside.stdout) != os.getpgrp()


def test_a_large_input_and_output_flow_at_once_without_deadlock() -> None:
    """stdin is fed by its own thread while both outputs are read (``git cat-file --batch``)."""
    text = "".join(f"line {i} " + "x" * 100 + "\n" for i in range(20_000))  # ~2.2 MB
    code = (
        "import sys; data = sys.stdin.read(); sys.stdout.write(data); "
        "print(len(data), file=sys.stderr)"
    )
    result = subproc.run([PY, "-c", code], timeout=60, stdin=text)
    assert result.stdout == text
    assert result.stderr == f"{len(text)}\n"


def test_lines_stream_to_on_line_as_they_arrive_undecodable_bytes_replaced() -> None:
    lines: list[str] = []
    code = (
        "import sys; sys.stdout.buffer.write(b'a\\xff\\n'); sys.stdout.flush(); "
        "print('b', file=sys.stderr)"
    )
    result = subproc.run([PY, "-c", code], timeout=30, on_line=lines.append)
    assert sorted(lines) == ["a\ufffd", "b"]
    assert result.stdout == "a\ufffd\n"
