"""Deployment history (issue 4): append-only, torn-line tolerant, newest-first, fast."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shatag.ledger.history import (
    HistoryRecord,
    HistoryStore,
    initiated_by,
    known_digest,
)

SHA_A = "a" * 40
SHA_B = "b" * 40
SHA_C = "c" * 40


def rec(sha: str, result: str = "ok", action: str = "deploy", n: int = 0) -> HistoryRecord:
    return HistoryRecord(
        action=action,  # type: ignore[arg-type]
        env="prod",
        sha=sha,
        digest="sha256:" + sha[0] * 63 + str(n % 10),
        result=result,  # type: ignore[arg-type]
        started_at=f"2026-01-01T00:00:{n % 60:02d}.000Z",
        targets=("docker:api",),
    )


@pytest.fixture
def store(tmp_path: Path) -> HistoryStore:
    return HistoryStore(tmp_path, "prod")


def test_empty_history_has_no_current_or_previous(store: HistoryStore) -> None:
    assert store.newest() == []
    assert store.current() is None
    assert store.previous() is None
    assert store.digest_for(SHA_A) is None


def test_newest_first_and_round_trip(store: HistoryStore) -> None:
    records = [rec(SHA_A, n=1), rec(SHA_B, n=2), rec(SHA_C, n=3)]
    for r in records:
        store.append(r)
    assert store.newest() == list(reversed(records))
    assert store.newest(limit=2) == [records[2], records[1]]


def test_current_is_newest_successful(store: HistoryStore) -> None:
    store.append(rec(SHA_A, n=1))
    store.append(rec(SHA_B, result="failed", n=2))
    assert store.current() == rec(SHA_A, n=1)


def test_previous_skips_failed_and_same_sha(store: HistoryStore) -> None:
    store.append(rec(SHA_A, n=1))
    store.append(rec(SHA_C, result="failed", n=2))  # a failed attempt is never a target
    store.append(rec(SHA_B, n=3))
    store.append(rec(SHA_B, n=4))  # a redeploy of the current SHA is not "previous"
    current = store.current()
    previous = store.previous()
    assert current is not None
    assert current.sha == SHA_B
    assert previous is not None
    assert previous.sha == SHA_A


def test_previous_after_rollback_toggles(store: HistoryStore) -> None:
    store.append(rec(SHA_A, n=1))
    store.append(rec(SHA_B, n=2))
    store.append(rec(SHA_A, action="rollback", n=3))
    previous = store.previous()
    assert previous is not None
    assert previous.sha == SHA_B


def test_torn_last_line_is_ignored_and_cut_by_next_append(store: HistoryStore) -> None:
    store.append(rec(SHA_A, n=1))
    full = rec(SHA_B, n=2).to_json()
    with store.path.open("ab") as fh:  # a writer killed mid-line
        fh.write(full[: len(full) // 2].encode())
    assert [r.sha for r in store.newest()] == [SHA_A]
    store.append(rec(SHA_C, n=3))
    assert [r.sha for r in store.newest()] == [SHA_C, SHA_A]
    assert store.path.read_bytes().count(b"\n") == 2
    assert store.path.read_bytes().endswith(b"\n")


def test_file_holding_only_a_fragment(store: HistoryStore) -> None:
    store.path.parent.mkdir(parents=True)
    store.path.write_bytes(b'{"action":"dep')
    assert store.newest() == []
    store.append(rec(SHA_A, n=1))
    assert [r.sha for r in store.newest()] == [SHA_A]


def test_garbage_and_foreign_lines_are_skipped(store: HistoryStore) -> None:
    store.path.parent.mkdir(parents=True)
    store.path.write_text('not json\n[1,2]\n{"action":"explode"}\n\n')
    store.append(rec(SHA_A, n=1))
    assert [r.sha for r in store.newest()] == [SHA_A]


def test_append_is_o1_no_rewrite(store: HistoryStore) -> None:
    """Appending never rewrites earlier bytes: the file's inode and prefix stay the same."""
    store.append(rec(SHA_A, n=1))
    before = store.path.read_bytes()
    inode = store.path.stat().st_ino
    store.append(rec(SHA_B, n=2))
    assert store.path.stat().st_ino == inode
    assert store.path.read_bytes().startswith(before)


def test_lines_longer_than_a_read_block(store: HistoryStore) -> None:
    big = HistoryRecord(
        action="deploy",
        env="prod",
        sha=SHA_A,
        digest="sha256:" + "1" * 64,
        result="ok",
        error="x" * 200_000,
    )
    store.append(rec(SHA_B, n=1))
    store.append(big)
    store.append(rec(SHA_C, n=2))
    assert [r.sha for r in store.newest()] == [SHA_C, SHA_A, SHA_B]


def test_known_digest_across_environments(tmp_path: Path) -> None:
    HistoryStore(tmp_path, "staging").append(rec(SHA_A, n=1))
    HistoryStore(tmp_path, "prod").append(rec(SHA_B, n=2))
    assert known_digest(tmp_path, SHA_A) == ("staging", rec(SHA_A, n=1).digest)
    assert known_digest(tmp_path, SHA_C) is None
    assert known_digest(tmp_path / "missing", SHA_A) is None


def test_initiated_by_prefers_github_actor() -> None:
    assert initiated_by({"GITHUB_ACTOR": "octo", "USER": "root"}) == "octo"
    assert initiated_by({"USER": "alice"}) == "alice"
    assert initiated_by({}) == "unknown"


def test_newest_20_of_10000_records_is_fast(store: HistoryStore) -> None:
    """Issue 4: `inv history --limit 20` stays fast with 10,000 records (budget 0.5 s)."""
    lines = "".join(rec(SHA_A if i % 2 else SHA_B, n=i).to_json() + "\n" for i in range(10_000))
    store.path.parent.mkdir(parents=True)
    store.path.write_text(lines)
    start = time.perf_counter()
    newest = store.newest(limit=20)
    current = store.current()
    previous = store.previous()
    elapsed = time.perf_counter() - start
    assert len(newest) == 20
    assert current is not None
    assert previous is not None
    assert elapsed < 0.5, f"{elapsed:.3f}s"


_records = st.lists(
    st.tuples(st.sampled_from([SHA_A, SHA_B, SHA_C]), st.sampled_from(["ok", "failed"])),
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(entries=_records, cut=st.integers(min_value=0, max_value=400))
def test_property_reverse_read_matches_forward_parse(
    tmp_path_factory: pytest.TempPathFactory, entries: list[tuple[str, str]], cut: int
) -> None:
    """Whatever was appended reads back newest first, even with a torn tail of any length."""
    store = HistoryStore(tmp_path_factory.mktemp("h"), "prod")
    written = [rec(sha, result=result, n=i) for i, (sha, result) in enumerate(entries)]
    for r in written:
        store.append(r)
    tail = rec(SHA_A, n=99).to_json()
    store.path.parent.mkdir(parents=True, exist_ok=True)
    with store.path.open("ab") as fh:
        fh.write(tail[: min(cut, len(tail) - 1)].encode())
    assert store.newest() == list(reversed(written))
    ok = [r for r in written if r.ok]
    assert store.current() == (ok[-1] if ok else None)
    expected_prev = next((r for r in reversed(ok) if ok and r.sha != ok[-1].sha), None)
    assert store.previous() == expected_prev


def test_record_json_tolerates_unknown_keys() -> None:
    line = rec(SHA_A).to_json()[:-1] + ',"future_field":1}'
    parsed = HistoryRecord.from_json(line)
    assert parsed == rec(SHA_A)


def test_append_fsyncs(store: HistoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.fsync

    def spy(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    store.append(rec(SHA_A))
    assert calls


def test_digest_for_filters_by_repository(store: HistoryStore) -> None:
    store.append(
        HistoryRecord("deploy", "prod", SHA_A, "sha256:" + "1" * 64, "ok", repository="r/x")
    )
    store.append(
        HistoryRecord("deploy", "prod", SHA_A, "sha256:" + "2" * 64, "ok", repository="r/y")
    )
    assert store.digest_for(SHA_A) == "sha256:" + "2" * 64
    assert store.digest_for(SHA_A, "r/x") == "sha256:" + "1" * 64
    assert store.digest_for(SHA_A, "r/z") is None
    assert store.digest_for(SHA_B) is None
