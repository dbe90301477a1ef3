"""``shatag`` console script: the same tasks without a tasks.py, configured by ``shatag.yaml``.

The configuration file is ``shatag.yaml`` in the current directory, else at the top-level of the
git work tree (issue 13); ``-f FILE`` (or ``INVOKE_RUNTIME_CONFIG``) names another. Keys live
under ``shatag:`` exactly as in ``invoke.yaml``; ``INVOKE_SHATAG_*`` variables apply as with
``inv``. Relative paths in the file resolve against the file's directory. ``shatag --help`` names
the file it would load.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from invoke.config import Config
from invoke.program import Program

from shatag import __version__, output
from shatag._invoke import CONFIG_FILE, find_config_file
from shatag.tasks import ns


class _Config(Config):
    prefix = "invoke"


class ShatagProgram(Program):
    """Invoke's program with shatag's configuration file lookup."""

    def config_file(self) -> Path | None:
        """The file this run loads: ``-f``, ``INVOKE_RUNTIME_CONFIG``, else ``shatag.yaml``."""
        given = self.args.config.value or os.environ.get("INVOKE_RUNTIME_CONFIG")
        if given:
            return Path(given).expanduser().absolute()
        return find_config_file(Path.cwd())

    def update_config(self, merge: bool = True) -> None:
        found = self.config_file()
        if found is not None and not self.args.config.value:
            self.args.config.value = str(found)
        super().update_config(merge)

    def print_help(self) -> None:
        super().print_help()
        found = self.config_file()
        where = (
            str(found)
            if found is not None
            else f"none ({CONFIG_FILE} not found here or at the git top-level: built-in defaults)"
        )
        print(f"Configuration: {where}")
        print("")


program = ShatagProgram(
    namespace=ns, config_class=_Config, version=__version__, name="shatag", binary="shatag"
)


def main(argv: list[str] | None = None) -> None:
    """Run the ``shatag`` program; a closed pipe (``shatag --help | head``) ends it quietly."""
    output.PROGRAM = "shatag"
    try:
        try:
            program.run(argv)  # --help and errors end in sys.exit() from inside
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away: send the rest of our output nowhere (no second error at exit).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
