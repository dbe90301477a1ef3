"""The git-backed ledger (issue 15) against real git: a bare repository stands for the
application's remote, separate clones for separate CI runners.

These drive :class:`shatag.ledger.git.GitLedger` directly; the CLI end to end (deploy,
rollback, kill -9 across clones) is in tests/reliability/test_ledger_runners.py.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from shatag.app.deploy import recover_interrupted, switch
from shatag.config import Settings, StateConfig
from shatag.core import ImageRef, parse_repository
from shatag.errors import DeployLocked, InvalidInput, LedgerDenied, LedgerUnavailable
from shatag.ledger import open_ledger
from shatag.ledger.git import GitEnvLedger, GitLedger
from shatag.ledger.git_lock import LockInfo
from shatag.ledger.history import HistoryRecord
from shatag.supplychain.evidence import SignatureOutcome
from tests._gitremote import GitRemote, git

ENV = "production"


def record(n: int, *, attempt: str = "", result: str = "ok", env: str = ENV) -> HistoryRecord:
    sha = f"{n:040x}"
    return HistoryRecord(
        action="deploy",
        env=env,
        sha=sha,
        digest="sha256:" + f"{n:064x}",
        result="ok" if result == "ok" else "failed",
        repository="127.0.0.1:5000/api",
        attempt=attempt or f"attempt-{n}",
    )


class Remote(GitRemote):
    """The application's remote; each runner's ledger on its own clone."""

    def ledger(self, clone: Path | None = None, **kw: Any) -> GitLedger:
        return GitLedger(clone or self.clone(), "origin", env=dict(os.environ), **kw)


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    return Remote(tmp_path)


def test_three_runners_share_one_history(remote: Remote) -> None:
    first, second = remote.ledger(), remote.ledger()
    with first.lock(ENV, timeout=5, holder="deploy A"):
        first.store(ENV).append(record(1))
    with second.lock(ENV, timeout=5, holder="deploy B"):
        assert second.store(ENV).current() == record(1)  # refetched under the lock
        second.store(ENV).append(record(2))
    third = remote.ledger()  # a brand-new runner
    store = third.store(ENV)
    assert [r.sha for r in store.newest()] == [record(2).sha, record(1).sha]
    assert store.current() == record(2)
    assert store.previous() == record(1)
    assert store.digest_for(record(1).sha, "127.0.0.1:5000/api") == record(1).digest
    assert store.digest_for(record(1).sha, "elsewhere/api") is None
    assert third.known_digest(record(1).sha) == (ENV, record(1).digest)
    assert third.environments() == [ENV]
    # The audit trail with plain git, as docs/ledger.md shows it.
    plain = remote.clone()
    git(plain, "fetch", "-q", "origin", "refs/shatag/*:refs/shatag/*")
    log = git(plain, "log", "--format=%s", f"refs/shatag/{ENV}").splitlines()
    assert log == [
        f"shatag deploy {record(2).sha[:12]} to {ENV}: ok",
        f"shatag deploy {record(1).sha[:12]} to {ENV}: ok",
    ]
    shown = git(plain, "show", f"refs/shatag/{ENV}:record.json")
    assert json.loads(shown)["sha"] == record(2).sha
    assert git(plain, "ls-tree", "--name-only", f"refs/shatag/{ENV}") == "record.json"
    # No lock and no journal left behind.
    assert set(remote.refs()) == {f"refs/shatag/{ENV}"}


def test_the_user_work_tree_and_index_are_untouched(remote: Remote) -> None:
    clone = remote.clone()
    (clone / "README").write_text("edited, not staged\n")
    (clone / "new.txt").write_text("untracked\n")
    git(clone, "add", "new.txt")
    before = (
        git(clone, "status", "--porcelain"),
        git(clone, "rev-parse", "HEAD"),
        (clone / ".git" / "index").read_bytes(),
    )
    ledger = remote.ledger(clone)
    with ledger.lock(ENV, timeout=5, holder="deploy"):
        ledger.write_journal(ENV, {"attempt": "x", "sha": "a" * 40})
        ledger.store(ENV).append(record(1))
        ledger.clear_journal(ENV)
    after = (
        git(clone, "status", "--porcelain"),
        git(clone, "rev-parse", "HEAD"),
        (clone / ".git" / "index").read_bytes(),
    )
    assert after == before
    assert git(clone, "stash", "list") == ""


def _append_many(path: str, start: int, count: int) -> None:
    ledger = GitLedger(Path(path), "origin", env=dict(os.environ), timeout=60)
    for n in range(start, start + count):
        ledger.store(ENV).append(record(n))


def test_concurrent_appends_without_the_lock_lose_and_duplicate_nothing(remote: Remote) -> None:
    """The CAS alone (no lock held): three runners append at once; every record lands once,
    on one linear chain."""
    ctx = multiprocessing.get_context("fork")
    per = 8
    procs = [
        ctx.Process(target=_append_many, args=(str(remote.clone()), 1 + i * 100, per))
        for i in range(3)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(240)
        assert proc.exitcode == 0
    store = remote.ledger().store(ENV)
    shas = [r.sha for r in store.newest()]
    expected = {record(1 + i * 100 + k).sha for i in range(3) for k in range(per)}
    assert len(shas) == len(expected) == 3 * per
    assert set(shas) == expected
    head = remote.refs()[f"refs/shatag/{ENV}"]
    assert git(remote.bare, "rev-list", "--count", "--merges", head) == "0"
    assert git(remote.bare, "rev-list", "--count", head) == str(3 * per)


def test_an_append_is_idempotent_per_attempt(remote: Remote) -> None:
    rec = record(7, attempt="the-attempt")
    remote.ledger().store(ENV).append(rec)
    # Another runner retries the same attempt (say its first push timed out but landed).
    remote.ledger().store(ENV).append(rec)
    assert remote.ledger().store(ENV).newest() == [rec]


def _hold_lock(path: str, ready: multiprocessing.synchronize.Event, seconds: float) -> None:
    ledger = GitLedger(Path(path), "origin", env=dict(os.environ), lock_ttl_sec=3.0)
    with ledger.lock(ENV, timeout=5, holder="deploy aaaa by ci"):
        ready.set()
        time.sleep(seconds)


def test_two_runners_serialize_on_the_lock(remote: Remote) -> None:
    """Held by one runner for 4.5 s with a 3 s TTL (renewed while held): another runner
    fails DEPLOY_LOCKED without waiting, and with waiting gets it only after release."""
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(remote.clone()), ready, 4.5))
    holder.start()
    try:
        assert ready.wait(30)
        other = remote.ledger()
        with pytest.raises(DeployLocked) as info, other.lock(ENV, timeout=0, holder="x"):
            pass
        message = info.value.message
        assert "deploy aaaa by ci" in message
        assert f"pid {holder.pid}" in message
        assert f"git push origin --delete refs/shatag-lock/{ENV}" in message
        started = time.monotonic()
        with other.lock(ENV, timeout=30, holder="deploy bbbb"):
            waited = time.monotonic() - started
            holder.join(30)
            assert holder.exitcode == 0
            mine = other.read_lock(ENV)
            assert mine is not None
            assert mine.holder == "deploy bbbb"
        assert waited >= 3.0, "it outlived its 3 s TTL: the holder renewed it"
        assert 0 < other.last_lock_wait_sec <= waited
    finally:
        holder.join(30)
    assert f"refs/shatag-lock/{ENV}" not in remote.refs()


def _die_holding(path: str, ready: multiprocessing.synchronize.Event) -> None:
    ledger = GitLedger(Path(path), "origin", env=dict(os.environ), lock_ttl_sec=600)
    with ledger.lock(ENV, timeout=5, holder="deploy that dies"):
        ledger.write_journal(ENV, {"attempt": "dead", "sha": "d" * 40, "action": "deploy"})
        ready.set()
        time.sleep(60)


def test_a_lock_whose_holder_was_killed_here_is_taken_over(remote: Remote) -> None:
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_die_holding, args=(str(remote.clone()), ready))
    proc.start()
    assert ready.wait(30)
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert f"refs/shatag-lock/{ENV}" in remote.refs()  # left behind, 600 s TTL
    ledger = remote.ledger()
    started = time.monotonic()
    with ledger.lock(ENV, timeout=0, holder="next deploy"):
        assert time.monotonic() - started < 10
        # The crash journal of the killed deploy is there for recovery.
        assert ledger.read_journal(ENV) == {"attempt": "dead", "sha": "d" * 40, "action": "deploy"}
        ledger.clear_journal(ENV)
    assert remote.refs() == {}


def _push_foreign_lock(remote: Remote, expires_unix: float) -> None:
    """A lock left by a runner on another machine, written with plain git."""
    clone = remote.clone()
    info = LockInfo(
        env=ENV,
        holder="deploy cccc by someone",
        host="other-runner",
        pid=4242,
        token="t",
        acquired_at="2026-01-01T00:00:00.000Z",
        expires_at="...",
        expires_unix=expires_unix,
        where="https://github.com/o/r/actions/runs/1",
    )
    blob = git(clone, "hash-object", "-w", "--stdin", stdin=info.to_json() + "\n")
    tree = git(clone, "mktree", stdin=f"100644 blob {blob}\tlock.json\n")
    commit = git(clone, "commit-tree", tree, "-m", "lock")
    git(clone, "push", "-q", "origin", f"{commit}:refs/shatag-lock/{ENV}")


def test_a_live_foreign_lock_blocks_until_broken_by_the_documented_command(
    remote: Remote,
) -> None:
    _push_foreign_lock(remote, time.time() + 3600)
    ledger = remote.ledger()
    with pytest.raises(DeployLocked) as info, ledger.lock(ENV, timeout=1, holder="x"):
        pass
    assert "deploy cccc by someone on other-runner pid 4242" in info.value.message
    assert "actions/runs/1" in info.value.message
    # docs/ledger.md: break a stale lock by hand.
    git(remote.clone(), "push", "-q", "origin", "--delete", f"refs/shatag-lock/{ENV}")
    with ledger.lock(ENV, timeout=0, holder="after the break"):
        pass


def test_an_expired_foreign_lock_is_taken_over(remote: Remote) -> None:
    _push_foreign_lock(remote, time.time() - 1)
    ledger = remote.ledger()
    with ledger.lock(ENV, timeout=0, holder="taker") as info:
        assert info.holder == "taker"
        remote_info = LockInfo.from_json(
            git(remote.bare, "show", f"refs/shatag-lock/{ENV}:lock.json")
        )
        assert remote_info is not None
        assert remote_info.token == info.token
    assert remote.refs() == {}


def test_a_remote_that_refuses_pushes_is_ledger_denied(remote: Remote) -> None:
    remote.hook('echo "refs/shatag*: writes not allowed for this token" >&2\nexit 1\n')
    ledger = remote.ledger()
    with pytest.raises(LedgerDenied) as info, ledger.lock(ENV, timeout=5, holder="x"):
        pass
    assert "pre-receive hook declined" in info.value.message
    assert info.value.code == "LEDGER_DENIED"
    with pytest.raises(LedgerDenied):
        ledger.store(ENV).append(record(1))
    assert remote.refs() == {}


def test_a_missing_remote_is_ledger_unavailable(tmp_path: Path, remote: Remote) -> None:
    clone = remote.clone()
    git(clone, "remote", "set-url", "origin", str(tmp_path / "gone.git"))
    with pytest.raises(LedgerUnavailable) as info:
        GitLedger(clone, "origin", env=dict(os.environ)).store(ENV).current()
    assert "cannot fetch the deployment ledger" in info.value.message
    not_a_repo = tmp_path / "plain"
    not_a_repo.mkdir()
    with pytest.raises(LedgerUnavailable):
        GitLedger(not_a_repo, "origin", env=dict(os.environ)).environments()


def test_reads_fetch_once_per_process(remote: Remote) -> None:
    writer = remote.ledger()
    for n in range(3):
        writer.store(ENV).append(record(n))
    time.sleep(1.1)  # committer dates have one-second resolution
    for n in range(3):
        writer.store("staging").append(record(n, env="staging"))
    reader = remote.ledger()
    reader.store(ENV).newest()
    reader.store(ENV).previous()
    reader.known_digest(record(1).sha)
    reader.store("staging").current()
    assert reader.stats == {"fetches": 1, "pushes": 0, "conflicts": 0}
    assert reader.environments()[0] == "staging"  # most recently written first


def test_journal_round_trip_between_runners(remote: Remote) -> None:
    one, two = remote.ledger(), remote.ledger()
    with one.lock(ENV, timeout=5):
        one.write_journal(ENV, {"attempt": "a1", "targets": [{"kind": "tfvars"}]})
        one.write_journal(ENV, {"attempt": "a1", "targets": [{"kind": "tfvars"}], "n": 2})
    two.refresh()
    assert two.read_journal(ENV) == {"attempt": "a1", "targets": [{"kind": "tfvars"}], "n": 2}
    with two.lock(ENV, timeout=5):
        two.clear_journal(ENV)
    assert remote.ledger().read_journal(ENV) is None


@pytest.mark.parametrize("hostile", ["../x", "a b", "Prod", "x" * 80, "refs/heads/main"])
def test_environment_names_cannot_escape_the_namespace(remote: Remote, hostile: str) -> None:
    with pytest.raises(InvalidInput):
        GitLedger.history_ref(hostile)
    with pytest.raises(InvalidInput):
        remote.ledger().store(hostile)


# -- the deploy use case on the git ledger (switch and recovery, file targets) ----------------

REPO = parse_repository("127.0.0.1:5000/api")
IMG_A = ImageRef(REPO, "a" * 40, "sha256:" + "1" * 64)
IMG_B = ImageRef(REPO, "b" * 40, "sha256:" + "2" * 64)
SIG = SignatureOutcome("unverified", "tool_missing")


def _settings(tmp_path: Path) -> Settings:
    return Settings.from_mapping(
        {
            "state_backend": "git",
            "environments": {
                ENV: {"targets": [{"kind": "tfvars", "path": str(tmp_path / "image.tfvars.json")}]}
            },
        }
    )


def _switch(settings: Settings, ledger: GitEnvLedger, image: ImageRef) -> object:
    return switch(
        settings,
        settings.environment(ENV),
        image,
        action="deploy",
        signature=SIG,
        env={"USER": "ci"},
        ledger=ledger,
    )


def test_switch_on_the_git_ledger_records_and_restores_when_refused(
    remote: Remote, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    ledger = GitEnvLedger(remote.ledger(), ENV)
    with ledger.lock(timeout=5, holder="deploy A"):
        _switch(settings, ledger, IMG_A)
    tfvars = tmp_path / "image.tfvars.json"
    before = tfvars.read_text()
    assert IMG_A.sha in before
    # The history ref is protected; lock and journal refs are not.
    remote.hook(
        f'while read old new ref; do [ "$ref" = refs/shatag/{ENV} ] && exit 1; done; exit 0\n'
    )
    second = GitEnvLedger(remote.ledger(), ENV)
    with (
        pytest.raises(LedgerDenied) as info,
        second.lock(timeout=5, holder="deploy B"),
    ):
        _switch(settings, second, IMG_B)
    assert "the deploy was not recorded, so every target was restored" in info.value.message
    assert tfvars.read_text() == before
    assert set(remote.refs()) == {f"refs/shatag/{ENV}"}  # no journal, no lock left
    assert [r.sha for r in GitEnvLedger(remote.ledger(), ENV).newest()] == [IMG_A.sha]


def test_recovery_from_a_shared_journal_touches_configured_targets_only(
    remote: Remote, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    tfvars = tmp_path / "image.tfvars.json"
    victim = tmp_path / "elsewhere.txt"
    writer = remote.ledger()
    with writer.lock(ENV, timeout=5):
        writer.write_journal(
            ENV,
            {
                "attempt": "killed",
                "action": "deploy",
                "sha": IMG_B.sha,
                "digest": IMG_B.digest,
                "targets": [
                    {"kind": "tfvars", "path": str(tfvars), "previous": '{"image_sha": ""}\n'},
                    {"kind": "tfvars", "path": str(victim), "previous": "forged\n"},
                ],
            },
        )
    ledger = GitEnvLedger(remote.ledger(), ENV)
    with ledger.lock(timeout=5, holder="next deploy"):
        notes = recover_interrupted(ledger, env={}, trusted=settings.environment(ENV).targets)
    assert tfvars.read_text() == '{"image_sha": ""}\n'
    assert not victim.exists()
    assert any("not a target of this environment" in n for n in notes)
    rows = GitEnvLedger(remote.ledger(), ENV).newest()
    assert [(r.sha, r.result, r.error_code) for r in rows] == [(IMG_B.sha, "failed", "INTERRUPTED")]
    assert set(remote.refs()) == {f"refs/shatag/{ENV}"}


def _deploy_b_then_die(clone: str, config: str) -> None:
    """A runner's deploy of B (in a forked process the test SIGKILLs at a named moment)."""
    settings = Settings.from_mapping(json.loads(config))
    ledger = GitEnvLedger(GitLedger(Path(clone), "origin", env=dict(os.environ)), ENV)
    with ledger.lock(timeout=5, holder="deploy B, killed"):
        _switch(settings, ledger, IMG_B)


def _kill_runner_at(remote: Remote, tmp_path: Path, config: dict[str, Any], marker: Path) -> None:
    """Deploy A, then deploy B on another runner and SIGKILL it once ``marker`` appears (the
    history push blocked by the remote's hook, or the apply command running), so the record
    of B never lands; the hook's push is refused after the kill."""
    settings = Settings.from_mapping(config)
    first = GitEnvLedger(remote.ledger(), ENV)
    with first.lock(timeout=5, holder="deploy A"):
        _switch(settings, first, IMG_A)
    release = tmp_path / "release"
    remote.hook(
        f'while read old new ref; do [ "$ref" = refs/shatag/{ENV} ] || continue\n'
        f"  touch {tmp_path / 'record-pushed'}\n"
        f"  while [ ! -f {release} ]; do sleep 0.05; done; exit 1\n"
        "done; exit 0\n"
    )
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=_deploy_b_then_die, args=(str(remote.clone()), json.dumps(config)))
    proc.start()
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline and proc.is_alive():
        time.sleep(0.02)
    assert marker.exists(), "the runner never reached the moment it is killed at"
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    (remote.bare / "hooks" / "pre-receive").unlink()
    release.touch()  # an orphaned push still waiting in the hook is refused
    assert f"refs/shatag-journal/{ENV}" in remote.refs()


def test_a_runner_killed_after_its_apply_is_finished_by_the_next_from_another_clone(
    remote: Remote, tmp_path: Path
) -> None:
    """Killed while its record was being pushed: every target already runs B, so the next
    runner (a fresh clone, no local state) records B ``ok`` with a note naming the killed
    attempt, instead of ``failed (INTERRUPTED)`` (issue 23, item 6)."""
    tfvars = tmp_path / "image.tfvars.json"
    config = {
        "state_backend": "git",
        "environments": {ENV: {"targets": [{"kind": "tfvars", "path": str(tfvars)}]}},
    }
    _kill_runner_at(remote, tmp_path, config, tmp_path / "record-pushed")
    assert IMG_B.sha in tfvars.read_text()
    killed = GitEnvLedger(remote.ledger(), ENV).read_journal()
    assert killed is not None
    settings = Settings.from_mapping(config)
    ledger = GitEnvLedger(remote.ledger(), ENV)
    with ledger.lock(timeout=5, holder="next deploy"):
        notes = recover_interrupted(
            ledger,
            env={},
            trusted=settings.environment(ENV).targets,
            envcfg=settings.environment(ENV),
            state_dir=tmp_path / "no-state-here",
        )
    attempt = killed.get("attempt", "")
    assert notes[0] == f"finished attempt {attempt} (started {killed.get('started_at')}): " + (
        f"every target runs {IMG_B.pinned}"
    )
    assert IMG_B.sha in tfvars.read_text()
    rows = GitEnvLedger(remote.ledger(), ENV).newest()
    assert [(r.sha, r.result, r.error_code, r.attempt) for r in rows] == [
        (IMG_B.sha, "ok", "", attempt),
        (IMG_A.sha, "ok", "", rows[1].attempt),
    ]
    assert rows[0].previous_sha == IMG_A.sha
    assert rows[0].image_ref == IMG_B.pinned
    assert f"the runner of attempt {attempt}" in rows[0].note
    assert "interrupted after its apply" in rows[0].note
    assert set(remote.refs()) == {f"refs/shatag/{ENV}"}


def test_a_runner_killed_in_its_apply_command_is_undone_by_the_next_saying_why(
    remote: Remote, tmp_path: Path
) -> None:
    """Killed while its apply command ran: the targets show B, but nothing can observe what
    the command did, so the next runner restores A and records B ``failed (INTERRUPTED)``
    with the reason and what it undid."""
    tfvars = tmp_path / "image.tfvars.json"
    running, release = tmp_path / "apply-running", tmp_path / "release"
    command = (
        f'[ "$SHATAG_IMAGE_SHA" = {IMG_B.sha} ] || exit 0; touch {running}; '
        f"while [ ! -f {release} ]; do sleep 0.05; done"
    )
    config = {
        "state_backend": "git",
        "environments": {
            ENV: {
                "apply": ["sh", "-c", command],
                "targets": [{"kind": "tfvars", "path": str(tfvars)}],
            }
        },
    }
    _kill_runner_at(remote, tmp_path, config, running)
    assert IMG_B.sha in tfvars.read_text()
    settings = Settings.from_mapping(config)
    ledger = GitEnvLedger(remote.ledger(), ENV)
    with ledger.lock(timeout=5, holder="next deploy"):
        notes = recover_interrupted(
            ledger,
            env={},
            trusted=settings.environment(ENV).targets,
            envcfg=settings.environment(ENV),
            state_dir=tmp_path / "no-state-here",
        )
    assert notes == (f"restored {tfvars}",)
    assert IMG_A.sha in tfvars.read_text()
    assert IMG_B.sha not in tfvars.read_text()
    rows = GitEnvLedger(remote.ledger(), ENV).newest()
    assert [(r.sha, r.result, r.error_code) for r in rows] == [
        (IMG_B.sha, "failed", "INTERRUPTED"),
        (IMG_A.sha, "ok", ""),
    ]
    assert "the apply command's outcome cannot be observed" in rows[0].error
    assert f"its targets were restored (restored {tfvars})" in rows[0].error
    assert rows[0].previous_sha == IMG_A.sha
    assert set(remote.refs()) == {f"refs/shatag/{ENV}"}


# -- races and odd states, in one process (deterministic) --------------------------------------


def test_an_append_that_loses_the_race_refetches_and_lands_on_top(remote: Remote) -> None:
    slow, fast = remote.ledger(), remote.ledger()
    slow.store(ENV).newest()  # slow has read the (empty) head
    fast.store(ENV).append(record(1))
    slow.store(ENV).append(record(2))  # its lease on "no ref" fails: refetch, retry on top
    assert slow.stats["conflicts"] == 1
    assert [r.sha for r in remote.ledger().store(ENV).newest()] == [record(2).sha, record(1).sha]


def test_an_ambiguous_push_that_landed_is_not_recorded_twice(remote: Remote) -> None:
    """The remote takes 2 s to accept (a slow hook); the client gives up after 1 s, retries,
    and then finds its attempt already on the ref."""
    remote.hook("sleep 2\nexit 0\n")
    ledger = remote.ledger(timeout=1.0)
    ledger.refresh()
    ledger.store(ENV).append(record(5, attempt="once"))
    (remote.bare / "hooks" / "pre-receive").unlink()
    assert ledger.stats["conflicts"] >= 1
    assert [r.attempt for r in remote.ledger().store(ENV).newest()] == ["once"]


def test_journal_writes_and_deletes_are_compare_and_swap_too(remote: Remote) -> None:
    one, two = remote.ledger(), remote.ledger()
    one.refresh()
    two.write_journal(ENV, {"attempt": "two"})
    one.write_journal(ENV, {"attempt": "one"})  # stale lease: refetch, write on top
    three = remote.ledger()
    assert three.read_journal(ENV) == {"attempt": "one"}
    two.clear_journal(ENV)  # two's view is stale (its own commit): refetch, then delete
    assert remote.ledger().read_journal(ENV) is None
    assert one.stats["conflicts"] == 1


def test_an_unreadable_journal_is_dropped(remote: Remote) -> None:
    clone = remote.clone()
    blob = git(clone, "hash-object", "-w", "--stdin", stdin="{not json")
    tree = git(clone, "mktree", stdin=f"100644 blob {blob}\tjournal.json\n")
    git(clone, "push", "-q", "origin", f"{git(clone, 'commit-tree', tree, '-m', 'j')}:"
        f"refs/shatag-journal/{ENV}")  # fmt: skip
    ledger = GitEnvLedger(remote.ledger(), ENV)
    assert ledger.read_journal() is None
    assert remote.refs() == {}


def test_a_lock_broken_by_hand_while_held_is_not_recreated(
    remote: Remote, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = remote.ledger(lock_ttl_sec=0.9)
    with ledger.lock(ENV, timeout=5, holder="long deploy"):
        git(remote.clone(), "push", "-q", "origin", "--delete", f"refs/shatag-lock/{ENV}")
        # a renewal (every 0.3 s) finds the lease gone: the event, not a 1 s sleep (issue 27)
        deadline = time.monotonic() + 30
        while "was taken over while held" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    assert remote.refs() == {}
    assert "was taken over while held" in caplog.text


def test_git_that_does_not_answer_in_time_is_ledger_unavailable(remote: Remote) -> None:
    """A remote that takes the connection and never answers: a real hang. (It was a 1 ms
    timeout, which a git started on a loaded machine could beat -- the timer that kills is
    a thread, and it fired after git had finished: issue 27, run 1.)"""
    clone = remote.clone()
    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens; never accepts
        port = silent.getsockname()[1]
        git(clone, "remote", "set-url", "origin", f"git://127.0.0.1:{port}/remote.git")
        started = time.monotonic()
        with pytest.raises(LedgerUnavailable) as info:
            remote.ledger(clone, timeout=1).environments()
        took = time.monotonic() - started
    assert "did not finish within 1s" in info.value.message, info.value.message
    assert 1 <= took < 30


def test_one_git_ledger_per_process_behind_the_seam(remote: Remote) -> None:
    clone = remote.clone()
    state = Settings.from_mapping({"state_backend": "git"}).state
    state = StateConfig(backend="git", remote="origin", repo=clone, timeout_sec=state.timeout_sec)
    first = open_ledger(state, ENV, environ=dict(os.environ))
    second = open_ledger(state, "staging", environ=dict(os.environ))
    assert isinstance(first, GitEnvLedger)
    assert isinstance(second, GitEnvLedger)
    assert first.ledger is second.ledger
    first.append(record(1))
    first.append(record(2))
    assert first.env == ENV
    assert [r.sha for r in first.iter_newest()] == [record(2).sha, record(1).sha]
    assert first.previous() == record(1)
    assert first.digest_for(record(1).sha) == record(1).digest
    assert second.known_digest(record(2).sha) == (ENV, record(2).digest)
    assert first.find_attempt("attempt-1") == record(1)
    assert second.current() is None
