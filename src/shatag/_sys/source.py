"""What goes into an image: the commit's tree, the declared build inputs, the source URL.

By default (``build_source: commit``) the build context is the tree of the commit being built,
taken from git itself (``git archive <sha>:<context>``) and unpacked into a scratch directory that
the builder reads, so a modified or untracked file of the work tree never enters an image tagged
with a commit that does not hold it, and a deploy's edit of a tracked file never blocks a build.
The scratch directory holds the commit's own ``.dockerignore``, which docker applies as it always
does. Files the build needs that git does not track (a downloaded binary, a generated bundle) are
declared as ``build_inputs``: copied from the work tree into the scratch context and listed in the
build record with their sha256.

``build_source: worktree`` builds the context directory as it is, after checking that no tracked
file is modified (the check runs before the build starts).

>>> normalize_remote("git@github.com:owner/api.git")
'https://github.com/owner/api'
>>> normalize_remote("https://x-access-token:s3cret@github.com/owner/api.git/")
'https://github.com/owner/api'
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Final, Literal

from shatag._sys import subproc
from shatag.errors import BuildFailure, ConfigError, SourceMismatch, ToolFailure

if TYPE_CHECKING:
    import tarfile

BuildSource = Literal["commit", "worktree"]
BUILD_SOURCES: Final[tuple[BuildSource, ...]] = ("commit", "worktree")
GIT_TIMEOUT_SEC: Final = 600.0
_COPY_BUFSIZE: Final = 1 << 20
_SCP_LIKE: Final = re.compile(r"^(?:[\w.+-]+@)?(?P<host>[\w.-]+):(?P<path>(?!/)[^\s]+)$")
#: ``git config --get-regexp`` pages its output on a terminal: it runs with ``--no-pager``, so
#: a caller's ``GIT_PAGER`` or a pty can never hold it (the chokepoint itself uses pipes).
_REMOTES: Final = r"^remote\..*\.url$"
_URL: Final = re.compile(r"^(?P<scheme>https?|ssh|git|git\+ssh)://(?:[^@/]*@)?(?P<rest>[^\s]+)$")


@dataclass(frozen=True, slots=True)
class BuildInput:
    """One declared build input as it went into the image."""

    path: str
    sha256: str
    size: int

    def as_dict(self) -> dict[str, object]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True, slots=True)
class GitContext:
    """Where a build context sits in its git repository."""

    toplevel: Path
    #: The context's path inside the repository, ``""`` for the top-level, else ``dir/``.
    prefix: str


def git_toplevel(start: Path) -> Path | None:
    """The nearest directory at or above ``start`` holding ``.git`` (a work tree's top-level);
    pure file-system lookup, no git call.

    >>> git_toplevel(Path("/")) is None or True
    True
    """
    current = start.absolute()
    for directory in (current, *current.parents):
        if (directory / ".git").exists():
            return directory
    return None


def rev_parse(context: Path, *args: str, env: Mapping[str, str]) -> str | None:
    """``git -C <context> rev-parse <args>``'s output; ``None`` when git says no (outside a
    work tree, no commit yet). A git that cannot run raises :class:`ToolFailure`."""
    result = subproc.run(
        ["git", "-C", str(context), "rev-parse", *args], timeout=30, env=env, check=False
    )
    return result.stdout if result.returncode == 0 else None


def probe(context: Path, env: Mapping[str, str]) -> GitContext | None:
    """The context's repository and prefix, or ``None`` outside a git work tree."""
    lines = (rev_parse(context, "--show-toplevel", "--show-prefix", env=env) or "").splitlines()
    if not lines:
        return None
    return GitContext(Path(lines[0]), lines[1] if len(lines) > 1 else "")


def head_sha(context: Path, env: Mapping[str, str]) -> str | None:
    """The commit checked out in ``context`` (``None``: not a git checkout, or no commit)."""
    head = rev_parse(context, "HEAD", env=env)
    return head.strip() if head is not None else None


def head_branch(context: Path, env: Mapping[str, str]) -> str | None:
    """The branch checked out in ``context`` (``"HEAD"`` when detached; ``None``: not a git
    checkout, or no commit)."""
    branch = rev_parse(context, "--abbrev-ref", "HEAD", env=env)
    return branch.strip() if branch is not None else None


def check_input_paths(
    paths: Sequence[str], *, where: str = "shatag.build_inputs"
) -> tuple[str, ...]:
    """Validate ``build_inputs``: relative paths inside the context, no ``..``, no duplicates.

    >>> check_input_paths(["bin/busybox", "./dist/"])
    ('bin/busybox', 'dist')
    """
    out: list[str] = []
    for raw in paths:
        if not isinstance(raw, str) or not raw.strip():
            raise ConfigError(f"{where} holds {raw!r}; give paths relative to the build context")
        posix = PurePosixPath(raw.strip())
        if posix.is_absolute() or ".." in posix.parts or str(posix) in (".", ""):
            raise ConfigError(
                f"{where}: {raw!r} must be a path inside the build context (relative, no '..')"
            )
        if str(posix) not in out:
            out.append(str(posix))
    return tuple(out)


def hash_inputs(context: Path, paths: Sequence[str]) -> tuple[BuildInput, ...]:
    """sha256 and size of every declared build input (a directory: each file under it)."""
    found: list[BuildInput] = []
    for rel in paths:
        source = context / rel
        if source.is_dir():
            files = sorted(p for p in source.rglob("*") if p.is_file())
        elif source.is_file():
            files = [source]
        else:
            raise BuildFailure(
                f"build input {rel} does not exist in the build context {context}; create it "
                "before building (it is declared in shatag.build_inputs)"
            )
        for file in files:
            with file.open("rb") as fh:
                digest = hashlib.file_digest(fh, "sha256")
            found.append(
                BuildInput(
                    file.relative_to(context).as_posix(), digest.hexdigest(), file.stat().st_size
                )
            )
    return tuple(found)


def _extract(tar: tarfile.TarFile, dest: Path) -> None:
    """Unpack ``tar`` (a ``git archive`` of the user's own commit) into ``dest``.

    The "tar" filter keeps symlinks and modes and refuses paths outside ``dest``; Pythons
    before 3.11.4 (Debian 12's 3.11.2) lack extraction filters, so there the same refusal is
    made here first (git trees cannot hold such paths, nor a path below a symlink).
    """
    import tarfile  # lazy: only a build from a commit unpacks an archive (issue 17)

    if hasattr(tarfile, "tar_filter"):
        tar.extractall(dest, filter="tar")
        return
    for member in tar.getmembers():
        parts = Path(member.name).parts
        if member.name.startswith("/") or ".." in parts or member.isdev():
            raise SourceMismatch(f"the commit's archive holds an unsafe path {member.name!r}")
    tar.extractall(dest)  # noqa: S202 -- every member was checked just above


def export_commit(
    git: GitContext,
    sha: str,
    dest: Path,
    *,
    inputs: Sequence[str],
    context: Path,
    env: Mapping[str, str],
) -> None:
    """Unpack the commit's tree of the context into ``dest`` and add the build inputs."""
    archive = dest.parent / f"{dest.name}.tar"
    tree = f"{sha}:{git.prefix}"
    try:
        subproc.run(
            ["git", "-C", str(git.toplevel), "archive", "--format=tar", "-o", str(archive), tree],
            timeout=GIT_TIMEOUT_SEC,
            env=env,
        )
    except ToolFailure as exc:
        where = git.prefix.rstrip("/") or "the repository root"
        raise SourceMismatch(
            f"cannot read {where} at commit {sha} from {git.toplevel} ({exc.message}); fetch the "
            "commit (`git fetch`) or pass the SHA of a commit this repository holds"
        ) from None
    dest.mkdir(parents=True)
    import tarfile

    try:
        # 1 MiB copies, not 16 KiB ones: a 50 MB context unpacks with two thirds of the CPU.
        with tarfile.TarFile(archive, copybufsize=_COPY_BUFSIZE) as tar:  # plain tar
            _extract(tar, dest)
    finally:
        archive.unlink(missing_ok=True)
    for rel in inputs:
        target = dest / rel
        if target.exists() or target.is_symlink():
            raise ConfigError(
                f"build input {rel} is tracked in commit {sha}: it is part of the image already; "
                "remove it from shatag.build_inputs"
            )
        source = context / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True)
        else:
            shutil.copy2(source, target)


def check_clean(context: Path, sha: str, env: Mapping[str, str]) -> None:
    """``worktree`` mode: no tracked file of the context may be modified (untracked and ignored
    files, e.g. build inputs, are allowed). Runs before the build starts."""
    status = subproc.run(
        ["git", "-C", str(context), "status", "--porcelain", "--untracked-files=no", "--", "."],
        timeout=GIT_TIMEOUT_SEC,
        env=env,
        check=False,
    )
    changed = [line[3:] for line in status.stdout.splitlines() if line.strip()]
    if status.returncode != 0 or changed:
        first = changed[0] if changed else status.stderr.strip()[:200]
        raise SourceMismatch(
            f"the build context {context} has uncommitted changes ({first} …); with "
            f"build_source: worktree an image tagged {sha} must hold exactly that commit — "
            "commit or stash them, or use the default build_source: commit (nothing was built)"
        )


def check_head(context: Path, sha: str, env: Mapping[str, str]) -> None:
    """``worktree`` mode: the context's HEAD must be ``sha``."""
    head = head_sha(context, env) or ""
    if head != sha:
        raise SourceMismatch(
            f"the build context {context} is checked out at {head or 'no commit'}, not at {sha}; "
            f"check out {sha} (e.g. `git checkout {sha}`) before building it, or use the default "
            "build_source: commit, which builds any commit of the repository"
        )


def normalize_remote(url: str) -> str:
    """A git remote as the web URL of its repository (credentials dropped); ``""`` when the
    remote is not a network URL (a local path).

    >>> normalize_remote("ssh://git@gitlab.example.com:2222/team/api.git")
    'https://gitlab.example.com/team/api'
    >>> normalize_remote("/srv/git/api.git")
    ''
    """
    text = url.strip()
    match = _URL.match(text)
    if match:
        rest = match.group("rest")
        host, _, path = rest.partition("/")
        if match.group("scheme") != "https" and match.group("scheme") != "http":
            host = host.split(":", 1)[0]  # an ssh port is not the web port
        scheme = "http" if match.group("scheme") == "http" else "https"
    else:
        scp = _SCP_LIKE.match(text)
        if not scp or "/" in scp.group("host"):
            return ""
        host, path, scheme = scp.group("host"), scp.group("path"), "https"
    path = path.strip("/")
    path = path.removesuffix(".git").strip("/")
    if not host or not path:
        return ""
    return f"{scheme}://{host}/{path}"


def source_url(
    configured: str, *, env: Mapping[str, str], context: Path, git: GitContext | None
) -> str:
    """The ``org.opencontainers.image.source`` label: the configured URL, else the GitHub
    repository of the run (``GITHUB_SERVER_URL``/``GITHUB_REPOSITORY``), else the ``origin``
    (or first) git remote; ``""`` when none is known (the label is then left out)."""
    if configured:
        return configured
    server, repo = env.get("GITHUB_SERVER_URL", ""), env.get("GITHUB_REPOSITORY", "")
    if server and repo:
        return f"{server.rstrip('/')}/{repo}"
    if git is None:
        return ""
    listed = subproc.run(
        ["git", "--no-pager", "-C", str(context), "config", "--get-regexp", _REMOTES],
        timeout=30,
        env=env,
        check=False,
    ).stdout.splitlines()
    urls: dict[str, str] = {}
    for line in listed:
        key, _, value = line.partition(" ")
        urls.setdefault(key.removeprefix("remote.").removesuffix(".url"), value)
    if not urls:
        return ""
    return normalize_remote(urls.get("origin") or next(iter(urls.values())))


def scratch_name(sha: str) -> str:
    return f"shatag-context-{sha[:12]}-{os.getpid()}"
