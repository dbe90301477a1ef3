"""A commit's tree written out byte for byte: the build context of ``build_source: commit``.

``git archive`` is not that (issue 24, item 1): it honours ``export-ignore`` and
``export-subst`` from the tree's own ``.gitattributes``, applies the builder's git configuration
(``core.autocrlf``, ``eol``, smudge filters) and stops at submodules. So the tree is listed with
``git ls-tree -r -z`` and its blobs are read raw with one ``git cat-file --batch`` -- objects, no
attribute, filter or conversion can apply -- and written here: modes as recorded (644/755),
symlinks as symlinks, every file's mtime the commit's time (as ``git archive`` set it), no path
that leaves the destination. Every git call runs without the system and global configuration.

* A submodule (a gitlink, mode 160000) is written from its own git directory at the SHA the
  commit records, recursively; when this clone does not hold that commit the export is refused
  naming the submodule.
* A Git LFS pointer is replaced by its content through ``git lfs smudge``, checked against the
  pointer's oid and size; when git-lfs is missing or cannot supply it, refused naming the files.

>>> pointer = b"version https://git-lfs.github.com/spec/v1\\noid sha256:" + b"a" * 64
>>> lfs_pointer(pointer + b"\\nsize 3\\n")[1]
3
>>> lfs_pointer(b"plain text") is None
True
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from shatag._sys import subproc
from shatag.errors import SourceMismatch, ToolFailure

GIT_TIMEOUT_SEC: Final = 600.0
#: No system or global git configuration, no system attributes, no prompt, LFS smudging on.
CLEAN_GIT_ENV: Final[Mapping[str, str]] = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_ATTR_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_LFS_SKIP_SMUDGE": "0",
}
_LFS_HEADER: Final = b"version https://git-lfs.github.com/spec/v1\n"
_LFS_MAX: Final = 1024
_LFS_FIELDS: Final = re.compile(rb"^oid sha256:([0-9a-f]{64})\nsize (\d+)\n", re.MULTILINE)
_CHUNK: Final = 1 << 20
_FILE_MODES: Final = {b"100644": 0o644, b"100755": 0o755, b"100664": 0o644}


@dataclass(frozen=True, slots=True)
class Submodule:
    """A submodule as it went into the context: its path there and the SHA the commit records."""

    path: str
    sha: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "sha": self.sha}


@dataclass(frozen=True, slots=True)
class Repo:
    """One git repository: how to address it (``-C dir`` or ``--git-dir=dir``) and where its
    submodules' git directories live."""

    args: tuple[str, ...]
    modules: tuple[Path, ...]
    #: The work tree, for a submodule checked out with its ``.git`` directory inside it.
    worktree: Path | None = None


@dataclass(slots=True)
class _Written:
    """What one export wrote that needs a second look."""

    gitlinks: list[tuple[str, str]] = field(default_factory=list)
    pointers: list[tuple[str, str, int]] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)


def clean_env(env: Mapping[str, str]) -> dict[str, str]:
    return {**env, **CLEAN_GIT_ENV}


def lfs_pointer(content: bytes) -> tuple[str, int] | None:
    """``(oid, size)`` when ``content`` is a Git LFS pointer file."""
    if len(content) > _LFS_MAX or not content.startswith(_LFS_HEADER):
        return None
    match = _LFS_FIELDS.search(content)
    return (match.group(1).decode(), int(match.group(2))) if match else None


def _git_bytes(repo: Repo, args: Sequence[str], env: Mapping[str, str], stdin: str = "") -> bytes:
    """``git <args>``'s standard output, raw (no decoding, no masking of a path or a blob)."""
    with tempfile.TemporaryFile() as out:
        subproc.run(
            ["git", *repo.args, *args],
            timeout=GIT_TIMEOUT_SEC,
            env=clean_env(env),
            stdin=stdin,
            stdout_to=out,
        )
        out.seek(0)
        return out.read()


def commit_time(repo: Repo, sha: str, env: Mapping[str, str], *, what: str) -> int:
    """The committer time of ``sha``; SOURCE_MISMATCH when ``repo`` does not hold it or it
    names another kind of object (a tree, a tag, a blob)."""
    raw = _git_bytes(repo, ["cat-file", "--batch"], env, stdin=f"{sha}\n")
    header, _, body = raw.partition(b"\n")
    fields = header.split()
    if len(fields) != 3:
        raise SourceMismatch(
            f"{what} does not hold {sha}; fetch it (`git fetch`) or pass the SHA of a commit "
            "this repository holds"
        )
    kind = fields[1].decode()
    if kind != "commit":
        raise SourceMismatch(
            f"--sha {sha} names a {kind}, not a commit, in {what}; pass the commit's SHA "
            "(for an annotated tag: `git rev-parse TAG^{commit}`)"
        )
    for line in body.splitlines():
        if line.startswith(b"committer "):
            return int(line.rsplit(b" ", 2)[1])
    return 0


def export_tree(
    repo: Repo, sha: str, prefix: str, dest: Path, *, env: Mapping[str, str]
) -> tuple[Submodule, ...]:
    """Write the tree of ``sha:prefix`` into ``dest`` (created; see the module docstring)."""
    mtime = commit_time(repo, sha, env, what=" ".join(repo.args[-1:]) or "the repository")
    try:
        listing = _git_bytes(repo, ["ls-tree", "-r", "-z", f"{sha}:{prefix}"], env)
    except ToolFailure as exc:
        where = prefix.rstrip("/") or "the repository root"
        raise SourceMismatch(f"cannot read {where} at commit {sha} ({exc.message})") from None
    entries = _parse_listing(listing)
    dest.mkdir(parents=True, exist_ok=True)
    written = _write_blobs(repo, entries, dest, env)
    _smudge(repo, written.pointers, dest, env)
    found: list[Submodule] = []
    if written.gitlinks:
        names = _submodule_names(repo, sha, env)
        for rel, link in written.gitlinks:
            found.append(Submodule(rel, link))
            sub = _submodule_repo(repo, names.get(prefix + rel, prefix + rel), rel, link, env)
            nested = export_tree(sub, link, "", dest / rel, env=env)
            found.extend(Submodule(f"{rel}/{n.path}", n.sha) for n in nested)
    for path in (*written.paths, *_directories(dest, written.paths)):
        os.utime(path, (mtime, mtime), follow_symlinks=False)
    return tuple(found)


def _parse_listing(listing: bytes) -> list[tuple[bytes, bytes, str, str]]:
    """``(mode, type, oid, path)`` per entry of ``ls-tree -r -z``; a path that could leave the
    destination (``..``, absolute, ``.git``) is refused."""
    entries = []
    for record in listing.split(b"\0"):
        if not record:
            continue
        meta, _, raw_path = record.partition(b"\t")
        mode, kind, oid = meta.split(b" ")
        parts = raw_path.split(b"/")
        if raw_path.startswith(b"/") or any(p in (b"", b".", b"..", b".git") for p in parts):
            raise SourceMismatch(f"the commit's tree holds an unsafe path {raw_path!r}")
        entries.append((mode, kind, oid.decode(), os.fsdecode(raw_path)))
    return entries


def _write_blobs(
    repo: Repo, entries: list[tuple[bytes, bytes, str, str]], dest: Path, env: Mapping[str, str]
) -> _Written:
    """Every blob of ``entries`` from one ``cat-file --batch``, written under ``dest``."""
    written = _Written()
    blobs = [entry for entry in entries if entry[1] == b"blob"]
    for _, kind, oid, rel in entries:
        if kind == b"commit":
            written.gitlinks.append((rel, oid))
            (dest / rel).mkdir(parents=True, exist_ok=True)
    if not blobs:
        return written
    links: set[str] = set()
    with tempfile.TemporaryFile() as out:
        subproc.run(
            ["git", *repo.args, "cat-file", "--batch"],
            timeout=GIT_TIMEOUT_SEC,
            env=clean_env(env),
            stdin="".join(f"{oid}\n" for _, _, oid, _ in blobs),
            stdout_to=out,
        )
        out.seek(0)
        made: set[Path] = {dest}
        for mode, _, oid, rel in blobs:
            size = _blob_header(out, oid, rel)
            if any(rel.startswith(f"{link}/") for link in links):
                raise SourceMismatch(f"the commit's tree holds {rel!r} below a symlink")
            target = dest / rel
            if target.parent not in made:
                target.parent.mkdir(parents=True, exist_ok=True)
                made.update((target.parent, *target.parent.parents))
            if mode == b"120000":
                os.symlink(os.fsdecode(out.read(size)), target)
                links.add(rel)
            else:
                head = _copy_blob(out, size, target, _FILE_MODES.get(mode, 0o644))
                pointer = lfs_pointer(head) if size <= _LFS_MAX else None
                if pointer is not None:
                    written.pointers.append((rel, *pointer))
            out.read(1)  # the newline after each object
            written.paths.append(target)
    return written


def _blob_header(out: IO[bytes], oid: str, rel: str) -> int:
    fields = out.readline().split()
    if len(fields) != 3 or fields[1] != b"blob":
        raise SourceMismatch(f"git cannot read the blob {oid} of {rel} (a partial clone?)")
    return int(fields[2])


def _copy_blob(out: IO[bytes], size: int, target: Path, mode: int) -> bytes:
    """Copy ``size`` bytes to a new file ``target``; its first bytes (an LFS pointer's size)."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    head = b""
    with os.fdopen(fd, "wb") as fh:
        left = size
        while left:
            chunk = out.read(min(left, _CHUNK))
            if not chunk:
                raise SourceMismatch(f"git's output ended inside the blob of {target.name}")
            if not head:
                head = chunk[: _LFS_MAX + 1]
            fh.write(chunk)
            left -= len(chunk)
        os.fchmod(fh.fileno(), mode)
    return head


def _directories(dest: Path, paths: list[Path]) -> list[Path]:
    """The directories under ``dest`` holding ``paths``, deepest first (their mtimes are set
    after their files)."""
    dirs = {parent for path in paths for parent in path.parents if parent.is_relative_to(dest)}
    return sorted(dirs, key=lambda d: len(d.parts), reverse=True)


def _smudge(
    repo: Repo, pointers: list[tuple[str, str, int]], dest: Path, env: Mapping[str, str]
) -> None:
    """Replace each LFS pointer by its content, or refuse naming every file git-lfs cannot
    supply (or all of them when git-lfs is not installed)."""
    if not pointers:
        return
    names = ", ".join(rel for rel, _, _ in pointers[:10])
    if subproc.which("git-lfs", clean_env(env)) is None:
        raise SourceMismatch(
            f"{names} are Git LFS pointers and git-lfs is not installed, so the image would "
            "hold the pointers instead of the files; install git-lfs (Debian: apt-get install "
            "git-lfs) — nothing was built"
        )
    failed: list[str] = []
    for rel, oid, size in pointers:
        target = dest / rel
        pointer = target.read_text()
        target.unlink()
        try:
            with target.open("xb") as fh:
                subproc.run(
                    ["git", *repo.args, "lfs", "smudge", "--", rel],
                    timeout=GIT_TIMEOUT_SEC,
                    env=clean_env(env),
                    stdin=pointer,
                    stdout_to=fh,
                    cwd=str(repo.worktree) if repo.worktree else None,
                )
        except ToolFailure:
            failed.append(rel)
            continue
        with target.open("rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        if digest != oid or target.stat().st_size != size:
            failed.append(rel)
    if failed:
        raise SourceMismatch(
            f"git-lfs cannot supply the content of {', '.join(failed[:10])} (its object is not "
            "in this clone and cannot be fetched); run `git lfs fetch` / `git lfs pull` for the "
            "commit — nothing was built"
        )


def _submodule_names(repo: Repo, sha: str, env: Mapping[str, str]) -> dict[str, str]:
    """``path -> name`` from the commit's ``.gitmodules`` (empty when it has none)."""
    try:
        raw = _git_bytes(
            repo,
            ["config", "--null", "--blob", f"{sha}:.gitmodules", "--get-regexp", r"\.path$"],
            env,
        )
    except ToolFailure:
        return {}
    names: dict[str, str] = {}
    for record in raw.split(b"\0"):
        key, _, value = record.partition(b"\n")
        if key.startswith(b"submodule.") and key.endswith(b".path"):
            names[os.fsdecode(value)] = os.fsdecode(key[len(b"submodule.") : -len(b".path")])
    return names


def _submodule_repo(repo: Repo, name: str, rel: str, sha: str, env: Mapping[str, str]) -> Repo:
    """The git directory of submodule ``name`` that holds commit ``sha``; refused naming the
    submodule when this clone has none."""
    candidates = [modules / name for modules in repo.modules]
    if repo.worktree is not None:
        candidates.append(repo.worktree / rel / ".git")
    for candidate in candidates:
        if not candidate.is_dir():
            continue
        sub = Repo((f"--git-dir={candidate}",), (candidate / "modules",), None)
        try:
            commit_time(sub, sha, env, what=f"submodule {rel}")
        except (SourceMismatch, ToolFailure):
            continue
        return sub
    raise SourceMismatch(
        f"submodule {rel} at {sha} is not in this clone (no git directory of it holds that "
        "commit), so the image would lack its files; run `git submodule update --init "
        "--recursive` — nothing was built"
    )


def top_repo(toplevel: Path, env: Mapping[str, str]) -> Repo:
    """The repository of a work tree, with where its submodules' git directories live."""
    raw = _git_bytes(
        Repo(("-C", str(toplevel)), ()), ["rev-parse", "--git-dir", "--git-common-dir"], env
    )
    dirs = [toplevel / os.fsdecode(line) for line in raw.splitlines() if line]
    modules = tuple(dict.fromkeys(d / "modules" for d in dirs))
    return Repo(("-C", str(toplevel)), modules, toplevel)
