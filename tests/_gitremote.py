"""A git remote for the git-ledger tests (issue 15): a bare repository with one commit on
``main`` stands for the application's remote, and each fresh shallow clone of it for a CI runner
(what ``actions/checkout`` leaves). Shared by tests/integration/test_ledger_git.py (the ledger
driven directly) and tests/reliability/test_ledger_runners.py (the CLI end to end).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "tests",
    "GIT_AUTHOR_EMAIL": "tests@shatag.invalid",
    "GIT_COMMITTER_NAME": "tests",
    "GIT_COMMITTER_EMAIL": "tests@shatag.invalid",
}


def git(cwd: Path, *args: str, stdin: str | None = None) -> str:
    out = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        input=stdin,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout.strip()


class GitRemote:
    """A bare repository (``root/<name>``) with one commit on main, and clones of it."""

    def __init__(self, root: Path, name: str = "remote.git") -> None:
        self.root = root
        self.bare = root / name
        git(root, "init", "-q", "--bare", "-b", "main", str(self.bare))
        seed = root / "seed"
        git(root, "init", "-q", "-b", "main", str(seed))
        (seed / "README").write_text("app\n")
        git(seed, "add", "README")
        git(seed, "commit", "-q", "-m", "app")
        git(seed, "push", "-q", str(self.bare), "main")
        self.count = 0

    def clone(self) -> Path:
        """A brand-new runner: a shallow single-branch clone, as actions/checkout makes one."""
        self.count += 1
        path = self.root / f"runner{self.count}"
        git(self.root, "clone", "-q", "--depth=1", f"file://{self.bare}", str(path))
        return path

    def refs(self) -> dict[str, str]:
        """Every ledger ref on the remote (refs/shatag/, refs/shatag-lock/, -journal/)."""
        out = git(self.bare, "for-each-ref", "--format=%(refname) %(objectname)", "refs/")
        pairs = (line.split() for line in out.splitlines())
        return {ref: oid for ref, oid in pairs if ref.startswith("refs/shatag")}

    def hook(self, script: str) -> None:
        """Install ``script`` as the remote's pre-receive hook (a remote that refuses)."""
        hook = self.bare / "hooks" / "pre-receive"
        hook.write_text("#!/bin/sh\n" + script)
        hook.chmod(0o755)
