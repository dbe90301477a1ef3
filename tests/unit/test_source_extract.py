"""The commit's tree is written byte for byte (issue 24, item 1): modes, symlinks, mtimes, and
no path that leaves the destination (was: the ``git archive`` tar extraction)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from shatag._sys import gittree
from shatag.errors import SourceMismatch

ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t.invalid",
    "GIT_COMMITTER_DATE": "1700000000 +0000",
}


def _git(cwd: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **ENV},
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.stdout.strip()


def test_export_keeps_bytes_modes_symlinks_and_the_commit_time(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "www").mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    (repo / "Dockerfile").write_bytes(b"FROM scratch\r\n")
    (repo / "www" / "run.sh").write_bytes(b"#!/bin/sh\n")
    (repo / "www" / "run.sh").chmod(0o755)
    (repo / "www" / "link").symlink_to("run.sh")
    (repo / ".gitattributes").write_text("Dockerfile export-ignore\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "one")
    sha = _git(repo, "rev-parse", "HEAD")
    dest = tmp_path / "out"
    found = gittree.export_tree(gittree.top_repo(repo, {}), sha, "", dest, env={})
    assert found == ()
    assert (dest / "Dockerfile").read_bytes() == b"FROM scratch\r\n"
    assert (dest / "www" / "run.sh").stat().st_mode & 0o777 == 0o755
    assert (dest / "Dockerfile").stat().st_mode & 0o777 == 0o644
    assert os.readlink(dest / "www" / "link") == "run.sh"
    assert (dest / "www" / "run.sh").stat().st_mtime == 1700000000
    tree = _git(repo, "rev-parse", "HEAD^{tree}")
    with pytest.raises(SourceMismatch, match="a tree, not a commit"):
        gittree.export_tree(gittree.top_repo(repo, {}), tree, "", tmp_path / "again", env={})


@pytest.mark.parametrize("path", [b"../escape", b"/abs", b"a/../../b", b".git/config", b"a//b"])
def test_a_tree_path_that_could_leave_the_destination_is_refused(path: bytes) -> None:
    listing = b"100644 blob " + b"a" * 40 + b"\t" + path + b"\0"
    with pytest.raises(SourceMismatch, match="unsafe path"):
        gittree._parse_listing(listing)
