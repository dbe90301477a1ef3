"""SIGTERM, SIGINT and SIGHUP during a deploy or rollback (issue 12, item 3).

CI cancellation sends SIGTERM, a closed terminal SIGHUP, Ctrl-C SIGINT. Python's defaults end
the process where it stands (SIGTERM/SIGHUP) or raise ``KeyboardInterrupt`` anywhere. Inside
:func:`graceful` all three raise :class:`Interrupted` instead -- one of our errors, so the
switch's own failure path undoes what was applied (traffic back to the old release), records
the attempt as failed (``INTERRUPTED``) and the task layer prints ``error: INTERRUPTED: …``.

Once every target is switched, :func:`hold_to_end` defers signals: the record and the commit
(retiring the old release) run to their end -- bounded by docker's stop timeout -- and a signal
received meanwhile is only noted. The same holds while an interrupted switch is being undone,
so a second signal cannot cut the undo short. Either way the switch is completed or undone
within bounded time, and history, targets and what serves agree.

>>> with graceful():
...     with hold():
...         held()
True
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Final

from shatag.errors import Interrupted

SIGNALS: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
__all__ = ["Interrupted", "active", "graceful", "held", "hold", "hold_to_end", "pending"]


class _State:
    active = False
    depth = 0
    pending: list[str] = []  # noqa: RUF012 -- one process-wide list, on purpose


_STATE = _State()


def active() -> bool:
    """Whether :func:`graceful` handles the signals now. Tools started meanwhile run in their
    own process group (:func:`shatag._sys.subproc.run`): a signal sent to the whole group -- as a CI
    runner cancelling a job does -- reaches shatag, which decides (undo, or finish while held),
    instead of killing the ``docker stop`` or ``docker inspect`` that the undo or the commit is
    waiting on."""
    return _STATE.active


def held() -> bool:
    return _STATE.depth > 0


def pending() -> tuple[str, ...]:
    """Signals received while held (not acted on)."""
    return tuple(_STATE.pending)


def _handler(signum: int, frame: FrameType | None) -> None:
    del frame
    name = signal.Signals(signum).name
    if _STATE.depth > 0:
        _STATE.pending.append(name)
        return
    raise Interrupted(
        f"received {name}; the deploy/rollback stopped and what it had changed was undone "
        "(the release that served before serves again)"
    )


@contextmanager
def graceful() -> Iterator[None]:
    """Turn SIGTERM/SIGINT/SIGHUP into :class:`Interrupted` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    _STATE.depth = 0
    for sig in SIGNALS:
        signal.signal(sig, _handler)
    _STATE.active = True
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _STATE.active = False
        _STATE.depth = 0
        _STATE.pending.clear()


def hold_to_end() -> None:
    """The switch is done: defer signals until :func:`graceful` ends (the command finishes
    its commit and prints its record; a signal then changes nothing)."""
    _STATE.depth += 1


@contextmanager
def hold() -> Iterator[None]:
    """Defer signals for a bounded critical section (commit, undo)."""
    _STATE.depth += 1
    try:
        yield
    finally:
        _STATE.depth -= 1
