"""ci/emit_image_metadata.py (seed T012): the same record as `inv build`, from given fields."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHA = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "sha256:" + "ab" * 32


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("emit", ROOT / "ci" / "emit_image_metadata.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_emits_the_build_record(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "meta.json"
    code = _load().main(
        [
            "--sha",
            SHA,
            "--repository",
            "localhost:5000/api",
            "--repository-type",
            "canonical",
            "--digest",
            DIGEST,
            "--out",
            str(out),
        ]
    )
    assert code == 0
    line = json.loads(capsys.readouterr().out)
    assert line["phase"] == "build"
    assert line["short_sha"] == SHA[:12]
    assert line["image_ref"] == f"localhost:5000/api:{SHA}@{DIGEST}"
    assert json.loads(out.read_text()) == line


@pytest.mark.parametrize(
    "argv",
    [
        ["--sha", "latest", "--repository", "localhost:5000/api", "--digest", DIGEST],
        ["--sha", SHA, "--repository", "api", "--digest", DIGEST],
        ["--sha", SHA, "--repository", "localhost:5000/api", "--digest", "sha256:xyz"],
        ["--sha", SHA, "--repository", "localhost:5000/api:latest", "--digest", DIGEST],
    ],
)
def test_bad_fields_are_refused_with_a_code(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = _load().main([*argv, "--repository-type", "canonical"])
    assert code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ")
