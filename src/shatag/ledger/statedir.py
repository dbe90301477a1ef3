"""Is the state directory usable? Checked before a deploy or rollback changes anything.

History, the deploy lock and the journal live in ``<state_dir>/<env>/``. A path there that is a
directory, a read-only file system or a full one would otherwise surface half-way through a
switch (issue 14, items 1 and 9); :func:`check_state_dir` turns each into
:class:`~shatag.errors.StateError` up front.

>>> import tempfile
>>> check_state_dir(Path(tempfile.mkdtemp()), "local")
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Final

from shatag.errors import StateError

#: The files of one environment's state (history, deploy lock, journal).
STATE_FILES: Final = ("history.jsonl", "deploy.lock", "pending.json")
#: Free space a deploy needs in the state dir: a history line and a journal, with room to spare.
PROBE_BYTES: Final = 16 * 1024


def describe(exc: OSError) -> str:
    """A short, operator-facing reason for an OSError on the state dir."""
    reasons = {
        errno.EROFS: "the file system is read-only",
        errno.ENOSPC: "the file system is full",
        errno.EDQUOT: "the disk quota is exhausted",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EISDIR: "it is a directory",
        errno.ENOTDIR: "a parent is not a directory",
    }
    return reasons.get(exc.errno or 0, exc.strerror or str(exc))


def check_state_dir(state_dir: Path, env: str, *, write: bool = True) -> None:
    """Raise :class:`StateError` unless ``<state_dir>/<env>`` can be read (and, with ``write``,
    written: a temp file of :data:`PROBE_BYTES` is written, synced and removed)."""
    env_dir = state_dir / env
    hint = "fix it (or point shatag.state_dir elsewhere) and run the command again"
    for name in STATE_FILES:
        path = env_dir / name
        if path.is_symlink() and not path.exists():
            continue  # a dangling link is replaced like a missing file
        if path.exists() and not path.is_file():
            raise StateError(
                f"{path} is not a regular file (a directory?); nothing was changed — {hint}"
            )
    if not write:
        return
    try:
        env_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(
            f"cannot create the state directory {env_dir}: {describe(exc)}; nothing was "
            f"changed — {hint}"
        ) from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".shatag-probe-", dir=env_dir)
    except OSError as exc:
        raise StateError(
            f"cannot write to the state directory {env_dir}: {describe(exc)}; nothing was "
            f"changed — {hint}"
        ) from None
    problem = ""
    try:
        if os.write(fd, b"\0" * PROBE_BYTES) != PROBE_BYTES:
            problem = describe(OSError(errno.ENOSPC, "short write"))
        else:
            os.fsync(fd)
    except OSError as exc:
        problem = describe(exc)
    finally:
        os.close(fd)
        os.unlink(tmp)
    if problem:
        raise StateError(
            f"cannot write to the state directory {env_dir}: {problem}; nothing was changed — "
            f"{hint}"
        )
    _check_appendable(env_dir / STATE_FILES[0], hint)


def _check_appendable(history: Path, hint: str) -> None:
    if not history.exists():
        return
    try:
        os.close(os.open(history, os.O_WRONLY | os.O_APPEND))
    except OSError as exc:
        raise StateError(
            f"cannot append to {history}: {describe(exc)}; nothing was changed — {hint}"
        ) from None
