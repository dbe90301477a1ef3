"""What every git call of shatag shares (the git ledger's refs and the GitOps write-back of the
file targets): the environment (no prompt, a fixed identity, so it works on a CI runner without
one), the argument prefix (no background gc), and how a ``git push --porcelain`` rejection reads.

>>> is_conflict("!\\tabc:refs/shatag/p\\t[rejected] (stale info)")
True
>>> is_conflict("!\\tabc:refs/heads/main\\t[rejected] (fetch first)")
True
>>> is_conflict("!\\tabc:refs/shatag/p\\t[remote rejected] (pre-receive hook declined)")
False
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final

# Rejections that mean "the ref moved under you" -- a stale lease on our side, or a lost race
# inside the remote's receive-pack -- not "you may not write": those are retried.
_RACE_WORDS: Final = ("failed to update ref", "cannot lock ref", "failed to lock", "stale info")
_CONFLICT_WORDS: Final = ("stale info", "fetch first", "non-fast-forward", "already exists")
DENIED_WORDS: Final = (
    "denied",
    "permission",
    "not allowed",
    "forbidden",
    "403",
    "authentication failed",
    "could not read username",
    "protected",
    "read-only",
    "read only",
)


def is_conflict(line: str) -> bool:
    """A ``git push --porcelain`` rejection line that means "the ref moved", not "denied"."""
    line = line.lower()
    if "[remote rejected]" in line:
        return any(w in line for w in _RACE_WORDS)
    return "[rejected]" in line and any(w in line for w in _CONFLICT_WORDS)


def git_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with no password prompt and shatag as author and committer."""
    return {
        **env,
        "GIT_TERMINAL_PROMPT": "0",  # never wait for a password on a CI runner
        "GIT_AUTHOR_NAME": "shatag",
        "GIT_AUTHOR_EMAIL": "shatag@localhost",
        "GIT_COMMITTER_NAME": "shatag",
        "GIT_COMMITTER_EMAIL": "shatag@localhost",
    }


def git_argv(repo: Path, *args: str) -> list[str]:
    """``git -C <repo> <args>`` with no background gc/maintenance outliving the command."""
    return ["git", "-C", str(repo), "-c", "gc.auto=0", "-c", "maintenance.auto=false", *args]


def tail(text: str, lines: int = 4) -> str:
    """The last meaningful lines of git's output, on one line."""
    kept = [
        line.strip()
        for line in text.strip().splitlines()
        if line.strip() and line.strip() != "Done" and not line.startswith("To ")
    ][-lines:]
    return " | ".join(kept) if kept else "(no output)"
