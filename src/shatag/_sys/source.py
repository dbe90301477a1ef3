"""What goes into an image: the commit's tree, the declared build inputs, the source URL.

By default (``build_source: commit``) the build context is the tree of the commit being built,
taken from git itself (``git archive <sha>:<context>``) and unpacked into a scratch directory that
the builder reads, so a modified or untracked file of the work tree never enters an image tagged
with a commit that does not hold it, and a deploy's edit of a tracked file never blocks a build.
The scratch directory holds the commit's own ``.dockerignore``, which docker applies as it always
does. Files the build needs that git does not track (a downloaded binary, a generated bundle) are
declared as ``build_inputs``: copied from the work tree into the scratch context and listed in the
build record with their sha256.

The commit's tree is written byte for byte (:mod:`shatag._sys.gittree`): submodules at their
recorded SHAs, LFS content, no ``.gitattributes`` export rule and no git configuration of the
builder changes a byte (issue 24, item 1). A build input never brings in anything from outside
the context: a symlink leaving it is refused (issue 24, item 2).

``build_source: worktree`` builds the context directory as it is, after checking that no tracked
file is modified (the check runs before the build starts). ``build_source: directory`` builds a
directory that is not a git checkout as it is; it must be set explicitly, and such an image never
goes to the canonical repository (nothing proves which commit it holds).

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
from shatag.errors import BuildFailure, ConfigError, InvalidInput, SourceMismatch

if TYPE_CHECKING:
    from shatag._sys import gittree

BuildSource = Literal["commit", "worktree", "directory"]
BUILD_SOURCES: Final[tuple[BuildSource, ...]] = ("commit", "worktree", "directory")
GIT_TIMEOUT_SEC: Final = 600.0
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


def _inside(context: Path, path: Path, rel: str) -> None:
    """CONFIG_ERROR unless ``path`` (symlinks resolved) lies inside ``context``."""
    real = path.resolve()
    if not real.is_relative_to(context.resolve()):
        raise ConfigError(
            f"build input {rel} is a symlink to {real}, outside the build context {context}; "
            "a build input never brings anything from outside the context into the image — "
            "copy the file into the context instead (nothing was built)"
        )


def _input_files(context: Path, rel: str) -> list[Path]:
    """The files of one declared input, every symlink on the way checked to stay inside."""
    source = context / rel
    _inside(context, source, rel)
    if source.is_dir():
        files = []
        for path in sorted(source.rglob("*")):
            if path.is_symlink():
                _inside(context, path, path.relative_to(context).as_posix())
            if path.is_file():
                files.append(path)
        return files
    if source.is_file():
        return [source]
    raise BuildFailure(
        f"build input {rel} does not exist in the build context {context}; create it "
        "before building (it is declared in shatag.build_inputs)"
    )


def hash_inputs(context: Path, paths: Sequence[str]) -> tuple[BuildInput, ...]:
    """sha256 and size of every declared build input (a directory: each file under it); a
    symlink out of the context is refused before anything is read."""
    found: list[BuildInput] = []
    for rel in paths:
        for file in _input_files(context, rel):
            with file.open("rb") as fh:
                digest = hashlib.file_digest(fh, "sha256")
            found.append(
                BuildInput(
                    file.relative_to(context).as_posix(), digest.hexdigest(), file.stat().st_size
                )
            )
    return tuple(found)


def require_commit(git: GitContext, sha: str, env: Mapping[str, str]) -> None:
    """``sha`` names a commit object of the repository (not a tree, a tag, a blob)."""
    from shatag._sys import gittree  # lazy: a deploy reads only the build settings here

    repo = gittree.Repo(("-C", str(git.toplevel)), ())
    gittree.commit_time(repo, sha, env, what=str(git.toplevel))


def main_branch_holding(
    git: GitContext, sha: str, branches: Sequence[str], env: Mapping[str, str]
) -> str | None:
    """The first local or remote-tracking head of a ``main_branches`` branch from which
    ``sha`` is reachable (``refs/heads/main``, ``refs/remotes/origin/main``), else ``None``."""
    from shatag._sys import gittree

    patterns = [p for b in branches for p in (f"refs/heads/{b}", f"refs/remotes/*/{b}")]
    argv = ["git", "-C", str(git.toplevel), "for-each-ref", "--format=%(refname)"]
    result = subproc.run(
        [*argv, "--contains", sha, *patterns],
        timeout=GIT_TIMEOUT_SEC,
        env=gittree.clean_env(env),
        check=False,
    )
    refs = result.stdout.split() if result.returncode == 0 else []
    return refs[0] if refs else None


def check_route(
    git: GitContext | None,
    sha: str,
    branch: str,
    main_branches: Sequence[str],
    env: Mapping[str, str],
) -> None:
    """FR-016 by where the commit is: a main branch is claimed only for a commit reachable
    from a main branch's head; a directory build is never canonical (issue 24, items 1-2)."""
    if git is None:
        raise InvalidInput(
            f"--branch={branch} is a main branch, but build_source: directory builds a "
            "directory, not a commit, and never goes to the canonical repository; pass the "
            "branch the work is on (e.g. --branch=local), which goes to staging"
        )
    if main_branch_holding(git, sha, main_branches, env) is None:
        heads = ", ".join(main_branches)
        raise InvalidInput(
            f"--branch={branch} is a main branch, but commit {sha} is not reachable from {heads} "
            f"(local or remote-tracking heads) in {git.toplevel}: it is not on {branch}. "
            "Pass the branch it is on (--branch=NAME, it goes to staging), or merge it first "
            "(nothing was built)"
        )


def export_commit(
    git: GitContext,
    sha: str,
    dest: Path,
    *,
    inputs: Sequence[str],
    context: Path,
    env: Mapping[str, str],
) -> tuple[gittree.Submodule, ...]:
    """Write the commit's tree of the context into ``dest`` byte for byte and add the build
    inputs; the submodules written, with their recorded SHAs."""
    from shatag._sys import gittree

    repo = gittree.top_repo(git.toplevel, env)
    try:
        submodules = gittree.export_tree(repo, sha, git.prefix, dest, env=env)
    except SourceMismatch as exc:
        raise SourceMismatch(f"{exc.message} ({git.toplevel})") from None
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
    return submodules


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
