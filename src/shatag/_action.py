"""Entry point of the GitHub Action (``action.yml``): one shatag task per step.

The action's inputs arrive as environment variables (never spliced into a script). ``args`` is
split into words like a shell would split them — quotes group words — but nothing is expanded or
run through a shell; the configuration file becomes ``-f FILE``.

>>> action_argv({"SHATAG_ACTION_TASK": "deploy", "SHATAG_ACTION_ARGS": "--sha=$X --env='a b'"})
['shatag', 'deploy', '--sha=$X', '--env=a b']
>>> action_argv({"SHATAG_ACTION_TASK": "build", "SHATAG_ACTION_CONFIG": "ops/shatag.yaml"})
['shatag', '-f', 'ops/shatag.yaml', 'build']
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from typing import Final

from shatag import output
from shatag.errors import InvalidInput, ShatagError

TASKS: Final = (
    "build",
    "deploy",
    "rollback",
    "promote",
    "board",
    "history",
    "verify",
    "signatures",
)


def action_argv(env: Mapping[str, str]) -> list[str]:
    """The ``shatag`` command line the action's inputs describe."""
    task = env.get("SHATAG_ACTION_TASK", "").strip()
    if task not in TASKS:
        raise InvalidInput(f"action input task must be one of {', '.join(TASKS)}, not {task!r}")
    try:
        args = shlex.split(env.get("SHATAG_ACTION_ARGS", ""), posix=True)
    except ValueError as exc:
        raise InvalidInput(f"action input args cannot be split into words: {exc}") from None
    config = env.get("SHATAG_ACTION_CONFIG", "").strip()
    return ["shatag", *(["-f", config] if config else []), task, *args]


def main() -> None:
    """Run the task the action's inputs name (``python -m shatag._action``)."""
    env = os.environ
    try:
        argv = action_argv(env)
    except ShatagError as exc:
        output.error(exc.code, exc.message, env=env)
        sys.exit(exc.exit_status)
    # download-syft hands back the binary's path: put its directory first on PATH.
    syft = env.get("SHATAG_ACTION_SYFT", "")
    if os.path.isabs(syft):
        os.environ["PATH"] = os.pathsep.join([os.path.dirname(syft), env.get("PATH", "")])
    output.say(f"shatag: {shlex.join(argv[1:])}")
    from shatag.cli import main as run

    run(argv)


if __name__ == "__main__":
    main()
