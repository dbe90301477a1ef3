"""One deploy per environment at a time: an ``fcntl.flock`` on ``<state_dir>/<env>/deploy.lock``
(and one push per SHA: :func:`build_lock`).

The kernel drops the lock when its holder exits -- even on ``kill -9`` -- so a crashed deploy
never leaves the environment locked. A second deploy waits up to ``timeout`` seconds, then fails
with :class:`DeployLocked` naming the holder.

>>> import tempfile
>>> with env_lock(Path(tempfile.mkdtemp()), "local", timeout=0) as held:
...     held.name
'deploy.lock'
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

from shatag.core import validate_env_name
from shatag.errors import DeployLocked, PushFailure, ShatagError

log = logging.getLogger("shatag.lock")
# Human progress lines while a deploy waits (INFO passes whatever the root level is).
progress = logging.getLogger("shatag.progress")
progress.setLevel(logging.INFO)

LOCK_FILE: Final = "deploy.lock"
_POLL_SEC: Final = 0.1
_PROGRESS_SEC: Final = 3.0


@contextlib.contextmanager
def env_lock(
    state_dir: Path,
    env: str,
    *,
    timeout: float,
    holder: str = "",
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Path]:
    """Hold the deploy lock of ``env`` for the duration of the ``with`` block.

    Waits at most ``timeout`` seconds (0: do not wait) and raises :class:`DeployLocked` after.
    """

    def locked(who: str) -> ShatagError:
        return DeployLocked(
            f"another deploy of environment {env!r} is running ({who}); waited {timeout:g}s. "
            "Retry when it finishes or raise shatag.deploy_lock_timeout_sec"
        )

    path = state_dir / validate_env_name(env) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with _flock(path, timeout=timeout, holder=holder, locked=locked, clock=clock, sleep=sleep):
        yield path


@contextlib.contextmanager
def build_lock(
    state_dir: Path, repository: str, sha: str, *, timeout: float, holder: str = ""
) -> Iterator[None]:
    """One push of ``repository:sha`` at a time on this machine (per ``state_dir``).

    The registry API has no conditional write, so two builds of one SHA that both saw the tag
    missing would both push, the later one re-pointing the tag. Holding this lock from the
    re-check to the proven short tag makes the later build see the tag and compare instead.
    A state dir that cannot hold the lock file is logged and the build goes on without it.
    """

    def locked(who: str) -> ShatagError:
        return PushFailure(
            f"another build of {repository}:{sha} on this machine is pushing ({who}); waited "
            f"{timeout:g}s. Build again once it has finished: it will reuse that image"
        )

    key = hashlib.sha256(f"{repository}:{sha}".encode()).hexdigest()[:32]
    path = state_dir / "builds" / f"{key}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("no build lock (%s): concurrent builds of one SHA here may race", exc)
        yield
        return
    with _flock(path, timeout=timeout, holder=holder, locked=locked):
        yield


@contextlib.contextmanager
def _flock(
    path: Path,
    *,
    timeout: float,
    holder: str,
    locked: Callable[[str], ShatagError],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[None]:
    """``flock`` ``path`` (its directory exists) for the ``with`` block; ``locked(holder)`` is
    raised once ``timeout`` seconds have passed."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        started = clock()
        deadline, said = started + max(0.0, timeout), started
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = clock()
                if now >= deadline:
                    raise locked(_describe_holder(fd)) from None
                if now - said >= _PROGRESS_SEC:  # a line every few seconds: never silent
                    said = now
                    progress.info(
                        "waiting for the lock %s, held by %s (%.0fs; gives up in %.0fs)",
                        path.name,
                        _describe_holder(fd),
                        now - started,
                        deadline - now,
                    )
                sleep(_POLL_SEC)
        # Who holds it, for the message another waiter shows. Informational only.
        info = json.dumps({"pid": os.getpid(), "holder": holder, "since": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode("utf-8"), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _describe_holder(fd: int) -> str:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return "holder unknown"
    if not isinstance(data, dict) or "pid" not in data:
        return "holder unknown"
    who = f"pid {data['pid']}"
    if data.get("holder"):
        who += f", {data['holder']}"
    if isinstance(data.get("since"), int | float):
        who += f", for {max(0.0, time.time() - float(data['since'])):.0f}s"
    return who
