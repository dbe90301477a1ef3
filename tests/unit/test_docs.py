"""Docs cannot rot: every ``inv <task> --flag`` they show exists in the real collection (T027).

Scans README.md, the quickstart and docs/**/*.md for ``inv`` commands (code blocks, prompt
lines, inline code) and checks each task name and flag against ``shatag.tasks.ns``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.invoke_commands import InvCommand, find_inv_commands, load_tasks, problems

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted(
    {
        ROOT / "README.md",
        ROOT / "specs" / "003-tag-api-container" / "quickstart.md",
        *(ROOT / "docs").rglob("*.md"),
    }
)


def _commands(path: Path) -> list[InvCommand]:
    return list(find_inv_commands(path.read_text(encoding="utf-8"), source=str(path)))


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_inv_command_in_the_docs_exists(path: Path) -> None:
    tasks = load_tasks()
    found = [problem for command in _commands(path) for problem in problems(command, tasks)]
    assert not found, "\n".join(found)


def test_the_quickstart_and_runbook_show_the_core_commands() -> None:
    shown = {
        cmd.argv[0]
        for path in DOCS
        if path.name in ("quickstart.md", "rollback.md")
        for cmd in _commands(path)
    }
    assert {"build", "deploy", "rollback", "history"} <= shown


def test_the_checker_catches_an_unknown_flag() -> None:
    """Guard the guard: a made-up flag and task must be reported."""
    tasks = load_tasks()
    (bad,) = find_inv_commands("```\ninv deploy --sha=abc --no-such-flag\n```")
    assert any("--no-such-flag" in p for p in problems(bad, tasks))
    (unknown,) = find_inv_commands("`inv frobnicate --sha=1`")
    assert any("frobnicate" in p for p in problems(unknown, tasks))


def test_the_checker_reads_shatag_commands_in_code_blocks_only() -> None:
    """``shatag <task>`` lines are checked too (issue 13), but only in code, never in prose."""
    tasks = load_tasks()
    (bad,) = find_inv_commands("```sh\nshatag -f app/shatag.yaml deploy --sha=1 --dry-run\n```")
    assert any("--dry-run" in p for p in problems(bad, tasks))
    (good,) = find_inv_commands("`shatag rollback --env=production --plan`")
    assert problems(good, tasks) == []
    assert list(find_inv_commands("shatag build makes an SBOM when syft is installed")) == []
    assert list(find_inv_commands("`shatag deploy 0123456789ab to production: ok`")) == []
