"""The git-backed deployment ledger (issue 15): history, deploy lock and crash journal kept on
refs of the application's own repository, so ephemeral CI runners share them.

Ref layout on the remote (``state_remote``, default ``origin``):

* ``refs/shatag/<env>`` -- the history. One commit per record; its tree holds ``record.json``
  (one :class:`~shatag.ledger.history.HistoryRecord` as a JSON line) and its parent is the record
  before, so ``git log refs/shatag/<env>`` is the audit trail.
* ``refs/shatag-lock/<env>`` -- the deploy lock, present only while held: a parentless commit
  whose tree holds ``lock.json`` (holder, host, pid, run URL, acquired/expires).
* ``refs/shatag-journal/<env>`` -- the crash journal of the deploy in progress (``journal.json``,
  what :mod:`shatag.app.deploy` needs to undo it); deleted when the deploy ends cleanly.

Every write is a compare-and-swap (:mod:`shatag.ledger.gitrefs`): the commit is built with plumbing
(``hash-object``, ``mktree``, ``commit-tree``: no checkout; the work tree, index and HEAD are
never touched) and pushed with ``--force-with-lease=<ref>:<expected old value>``. A lease that
no longer holds is refetched and retried; nothing is ever force-overwritten. A record carries
its deploy attempt id, and an append whose attempt is already on the ref is not written twice
(an ambiguous push that did land is not duplicated by its retry). The lock protocol is in
:mod:`shatag.ledger.git_lock`.

Reads fetch the three namespaces once per process (:meth:`GitLedger.refresh`) onto the same
local refs and answer from them; the lock holder refetches once the lock is its own.

Those local refs are also *the last fetched copy* (issue 23, item 6): a read-only command
(``history``, ``status``: ``open_ledger(..., stale_ok=True)``) answers from them
when the remote cannot be reached, and :attr:`GitLedger.stale` says so and how old the copy is
(each successful fetch stamps ``<git dir>/shatag-fetched-at``). Writes never use the copy.

>>> GitLedger.history_ref("production"), GitLedger.lock_ref("production")
('refs/shatag/production', 'refs/shatag-lock/production')
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Final

from shatag.core import validate_env_name
from shatag.errors import LedgerUnavailable, ShatagError
from shatag.ledger.git_lock import LOCK_FILE, LOCK_NS, LockInfo, RemoteLock
from shatag.ledger.gitrefs import GitRefs
from shatag.ledger.history import HistoryRecord, RecordQueries
from shatag.ledger.journal import Journal, checked_journal

log = logging.getLogger("shatag.ledger")

HISTORY_NS: Final = "refs/shatag/"
JOURNAL_NS: Final = "refs/shatag-journal/"
RECORD_FILE: Final = "record.json"
JOURNAL_FILE: Final = "journal.json"
CAS_RETRIES: Final = 12
#: In the clone's git directory: when the ledger refs were last fetched (unix time).
FETCHED_AT_FILE: Final = "shatag-fetched-at"
_CHUNK: Final = 128


class GitLedger:
    """History, lock and journal of every environment on ``remote`` of the repository at
    ``repo``. One instance per command: it fetches once and caches what it read."""

    def __init__(
        self,
        repo: Path,
        remote: str = "origin",
        *,
        env: Mapping[str, str],
        timeout: float = 60.0,
        lock_ttl_sec: float = 60.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.refs = GitRefs(repo, remote, env=env, timeout=timeout)
        self.remote = remote
        self.lock_ttl_sec = lock_ttl_sec
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        #: How long the last :meth:`lock` waited for the lock (the perf report quotes it).
        self.last_lock_wait_sec = 0.0
        self._fetched = False
        self._heads: dict[str, str] = {}  # local mirror ref -> commit
        self._order: list[str] = []  # environments, most recently written history first
        self._stores: dict[str, GitHistoryStore] = {}
        #: Set when reads answer from the last fetched copy (:meth:`refresh` ``stale_ok``):
        #: why, and how old the copy is (``""``: fresh from the remote).
        self.stale = ""
        self._stamp: Path | None = None

    @staticmethod
    def history_ref(env: str) -> str:
        return HISTORY_NS + validate_env_name(env)

    @staticmethod
    def lock_ref(env: str) -> str:
        return LOCK_NS + validate_env_name(env)

    @staticmethod
    def journal_ref(env: str) -> str:
        return JOURNAL_NS + validate_env_name(env)

    @property
    def stats(self) -> dict[str, int]:
        """How many fetches and pushes this instance made, and how many pushes lost a
        compare-and-swap (the perf and reliability reports quote them)."""
        refs = self.refs
        return {"fetches": refs.fetches, "pushes": refs.pushes, "conflicts": refs.conflicts}

    # -- reading ----------------------------------------------------------------------------

    def refresh(self, *, stale_ok: bool = False) -> None:
        """Fetch every ledger ref of the remote (one ``git fetch``); cached reads are dropped
        where a ref moved. ``stale_ok``: if the remote cannot be reached, answer from the last
        fetched copy instead (:attr:`stale` says so) -- for read-only commands only."""
        namespaces = (HISTORY_NS, LOCK_NS, JOURNAL_NS)
        try:
            listing = self.refs.fetch(namespaces)
            self._stamp_fetch()
            self.stale = ""
        except LedgerUnavailable as exc:
            if not stale_ok:
                raise
            listing = self._local_copy(namespaces, exc)
        self._heads = {ref: oid for oid, ref in listing}
        self._order = [
            ref[len(HISTORY_NS) :] for _oid, ref in listing if ref.startswith(HISTORY_NS)
        ]
        for env, store in self._stores.items():
            store._reset(self._heads.get(self.history_ref(env), ""))
        self._fetched = True

    @property
    def fetched(self) -> bool:
        """Whether this instance has read the ledger refs (from the remote, or its copy)."""
        return self._fetched

    def _ensure(self) -> None:
        if not self._fetched:
            self.refresh()

    def _fetch_stamp(self) -> Path:
        if self._stamp is None:
            common = self.refs.git("rev-parse", "--git-common-dir").stdout.strip()
            self._stamp = (self.refs.repo / common / FETCHED_AT_FILE).absolute()
        return self._stamp

    def _stamp_fetch(self) -> None:
        with contextlib.suppress(OSError, ShatagError):  # only the age of a later stale read
            self._fetch_stamp().write_text(f"{self._clock():.0f}\n", encoding="utf-8")

    def _local_copy(
        self, namespaces: tuple[str, ...], exc: LedgerUnavailable
    ) -> list[tuple[str, str]]:
        """The ledger refs as last fetched into this clone, when the remote cannot be reached
        (:attr:`stale` says so); still LEDGER_UNAVAILABLE when this clone never fetched."""
        try:
            fetched = float(self._fetch_stamp().read_text(encoding="utf-8").strip())
        except (OSError, ValueError, ShatagError):
            raise exc from None
        listing = self.refs.git(
            "for-each-ref", "--sort=-committerdate", "--format=%(objectname) %(refname)",
            *namespaces,
        ).stdout  # fmt: skip
        pairs = (line.partition(" ") for line in listing.splitlines())
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(fetched))
        self.stale = (
            f"the state remote {self.remote!r} cannot be reached ({exc.message}); this is the "
            f"copy of the ledger last fetched at {when}, {_age(self._clock() - fetched)} ago"
        )
        log.debug("%s", self.stale)
        return [(oid, ref) for oid, _, ref in pairs if oid and ref]

    def head(self, ref: str) -> str:
        """The commit of ``ref`` as last fetched ('' when the remote has no such ref)."""
        self._ensure()
        return self._heads.get(ref, "")

    def environments(self) -> list[str]:
        """Environments with a history on the remote, most recently written first."""
        self._ensure()
        return list(self._order)

    def store(self, env: str) -> GitHistoryStore:
        self._ensure()
        env = validate_env_name(env)
        if env not in self._stores:
            self._stores[env] = GitHistoryStore(self, env)
        return self._stores[env]

    def known_digest(self, sha: str, repository: str | None = None) -> tuple[str, str] | None:
        """``(env, digest)`` recorded for ``sha`` by any environment, newest history first."""
        for env in self.environments():
            with contextlib.suppress(ShatagError):
                digest = self.store(env).digest_for(sha, repository)
                if digest:
                    return env, digest
        return None

    def _blob(self, ref: str, name: str) -> str | None:
        oid = self.head(ref)
        return self.refs.blobs([f"{oid}:{name}"])[0] if oid else None

    # -- lock -------------------------------------------------------------------------------

    def read_lock(self, env: str) -> LockInfo | None:
        """The lock of ``env`` as last fetched (``None``: not held)."""
        text = self._blob(self.lock_ref(env), LOCK_FILE)
        return LockInfo.from_json(text) if text is not None else None

    @contextlib.contextmanager
    def lock(self, env: str, *, timeout: float, holder: str = "") -> Iterator[LockInfo]:
        """Hold the deploy lock of ``env`` on the remote for the ``with`` block
        (:class:`shatag.ledger.git_lock.RemoteLock`); the ledger is refetched once it is ours."""
        lock = RemoteLock(
            self.refs,
            validate_env_name(env),
            ttl_sec=self.lock_ttl_sec,
            clock=self._clock,
            monotonic=self._monotonic,
            sleep=self._sleep,
        )
        held = lock.acquire(timeout=timeout, holder=holder, token=uuid.uuid4().hex)
        self.last_lock_wait_sec = held.waited_sec
        try:
            self.refresh()  # everything decided under the lock is current
            yield held.info
        finally:
            lock.release(held)

    # -- journal ----------------------------------------------------------------------------

    def read_journal(self, env: str) -> dict[str, object] | None:
        """The crash journal of ``env`` as fetched (``None``: none; ``{}``: unreadable)."""
        text = self._blob(self.journal_ref(env), JOURNAL_FILE)
        if text is None:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            log.warning("unreadable deploy journal on %s ignored", self.journal_ref(env))
            return {}
        return data if isinstance(data, dict) else {}

    def write_journal(self, env: str, data: Mapping[str, object]) -> None:
        ref = self.journal_ref(env)
        text = json.dumps(dict(data), sort_keys=True, separators=(",", ":")) + "\n"
        message = f"shatag journal {env}: {data.get('action', 'deploy')} {data.get('sha', '')}\n"
        for _ in range(CAS_RETRIES):
            old = self.head(ref)
            commit = self.refs.commit(text, JOURNAL_FILE, old or None, message)
            if self.refs.push([(commit, ref, old)]):
                self._heads[ref] = commit
                return
            self.refresh()
        raise LedgerUnavailable(f"could not write the deploy journal {ref}: it kept changing")

    def clear_journal(self, env: str) -> None:
        ref = self.journal_ref(env)
        for _ in range(CAS_RETRIES):
            old = self.head(ref)
            if not old:
                return
            if self.refs.push([("", ref, old)]):
                self._heads.pop(ref, None)
                return
            self.refresh()
        raise LedgerUnavailable(f"could not delete the deploy journal {ref}: it kept changing")

    # -- appending --------------------------------------------------------------------------

    def _append(self, store: GitHistoryStore, record: HistoryRecord) -> None:
        ref = self.history_ref(store.env)
        subject = f"shatag {record.action} {record.sha[:12]} to {record.env}: {record.result}" + (
            f" ({record.error_code})" if record.error_code else ""
        )
        body = (
            f"image: {record.image_ref or record.digest}\nprevious: {record.previous_sha or '-'}"
            f"\nby: {record.initiated_by}\nattempt: {record.attempt or '-'}\n"
        )
        from shatag.masking import mask

        # Secrets (an apply command's output in ``error``) are masked before the record is
        # pushed, as in the local history file (issue 14, item 4).
        text = mask(record.to_json()) + "\n"
        for attempt in range(CAS_RETRIES):
            current = self.store(store.env)
            if record.attempt and current.find_attempt(record.attempt) is not None:
                log.info("record of attempt %s is already on %s", record.attempt, ref)
                return
            old = self.head(ref)
            commit = self.refs.commit(text, RECORD_FILE, old or None, f"{subject}\n\n{body}")
            if self.refs.push([(commit, ref, old)]):
                self._heads[ref] = commit
                if store.env in self._order:
                    self._order.remove(store.env)
                self._order.insert(0, store.env)
                current._pushed(commit, record)
                return
            log.info("%s moved while appending (try %d); refetching", ref, attempt + 1)
            self._sleep(random.uniform(0.0, 0.05 * (attempt + 1)))  # noqa: S311 -- jitter
            self.refresh()
        raise LedgerUnavailable(
            f"could not append to {ref} on {self.remote!r}: it changed on each of "
            f"{CAS_RETRIES} tries"
        )


class GitHistoryStore(RecordQueries):
    """One environment's history on ``refs/shatag/<env>``: the interface of
    :class:`shatag.ledger.history.HistoryStore`, read from the fetched ref (the queries are
    :class:`shatag.ledger.history.RecordQueries`, over :meth:`iter_newest`)."""

    def __init__(self, ledger: GitLedger, env: str) -> None:
        self.ledger = ledger
        self.env = validate_env_name(env)
        self._head = ledger.head(ledger.history_ref(env))
        self._ids: list[str] | None = None
        self._records: list[HistoryRecord | None] = []

    def _reset(self, head: str) -> None:
        if head != self._head:
            self._head = head
            self._ids = None
            self._records = []

    def append(self, record: HistoryRecord) -> None:
        self.ledger._append(self, record)  # the ledger owns the CAS loop

    def _pushed(self, commit: str, record: HistoryRecord) -> None:
        if self._ids is not None:
            self._ids.insert(0, commit)
            self._records.insert(0, record)
        self._head = commit

    def _commit_ids(self) -> list[str]:
        if self._ids is None:
            if not self._head:
                self._ids = []
            else:
                out = self.ledger.refs.git("rev-list", "--first-parent", self._head).stdout
                self._ids = out.split()
        return self._ids

    def iter_newest(self) -> Iterator[HistoryRecord]:
        ids = self._commit_ids()
        index = 0
        while index < len(ids):
            if index >= len(self._records):
                chunk = ids[len(self._records) : len(self._records) + _CHUNK]
                blobs = self.ledger.refs.blobs([f"{c}:{RECORD_FILE}" for c in chunk])
                self._records += [HistoryRecord.from_json(b) if b else None for b in blobs]
            record = self._records[index]
            index += 1
            if record is not None:
                yield record


def _age(seconds: float) -> str:
    """``42 s``, ``7 min``, ``3 h``, ``2 d``.

    >>> _age(42), _age(420), _age(3 * 3600 + 5), _age(2 * 86400)
    ('42 s', '7 min', '3 h', '2 d')
    """
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f} {unit}"
    return f"{seconds:.0f} s"


# -- the seam: one environment's Ledger (shatag.ledger) on a shared GitLedger ----------------

_SHARED: dict[tuple[str, str, float, float], GitLedger] = {}
_SHARED_GUARD = threading.Lock()


def shared_ledger(
    repo: Path, remote: str, *, env: Mapping[str, str], timeout: float, lock_ttl_sec: float
) -> GitLedger:
    """One :class:`GitLedger` per repository and remote in this process, so a command that
    reads several environments (``inv signatures``, the digest guard) fetches once."""
    key = (str(repo.resolve()), remote, timeout, lock_ttl_sec)
    with _SHARED_GUARD:
        if key not in _SHARED:
            _SHARED[key] = GitLedger(
                repo, remote, env=env, timeout=timeout, lock_ttl_sec=lock_ttl_sec
            )
        return _SHARED[key]


class GitEnvLedger:
    """The :class:`shatag.ledger.Ledger` of one environment, kept on git refs."""

    def __init__(self, ledger: GitLedger, env: str) -> None:
        self.ledger = ledger
        self._env = validate_env_name(env)

    @property
    def env(self) -> str:
        return self._env

    @property
    def stale(self) -> str:
        """Why reads came from the last fetched copy, and how old it is (``""``: fresh)."""
        return self.ledger.stale

    def _store(self) -> GitHistoryStore:
        return self.ledger.store(self._env)

    def append(self, record: HistoryRecord) -> None:
        self._store().append(record)

    def iter_newest(self) -> Iterator[HistoryRecord]:
        return self._store().iter_newest()

    def newest(self, limit: int | None = None) -> list[HistoryRecord]:
        return self._store().newest(limit)

    def current(self) -> HistoryRecord | None:
        return self._store().current()

    def previous(self) -> HistoryRecord | None:
        return self._store().previous()

    def digest_for(self, sha: str, repository: str | None = None) -> str | None:
        return self._store().digest_for(sha, repository)

    def known_digest(self, sha: str, repository: str | None = None) -> tuple[str, str] | None:
        return self.ledger.known_digest(sha, repository)

    def find_attempt(self, attempt: str) -> HistoryRecord | None:
        return self._store().find_attempt(attempt)

    def quarantine_of(self, sha: str) -> HistoryRecord | None:
        return self._store().quarantine_of(sha)

    def lock(self, *, timeout: float, holder: str) -> contextlib.AbstractContextManager[object]:
        return self.ledger.lock(self._env, timeout=timeout, holder=holder)

    def write_journal(self, data: Journal) -> None:
        self.ledger.write_journal(self._env, data)

    def read_journal(self) -> Journal | None:
        data = self.ledger.read_journal(self._env)
        if data == {}:  # unreadable: dropped, as the local backend does
            self.ledger.clear_journal(self._env)
            return None
        return None if data is None else checked_journal(data)

    def clear_journal(self) -> None:
        self.ledger.clear_journal(self._env)
