"""A finished CLI run leaves without the interpreter's teardown (issue 17) -- never in process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shatag import _exit

ROOT = Path(__file__).resolve().parents[2]


def test_not_a_cli_process_under_pytest() -> None:
    assert not _exit.cli_process()


@pytest.mark.parametrize(("arg", "code"), [(None, 0), (0, 0), (3, 3), (256 + 2, 2), ("boom", 1)])
def test_exit_status_as_sys_exit_gives_it(arg: object, code: int) -> None:
    assert _exit._status(arg) == code


def test_full_exit_opt_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHATAG_FULL_EXIT", "1")
    assert not _exit.cli_process()


@pytest.mark.parametrize("full", ["0", "1"])
def test_cli_output_and_status_are_the_same_either_way(full: str, tmp_path: Path) -> None:
    """The same stdout, stderr and exit status with and without the fast exit."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SHATAG_FULL_EXIT": full}
    base = [sys.executable, "-m", "invoke", "--search-root", str(ROOT)]
    listing = subprocess.run(
        [*base, "--list"], env=env, check=False, capture_output=True, text=True, timeout=60
    )
    assert listing.returncode == 0
    assert "deploy" in listing.stdout
    bad = subprocess.run(
        [*base, "deploy", "--sha=latest"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1
    assert bad.stdout.startswith('{"phase": "deploy"')
    assert "error: POLICY_VIOLATION:" in bad.stderr
