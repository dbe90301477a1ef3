"""``shatag`` console script: the same tasks without a tasks.py.

Reads the same configuration as ``inv`` (``invoke.yaml``, ``-f FILE``, ``INVOKE_SHATAG_*``).
"""

from __future__ import annotations

from invoke.config import Config
from invoke.program import Program

from shatag import __version__
from shatag.tasks import ns


class _Config(Config):
    prefix = "invoke"


program = Program(
    namespace=ns, config_class=_Config, version=__version__, name="shatag", binary="shatag"
)


def main() -> None:
    program.run()
