"""The git-backed deployment ledger (issue 15): history, deploy lock and crash journal kept on
refs of the application's own repository, so ephemeral CI runners share them.

Ref layout on the remote (``state_remote``, default ``origin``):

* ``refs/shatag/<env>`` -- the history. One commit per record; its tree holds ``record.json``
  (one :class:`~shatag.history.HistoryRecord` as a JSON line) and its parent is the record
  before, so ``git log refs/shatag/<env>`` is the audit trail.
* ``refs/shatag-lock/<env>`` -- the deploy lock, present only while held: a parentless commit
  whose tree holds ``lock.json`` (holder, host, pid, run URL, acquired/expires).
* ``refs/shatag-journal/<env>`` -- the crash journal of the deploy in progress (``journal.json``,
  what :mod:`shatag.deploy` needs to undo it); deleted when the deploy ends cleanly.

Every write is a compare-and-swap: the commit is built with plumbing (``hash-object``,
``mktree``, ``commit-tree``: no checkout, the work tree and index are never touched) and pushed
with ``--force-with-lease=<ref>:<expected old value>`` -- an empty expected value means "the
ref must not exist", which is how the lock is taken. A lease that no longer holds is refetched
and retried; nothing is ever force-overwritten. A record carries its deploy attempt id, and an
append whose attempt is already on the ref is not written twice (an ambiguous push that did
land is not duplicated by its retry).

A lock expires ``lock_ttl_sec`` after its last renewal; the holder renews it every third of
that. A waiter takes over a lock that expired, or whose holder process is gone on this very
machine (same host, boot and pid namespace). By hand: ``git push origin --delete
refs/shatag-lock/<env>`` (docs/ledger.md).

Reads fetch the three namespaces once per process (``refresh``) into the same local refs and
answer from them; the lock holder refetches after taking the lock.

>>> GitLedger.history_ref("production"), GitLedger.lock_ref("production")
('refs/shatag/production', 'refs/shatag-lock/production')
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Final

from shatag import _run
from shatag.core import validate_env_name
from shatag.errors import (
    DeployLocked,
    LedgerDenied,
    LedgerUnavailable,
    ShatagError,
    ToolFailure,
    ToolMissing,
    ToolTimeout,
)
from shatag.history import HistoryRecord

log = logging.getLogger("shatag.ledger")

HISTORY_NS: Final = "refs/shatag/"
LOCK_NS: Final = "refs/shatag-lock/"
JOURNAL_NS: Final = "refs/shatag-journal/"
RECORD_FILE: Final = "record.json"
LOCK_FILE: Final = "lock.json"
JOURNAL_FILE: Final = "journal.json"
CAS_RETRIES: Final = 12
_CHUNK: Final = 128
_POLL_SEC: Final = 0.25
# Remote-side rejections that mean "the ref moved under you" (a lost race inside
# receive-pack), not "you may not write": those are retried like a stale lease.
_RACE_WORDS: Final = ("failed to update ref", "cannot lock ref", "failed to lock", "stale info")
_CONFLICT_WORDS: Final = ("stale info", "fetch first", "non-fast-forward", "already exists")
_DENIED_WORDS: Final = (
    "denied",
    "permission",
    "not allowed",
    "forbidden",
    "403",
    "authentication failed",
    "could not read username",
    "protected",
    "read-only",
    "read only",
)


def _is_conflict(line: str) -> bool:
    """A ``git push --porcelain`` rejection line that means "the ref moved", not "denied"."""
    if "[remote rejected]" in line:
        return any(w in line for w in _RACE_WORDS)
    return "[rejected]" in line and any(w in line for w in _CONFLICT_WORDS)


class _Push(Enum):
    OK = "ok"
    CONFLICT = "conflict"  # the lease did not hold: refetch and retry


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class LockInfo:
    """Who holds (or held) an environment's lock: the content of ``lock.json``."""

    env: str
    holder: str
    host: str
    pid: int
    token: str
    acquired_at: str
    expires_at: str
    expires_unix: float
    where: str = ""
    boot_id: str = ""
    pid_ns: str = ""
    proc_start: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {k: getattr(self, k) for k in self.__dataclass_fields__},
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> LockInfo | None:
        try:
            data = json.loads(text)
            return cls(
                env=str(data["env"]),
                holder=str(data.get("holder", "")),
                host=str(data.get("host", "")),
                pid=int(data.get("pid", 0)),
                token=str(data.get("token", "")),
                acquired_at=str(data.get("acquired_at", "")),
                expires_at=str(data.get("expires_at", "")),
                expires_unix=float(data["expires_unix"]),
                where=str(data.get("where", "")),
                boot_id=str(data.get("boot_id", "")),
                pid_ns=str(data.get("pid_ns", "")),
                proc_start=str(data.get("proc_start", "")),
            )
        except (ValueError, TypeError, KeyError, OverflowError):
            return None

    def describe(self, now: float) -> str:
        left = self.expires_unix - now
        when = f"expires in {left:.0f}s" if left >= 0 else f"expired {-left:.0f}s ago"
        who = f"{self.holder or 'unknown holder'} on {self.host or '?'} pid {self.pid}"
        if self.where:
            who += f" ({self.where})"
        return f"{who}, since {self.acquired_at}, {when}"


# -- this process, as a lock holder ----------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def _pid_ns() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _proc_start(pid: int) -> str:
    """Start time of ``pid`` in clock ticks since boot (field 22 of /proc/<pid>/stat), so a
    reused pid is not mistaken for the holder."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return ""
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else ""


def holder_is_gone(info: LockInfo) -> bool:
    """True when the holder ran on this machine (same host, boot and pid namespace) and its
    process no longer exists. A holder elsewhere is judged by its expiry only."""
    if not (info.host and info.boot_id and info.pid_ns and info.pid > 0):
        return False
    if (
        info.host != socket.gethostname()
        or info.boot_id != _read("/proc/sys/kernel/random/boot_id")
        or info.pid_ns != _pid_ns()
    ):
        return False
    start = _proc_start(info.pid)
    return not start or (bool(info.proc_start) and start != info.proc_start)


def _stale_reason(current: LockInfo | None, now: float) -> str:
    """Why a lock may be taken over ('' when its holder is presumed alive)."""
    if current is None:
        return "its lock.json is unreadable"
    if current.expires_unix < now:
        return f"it expired at {current.expires_at}"
    if holder_is_gone(current):
        return f"its process {current.pid} on {current.host} is gone"
    return ""


def run_url(env: Mapping[str, str]) -> str:
    """The GitHub Actions run that holds a lock, when there is one."""
    server, repo, run_id = (
        env.get("GITHUB_SERVER_URL", ""),
        env.get("GITHUB_REPOSITORY", ""),
        env.get("GITHUB_RUN_ID", ""),
    )
    return f"{server}/{repo}/actions/runs/{run_id}" if server and repo and run_id else ""


# -- the ledger ------------------------------------------------------------------------------


@dataclass
class _HeldLock:
    env: str
    info: LockInfo
    oid: str
    lost: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    guard: threading.Lock = field(default_factory=threading.Lock)


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
        self.repo = repo
        self.remote = remote
        self.timeout = timeout
        self.lock_ttl_sec = lock_ttl_sec
        self._env = dict(env)
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        #: How long the last :meth:`lock` waited for the lock (the perf report quotes it).
        self.last_lock_wait_sec = 0.0
        self._fetched = False
        self._heads: dict[str, str] = {}  # local mirror ref -> commit
        self._order: list[str] = []  # history refs, most recently written first
        self._stores: dict[str, GitHistoryStore] = {}
        self._fetches = 0
        self._pushes = 0
        self._conflicts = 0

    # -- names ----------------------------------------------------------------------------

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
        return {"fetches": self._fetches, "pushes": self._pushes, "conflicts": self._conflicts}

    # -- git --------------------------------------------------------------------------------

    def _git(self, *args: str, stdin: str = "", check: bool = True) -> _run.Result:
        env = {
            **self._env,
            "GIT_TERMINAL_PROMPT": "0",  # never wait for a password on a CI runner
            "GIT_AUTHOR_NAME": "shatag",
            "GIT_AUTHOR_EMAIL": "shatag@localhost",
            "GIT_COMMITTER_NAME": "shatag",
            "GIT_COMMITTER_EMAIL": "shatag@localhost",
        }
        argv = [
            "git",
            "-C",
            str(self.repo),
            # No background gc/maintenance processes outliving the command on a runner.
            "-c",
            "gc.auto=0",
            "-c",
            "maintenance.auto=false",
            *args,
        ]
        try:
            return _run.run(argv, timeout=self.timeout, env=env, stdin=stdin, check=check)
        except ToolMissing:
            raise LedgerUnavailable(
                "state_backend git needs the git program on PATH; install git or use "
                "state_backend: local"
            ) from None

    def _object(self, content: str, name: str, parent: str | None, message: str) -> str:
        """A commit whose tree holds ``name`` with ``content`` (written as loose objects)."""
        blob = self._git("hash-object", "-w", "--stdin", stdin=content).stdout.strip()
        tree = self._git("mktree", stdin=f"100644 blob {blob}\t{name}\n").stdout.strip()
        argv = ["commit-tree", "--no-gpg-sign", tree, "-m", message]
        if parent:
            argv[2:2] = ["-p", parent]
        return self._git(*argv).stdout.strip()

    def _push(self, refspecs: Sequence[tuple[str, str, str]]) -> _Push:
        """Push ``(new commit or "" to delete, ref, expected old or "" for absent)`` with a
        lease on each; CONFLICT when a lease did not hold, an error when the remote refused.

        ``--no-verify``: the user's own pre-push hooks are for their branches, not for this.
        """
        argv = ["push", "--porcelain", "--no-verify", "--quiet"]
        argv += [f"--force-with-lease={ref}:{old}" for _new, ref, old in refspecs]
        argv.append(self.remote)
        argv += [f"{new}:{ref}" for new, ref, _old in refspecs]
        self._pushes += 1
        try:
            result = self._git(*argv, check=False)
        except ToolTimeout:
            # Ambiguous: it may have landed. The caller refetches and checks before retrying.
            log.warning("git push to %s timed out after %gs; refetching", self.remote, self.timeout)
            self._conflicts += 1
            return _Push.CONFLICT
        if result.returncode == 0:
            return _Push.OK
        text = f"{result.stdout}\n{result.stderr}"
        rejected = [
            line.lower()
            for line in result.stdout.splitlines()
            if line.startswith("!") and "atomic push failed" not in line
        ]
        if rejected and all(_is_conflict(line) for line in rejected):
            self._conflicts += 1
            return _Push.CONFLICT
        refs = ", ".join(ref for _new, ref, _old in refspecs)
        detail = _tail(text)
        if rejected or any(w in text.lower() for w in _DENIED_WORDS):
            raise LedgerDenied(
                f"the state remote {self.remote!r} refused to update {refs}: {detail}. The "
                "ledger needs push access to refs/shatag*/ (in GitHub Actions: permissions: "
                "contents: write, and actions/checkout with persist-credentials)"
            )
        raise LedgerUnavailable(
            f"git push of {refs} to the state remote {self.remote!r} failed: {detail}"
        )

    # -- reading ----------------------------------------------------------------------------

    def refresh(self) -> None:
        """Fetch every ledger ref of the remote (one ``git fetch``) and forget cached reads."""
        self._fetches += 1
        try:
            self._git(
                "fetch",
                "--quiet",
                "--no-tags",
                "--prune",
                "--no-write-fetch-head",
                self.remote,
                f"+{HISTORY_NS}*:{HISTORY_NS}*",
                f"+{LOCK_NS}*:{LOCK_NS}*",
                f"+{JOURNAL_NS}*:{JOURNAL_NS}*",
            )
        except ToolFailure as exc:
            raise LedgerUnavailable(
                f"cannot fetch the deployment ledger from {self.remote!r} in {self.repo} "
                f"({exc.message}); state_backend git needs a git clone of the application "
                "with that remote"
            ) from None
        listing = self._git(
            "for-each-ref",
            "--sort=-committerdate",
            "--format=%(objectname) %(refname)",
            HISTORY_NS,
            LOCK_NS,
            JOURNAL_NS,
        ).stdout
        self._heads = {}
        self._order = []
        for line in listing.splitlines():
            oid, _, ref = line.partition(" ")
            if oid and ref:
                self._heads[ref] = oid
                if ref.startswith(HISTORY_NS):
                    self._order.append(ref[len(HISTORY_NS) :])
        for env, store in self._stores.items():
            store._reset(self._heads.get(self.history_ref(env), ""))
        self._fetched = True

    def _ensure(self) -> None:
        if not self._fetched:
            self.refresh()

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

    def _blobs(self, specs: Sequence[str]) -> list[str | None]:
        """The content of each ``<commit>:<path>`` (``None`` where missing), in one call."""
        if not specs:
            return []
        out = self._git("cat-file", "--batch", stdin="".join(f"{s}\n" for s in specs)).stdout
        data = out.encode("utf-8")
        found: list[str | None] = []
        pos = 0
        for _spec in specs:
            end = data.find(b"\n", pos)
            if end < 0:
                break
            header = data[pos:end].decode("utf-8", "replace").split()
            pos = end + 1
            if len(header) != 3 or not header[2].isdigit():
                found.append(None)  # "<spec> missing" / "ambiguous"
                continue
            size = int(header[2])
            found.append(data[pos : pos + size].decode("utf-8", "replace"))
            pos += size + 1
        return found + [None] * (len(specs) - len(found))

    def _blob(self, ref: str, name: str) -> str | None:
        oid = self.head(ref)
        return self._blobs([f"{oid}:{name}"])[0] if oid else None

    # -- lock -------------------------------------------------------------------------------

    def read_lock(self, env: str) -> LockInfo | None:
        text = self._blob(self.lock_ref(env), LOCK_FILE)
        return LockInfo.from_json(text) if text is not None else None

    def _lock_commit(
        self, held: _HeldLock | None, env: str, holder: str, token: str
    ) -> tuple[LockInfo, str]:
        now = self._clock()
        info = LockInfo(
            env=env,
            holder=holder,
            host=socket.gethostname(),
            pid=os.getpid(),
            token=token,
            acquired_at=held.info.acquired_at if held else _iso(now),
            expires_at=_iso(now + self.lock_ttl_sec),
            expires_unix=round(now + self.lock_ttl_sec, 3),
            where=run_url(self._env),
            boot_id=_read("/proc/sys/kernel/random/boot_id"),
            pid_ns=_pid_ns(),
            proc_start=_proc_start(os.getpid()),
        )
        message = (
            f"shatag lock {env}: {holder or 'deploy'} on {info.host} pid {info.pid} "
            f"until {info.expires_at}\n\nBreak a stale lock: git push {self.remote} --delete "
            f"{self.lock_ref(env)}\n"
        )
        return info, self._object(info.to_json() + "\n", LOCK_FILE, None, message)

    def _fetch_lock(self, env: str) -> tuple[str, LockInfo | None]:
        """The remote's current lock commit of ``env`` ('' if none) and its content."""
        ref = self.lock_ref(env)
        self._fetches += 1
        result = self._git(
            "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", self.remote,
            f"+{ref}:{ref}", check=False,
        )  # fmt: skip
        if result.returncode != 0:
            if "couldn't find remote ref" in result.stderr.lower():
                self._heads.pop(ref, None)
                return "", None
            raise LedgerUnavailable(
                f"cannot read the lock of {env!r} from {self.remote!r}: {_tail(result.stderr)}"
            )
        oid = self._git("rev-parse", "--verify", "-q", f"{ref}^{{commit}}").stdout.strip()
        self._heads[ref] = oid
        text = self._blobs([f"{oid}:{LOCK_FILE}"])[0]
        return oid, LockInfo.from_json(text) if text is not None else None

    @contextlib.contextmanager
    def lock(self, env: str, *, timeout: float, holder: str = "") -> Iterator[LockInfo]:
        """Hold the deploy lock of ``env`` on the remote for the ``with`` block.

        Waits at most ``timeout`` seconds for a live holder (DEPLOY_LOCKED after), takes over
        an expired lock or one whose holder died on this machine, renews it while held, and
        refetches the ledger once it is ours.
        """
        token = uuid.uuid4().hex
        held = self._acquire(validate_env_name(env), timeout=timeout, holder=holder, token=token)
        beat = threading.Thread(target=self._heartbeat, args=(held, holder, token), daemon=True)
        beat.start()
        try:
            self.refresh()  # everything read under the lock is current
            yield held.info
        finally:
            held.stop.set()
            beat.join(self.timeout + 5)
            with held.guard:
                self._release(held)

    def _acquire(self, env: str, *, timeout: float, holder: str, token: str) -> _HeldLock:
        ref = self.lock_ref(env)
        monotonic = self._monotonic
        started = monotonic()
        deadline = started + max(0.0, timeout)
        expected = ""  # create only; the commit of a stale lock to take over
        waited_for = ""
        commit, built = "", 0.0
        while True:
            if monotonic() > deadline + self.timeout:  # a ref that flips on every try
                raise LedgerUnavailable(
                    f"could not take the lock {ref} on {self.remote!r}: it changed on every try"
                )
            if not commit or self._clock() > built + self.lock_ttl_sec / 6:
                # One lock commit serves several polls while its expiry is still fresh.
                info, commit = self._lock_commit(None, env, holder, token)
                built = self._clock()
            if self._push([(commit, ref, expected)]) is _Push.OK:
                break
            expected, current = self._fetch_lock(env)
            if not expected:
                continue  # released in between: try to create it again
            if current is not None and current.token == token:
                commit = expected  # our push timed out but landed
                break
            now = self._clock()
            stale = _stale_reason(current, now)
            if stale:
                log.warning(
                    "breaking the stale deploy lock of %s (%s): %s",
                    env,
                    stale,
                    current.describe(now) if current else expected,
                )
                continue  # retry with a lease on the stale commit: a takeover, still a CAS
            if monotonic() >= deadline:
                raise DeployLocked(
                    f"another deploy of environment {env!r} holds the lock "
                    f"{ref} on {self.remote!r}: {current.describe(now) if current else '?'}; "
                    f"waited {timeout:g}s. Retry when it finishes, or if its runner is gone "
                    f"break it: git push {self.remote} --delete {ref}"
                )
            expected = ""
            waited_for = current.holder if current else "?"
            pause = _POLL_SEC * (0.5 + random.random())  # noqa: S311 -- jitter, not crypto
            self._sleep(min(pause, max(0.05, deadline - monotonic())))
        self.last_lock_wait_sec = monotonic() - started
        if waited_for:
            log.warning(
                "waited %.1fs for the deploy lock of %s (held by %s)",
                self.last_lock_wait_sec,
                env,
                waited_for,
            )
        return _HeldLock(env, info, commit)

    def _heartbeat(self, held: _HeldLock, holder: str, token: str) -> None:
        period = max(0.2, self.lock_ttl_sec / 3)
        while not held.stop.wait(period):
            with held.guard:
                if held.stop.is_set():
                    return
                try:
                    info, commit = self._lock_commit(held, held.env, holder, token)
                    outcome = self._push([(commit, self.lock_ref(held.env), held.oid)])
                except ShatagError as exc:
                    log.warning("could not renew the deploy lock of %s: %s", held.env, exc)
                    continue
                if outcome is _Push.OK:
                    held.oid, held.info = commit, info
                else:
                    held.lost = True
                    log.error(
                        "the deploy lock of %s was taken over by someone else while held",
                        held.env,
                    )
                    return

    def _release(self, held: _HeldLock) -> None:
        if held.lost:
            return
        try:
            outcome = self._push([("", self.lock_ref(held.env), held.oid)])
        except ShatagError as exc:
            log.warning(
                "could not release the deploy lock of %s (%s); it expires at %s",
                held.env,
                exc,
                held.info.expires_at,
            )
            return
        if outcome is not _Push.OK:
            log.warning("the deploy lock of %s was no longer ours at release", held.env)

    # -- journal ----------------------------------------------------------------------------

    def read_journal(self, env: str) -> dict[str, Any] | None:
        """The crash journal of ``env`` as fetched (``None`` when there is none)."""
        text = self._blob(self.journal_ref(env), JOURNAL_FILE)
        if text is None:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            log.warning("unreadable deploy journal on %s ignored", self.journal_ref(env))
            return {}
        return data if isinstance(data, dict) else {}

    def write_journal(self, env: str, data: Mapping[str, Any]) -> None:
        ref = self.journal_ref(env)
        text = json.dumps(dict(data), sort_keys=True, separators=(",", ":")) + "\n"
        message = f"shatag journal {env}: {data.get('action', 'deploy')} {data.get('sha', '')}\n"
        for _ in range(CAS_RETRIES):
            old = self.head(ref)
            commit = self._object(text, JOURNAL_FILE, old or None, message)
            if self._push([(commit, ref, old)]) is _Push.OK:
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
            if self._push([("", ref, old)]) is _Push.OK:
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
        text = record.to_json() + "\n"
        for attempt in range(CAS_RETRIES):
            current = self.store(store.env)
            if record.attempt and current.find_attempt(record.attempt) is not None:
                log.info("record of attempt %s is already on %s", record.attempt, ref)
                return
            old = self.head(ref)
            commit = self._object(text, RECORD_FILE, old or None, f"{subject}\n\n{body}")
            if self._push([(commit, ref, old)]) is _Push.OK:
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


class GitHistoryStore:
    """One environment's history on ``refs/shatag/<env>``: the interface of
    :class:`shatag.history.HistoryStore`, read from the fetched ref."""

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
                out = self.ledger._git("rev-list", "--first-parent", self._head).stdout
                self._ids = out.split()
        return self._ids

    def iter_newest(self) -> Iterator[HistoryRecord]:
        ids = self._commit_ids()
        index = 0
        while index < len(ids):
            if index >= len(self._records):
                chunk = ids[len(self._records) : len(self._records) + _CHUNK]
                blobs = self.ledger._blobs([f"{c}:{RECORD_FILE}" for c in chunk])
                self._records += [HistoryRecord.from_json(b) if b else None for b in blobs]
            record = self._records[index]
            index += 1
            if record is not None:
                yield record

    def newest(self, limit: int | None = None) -> list[HistoryRecord]:
        out: list[HistoryRecord] = []
        for record in self.iter_newest():
            if limit is not None and len(out) >= limit:
                break
            out.append(record)
        return out

    def current(self) -> HistoryRecord | None:
        return next((r for r in self.iter_newest() if r.ok), None)

    def previous(self) -> HistoryRecord | None:
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
        for record in self.iter_newest():
            if (
                record.sha == sha
                and record.digest
                and (repository is None or record.repository == repository)
            ):
                return record.digest
        return None

    def find_attempt(self, attempt: str, *, within: int = 50) -> HistoryRecord | None:
        for record in self.newest(limit=within):
            if record.attempt == attempt:
                return record
        return None


def _tail(text: str, lines: int = 4) -> str:
    kept = [
        line.strip()
        for line in text.strip().splitlines()
        if line.strip() and line.strip() not in ("Done", "To") and not line.startswith("To ")
    ][-lines:]
    return " | ".join(kept) if kept else "(no output)"


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

    def lock(self, *, timeout: float, holder: str) -> contextlib.AbstractContextManager[object]:
        return self.ledger.lock(self._env, timeout=timeout, holder=holder)

    def write_journal(self, data: Mapping[str, Any]) -> None:
        self.ledger.write_journal(self._env, data)

    def read_journal(self) -> dict[str, Any] | None:
        data = self.ledger.read_journal(self._env)
        if data == {}:  # unreadable: dropped, as the local backend does
            self.ledger.clear_journal(self._env)
            return None
        return data

    def clear_journal(self) -> None:
        self.ledger.clear_journal(self._env)
