"""Leave a finished CLI process without the interpreter's teardown (issue 17).

Tearing down a process that imported invoke, requests and python-on-whales (module by module,
object by object) costs 40-190 ms after the work is done and the output written. A CLI run
(``inv``, ``python -m invoke``, the ``shatag`` script) that finished flushes its output streams
and logging, then ends with ``os._exit``. Nothing else is skipped: every file shatag writes is
written atomically and closed before the task returns, and no thread outlives its task.

Only a CLI process does this -- never a process that imports shatag as a library or runs
tasks in process (pytest), and never under coverage, which saves its data at exit.
``SHATAG_FULL_EXIT=1`` turns it off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

_CLI_NAMES = frozenset({"inv", "invoke", "shatag"})
_state = {"installed": False}


def cli_process() -> bool:
    """Whether this process is a shatag/invoke command-line run (see the module docstring)."""
    if "coverage" in sys.modules or os.environ.get("SHATAG_FULL_EXIT") == "1":
        return False
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None:
        return str(getattr(spec, "name", "")) == "invoke.__main__"
    return bool(sys.argv) and Path(sys.argv[0]).name in _CLI_NAMES


def exit_now(code: int) -> NoReturn:
    """Flush what the process printed and logged, then end it with ``code``."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _status(arg: Any) -> int:
    """``sys.exit``'s argument as an exit status (None → 0, a message → printed, 1)."""
    if arg is None:
        return 0
    if isinstance(arg, int):
        return arg & 0xFF
    print(arg, file=sys.stderr)
    return 1


def install() -> None:
    """In a CLI process, make ``sys.exit`` (how invoke ends every run that does not simply
    return) flush and leave at once; :func:`finished` covers a run that returns."""
    if _state["installed"] or not cli_process():
        return
    _state["installed"] = True

    def fast_exit(arg: Any = None) -> NoReturn:
        exit_now(_status(arg))

    sys.exit = fast_exit


def finished() -> None:
    """Every requested task ran: in a CLI process, leave now with status 0."""
    if _state["installed"]:
        exit_now(0)
