"""Deployment history: one append-only JSON-lines file per environment.

``<state_dir>/<env>/history.jsonl`` holds one :class:`HistoryRecord` per deploy or rollback
attempt that reached the targets. Appending writes one whole line with a single ``write`` and
``fsync``s it, so a process killed at any moment leaves either the old file or the old file plus
one complete line -- at worst a torn final fragment, which readers ignore and the next append
cuts off. Readers walk the file backwards in blocks, so "the newest 20" costs the same with ten
or ten thousand records.

>>> import tempfile
>>> store = HistoryStore(Path(tempfile.mkdtemp()), "local")
>>> rec = HistoryRecord(action="deploy", env="local", sha="a" * 40, digest="sha256:" + "b" * 64,
...                     result="ok")
>>> store.append(rec)
>>> [r.sha[:4] for r in store.newest(limit=5)], store.current() == rec
(['aaaa'], True)
"""

from __future__ import annotations

import abc
import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, NotRequired, Protocol, TypedDict, cast

from shatag.core import json_object, validate_env_name
from shatag.ledger import shaindex

Action = Literal["deploy", "rollback", "promote", "quarantine", "unquarantine"]
#: The actions that put a release in place (``promote``: issue 26); the others are marks on a
#: SHA (issue 25).
SWITCH_ACTIONS: Final = frozenset({"deploy", "rollback", "promote"})
MARK_ACTIONS: Final = frozenset({"quarantine", "unquarantine"})
Outcome = Literal["ok", "failed"]

log = logging.getLogger("shatag.ledger")

HISTORY_FILE: Final = "history.jsonl"
_BLOCK: Final = 64 * 1024


def utc_now() -> str:
    """An ISO-8601 UTC timestamp with a ``Z`` suffix, millisecond precision."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def initiated_by(env: Mapping[str, str]) -> str:
    """Who started this: ``GITHUB_ACTOR`` under Actions, else the local user."""
    for key in ("GITHUB_ACTOR", "USER", "LOGNAME", "USERNAME"):
        value = env.get(key, "").strip()
        if value:
            return value
    return "unknown"


class HistoryLine(TypedDict):
    """One line of ``history.jsonl`` (and the ``record.json`` of one git ledger commit): a
    :class:`HistoryRecord` as JSON, written by :meth:`HistoryRecord.to_json`. Read back by
    :meth:`HistoryRecord.from_json`, which checks it (a line is untrusted)."""

    action: Action
    env: str
    sha: str
    digest: str
    result: Outcome
    image_ref: str
    repository: str
    repository_type: str
    previous_sha: str
    signature_status: str
    signature_reason: str
    initiated_by: str
    started_at: str
    finished_at: str
    duration_sec: float
    targets: list[str]
    error_code: str
    error: str
    attempt: str
    note: NotRequired[str]
    unchanged: NotRequired[list[str]]
    reason: NotRequired[str]
    promoted_from: NotRequired[str]


class CatalogRow(HistoryLine):
    """One row of :func:`catalog` (``inv history --json``): the record and whether it is what
    the environment runs."""

    current: bool


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """One deploy or rollback attempt of one environment."""

    action: Action
    env: str
    sha: str
    digest: str
    result: Outcome
    image_ref: str = ""
    repository: str = ""
    repository_type: str = ""
    previous_sha: str = ""
    signature_status: str = "unverified"
    signature_reason: str = "n/a"
    initiated_by: str = "unknown"
    started_at: str = ""
    finished_at: str = ""
    duration_sec: float = 0.0
    targets: tuple[str, ...] = field(default_factory=tuple)
    error_code: str = ""
    error: str = ""
    attempt: str = ""
    #: Targets that already ran this release with these settings and were left as they were
    #: (issue 12: a re-deploy of the serving digest is a no-op, recorded as such).
    unchanged: tuple[str, ...] = field(default_factory=tuple)
    #: Why a SHA was quarantined or released from quarantine (``inv quarantine``, issue 25).
    reason: str = ""
    #: ``action=promote``: the environment the release was promoted from (issue 26); written
    #: only when set, so the lines of deploys and rollbacks stay as they were.
    promoted_from: str = ""
    #: What a person should know about how the attempt ended, e.g. that another runner
    #: finished it after its own runner was killed (issue 23, item 6); ``""``: nothing.
    note: str = ""

    @property
    def ok(self) -> bool:
        """A successful deploy or rollback (a quarantine mark is never a release)."""
        return self.result == "ok" and self.action in SWITCH_ACTIONS

    @property
    def is_switch(self) -> bool:
        """A deploy or rollback attempt (not a quarantine mark)."""
        return self.action in SWITCH_ACTIONS

    def as_line(self) -> HistoryLine:
        """The record as its JSON object, keys sorted as in :meth:`to_json` (``note`` and
        ``unchanged`` only when there is some).

        >>> line = HistoryRecord("deploy", "e", "a", "d", "ok", unchanged=("t",)).as_line()
        >>> list(line) == sorted(line)
        True
        """
        line = HistoryLine(  # keys in sorted order, as in the stored line
            action=self.action,
            attempt=self.attempt,
            digest=self.digest,
            duration_sec=self.duration_sec,
            env=self.env,
            error=self.error,
            error_code=self.error_code,
            finished_at=self.finished_at,
            image_ref=self.image_ref,
            initiated_by=self.initiated_by,
            previous_sha=self.previous_sha,
            repository=self.repository,
            repository_type=self.repository_type,
            result=self.result,
            sha=self.sha,
            signature_reason=self.signature_reason,
            signature_status=self.signature_status,
            started_at=self.started_at,
            targets=list(self.targets),
        )
        if self.note:
            line["note"] = self.note
        if self.unchanged:
            line["unchanged"] = list(self.unchanged)
        if self.reason:
            line["reason"] = self.reason
        if self.promoted_from:
            line["promoted_from"] = self.promoted_from
        if self.note or self.reason or self.promoted_from:
            line = cast(HistoryLine, dict(sorted(line.items())))
        return line

    def to_json(self) -> str:
        return json.dumps(self.as_line(), separators=(",", ":"), sort_keys=True)

    def to_stored_json(self) -> str:
        """:meth:`to_json` with the free text (``error``: an apply command's output) masked
        and every identifying field as it is (issue 24, item 3): what the ledgers store."""
        from shatag.masking import mask_record

        return json.dumps(mask_record(self.as_line()), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, line: str | bytes) -> HistoryRecord | None:
        """Parse one line; ``None`` for a torn, foreign or otherwise unusable line."""
        data = json_object(line)
        if data is None:
            return None
        known = {f.name for f in fields(cls)}
        kept: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        if kept.get("action") not in SWITCH_ACTIONS | MARK_ACTIONS or kept.get("result") not in (
            "ok",
            "failed",
        ):
            return None
        if not all(isinstance(kept.get(k), str) for k in ("env", "sha", "digest")):
            return None
        if not isinstance(kept.get("promoted_from", ""), str):
            return None
        targets = kept.get("targets", ())
        kept["targets"] = tuple(str(t) for t in targets) if isinstance(targets, list) else ()
        if "note" in kept:
            kept["note"] = str(kept["note"])
        same = kept.get("unchanged", ())
        kept["unchanged"] = tuple(str(t) for t in same) if isinstance(same, list) else ()
        try:
            kept["duration_sec"] = float(kept.get("duration_sec", 0.0))
            return cls(**kept)
        except (TypeError, ValueError):
            return None


def _ran(record: HistoryRecord, sha: str, repository: str | None) -> bool:
    """Whether ``record`` says which digest ``sha`` ran as (from ``repository``, when given)."""
    return (
        record.sha == sha
        and bool(record.digest)
        and (repository is None or record.repository == repository)
    )


class RecordQueries(abc.ABC):
    """The questions asked of one environment's history, answered by walking its records
    newest first: the one implementation behind :class:`HistoryStore` (a file) and
    :class:`shatag.ledger.git.GitHistoryStore` (a git ref), which supply :meth:`iter_newest`."""

    @abc.abstractmethod
    def iter_newest(self) -> Iterator[HistoryRecord]:
        """Every parseable record, newest first."""

    def newest(self, limit: int | None = None) -> list[HistoryRecord]:
        out: list[HistoryRecord] = []
        for record in self.iter_newest():
            if limit is not None and len(out) >= limit:
                break
            out.append(record)
        return out

    def current(self) -> HistoryRecord | None:
        """The newest successful deploy or rollback: what the environment runs."""
        return next((r for r in self.iter_newest() if r.ok), None)

    def previous(self) -> HistoryRecord | None:
        """The rollback target: the last successful deployment before the current one whose
        SHA differs from it (failed attempts are never rollback targets)."""
        current: HistoryRecord | None = None
        for record in self.iter_newest():
            if not record.ok:
                continue
            if current is None:
                current = record
            elif record.sha != current.sha:
                return record
        return None

    def digest_for(self, sha: str, repository: str | None = None) -> str | None:
        """The digest this environment last ran (or validated) for ``sha`` -- from
        ``repository`` only, when given (the same commit may be built into staging and
        canonical with different digests)."""
        record = self.record_for(sha, repository)
        return record.digest if record is not None else None

    def record_for(self, sha: str, repository: str | None = None) -> HistoryRecord | None:
        """The newest record saying which digest ``sha`` ran as (see :meth:`digest_for`)."""
        return next((r for r in self.iter_newest() if _ran(r, sha, repository)), None)

    def quarantine_of(self, sha: str) -> HistoryRecord | None:
        """The quarantine mark that blocks ``sha`` (``None``: never quarantined, or lifted by
        a newer ``unquarantine``)."""
        return _blocking_mark(r for r in self.iter_newest() if r.sha == sha)

    def find_attempt(self, attempt: str, *, within: int = 50) -> HistoryRecord | None:
        """The record of one deploy attempt, if it is among the newest ``within``."""
        for record in self.newest(limit=within):
            if record.attempt == attempt:
                return record
        return None


class HistoryStore(RecordQueries):
    """The history of one environment. Appends are not locked here: callers hold the
    environment's deploy lock (:mod:`shatag.ledger.lock`) around an append."""

    def __init__(self, state_dir: Path, env: str) -> None:
        self.env = validate_env_name(env)
        self.path = state_dir / env / HISTORY_FILE

    # -- writing ----------------------------------------------------------------------------

    def append(self, record: HistoryRecord) -> None:
        """Append one record durably in O(1): one ``write`` of the full line, then ``fsync``."""
        # Secrets (an apply command's output in ``error``) are masked before they are stored;
        # the file is private to its owner (issue 14, item 4).
        line = (record.to_stored_json() + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            _cut_torn_tail(fd)
            size_before = os.fstat(fd).st_size
            written = os.write(fd, line)
            if written != len(line):  # a full disk: do not leave a fragment behind
                size = os.fstat(fd).st_size
                os.ftruncate(fd, size - written)
                raise OSError(f"short write to {self.path} ({written} of {len(line)} bytes)")
            os.fsync(fd)
        finally:
            os.close(fd)
        entry = (record.sha, record.repository, record.digest)
        shaindex.appended(self.path, size_before, size_before + len(line), entry, self._entries)

    def _entries(self) -> list[tuple[str, str, str]]:
        """``(sha, repository, digest)`` of every record, oldest first (the index rebuild)."""
        return [(r.sha, r.repository, r.digest) for r in self.iter_newest()][::-1]

    # -- reading ----------------------------------------------------------------------------

    def iter_newest(self) -> Iterator[HistoryRecord]:
        """Every parseable record, newest first, read backwards from the end of the file."""
        for raw in _reverse_lines(self.path):
            record = HistoryRecord.from_json(raw)
            if record is not None:
                yield record
            else:
                _report_unreadable(self.path, raw)

    def quarantine_of(self, sha: str) -> HistoryRecord | None:
        # A SHA the per-SHA index holds no record of has no mark either: a new SHA's deploy
        # does not scan the history (issue 17's O(1); a quarantine mark is a record too).
        if shaindex.covered(self.path) and next(shaindex.lookup(self.path, sha), None) is None:
            return None
        return _blocking_mark(_marks_of(self.path, sha))

    def digest_for(self, sha: str, repository: str | None = None) -> str | None:
        """:meth:`RecordQueries.digest_for` from the per-SHA index, else by a backwards scan
        that parses only the lines holding the SHA."""
        if shaindex.covered(self.path):  # the per-SHA index describes the whole history
            for indexed_repository, digest in shaindex.lookup(self.path, sha):
                if repository is None or indexed_repository == repository:
                    return digest
            return None
        record = self.record_for(sha, repository)
        return record.digest if record is not None else None

    def record_for(self, sha: str, repository: str | None = None) -> HistoryRecord | None:
        """:meth:`RecordQueries.record_for` by a backwards scan that parses only the lines
        holding the SHA."""
        needle = sha.encode("ascii", "replace")
        for raw in _reverse_lines(self.path):
            if needle not in raw:  # skip parsing lines that cannot match: a miss stays fast
                continue
            record = HistoryRecord.from_json(raw)
            if record is not None and _ran(record, sha, repository):
                return record
        return None


def _blocking_mark(records_of_sha: Iterable[HistoryRecord]) -> HistoryRecord | None:
    for record in records_of_sha:
        if record.action in MARK_ACTIONS:
            return record if record.action == "quarantine" else None
    return None


def _marks_of(path: Path, sha: str) -> Iterator[HistoryRecord]:
    """The quarantine marks of ``sha`` in the history file, newest first; only lines holding
    the SHA and ``quarantine`` are parsed, so a deploy's check stays a byte scan."""
    needle = sha.encode("ascii", "replace")
    for raw in _reverse_lines(path):
        if needle in raw and b"quarantine" in raw:
            record = HistoryRecord.from_json(raw)
            if record is not None and record.sha == sha:
                yield record


#: Unreadable lines already reported, as ``(history path, line)`` (once per process).
_REPORTED: set[tuple[str, bytes]] = set()


def _report_unreadable(path: Path, raw: bytes) -> None:
    """A complete line that is not a history record (hand-edited, foreign) is skipped and
    reported once: a record is data, not an instruction (issue 24, item 4)."""
    key = (str(path), raw)
    if key not in _REPORTED:
        _REPORTED.add(key)
        log.warning(
            "skipped a line of %s: it is not a readable history record (%r...); it is not "
            "counted as a deployment",
            path,
            raw[:60].decode("utf-8", "replace"),
        )


class _Records(Protocol):
    def iter_newest(self) -> Iterator[HistoryRecord]: ...


def catalog(store: _Records, limit: int | None = 20) -> list[CatalogRow]:
    """The rollback catalog: newest first, ``current`` set on what the environment runs
    (``store``: a :class:`HistoryStore` or a :class:`shatag.ledger.Ledger`)."""
    rows: list[CatalogRow] = []
    current_seen = False
    for record in store.iter_newest():
        if limit is not None and len(rows) >= limit:
            break
        is_current = record.ok and not current_seen
        current_seen = current_seen or record.ok
        rows.append({**record.as_line(), "current": is_current})
    return rows


def format_catalog(env: str, rows: list[CatalogRow]) -> str:
    """The human table of :func:`catalog` rows; ``*`` marks the current deployment."""
    if not rows:
        return f"{env}: no deployments recorded"
    header = ("", "finished (UTC)", "action", "sha", "digest", "signature", "result", "was", "by")
    table = [header]
    for row in rows:
        digest = str(row.get("digest", ""))
        result = str(row.get("result", ""))
        if row.get("error_code"):
            result += f" ({row['error_code']})"
        elif row.get("note"):
            result += " (finished by the next run)"
        if row.get("reason"):
            result += f": {row['reason']}"
        table.append(
            (
                "*" if row.get("current") else "",
                str(row.get("finished_at") or row.get("started_at", "")),
                str(row.get("action", "")),
                str(row.get("sha", "")),
                digest[:19] + "…" if len(digest) > 19 else digest,
                f"{row.get('signature_status', '')}/{row.get('signature_reason', '')}"
                if row.get("action") in SWITCH_ACTIONS
                else "-",
                result,
                str(row.get("previous_sha", ""))[:12] or "-",
                str(row.get("initiated_by", "")),
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    return f"{env} (* = current)\n" + "\n".join(lines)


def known_digest(
    state_dir: Path, sha: str, repository: str | None = None
) -> tuple[str, str] | None:
    """``(env, digest)`` recorded for ``sha`` (in ``repository``) by any environment's
    history, most recently written history first."""
    try:
        env_dirs = [p for p in state_dir.iterdir() if (p / HISTORY_FILE).is_file()]
    except OSError:
        return None
    env_dirs.sort(key=lambda p: (p / HISTORY_FILE).stat().st_mtime, reverse=True)
    for env_dir in env_dirs:
        with contextlib.suppress(ValueError):
            digest = HistoryStore(state_dir, env_dir.name).digest_for(sha, repository)
            if digest:
                return env_dir.name, digest
    return None


def records_of(
    state_dir: Path, sha: str, repository: str | None = None
) -> list[tuple[str, HistoryRecord]]:
    """``(env, record)``: each environment's newest record of the digest ``sha`` ran as (in
    ``repository``), most recently written history first. The per-SHA index answers which
    environments hold the SHA; only those are read, backwards, up to the record."""
    try:
        env_dirs = [p for p in state_dir.iterdir() if (p / HISTORY_FILE).is_file()]
    except OSError:
        return []
    env_dirs.sort(key=lambda p: (p / HISTORY_FILE).stat().st_mtime, reverse=True)
    found: list[tuple[str, HistoryRecord]] = []
    for env_dir in env_dirs:
        with contextlib.suppress(ValueError):
            store = HistoryStore(state_dir, env_dir.name)
            if store.digest_for(sha, repository) is None:
                continue
            record = store.record_for(sha, repository)
            if record is not None:
                found.append((env_dir.name, record))
    return found


def _cut_torn_tail(fd: int) -> None:
    """If the file does not end with a newline (a writer died mid-line), cut the fragment."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    pos = size
    while pos > 0:
        start = max(0, pos - _BLOCK)
        chunk = os.pread(fd, pos - start, start)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            os.ftruncate(fd, start + nl + 1)
            return
        pos = start
    os.ftruncate(fd, 0)


def _reverse_lines(path: Path) -> Iterator[bytes]:
    """Complete lines of ``path`` from last to first. Whatever follows the last newline is a
    torn fragment (its writer died mid-line) and is skipped."""
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return
    with fh:
        pos = fh.seek(0, os.SEEK_END)
        carry = b""
        seen_newline = False
        while pos > 0:
            start = max(0, pos - _BLOCK)
            fh.seek(start)
            parts = (fh.read(pos - start) + carry).split(b"\n")
            pos = start
            carry = parts[0]  # may continue in the block before this one
            rest = parts[1:]
            if not seen_newline:
                if not rest:
                    continue
                rest.pop()  # b"" after a trailing newline, or a torn fragment
                seen_newline = True
            for line in reversed(rest):
                if line.strip():
                    yield line
        if seen_newline and carry.strip():
            yield carry


#: How many successful records the rollback walk looks back over (newest first).
WALK_BACK_WINDOW: Final = 500


def walk_back_target(newest_first: Iterable[HistoryRecord]) -> HistoryRecord | None:
    """Where ``inv rollback`` without ``--sha`` goes: the release deployed before the current
    one, walking back past releases that were rolled back from (issue 14, item 11).

    The successful records, replayed oldest first, maintain a stack of releases: a deploy pushes
    its SHA (a redeploy of the top changes nothing); a rollback to a SHA in the stack pops every
    release above it (they were rolled back from); a rollback to a SHA not in the stack pushes
    it. The target is the release below the top. So after deploying A, B, C, consecutive
    rollbacks go to B, then A, then nowhere (NO_ROLLBACK_TARGET) -- never back to C, which an
    operator rolled back from; a new deploy D then rolls back to A. Only the newest
    :data:`WALK_BACK_WINDOW` successful records are replayed.

    >>> r = lambda sha, action="deploy": HistoryRecord(action, "e", sha, "d", "ok")
    >>> [walk_back_target(reversed(h)).sha for h in (
    ...     [r("A"), r("B"), r("C")],
    ...     [r("A"), r("B"), r("C"), r("B", "rollback")],
    ...     [r("A"), r("B"), r("C"), r("B", "rollback"), r("A", "rollback"), r("D")],
    ... )]
    ['B', 'A', 'A']
    >>> walk_back_target(reversed([r("A"), r("B"), r("A", "rollback")])) is None
    True
    """
    candidates = walk_back_candidates(newest_first)
    return candidates[0] if candidates else None


def walk_back_candidates(newest_first: Iterable[HistoryRecord]) -> list[HistoryRecord]:
    """Every release :func:`walk_back_target` could go to, nearest first: the stack below the
    current release. ``inv rollback`` takes the first whose SHA the registry holds (a record
    is data, not an instruction: issue 24, item 4), that passes today's policy and is not
    quarantined (issue 25), saying which it skipped.

    >>> r = lambda sha, action="deploy": HistoryRecord(action, "e", sha, "d", "ok")
    >>> [c.sha for c in walk_back_candidates(reversed([r("A"), r("B"), r("C")]))]
    ['B', 'A']
    """
    window: list[HistoryRecord] = []
    for record in newest_first:
        if record.ok:
            window.append(record)
            if len(window) >= WALK_BACK_WINDOW:
                break
    stack: list[HistoryRecord] = []
    for record in reversed(window):
        shas = [r.sha for r in stack]
        if record.action == "rollback" and record.sha in shas:
            del stack[len(shas) - 1 - shas[::-1].index(record.sha) + 1 :]
            stack[-1] = record
        elif stack and stack[-1].sha == record.sha:
            stack[-1] = record
        else:
            stack.append(record)
    return stack[-2::-1]
