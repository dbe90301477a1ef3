"""A ``docker`` on PATH in front of the real one, so that a test injects its fault at a named
docker call of the run instead of after a delay (issue 27).

Every call shatag makes (its own ``docker`` command lines and python-on-whales') is appended
to ``calls.log`` -- the command words after the global options (``--host``, ``--config``) --
and then the real ``docker`` is exec'ed, unchanged. A test may *hold* the first call whose
command line matches a shell pattern (``stop *``, ``container start *``): the shim logs it,
signals the test (``held`` appears), and waits until the test releases it, either before the
real call runs (``before``: the fault hits with that call not yet made) or after it returned
(``after``: the call made, shatag not yet told). A held call is released after
``HOLD_LIMIT_SEC`` at the latest, so a broken test cannot hang a run.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
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
    --config|--host|-H|--context|-c|--log-level|-l) skip=1 ;;
    -*) ;;
    *) seen=1; words="$a" ;;
  esac
done
printf '%s\n' "$words" >> "$dir/calls.log"
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


class DockerShim:
    """``bin/docker`` in ``root``: put :meth:`path` first on the run's PATH."""

    def __init__(self, root: Path) -> None:
        real = shutil.which("docker")
        if real is None:
            raise RuntimeError("no docker CLI on PATH")
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        script = self.bin / "docker"
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
        log = self.root / "calls.log"
        return log.read_text().splitlines() if log.exists() else []

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
