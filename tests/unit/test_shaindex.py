"""The per-SHA index of the digest guard (issue 17): same answers as reading the history."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from shatag.ledger import shaindex
from shatag.ledger.history import HistoryRecord, HistoryStore, known_digest

SHAS = ["a" * 40, "b" * 40, "ab" + "c" * 38]
REPOS = ["127.0.0.1:5000/api", "127.0.0.1:5000/api-staging", ""]


def record(sha: str, repository: str, n: int, digest: bool = True) -> HistoryRecord:
    return HistoryRecord(
        "deploy",
        "prod",
        sha,
        ("sha256:" + f"{n:064x}") if digest else "",
        "ok" if n % 3 else "failed",
        repository=repository,
    )


def scanned(store: HistoryStore, sha: str, repository: str | None) -> str | None:
    """digest_for the old way: the index made stale, so the history itself is read."""
    covers = store.path.parent / shaindex.INDEX_DIR / shaindex.COVERS
    saved = covers.read_text() if covers.exists() else None
    covers.unlink(missing_ok=True)
    try:
        return store.digest_for(sha, repository)
    finally:
        if saved is not None:
            covers.write_text(saved)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(SHAS), st.sampled_from(REPOS), st.booleans()), max_size=25),
    st.integers(min_value=0, max_value=25),
)
def test_property_index_answers_as_the_history(
    ops: list[tuple[str, str, bool]], legacy: int
) -> None:
    state = Path(tempfile.mkdtemp())
    store = HistoryStore(state, "prod")
    store.path.parent.mkdir(parents=True)
    for n, (sha, repo, has_digest) in enumerate(ops):
        if n < legacy:  # written by an older shatag: no index
            with store.path.open("a") as fh:
                fh.write(record(sha, repo, n, has_digest).to_json() + "\n")
        else:
            store.append(record(sha, repo, n, has_digest))
    if legacy < len(ops):
        assert shaindex.covered(store.path)
    for asked in [*SHAS, "d" * 40]:
        for where in [*REPOS, None]:
            assert store.digest_for(asked, where) == scanned(store, asked, where)


def test_an_older_writer_makes_the_index_stale_and_the_next_append_rebuilds(
    tmp_path: Path,
) -> None:
    store = HistoryStore(tmp_path, "prod")
    store.append(record(SHAS[0], REPOS[0], 1))
    assert shaindex.covered(store.path)
    with store.path.open("a") as fh:  # another writer, not keeping the index
        fh.write(record(SHAS[1], REPOS[0], 2).to_json() + "\n")
    assert not shaindex.covered(store.path)
    assert store.digest_for(SHAS[1]) == "sha256:" + f"{2:064x}"  # read from the history
    store.append(record(SHAS[2], REPOS[1], 4))
    assert shaindex.covered(store.path)
    assert store.digest_for(SHAS[1]) == "sha256:" + f"{2:064x}"
    assert known_digest(tmp_path, SHAS[2], REPOS[1]) == ("prod", "sha256:" + f"{4:064x}")


def test_a_torn_line_cut_by_the_next_append_keeps_the_index_right(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path, "prod")
    store.append(record(SHAS[0], REPOS[0], 1))
    with store.path.open("a") as fh:
        fh.write('{"action": "deploy", "sha": "' + SHAS[1])  # a writer died mid-line
    store.append(record(SHAS[2], REPOS[0], 2))
    assert shaindex.covered(store.path)
    assert store.digest_for(SHAS[1]) is None
    assert store.digest_for(SHAS[2]) == "sha256:" + f"{2:064x}"
