"""The git ledger's remote down (issue 23, item 6), against real git: a bare repository stands
for the remote and is made unreachable by renaming it.

``history`` (and ``status``) answer from the clone's last fetched copy, saying how old it is; a
rollback refuses with LEDGER_UNAVAILABLE, changes nothing, and names what the copy would roll
back to; a clone that never fetched has no copy and says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from shatag.errors import LedgerUnavailable
from shatag.ledger.git import GitLedger
from shatag.ledger.history import HistoryRecord
from tests._gitremote import GitRemote
from tests.conftest import run_inv

ENV = "production"


def _record(n: int) -> HistoryRecord:
    return HistoryRecord(
        action="deploy",
        env=ENV,
        sha=f"{n:040x}",
        digest="sha256:" + f"{n:064x}",
        result="ok",
        repository="127.0.0.1:5000/api",
        image_ref=f"127.0.0.1:5000/api:{n:040x}@sha256:{n:064x}",
        attempt=f"attempt-{n}",
    )


@pytest.fixture
def remote(tmp_path: Path) -> GitRemote:
    return GitRemote(tmp_path)


def _down(remote: GitRemote) -> None:
    remote.bare.rename(remote.bare.with_name("moved.git"))


def test_reads_answer_from_the_last_fetched_copy(remote: GitRemote) -> None:
    runner = remote.clone()
    writer = GitLedger(runner, "origin", env=dict(os.environ))
    for n in (1, 2):
        writer.store(ENV).append(_record(n))
    GitLedger(runner, "origin", env=dict(os.environ)).refresh()  # a later read: the last fetch
    never_fetched = remote.clone()
    _down(remote)

    with pytest.raises(LedgerUnavailable, match="cannot fetch the deployment ledger"):
        GitLedger(runner, "origin", env=dict(os.environ)).refresh()  # writes never use a copy

    reader = GitLedger(runner, "origin", env=dict(os.environ))
    reader.refresh(stale_ok=True)
    assert [r.sha for r in reader.store(ENV).newest()] == [f"{2:040x}", f"{1:040x}"]
    assert "cannot be reached" in reader.stale
    assert "copy of the ledger last fetched at" in reader.stale
    assert reader.stale.endswith(" ago")

    fresh = GitLedger(never_fetched, "origin", env=dict(os.environ))
    with pytest.raises(LedgerUnavailable, match="cannot fetch the deployment ledger"):
        fresh.refresh(stale_ok=True)  # no copy: said as before, not an empty history


def test_history_and_rollback_with_the_remote_down(remote: GitRemote, tmp_path: Path) -> None:
    runner = remote.clone()
    writer = GitLedger(runner, "origin", env=dict(os.environ))
    for n in (1, 2):
        writer.store(ENV).append(_record(n))
    GitLedger(runner, "origin", env=dict(os.environ)).refresh()  # a later read: the last fetch
    sdl = tmp_path / "deploy.yaml"
    sdl.write_text("services:\n  api:\n    image: before\n")
    config = tmp_path / "ledger.json"
    targets = [{"kind": "sdl", "path": str(sdl), "service": "api"}]
    config.write_text(
        json.dumps(
            {
                "shatag": {
                    "canonical_repository": "127.0.0.1:5000/api",
                    "state_backend": "git",
                    "environments": {ENV: {"targets": targets}},
                }
            }
        )
    )
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    _down(remote)

    history = run_inv(["-f", str(config), "history", f"--env={ENV}", "--json"], env, cwd=runner)
    assert history.returncode == 0, history.stderr
    assert [r["sha"] for r in history.records] == [f"{2:040x}", f"{1:040x}"]
    assert "warning: the state remote 'origin' cannot be reached" in history.stderr
    assert "last fetched at" in history.stderr

    rollback = run_inv(["-f", str(config), "rollback", f"--env={ENV}"], env, cwd=runner)
    assert rollback.returncode == 1, rollback.stderr
    assert "error: LEDGER_UNAVAILABLE: rollback of 'production' refused" in rollback.stderr
    assert "nothing was changed" in rollback.stderr
    assert f"--sha={1:040x}" in rollback.stderr  # what the copy would roll back to
    assert sdl.read_text() == "services:\n  api:\n    image: before\n"
