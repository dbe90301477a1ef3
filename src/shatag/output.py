"""Everything shatag shows: one JSON line per phase on stdout (machines), human lines on
stderr (people), GitHub Actions outputs, step summary, groups and annotations.

stdout carries only JSON lines, so ``inv build ... | jq`` always works.

>>> import io
>>> out = io.StringIO()
>>> emit_json({"phase": "build", "reused": False}, stream=out)
>>> out.getvalue()
'{"phase": "build", "reused": false}\\n'
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from shatag.errors import InvalidInput
from shatag.masking import mask, mask_record

#: The command the user runs (``inv`` or ``shatag``): hints in messages name it (issue 13).
PROGRAM = "inv"
_TASK_HINT = re.compile(
    r"(?<![\w./-])inv(?= (?:build|deploy|rollback|history|verify|signatures|--help|-f)\b)"
)


def as_run(message: str) -> str:
    """``message`` with its ``inv <task>`` hints spelled as the user runs shatag.

    >>> import shatag.output as o
    >>> o.PROGRAM = "shatag"; o.as_run("build it first: inv build --sha=abc (see `inv --help`)")
    'build it first: shatag build --sha=abc (see `shatag --help`)'
    >>> o.PROGRAM = "inv"
    """
    if PROGRAM == "inv":
        return message
    return _TASK_HINT.sub(PROGRAM, message)


def emit_json(record: Mapping[str, Any], *, stream: TextIO | None = None) -> None:
    """Write one JSON line (the machine record of a phase) to stdout: its free text masked,
    its identifying fields as they are (:func:`shatag.masking.mask_record`)."""
    out = stream or sys.stdout
    out.write(json.dumps(mask_record(record), separators=(", ", ": "), default=str) + "\n")
    out.flush()


def say(line: str, *, stream: TextIO | None = None) -> None:
    """Write one human line to stderr."""
    out = stream or sys.stderr
    out.write(mask(line) + "\n")
    out.flush()


def warn(line: str, *, stream: TextIO | None = None) -> None:
    """A problem that does not fail the command: ``warning: …`` on stderr."""
    say(f"warning: {' '.join(line.split())}", stream=stream)


def in_github_actions(env: Mapping[str, str]) -> bool:
    return env.get("GITHUB_ACTIONS") == "true"


def error(code: str, message: str, *, env: Mapping[str, str], stream: TextIO | None = None) -> None:
    """The one error line: ``error: CODE: message`` (plus an annotation under Actions)."""
    out = stream or sys.stderr
    flat = mask(as_run(" ".join(message.split())))
    if in_github_actions(env):
        out.write(f"::error title={code}::{flat}\n")
    out.write(f"error: {code}: {flat}\n")
    out.flush()


@contextmanager
def group(title: str, *, env: Mapping[str, str], stream: TextIO | None = None) -> Iterator[None]:
    """Fold long output (docker build) under GitHub Actions; a plain header elsewhere."""
    out = stream or sys.stderr
    if in_github_actions(env):
        out.write(f"::group::{title}\n")
    else:
        out.write(f"--- {title}\n")
    out.flush()
    try:
        yield
    finally:
        if in_github_actions(env):
            out.write("::endgroup::\n")
            out.flush()


def github_outputs(values: Mapping[str, str], *, env: Mapping[str, str]) -> None:
    """Append ``key=value`` lines to ``$GITHUB_OUTPUT`` when running under Actions."""
    target = env.get("GITHUB_OUTPUT")
    if not target:
        return
    lines = []
    for key, value in mask_record(values).items():  # identifiers as they are (issue 24)
        if "\n" in value or "\r" in value or "\n" in key:
            raise InvalidInput(f"GitHub output {key!r} must be a single line")
        lines.append(f"{key}={value}\n")
    with Path(target).open("a", encoding="utf-8") as fh:
        fh.writelines(lines)


def step_summary(title: str, rows: Mapping[str, Any], *, env: Mapping[str, str]) -> None:
    """Append a short markdown table to ``$GITHUB_STEP_SUMMARY`` when running under Actions."""
    target = env.get("GITHUB_STEP_SUMMARY")
    if not target:
        return
    body = [f"### {title}", "", "| key | value |", "| --- | --- |"]
    for key, value in mask_record(rows).items():  # identifiers as they are (issue 24)
        cell = str(value).replace("|", "\\|").replace("\n", " ")
        body.append(f"| {key} | `{cell}` |")
    with Path(target).open("a", encoding="utf-8") as fh:
        fh.write("\n".join(body) + "\n\n")


def write_json_atomic(path: Path, record: Mapping[str, Any]) -> None:
    """Write ``record`` as JSON to ``path`` atomically (temp file in the same dir + rename)."""
    from shatag._sys.fs import atomic_write_text

    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
