"""Find ``inv`` command lines in text and check them against the real Invoke collection.

Shared by ``test_docs.py`` (README, quickstart, docs/) and ``test_workflows.py`` (the ``run:``
lines of ``.github/workflows``), so neither the docs nor CI can name a task or flag that
``shatag.tasks`` does not have.

>>> [c.argv for c in find_inv_commands("```\\n$ inv build --sha=$SHA | jq .\\n```")]
[['build', '--sha=$SHA']]
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass

# Invoke's own (core) flags that may precede the task name; True = takes a value.
_CORE_FLAGS: dict[str, bool] = {
    "-f": True,
    "--config": True,
    "-c": True,
    "--collection": True,
    "-r": True,
    "--search-root": True,
    "-e": False,
    "--echo": False,
    "-l": False,
    "--list": False,
    "-h": False,
    "--help": False,
    "-d": False,
    "--debug": False,
    "--dry": False,
    "-V": False,
    "--version": False,
}
_SHELL_STOP = {"|", "||", "&&", ";", ">", ">>", "2>", "2>&1", "#", "&"}
# `inv` at the start of a line (optionally after a prompt) or right after an opening backtick;
# the `shatag` console script (same tasks and core flags) in fenced code blocks and inline code
# only ("shatag build makes an SBOM" is prose).
_LINE_RE = re.compile(r"^\s*(?:\$\s+)?(inv\s+[^`\n]*)", re.MULTILINE)
_SHATAG_LINE_RE = re.compile(r"^\s*(?:\$\s+)?(shatag\s+[^`\n]*)", re.MULTILINE)
_INLINE_RE = re.compile(r"`((?:inv|shatag)\s+[^`\n]+)`")
_FENCE_RE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class InvCommand:
    source: str
    line: str
    argv: list[str]


_PLACEHOLDER_RE = re.compile(r"\$\([^()]*(?:\([^()]*\)[^()]*)*\)|<[^<>]*>")


def _clean(fragment: str) -> list[str]:
    # `$(git rev-parse HEAD)` and `<40-hex sha>` are one value each, whatever their spaces.
    fragment = _PLACEHOLDER_RE.sub("VALUE", fragment)
    fragment = fragment.replace("[", " ").replace("]", " ").replace("…", " ")
    try:
        tokens = shlex.split(fragment, comments=True, posix=True)
    except ValueError:
        tokens = fragment.split()
    out: list[str] = []
    for token in tokens[1:]:  # drop the leading `inv`/`shatag`
        if token in _SHELL_STOP or token.startswith(("|", ">", "2>")):
            break
        out.append(token)
    return out


def find_inv_commands(text: str, source: str = "<text>") -> Iterator[InvCommand]:
    """Every ``inv ...`` command in code blocks, prompt lines and inline code spans."""
    joined = re.sub(r"\\\n\s*", " ", text)  # shell line continuations
    fenced = "\n".join(block.group(1) for block in _FENCE_RE.finditer(joined))
    seen: set[str] = set()
    for regex, where in ((_LINE_RE, joined), (_SHATAG_LINE_RE, fenced), (_INLINE_RE, joined)):
        for match in regex.finditer(where):
            line = match.group(1).strip()
            if line in seen:
                continue
            seen.add(line)
            argv = _clean(line)
            if line.startswith("shatag") and not (
                len(argv) == 1 or any(a.startswith("-") for a in argv)
            ):
                continue  # `shatag deploy 0123abc to production: ok` is a commit subject
            if argv:
                yield InvCommand(source=source, line=line, argv=argv)


@dataclass(frozen=True)
class TaskSpec:
    flags: dict[str, bool]  # "--metadata-out" -> takes a value


def load_tasks() -> dict[str, TaskSpec]:
    """The real task collection: task name (and aliases) -> its flags."""
    from invoke.collection import Collection

    import shatag.tasks as module

    collection = next(
        (v for v in vars(module).values() if isinstance(v, Collection)),
        None,
    ) or Collection.from_module(module)
    specs: dict[str, TaskSpec] = {}
    for name in collection.task_names:
        task = collection[name]
        flags: dict[str, bool] = {}
        for arg in task.get_arguments():
            for arg_name in arg.names:
                dashed = arg_name.replace("_", "-")
                flag = f"-{dashed}" if len(dashed) == 1 else f"--{dashed}"
                flags[flag] = arg.kind is not bool
                if arg.kind is bool:
                    flags[f"--no-{dashed}"] = False
        spec = TaskSpec(flags=flags)
        specs[name] = spec
        for alias in collection.task_names[name]:
            specs[alias] = spec
    return specs


def _core_flags(command: InvCommand, argv: list[str]) -> list[str]:
    """Consume invoke's own options before the first task name; report unknown ones."""
    found: list[str] = []
    while argv and argv[0].startswith("-"):
        flag, _, value = argv.pop(0).partition("=")
        if flag not in _CORE_FLAGS:
            found.append(f"{command.line!r}: unknown invoke option {flag}")
        elif _CORE_FLAGS[flag] and not value and argv:
            argv.pop(0)
    return found


def problems(command: InvCommand, tasks: dict[str, TaskSpec]) -> list[str]:
    """What is wrong with ``command``: unknown tasks or flags (empty list when it is fine)."""
    argv = list(command.argv)
    found = _core_flags(command, argv)
    current: TaskSpec | None = None
    current_name = ""
    while argv:
        token = argv.pop(0)
        if not token.startswith("-"):
            if token in tasks:
                current, current_name = tasks[token], token
            elif not any(ch in token for ch in "<${") and token != "VALUE":
                found.append(f"{command.line!r}: no task named {token!r}")
                current, current_name = None, token
            continue
        if current is None:
            if not current_name:  # flags after an unknown task were reported with it
                found.append(f"{command.line!r}: flag {token} before any task")
            continue
        flag, eq, _ = token.partition("=")
        if flag in ("-h", "--help"):
            continue
        if flag not in current.flags:
            found.append(f"{command.line!r}: task {current_name!r} has no flag {flag}")
        elif current.flags[flag] and not eq and argv and not argv[0].startswith("-"):
            argv.pop(0)  # `--sha VALUE`
    return found
