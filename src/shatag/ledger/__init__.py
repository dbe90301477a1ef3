"""The state of one environment behind one seam: history, deploy lock and crash journal.

The deploy and rollback use cases, ``inv history`` and ``inv signatures`` reach an environment's
state only through a :class:`Ledger` that :func:`open_ledger` returns, chosen by
``state_backend``:

* ``local`` -- :class:`LocalLedger` keeps it in ``<state_dir>/<env>/``: ``history.jsonl``
  (:mod:`shatag.ledger.history`), ``deploy.lock`` (:mod:`shatag.ledger.lock`) and
  ``pending.json`` (the
  journal of the deploy in progress);
* ``git`` -- :class:`shatag.ledger.git.GitEnvLedger` keeps it on refs of the application's own
  repository (``refs/shatag/<env>``, ``refs/shatag-lock/<env>``, ``refs/shatag-journal/<env>``
  on ``state_remote``), shared by every CI runner (issue 15, docs/ledger.md).

>>> import tempfile
>>> ledger = open_ledger(Path(tempfile.mkdtemp()), "local")
>>> with ledger.lock(timeout=0, holder="doctest"):
...     ledger.write_journal({"attempt": "x"})
...     ledger.read_journal()
{'attempt': 'x'}
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Final, Protocol

from shatag._sys.fs import atomic_write_text
from shatag.config import StateConfig
from shatag.core import validate_env_name
from shatag.ledger.history import HistoryRecord, HistoryStore, known_digest
from shatag.ledger.journal import Journal, checked_journal
from shatag.ledger.lock import env_lock

log = logging.getLogger("shatag.ledger")

JOURNAL_FILE: Final = "pending.json"


class Ledger(Protocol):
    """Deploy state of one environment (``env``)."""

    @property
    def env(self) -> str: ...

    @property
    def stale(self) -> str:
        """Why reads came from a copy of a shared ledger whose remote could not be reached,
        and how old it is (``""``: they did not; issue 23, item 6)."""
        ...

    # -- history: append-only records of deploy and rollback attempts ------------------------

    def append(self, record: HistoryRecord) -> None: ...

    def iter_newest(self) -> Iterator[HistoryRecord]: ...

    def newest(self, limit: int | None = None) -> list[HistoryRecord]: ...

    def current(self) -> HistoryRecord | None:
        """The newest successful deploy or rollback: what the environment runs."""
        ...

    def previous(self) -> HistoryRecord | None:
        """The rollback target (see :meth:`shatag.ledger.history.HistoryStore.previous`)."""
        ...

    def digest_for(self, sha: str, repository: str | None = None) -> str | None:
        """The digest this environment recorded for ``sha`` (in ``repository``)."""
        ...

    def known_digest(self, sha: str, repository: str | None = None) -> tuple[str, str] | None:
        """``(env, digest)`` recorded for ``sha`` by *any* environment, newest history first."""
        ...

    def find_attempt(self, attempt: str) -> HistoryRecord | None: ...

    def quarantine_of(self, sha: str) -> HistoryRecord | None:
        """The unlifted quarantine mark of ``sha`` in this environment (issue 25), if any."""
        ...

    # -- one deploy at a time -------------------------------------------------------------------

    def lock(self, *, timeout: float, holder: str) -> AbstractContextManager[object]:
        """Hold the environment's deploy lock; DEPLOY_LOCKED after ``timeout`` seconds."""
        ...

    # -- the crash journal of the deploy in progress --------------------------------------------

    def write_journal(self, data: Journal) -> None:
        """Store durably how to undo the deploy in progress (before any visible change)."""
        ...

    def read_journal(self) -> Journal | None:
        """The journal a killed deploy left behind (``None``: none, or unreadable: dropped)."""
        ...

    def clear_journal(self) -> None: ...


class LocalLedger:
    """A :class:`Ledger` in files under ``<state_dir>/<env>/`` on this machine."""

    def __init__(self, state_dir: Path, env: str) -> None:
        self.state_dir = state_dir
        self._env = validate_env_name(env)
        self._history = HistoryStore(state_dir, env)
        self.journal_path = state_dir / env / JOURNAL_FILE

    @property
    def env(self) -> str:
        return self._env

    #: Local files are never a copy.
    stale: str = ""

    def append(self, record: HistoryRecord) -> None:
        self._history.append(record)

    def iter_newest(self) -> Iterator[HistoryRecord]:
        return self._history.iter_newest()

    def newest(self, limit: int | None = None) -> list[HistoryRecord]:
        return self._history.newest(limit)

    def current(self) -> HistoryRecord | None:
        return self._history.current()

    def previous(self) -> HistoryRecord | None:
        return self._history.previous()

    def digest_for(self, sha: str, repository: str | None = None) -> str | None:
        return self._history.digest_for(sha, repository)

    def known_digest(self, sha: str, repository: str | None = None) -> tuple[str, str] | None:
        return known_digest(self.state_dir, sha, repository)

    def find_attempt(self, attempt: str) -> HistoryRecord | None:
        return self._history.find_attempt(attempt)

    def quarantine_of(self, sha: str) -> HistoryRecord | None:
        return self._history.quarantine_of(sha)

    def lock(self, *, timeout: float, holder: str) -> AbstractContextManager[object]:
        return env_lock(self.state_dir, self._env, timeout=timeout, holder=holder)

    def write_journal(self, data: Journal) -> None:
        atomic_write_text(self.journal_path, json.dumps(data))

    def read_journal(self) -> Journal | None:
        try:
            data = json.loads(self.journal_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict):
            log.warning("unreadable deploy journal %s ignored", self.journal_path)
            self.clear_journal()
            return None
        return checked_journal(data)

    def clear_journal(self) -> None:
        self.journal_path.unlink(missing_ok=True)


def open_ledger(
    state: StateConfig | Path,
    env: str,
    *,
    environ: Mapping[str, str] | None = None,
    stale_ok: bool = False,
) -> Ledger:
    """The ledger of environment ``env`` (the one place that chooses the backend).

    ``state`` is the :class:`~shatag.config.StateConfig` (or, for the local backend, just its
    directory); ``environ`` is what git runs with (credentials, ``HOME``, ``PATH``).
    ``stale_ok`` (read-only commands): the git backend may answer from the last fetched copy
    when its remote cannot be reached (:attr:`Ledger.stale` says so).
    """
    if isinstance(state, Path):
        return LocalLedger(state, env)
    if state.backend == "git":
        from shatag.ledger.git import GitEnvLedger, shared_ledger

        shared = shared_ledger(
            state.repo,
            state.remote,
            env=environ if environ is not None else {},
            timeout=state.timeout_sec,
            lock_ttl_sec=state.lock_ttl_sec,
        )
        if stale_ok and not shared.fetched:
            shared.refresh(stale_ok=True)  # the first read: from the copy if need be
        return GitEnvLedger(shared, env)
    return LocalLedger(state.dir, env)
