"""A per-SHA lookup beside each environment's history: the digest guard in O(1) (issue 17).

The first deploy of a new SHA asks every environment's history "which digest did you record
for this SHA?" and, the SHA being new, used to read every history to its first line. The index
answers from one small file instead: ``<state_dir>/<env>/history.idx/<sha[:2]>`` holds one
line ``<sha> <repository> <digest>`` per history record (in history order), and ``covers``
holds the byte size of ``history.jsonl`` the index describes.

It is a cache, never the record: a lookup uses it only when ``covers`` equals the history's
size at that moment, and otherwise reads the history itself (the old way). The history's
writer keeps it current (under the environment's deploy lock): one line appended (and synced)
per record, then ``covers``; when ``covers`` does not match the size the history had before the
append (no index yet, a history written by an older shatag, an interrupted update), the whole
index is rebuilt from the history, once.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Final

INDEX_DIR: Final = "history.idx"
COVERS: Final = "covers"


def _shard(index: Path, sha: str) -> Path:
    return index / (sha[:2] if len(sha) >= 2 and sha[:2].isalnum() else "__")


def covered(history: Path) -> bool:
    """Whether the index of ``history`` describes exactly its current content."""
    try:
        covers = (history.parent / INDEX_DIR / COVERS).read_text().strip()
        return covers.isdigit() and int(covers) == history.stat().st_size
    except OSError:
        return False


def lookup(history: Path, sha: str) -> Iterator[tuple[str, str]]:
    """``(repository, digest)`` of every record of ``sha``, newest first (index must be
    :func:`covered`)."""
    try:
        lines = _shard(history.parent / INDEX_DIR, sha).read_text().splitlines()
    except FileNotFoundError:
        return
    for line in reversed(lines):
        parts = line.split(" ")
        if len(parts) == 3 and parts[0] == sha:
            yield ("" if parts[1] == "-" else parts[1]), parts[2]


def _line(sha: str, repository: str, digest: str) -> str | None:
    fields = (sha, repository or "-", digest)
    if not sha or not digest or any(not f or " " in f or "\n" in f for f in fields):
        return None
    return " ".join(fields) + "\n"


def _write_covers(index: Path, size: int) -> None:
    """``covers`` by rename (not synced: a lost update only makes the index look stale)."""
    fd, tmp = tempfile.mkstemp(prefix=".covers.", dir=index)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{size}\n")
        os.replace(tmp, index / COVERS)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def appended(
    history: Path,
    size_before: int,
    size_after: int,
    entry: tuple[str, str, str],
    all_entries: Callable[[], Iterable[tuple[str, str, str]]],
) -> None:
    """The history grew from ``size_before`` to ``size_after`` bytes by one record whose
    ``(sha, repository, digest)`` is ``entry``: bring the index up to date (see the module
    docstring). ``all_entries`` reads every record of the history, oldest first, for a
    rebuild. Failures are swallowed: the index is only ever an accelerator."""
    index = history.parent / INDEX_DIR
    with contextlib.suppress(OSError):
        index.mkdir(exist_ok=True)
        try:
            current = int((index / COVERS).read_text().strip() or "-1")
        except (OSError, ValueError):
            current = -1
        (index / COVERS).unlink(missing_ok=True)  # stale until this update is complete
        if current == size_before:
            line = _line(*entry)
            if line is not None:
                fd = os.open(_shard(index, entry[0]), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                try:
                    os.write(fd, line.encode("utf-8"))
                    os.fsync(fd)
                finally:
                    os.close(fd)
        else:
            _rebuild(index, all_entries())
        _write_covers(index, size_after)


def _rebuild(index: Path, entries: Iterable[tuple[str, str, str]]) -> None:
    shards: dict[Path, list[str]] = {}
    for sha, repository, digest in entries:
        line = _line(sha, repository, digest)
        if line is not None:
            shards.setdefault(_shard(index, sha), []).append(line)
    for old in index.iterdir():
        if old.name != COVERS and old not in shards:
            old.unlink(missing_ok=True)
    for path, lines in shards.items():
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=index)
        with os.fdopen(fd, "w") as fh:
            fh.write("".join(lines))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
