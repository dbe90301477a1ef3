"""The ``shatag`` console script finds its configuration file and says which (issue 13, item 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shatag import output
from shatag.cli import ShatagProgram, program


def help_text(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    program.run(["shatag", *argv, "--help"], exit=False)
    return capsys.readouterr().out


def test_help_names_the_file_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("INVOKE_RUNTIME_CONFIG", raising=False)
    (tmp_path / ".git").mkdir()
    (tmp_path / "shatag.yaml").write_text("shatag: {}\n")
    (tmp_path / "www").mkdir()
    monkeypatch.chdir(tmp_path / "www")
    assert f"Configuration: {tmp_path / 'shatag.yaml'}" in help_text(capsys)


def test_help_says_when_there_is_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("INVOKE_RUNTIME_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert "Configuration: none (shatag.yaml not found" in help_text(capsys)


def test_dash_f_overrides_the_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("INVOKE_RUNTIME_CONFIG", raising=False)
    (tmp_path / "shatag.yaml").write_text("shatag: {}\n")
    other = tmp_path / "ops" / "prod.yaml"
    monkeypatch.chdir(tmp_path)
    assert f"Configuration: {other}" in help_text(capsys, "-f", str(other))


def test_the_program_is_shatag() -> None:
    assert isinstance(program, ShatagProgram)
    assert program.binary == "shatag"


@pytest.mark.parametrize(
    ("message", "as_shatag"),
    [
        (
            "build and push it first: inv build --sha=abc",
            "build and push it first: shatag build --sha=abc",
        ),
        ("see `inv --help <task>`", "see `shatag --help <task>`"),
        ("run `inv -f prod.yaml deploy`", "run `shatag -f prod.yaml deploy`"),
        ("the invoice is inv-42; invalid inventory", "the invoice is inv-42; invalid inventory"),
    ],
)
def test_hints_name_the_command_the_user_ran(
    monkeypatch: pytest.MonkeyPatch, message: str, as_shatag: str
) -> None:
    assert output.as_run(message) == message
    monkeypatch.setattr(output, "PROGRAM", "shatag")
    assert output.as_run(message) == as_shatag
