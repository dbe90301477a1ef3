"""Crash-safe file writes: a reader sees the old content or the new, never half of either."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a synced temp file in the same directory and a rename."""
    atomic_write_bytes(path, text.encode("utf-8"))


def real_path(path: Path) -> Path:
    """Where a write to ``path`` lands: through a symlink, its target (issue 14, item 2)."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path``'s content atomically. A symlink is written through (its target gets the
    content, the link stays a link); an existing file keeps its owner, group and mode."""
    path = real_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            st = path.stat()
            if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
                # Only root may give a file away; anyone else keeps what they can.
                with contextlib.suppress(PermissionError):
                    os.chown(tmp, st.st_uid, st.st_gid)
            os.chmod(tmp, st.st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
