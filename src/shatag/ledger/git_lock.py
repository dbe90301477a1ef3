"""The distributed deploy lock of the git ledger: ``refs/shatag-lock/<env>`` on the remote.

Taking it is a push that must *create* the ref (``--force-with-lease=<ref>:`` -- an empty
expected value), so of two runners exactly one succeeds. The lock commit's ``lock.json`` names
its holder (task, host, pid, Actions run URL) and when it expires. The holder renews the expiry
every third of the TTL and deletes the ref (with a lease) when done. A waiter polls; it takes
over -- with a lease on exactly that commit -- a lock that expired, or whose holder process is
gone on this same machine (same host, boot and pid namespace). By hand: ``git push origin
--delete refs/shatag-lock/<env>`` (docs/ledger.md).

>>> info = LockInfo("prod", "deploy abc", "runner-1", 42, "t", "2026-01-01T00:00:00.000Z",
...                 "2026-01-01T00:01:00.000Z", 60.0)
>>> LockInfo.from_json(info.to_json()) == info, info.describe(now=30.0)[-14:]
(True, 'expires in 30s')
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from shatag.errors import DeployLocked, LedgerUnavailable, ShatagError
from shatag.ledger.gitrefs import GitRefs

log = logging.getLogger("shatag.ledger")

LOCK_NS: Final = "refs/shatag-lock/"
LOCK_FILE: Final = "lock.json"
_POLL_SEC: Final = 0.25
#: How often a waiter says on stderr whom it waits for (holder, since when, expiry).
PROGRESS_SEC: Final = 10.0


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
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> LockInfo | None:
        """Parse ``lock.json``; ``None`` for anything that is not a lock record."""
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


# -- is the holder alive? ---------------------------------------------------------------------


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
    parts = stat.rsplit(")", 1)[-1].split()
    return parts[19] if len(parts) > 19 else ""


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


def stale_reason(current: LockInfo | None, now: float) -> str:
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


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- taking, renewing, releasing --------------------------------------------------------------


@dataclass
class HeldLock:
    """A lock this process holds: its current commit on the remote and its renewal thread."""

    env: str
    info: LockInfo
    oid: str
    waited_sec: float = 0.0
    lost: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    guard: threading.Lock = field(default_factory=threading.Lock)
    beat: threading.Thread | None = None


class RemoteLock:
    """The deploy lock of one environment on ``refs`` (see the module docstring)."""

    def __init__(
        self,
        refs: GitRefs,
        env: str,
        *,
        ttl_sec: float,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.refs = refs
        self.env = env
        self.ref = LOCK_NS + env
        self.ttl_sec = ttl_sec
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep

    def _commit(self, holder: str, token: str, acquired_at: str = "") -> tuple[LockInfo, str]:
        now = self._clock()
        info = LockInfo(
            env=self.env,
            holder=holder,
            host=socket.gethostname(),
            pid=os.getpid(),
            token=token,
            acquired_at=acquired_at or _iso(now),
            expires_at=_iso(now + self.ttl_sec),
            expires_unix=round(now + self.ttl_sec, 3),
            where=run_url(self.refs.env),
            boot_id=_read("/proc/sys/kernel/random/boot_id"),
            pid_ns=_pid_ns(),
            proc_start=_proc_start(os.getpid()),
        )
        message = (
            f"shatag lock {self.env}: {holder or 'deploy'} on {info.host} pid {info.pid} "
            f"until {info.expires_at}\n\nBreak a stale lock: git push {self.refs.remote} "
            f"--delete {self.ref}\n"
        )
        return info, self.refs.commit(info.to_json() + "\n", LOCK_FILE, None, message)

    def current(self) -> tuple[str, LockInfo | None]:
        """The remote's lock commit ('' if none) and its ``lock.json``, fetched now."""
        oid = self.refs.fetch_ref(self.ref)
        if not oid:
            return "", None
        text = self.refs.blobs([f"{oid}:{LOCK_FILE}"])[0]
        return oid, LockInfo.from_json(text) if text is not None else None

    def acquire(self, *, timeout: float, holder: str, token: str) -> HeldLock:
        """Take the lock, waiting at most ``timeout`` seconds for a live holder."""
        monotonic = self._monotonic
        started = monotonic()
        deadline = started + max(0.0, timeout)
        expected = ""  # "" = create only; else the commit of a stale lock being taken over
        waited_for = ""
        commit, built = "", 0.0
        next_progress = started  # the first progress line as soon as we wait
        while True:
            if monotonic() > deadline + self.refs.timeout:  # a ref that flips on every try
                raise LedgerUnavailable(
                    f"could not take the lock {self.ref} on {self.refs.remote!r}: it changed "
                    "on every try"
                )
            if not commit or self._clock() > built + self.ttl_sec / 6:
                # One lock commit serves several polls while its expiry is still fresh.
                info, commit = self._commit(holder, token)
                built = self._clock()
            if self.refs.push([(commit, self.ref, expected)]):
                break
            expected, current = self.current()
            if not expected:
                continue  # released in between: try to create it again
            if current is not None and current.token == token:
                commit = expected  # our push timed out but landed
                break
            now = self._clock()
            stale = stale_reason(current, now)
            if stale:
                shown = current.describe(now) if current else expected
                log.warning("breaking the stale deploy lock of %s (%s): %s", self.env, stale, shown)
                continue  # retry with a lease on the stale commit: a takeover, still a CAS
            if monotonic() >= deadline:
                raise DeployLocked(
                    f"another deploy of environment {self.env!r} holds the lock {self.ref} on "
                    f"{self.refs.remote!r}: {current.describe(now) if current else '?'}; "
                    f"waited {timeout:g}s. Retry when it finishes, or if its runner is gone "
                    f"break it: git push {self.refs.remote} --delete {self.ref}"
                )
            if monotonic() >= next_progress:  # say what we wait for (issue 24, item 5)
                log.warning(
                    "waiting for the deploy lock of %s (%s): held by %s; waiting up to %.0fs more",
                    self.env,
                    self.ref,
                    current.describe(now) if current else "?",
                    max(0.0, deadline - monotonic()),
                )
                next_progress = monotonic() + PROGRESS_SEC
            expected = ""
            waited_for = current.holder if current else "?"
            pause = _POLL_SEC * (0.5 + random.random())  # noqa: S311 -- jitter, not crypto
            self._sleep(min(pause, max(0.05, deadline - monotonic())))
        held = HeldLock(self.env, info, commit, waited_sec=monotonic() - started)
        if waited_for:
            log.warning(
                "waited %.1fs for the deploy lock of %s (held by %s)",
                held.waited_sec,
                self.env,
                waited_for,
            )
        held.beat = threading.Thread(
            target=self._renew, args=(held, holder, token), name="shatag-lock", daemon=True
        )
        held.beat.start()
        return held

    def _renew(self, held: HeldLock, holder: str, token: str) -> None:
        """Push a fresh expiry every third of the TTL while ``held``."""
        while not held.stop.wait(max(0.2, self.ttl_sec / 3)):
            with held.guard:
                if held.stop.is_set():
                    return
                try:
                    info, commit = self._commit(holder, token, held.info.acquired_at)
                    renewed = self.refs.push([(commit, self.ref, held.oid)])
                except ShatagError as exc:
                    log.warning("could not renew the deploy lock of %s: %s", self.env, exc)
                    continue
                if not renewed:
                    held.lost = True
                    log.error("the deploy lock of %s was taken over while held", self.env)
                    return
                held.oid, held.info = commit, info

    def release(self, held: HeldLock) -> None:
        """Stop renewing and delete the ref -- only if it is still our commit."""
        held.stop.set()
        if held.beat is not None:
            held.beat.join(self.refs.timeout + 5)
        with held.guard:
            if held.lost:
                return
            try:
                released = self.refs.push([("", self.ref, held.oid)])
            except ShatagError as exc:
                log.warning(
                    "could not release the deploy lock of %s (%s); it expires at %s",
                    self.env,
                    exc,
                    held.info.expires_at,
                )
                return
            if not released:
                log.warning("the deploy lock of %s was no longer ours at release", self.env)
