"""Issue 24, items 3 and 4: masking never touches recorded data, and an unreadable record is
reported (the pure pieces; the real deploy, rollback, docker labels and git ledger are in
tests/integration/test_issue24_records.py)."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shatag._sys import subproc
from shatag.ledger.history import HistoryRecord
from shatag.masking import RECORD_FIELDS, mask, mask_record, register, register_public, reset
from shatag.output import emit_json

SHA = "ab" * 20
DIGEST = "sha256:" + "cd" * 32


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    reset()
    yield
    reset()


def test_identifying_fields_keep_their_value_and_free_text_is_masked() -> None:
    register([SHA, "hunter2-token"])
    record = {
        "phase": "deploy",
        "image_sha": SHA,
        "targets": [f"docker:{SHA}"],
        "message": f"apply printed hunter2-token for {SHA}",
        "warnings": ["hunter2-token"],
        "nested": {"sha": SHA, "note": "hunter2-token"},
    }
    assert mask_record(record) == {
        "phase": "deploy",
        "image_sha": SHA,
        "targets": [f"docker:{SHA}"],
        "message": "apply printed *** for ***",
        "warnings": ["***"],
        "nested": {"sha": SHA, "note": "***"},
    }


def test_a_secret_that_is_a_public_name_is_no_secret() -> None:
    register([SHA, "app-prod-1", "hunter2-token"])
    register_public([SHA, f"registry/app:{SHA}@{DIGEST}", "docker:app-prod-1"])
    assert mask(f"deployed {SHA} to app-prod-1 with hunter2-token") == (
        f"deployed {SHA} to app-prod-1 with ***"
    )


def test_a_history_record_is_stored_with_its_fields_and_its_error_masked() -> None:
    register([SHA, "hunter2-token", "operator-x"])
    record = HistoryRecord(
        action="deploy",
        env="production",
        sha=SHA,
        digest=DIGEST,
        result="failed",
        previous_sha=SHA,
        initiated_by="operator-x",
        error="apply said hunter2-token",
        targets=("sdl:deploy.yaml",),
    )
    stored = json.loads(record.to_stored_json())
    assert stored == {**json.loads(record.to_json()), "error": "apply said ***"}
    assert HistoryRecord.from_json(record.to_stored_json()) is not None


@given(secret=st.text(min_size=6, max_size=30).filter(lambda v: not v.isdigit()))
def test_a_json_line_is_valid_json_with_its_identifiers_whatever_the_secret(secret: str) -> None:
    reset()
    register([secret])
    record = {"image_sha": secret, "message": f"x{secret}y", "count": 3}

    sink = io.StringIO()
    emit_json(record, stream=sink)
    shown = json.loads(sink.getvalue())
    assert shown["image_sha"] == secret
    assert shown["count"] == 3
    assert secret not in shown["message"] or set(secret) <= set("*xy")


def test_record_fields_cover_the_history_line() -> None:
    line = HistoryRecord("deploy", "e", SHA, DIGEST, "ok").as_line()
    assert set(line) - RECORD_FIELDS == {"error", "duration_sec"}


def test_data_output_of_a_tool_is_returned_as_written() -> None:
    register([SHA])
    code = f"print('{SHA}')"
    assert subproc.run([sys.executable, "-c", code], timeout=30, data=True).stdout == SHA + "\n"
    assert subproc.run([sys.executable, "-c", code], timeout=30).stdout == "***\n"


def test_an_unreadable_line_of_the_local_history_is_reported_once_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from shatag.ledger.history import HistoryStore

    store = HistoryStore(tmp_path, "production")
    first = HistoryRecord("deploy", "production", SHA, DIGEST, "ok", attempt="one")
    second = HistoryRecord("deploy", "production", "ef" * 20, DIGEST, "ok", attempt="two")
    store.append(first)
    with store.path.open("ab") as fh:
        fh.write(b'{"action": "deploy", "sha": 42}\n')  # JSON, but not a history record
    store.append(second)
    with caplog.at_level(logging.WARNING, logger="shatag.ledger"):
        assert store.newest() == [second, first]
        assert store.current() == second
    reports = [r.getMessage() for r in caplog.records]
    assert len(reports) == 1, reports
    assert str(store.path) in reports[0]
    assert "skipped" in reports[0]


def test_github_outputs_and_step_summary_keep_the_identifiers(tmp_path: Path) -> None:
    from shatag.output import github_outputs, step_summary

    register([SHA, "hunter2-token"])
    env = {"GITHUB_OUTPUT": str(tmp_path / "out"), "GITHUB_STEP_SUMMARY": str(tmp_path / "sum")}
    github_outputs({"image_sha": SHA, "note": "hunter2-token"}, env=env)
    step_summary("shatag deploy", {"previous_sha": SHA, "note": "hunter2-token"}, env=env)
    assert (tmp_path / "out").read_text() == f"image_sha={SHA}\nnote=***\n"
    summary = (tmp_path / "sum").read_text()
    assert f"| previous_sha | `{SHA}` |" in summary
    assert "| note | `***` |" in summary


def test_a_record_is_named_on_one_printable_line() -> None:
    from shatag.app.deploy import describe_record

    hostile = HistoryRecord(
        "deploy", "evil", SHA, DIGEST, "ok", attempt="x\nerror: FAKE", initiated_by="a\x1b[2J"
    )
    named = describe_record("evil", hostile)
    assert named == (
        "the deploy record of attempt x?error: FAKE (at an unknown time, by a?[2J) in the "
        "deployment history of 'evil'"
    )
