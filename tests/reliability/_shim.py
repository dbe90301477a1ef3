"""Events a test injects its faults on, instead of delays (issue 27).

:class:`PathShim` is a ``docker`` (or ``git``) on PATH in front of the real one, so that a
test injects its fault at a named call of the run. :class:`HeldApply` is an ``apply`` step
that holds its run (and the deploy lock) until the test lets it go; :func:`has_open` tells
whether a process holds a file open (a lock it is polling).

Through :class:`PathShim`, every call shatag makes (its own ``docker`` command lines and
python-on-whales') is appended to ``calls.log`` -- the caller's pid and the command words
after the global options (``--host``, ``--config``) -- and then the real program is exec'ed,
unchanged. A test may *hold* the first call whose command line matches a shell pattern
(``stop *``, ``container start *``): the shim logs it, signals the test (``held`` appears),
and waits until the test releases it, either before the real call runs (``before``: the
fault hits with that call not yet made) or after it returned (``after``: the call made,
shatag not yet told). A held call is released after ``HOLD_LIMIT_SEC`` at the latest, so a
broken test cannot hang a run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

HOLD_LIMIT_SEC = 120

_SCRIPT = r"""#!/bin/sh
dir='@DIR@'
real='@REAL@'
words=""
skip=0
seen=0
for a in "$@"; do
  if [ "$seen" = 1 ]; then words="$words $a"; continue; fi
  if [ "$skip" = 1 ]; then skip=0; continue; fi
  case "$a" in
    --config|--host|-H|--context|-c|-C|--log-level|-l) skip=1 ;;
    -*) ;;
    *) seen=1; words="$a" ;;
  esac
done
printf '%s %s\n' "$PPID" "$words" >> "$dir/calls.log"
hold() {
  : > "$dir/held"
  n=0
  while [ ! -e "$dir/release" ] && [ "$n" -lt @LIMIT@ ]; do sleep 0.05; n=$((n + 1)); done
}
if [ -s "$dir/hold" ]; then
  pattern=$(sed -n 1p "$dir/hold")
  mode=$(sed -n 2p "$dir/hold")
  # shellcheck disable=SC2254
  case "$words" in
    $pattern)
      if mkdir "$dir/claimed" 2>/dev/null; then
        printf '%s\n' "$words" > "$dir/held-call"
        if [ "$mode" = after ]; then
          "$real" "$@"
          rc=$?
          hold
          exit "$rc"
        fi
        hold
      fi
      ;;
  esac
fi
exec "$real" "$@"
"""


class PathShim:
    """``bin/docker`` in ``root`` (or ``bin/<program>``: the same shim fits ``git``); put it
    first on the run's PATH with :meth:`env`."""

    def __init__(self, root: Path, program: str = "docker") -> None:
        real = shutil.which(program)
        if real is None:
            raise RuntimeError(f"no {program} on PATH")
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        script = self.bin / program
        text = _SCRIPT.replace("@DIR@", str(root)).replace("@REAL@", real)
        script.write_text(text.replace("@LIMIT@", str(HOLD_LIMIT_SEC * 20)))
        script.chmod(0o755)

    def env(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` with the shim first on PATH."""
        import os

        return {**env, "PATH": f"{self.bin}:{env.get('PATH') or os.environ['PATH']}"}

    def hold(self, pattern: str, when: Literal["before", "after"] = "before") -> None:
        """Hold the next call matching ``pattern`` (a ``case`` pattern over its command words)."""
        for name in ("held", "release", "held-call"):
            (self.root / name).unlink(missing_ok=True)
        with_claim = self.root / "claimed"
        if with_claim.exists():
            with_claim.rmdir()
        (self.root / "hold").write_text(f"{pattern}\n{when}\n")

    def wait_held(self, timeout: float, alive: Callable[[], bool] | None = None) -> bool:
        """True once the held call is waiting; False after ``timeout`` or once ``alive()``
        (the run) says it has ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.root / "held").exists():
                return True
            if alive is not None and not alive():
                return (self.root / "held").exists()
            time.sleep(0.02)
        return (self.root / "held").exists()

    def release(self) -> None:
        (self.root / "release").touch()
        (self.root / "hold").unlink(missing_ok=True)

    def held_call(self) -> str:
        path = self.root / "held-call"
        return path.read_text().strip() if path.exists() else ""

    def calls(self) -> list[str]:
        """The command words of every call so far, in order (the held one included)."""
        return [words for _, words in self.callers()]

    def callers(self) -> list[tuple[int, str]]:
        """Every call so far as (the calling process's pid, its command words)."""
        log = self.root / "calls.log"
        lines = log.read_text().splitlines() if log.exists() else []
        out = []
        for line in lines:
            pid, _, words = line.partition(" ")
            if pid.isdigit():
                out.append((int(pid), words))
        return out

    def reset(self) -> None:
        (self.root / "calls.log").unlink(missing_ok=True)

    def wait_calls(self, n: int, timeout: float, alive: Callable[[], bool] | None = None) -> bool:
        """True once ``n`` calls have started (since the last :meth:`reset`); False after
        ``timeout`` or once ``alive()`` (the run) says it has ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.calls()) >= n:
                return True
            if alive is not None and not alive():
                return False
            time.sleep(0.005)
        return False


def _wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@dataclass(frozen=True)
class HeldApply:
    """An ``apply`` step that writes the deploying process's pid to ``started`` and then holds
    until ``go`` appears (at most 60 s): the lock's winner keeps it until the test has seen
    what it waits for (issue 27: an event, not a `sleep 2` window)."""

    started: Path
    go: Path

    @property
    def command(self) -> str:
        wait = f"while [ ! -e {self.go} ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done"
        return f"sh -c 'echo $PPID > {self.started}; n=0; {wait}'"

    def winner(self, procs: list[subprocess.Popen[str]]) -> subprocess.Popen[str] | None:
        """The process in its apply step (None if none got there within 120 s)."""
        if not _wait_for(
            lambda: self.started.exists() and bool(self.started.read_text().strip()), 120
        ):
            return None
        pid = int(self.started.read_text())
        return next((p for p in procs if p.pid == pid), None)


def has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` holds ``path`` open (it is polling that lock file)."""
    fds = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):
        for fd in fds.iterdir():
            with contextlib.suppress(OSError):
                if Path(os.readlink(fd)) == path:
                    return True
    return False
