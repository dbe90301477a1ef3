"""The set-up's one-line steps, run for real with bash (issue 18).

- a step prints one line (what, how long, its log) and its command's output goes to the log only;
- a failing step shows the log's tail and exits with the command's code;
- a long step prints progress lines with the elapsed time;
- ``ci/install-tools.sh`` with the tools present prints one "present" line per tool and the bin
  directory on stdout; an unknown tool is refused.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STEPS = ROOT / "ci" / "steps.sh"


def run_step(tmp_path: Path, command: str, **env: str) -> subprocess.CompletedProcess[str]:
    script = f'STEP_PREFIX=t; . "{STEPS}"; step "{tmp_path}/x.log" "the step" {command}'
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_step_prints_one_line_and_logs_its_output(tmp_path: Path) -> None:
    proc = run_step(tmp_path, "bash -c 'for i in $(seq 100); do echo noise $i; done'")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("t: the step: done in ")
    assert lines[0].endswith(f"(log {tmp_path}/x.log)")
    assert proc.stdout == ""
    assert (tmp_path / "x.log").read_text().splitlines()[-1] == "noise 100"


def test_a_failing_step_shows_the_log_tail_and_exits_with_its_code(tmp_path: Path) -> None:
    proc = run_step(tmp_path, "bash -c 'for i in $(seq 100); do echo noise $i; done; exit 7'")
    assert proc.returncode == 7
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("t: the step: FAILED (exit 7) after ")
    assert str(tmp_path / "x.log") in lines[0]
    assert lines[-1] == "  | noise 100"
    assert "  | noise 60" not in lines, "only the tail"


def test_a_long_step_prints_progress_with_the_elapsed_time(tmp_path: Path) -> None:
    proc = run_step(tmp_path, "sleep 2.5", STEP_PROGRESS_SEC="1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[:2] == [
        f"t: the step: still running, 1 s so far (log {tmp_path}/x.log)",
        f"t: the step: still running, 2 s so far (log {tmp_path}/x.log)",
    ]
    assert lines[-1].startswith("t: the step: done in 2.")


def install_tools(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "ci" / "install-tools.sh"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_install_tools_skips_present_tools_with_one_line_each() -> None:
    # The integration session installed cosign and syft before running this file.
    proc = install_tools("cosign", "syft")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("install-tools: cosign v")
    assert lines[1].startswith("install-tools: syft v")
    assert all(": present (" in line for line in lines), lines
    tools_dir = os.environ.get("SHATAG_TOOLS_DIR", str(Path.home() / ".cache/shatag/tools"))
    assert proc.stdout == f"{tools_dir}/bin\n"


def test_install_tools_refuses_an_unknown_tool() -> None:
    proc = install_tools("kubectl-but-misspelled")
    assert proc.returncode == 2
    assert "unknown tool 'kubectl-but-misspelled'" in proc.stderr
    assert "cosign syft actionlint buildx caddy tofu helm all kubernetes" in proc.stderr
