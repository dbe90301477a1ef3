"""The one subprocess chokepoint for external programs other than docker.

Every call: an argument list (never a shell string), the binary resolved with
``shutil.which``, the quoted command logged with secrets masked, a timeout, and one
domain error (:class:`ToolFailure` / :class:`ToolTimeout` / :class:`ToolMissing`) that
carries command, exit code and masked output.

>>> mask("docker login -p hunter22", ["hunter22"])
'docker login -p ***'
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from shatag import signals
from shatag.errors import ToolFailure, ToolMissing, ToolTimeout

log = logging.getLogger("shatag.run")

MASK = "***"


@dataclass(frozen=True, slots=True)
class Result:
    """What a finished command left: its quoted command line, exit code and output."""

    command: str
    returncode: int
    stdout: str
    stderr: str


def mask(text: str, secrets: Iterable[str]) -> str:
    """Replace every non-trivial secret in ``text`` by ``***``."""
    for secret in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def which(program: str, env: Mapping[str, str] | None = None) -> str | None:
    path = (env or os.environ).get("PATH", os.defpath)
    return shutil.which(program, path=path)


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
    check: bool = True,
    on_line: Callable[[str], None] | None = None,
    cwd: str | None = None,
    stdin: str = "",
) -> Result:
    """Run ``argv`` and return its :class:`Result`.

    ``env`` is merged over the current environment (secrets travel only this way).
    ``on_line`` receives each output line (stdout and stderr, masked) as it arrives.
    ``stdin`` is written to the program's standard input (e.g. ``git cat-file --batch``).
    """
    import sh  # lazy: a run that starts no tool (a deploy to file targets) never loads it

    from shatag.masking import registered

    secrets = (*secrets, *registered())
    merged_env = {**os.environ, **(env or {})}
    binary = which(argv[0], merged_env)
    shown = mask(shlex.join(argv), secrets)
    if binary is None:
        raise ToolMissing(f"{argv[0]} is not installed or not on PATH", command=shown)
    log.info("running: %s", shown)

    stdout: list[str] = []
    stderr: list[str] = []

    def collector(sink: list[str]) -> Callable[[str], None]:
        def take(line: str) -> None:
            sink.append(line)
            if on_line is not None:
                on_line(mask(line.rstrip("\n"), secrets))

        return take

    # Two details keep a short command short (each would add up to 0.1 s to every call, see
    # docs/performance.md): stdin is an empty string, not sh's default queue that its input
    # thread polls every 0.1 s, and the timeout is our timer rather than sh's ``_timeout``,
    # whose watcher thread wakes only every 0.1 s to notice that the command has ended.
    expired = threading.Event()
    try:
        proc = sh.Command(binary)(
            *argv[1:],
            _env=merged_env,
            _bg=True,
            _bg_exc=False,
            _ok_code=list(range(256)),
            _out=collector(stdout),
            _err=collector(stderr),
            _in=stdin,
            _cwd=cwd,
            _decode_errors="replace",
            _return_cmd=True,
            _new_group=signals.active(),
        )
    except OSError as exc:  # exec format error, permission denied, ...
        raise ToolFailure(f"{argv[0]} could not be started: {exc}", command=shown) from None

    def expire() -> None:
        expired.set()
        with contextlib.suppress(ProcessLookupError):
            proc.process.kill()

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    try:
        proc.wait()
        code = int(proc.exit_code)
    except sh.SignalException as exc:
        code = int(exc.exit_code) if isinstance(exc.exit_code, int) else -1
    except BaseException:
        # Interrupted while waiting (a signal turned into an exception): the tool must not
        # go on running behind our back.
        with contextlib.suppress(ProcessLookupError, OSError):
            proc.process.kill()
        raise
    finally:
        timer.cancel()
    if expired.is_set():
        raise ToolTimeout(
            f"{argv[0]} did not finish within {timeout:g}s and was killed",
            command=shown,
            output=mask("".join(stderr)[-2000:], secrets),
        )

    result = Result(
        command=shown,
        returncode=code,
        stdout=mask("".join(stdout), secrets),
        stderr=mask("".join(stderr), secrets),
    )
    if check and code != 0:
        raise ToolFailure(
            f"{argv[0]} exited with status {code}: {_tail(result.stderr or result.stdout)}",
            command=shown,
            returncode=code,
            output=result.stderr or result.stdout,
        )
    return result


def _tail(text: str, lines: int = 5) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept) if kept else "(no output)"
