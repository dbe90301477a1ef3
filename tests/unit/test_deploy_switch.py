"""The all-or-nothing switch, crash recovery and the catalog, on file targets (issue 4).

No subprocess, no registry: ``switch`` takes an already validated :class:`ImageRef`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shatag.app.deploy import _metadata_digest, recover_interrupted, switch
from shatag.config import Settings
from shatag.core import ImageRef, parse_repository
from shatag.errors import ConfigError, DeployFailed, InvalidInput, PolicyViolation
from shatag.ledger import JOURNAL_FILE, open_ledger
from shatag.ledger.history import HistoryStore, catalog, format_catalog
from shatag.supplychain.evidence import SignatureOutcome

REPO = parse_repository("127.0.0.1:5000/api")
A = ImageRef(REPO, "a" * 40, "sha256:" + "1" * 64)
B = ImageRef(REPO, "b" * 40, "sha256:" + "2" * 64)
SDL = "services:\n  api:\n    image: old:1  # managed\n"
SIG = SignatureOutcome("unverified", "tool_missing")


def settings_for(tmp_path: Path, **targets_extra: Any) -> Settings:
    return Settings.from_mapping(
        {
            "canonical_repository": "127.0.0.1:5000/api",
            "staging_repository": "127.0.0.1:5000/api-staging",
            "state_dir": str(tmp_path / "state"),
            "environments": {
                "prod": {
                    "targets": [
                        {"kind": "sdl", "path": str(tmp_path / "deploy.yaml"), "service": "api"},
                        {"kind": "tfvars", "path": str(tmp_path / "image.auto.tfvars.json")},
                        *targets_extra.get("more", []),
                    ]
                }
            },
        }
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "deploy.yaml").write_text(SDL)
    return settings_for(tmp_path)


def do_switch(settings: Settings, image: ImageRef, action: str = "deploy") -> Any:
    return switch(
        settings,
        settings.environment("prod"),
        image,
        action=action,  # type: ignore[arg-type]
        signature=SIG,
        env={"USER": "alice"},
    )


def test_switch_writes_every_target_and_records_history(settings: Settings, tmp_path: Path) -> None:
    first = do_switch(settings, A)
    second = do_switch(settings, B)
    assert first.previous_sha == ""
    assert second.previous_sha == A.sha
    assert second.human_line() == f"deployed: prod {B.pinned} (was {A.sha})"
    assert (tmp_path / "deploy.yaml").read_text() == (
        f"services:\n  api:\n    image: {B.pinned}  # managed\n"
    )
    tf = json.loads((tmp_path / "image.auto.tfvars.json").read_text())
    assert tf == {"image_sha": B.sha, "image_digest": B.digest, "image_ref": B.pinned}
    rows = HistoryStore(settings.state_dir, "prod").newest()
    assert [(r.sha, r.previous_sha, r.initiated_by, r.result) for r in rows] == [
        (B.sha, A.sha, "alice", "ok"),
        (A.sha, "", "alice", "ok"),
    ]
    assert not (settings.state_dir / "prod" / JOURNAL_FILE).exists()


def test_log_line_keys(settings: Settings, tmp_path: Path) -> None:
    data = do_switch(settings, A, action="rollback").as_dict()
    assert data["phase"] == "rollback"
    assert "rollback_duration_sec" in data
    assert data["targets"] == [
        f"sdl:{tmp_path / 'deploy.yaml'}",
        f"tfvars:{tmp_path / 'image.auto.tfvars.json'}",
    ]


def test_failure_in_prepare_changes_nothing(tmp_path: Path) -> None:
    """The SDL lacks the service: nothing is written, nothing recorded."""
    (tmp_path / "deploy.yaml").write_text("services:\n  web:\n    image: x\n")
    settings = settings_for(tmp_path)
    with pytest.raises(ConfigError):
        do_switch(settings, A)
    assert not (tmp_path / "image.auto.tfvars.json").exists()
    assert HistoryStore(settings.state_dir, "prod").newest() == []


def test_failure_preparing_the_last_target_changes_no_target(tmp_path: Path) -> None:
    """All targets are prepared before any is applied: a bad third target leaves the first
    two untouched."""
    (tmp_path / "deploy.yaml").write_text(SDL)
    blocker = tmp_path / "dir.auto.tfvars.json"
    settings = settings_for(tmp_path, more=[{"kind": "tfvars", "path": str(blocker)}])
    do_switch(settings, A)
    sdl_before = (tmp_path / "deploy.yaml").read_text()
    tf_before = (tmp_path / "image.auto.tfvars.json").read_text()
    blocker.unlink()
    blocker.mkdir()  # unreadable as a file: prepare fails
    with pytest.raises(ConfigError):
        do_switch(settings, B)
    assert (tmp_path / "deploy.yaml").read_text() == sdl_before
    assert (tmp_path / "image.auto.tfvars.json").read_text() == tf_before


def test_apply_time_failure_restores_and_records_failed(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    do_switch(settings, A)
    sdl_before = (tmp_path / "deploy.yaml").read_text()
    from shatag.targets.tfvars import TfvarsTarget

    def broken_apply(self: TfvarsTarget) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(TfvarsTarget, "apply", broken_apply)
    # A bare OSError is a documented code, in the error and in history (issue 24, item 7).
    with pytest.raises(DeployFailed, match="disk full"):
        do_switch(settings, B)
    assert (tmp_path / "deploy.yaml").read_text() == sdl_before
    store = HistoryStore(settings.state_dir, "prod")
    newest = store.newest()
    assert (newest[0].sha, newest[0].result, newest[0].error_code) == (
        B.sha,
        "failed",
        "DEPLOY_FAILED",
    )
    current = store.current()
    assert current is not None
    assert current.sha == A.sha


def test_recovery_after_kill_rolls_back_unrecorded_attempt(
    settings: Settings, tmp_path: Path
) -> None:
    """Simulated crash (a fake: kill -9 between apply and the history append is exercised
    for real in tests/integration): the journal is present, history never saw the attempt."""
    do_switch(settings, A)
    before = (tmp_path / "deploy.yaml").read_text()
    journal = settings.state_dir / "prod" / JOURNAL_FILE
    journal.write_text(
        json.dumps(
            {
                "attempt": "dead1",
                "action": "deploy",
                "sha": B.sha,
                "digest": B.digest,
                "targets": [
                    {"kind": "sdl", "path": str(tmp_path / "deploy.yaml"), "previous": before}
                ],
            }
        )
    )
    (tmp_path / "deploy.yaml").write_text("half-applied: true\n")
    notes = recover_interrupted(open_ledger(settings.state_dir, "prod"), env={})
    assert notes == (f"restored {tmp_path / 'deploy.yaml'}",)
    assert (tmp_path / "deploy.yaml").read_text() == before
    assert not journal.exists()
    newest = HistoryStore(settings.state_dir, "prod").newest()
    assert (newest[0].sha, newest[0].result, newest[0].error_code) == (
        B.sha,
        "failed",
        "INTERRUPTED",
    )


def test_recovery_rolls_forward_a_recorded_attempt(settings: Settings, tmp_path: Path) -> None:
    record = do_switch(settings, A)
    store = HistoryStore(settings.state_dir, "prod")
    attempt = store.newest()[0].attempt
    journal = settings.state_dir / "prod" / JOURNAL_FILE
    journal.write_text(json.dumps({"attempt": attempt, "targets": [{"kind": "sdl"}]}))
    assert recover_interrupted(open_ledger(settings.state_dir, "prod"), env={}) == (
        "nothing to do",
    )
    assert (tmp_path / "deploy.yaml").read_text().count(record.image_ref) == 1
    assert len(store.newest()) == 1


def test_unreadable_journal_is_dropped(settings: Settings) -> None:
    journal = settings.state_dir / "prod" / JOURNAL_FILE
    journal.parent.mkdir(parents=True)
    journal.write_text("{torn")
    assert recover_interrupted(open_ledger(settings.state_dir, "prod"), env={}) == ()
    assert not journal.exists()


def test_metadata_guard(settings: Settings, tmp_path: Path) -> None:
    env = settings.environment("prod")
    meta = tmp_path / "meta.json"
    meta.write_text(
        json.dumps({"image_sha": A.sha, "image_digest": A.digest, "repository": str(REPO)})
    )
    assert _metadata_digest(env, A, meta) == (A.digest, f"metadata file {meta}")
    with pytest.raises(InvalidInput, match="describes"):
        _metadata_digest(env, B, meta)
    meta.write_text(
        json.dumps({"image_sha": A.sha, "image_digest": A.digest, "repository": "127.0.0.1:5000/x"})
    )
    with pytest.raises(PolicyViolation, match=r"127\.0\.0\.1:5000/x"):
        _metadata_digest(env, A, meta)
    with pytest.raises(InvalidInput, match="does not exist"):
        _metadata_digest(env, A, tmp_path / "none.json")


def test_catalog_marks_current_and_formats(settings: Settings) -> None:
    do_switch(settings, A)
    do_switch(settings, B)
    rows = catalog(HistoryStore(settings.state_dir, "prod"), limit=10)
    assert [(r["sha"], r["current"]) for r in rows] == [(B.sha, True), (A.sha, False)]
    text = format_catalog("prod", rows)
    lines = text.splitlines()
    assert lines[0] == "prod (* = current)"
    assert lines[2].startswith("*")
    assert B.sha in lines[2]
    assert "unverified/tool_missing" in lines[2]
    assert format_catalog("prod", []) == "prod: no deployments recorded"


def test_fault_injected_commit_failure_keeps_the_journal_for_the_next_run(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fake fault (the commit of a real docker target fails when, e.g., the daemon goes away
    between the record and the retirement of the old release): the deploy is recorded and
    succeeds, the journal stays, and the next run finishes the cleanup and clears it."""
    from shatag.targets.sdl import SdlTarget

    do_switch(settings, A)

    def broken_commit(self: SdlTarget) -> None:
        raise OSError("daemon went away")

    with monkeypatch.context() as patched:
        patched.setattr(SdlTarget, "commit", broken_commit)
        record = do_switch(settings, B)
    assert record.image_sha == B.sha
    journal = settings.state_dir / "prod" / JOURNAL_FILE
    assert json.loads(journal.read_text())["sha"] == B.sha
    assert recover_interrupted(open_ledger(settings.state_dir, "prod"), env={})
    assert not journal.exists()
    current = HistoryStore(settings.state_dir, "prod").current()
    assert current is not None
    assert current.sha == B.sha
