"""GitOps write-back (issue 23, item 3): the edited files committed and pushed to the branch of
the GitOps repository that Argo CD or Flux watches, as part of the target's ``apply``.

``git_push: true`` on a ``kustomize`` or ``helm_values`` target; the targets of one deploy whose
files sit in the same clone and push to the same ``git_remote``/``git_branch`` make **one**
commit. The commit is built on the remote branch's head as just fetched, not on the clone's
HEAD: ``prepare`` fetches the head and renders each edit on the file *as the branch has it*
(a stale clone is not an error), ``apply`` writes the files locally (the kind's checks run on
them), then commits with plumbing (a temporary index: the clone's HEAD, index and branches are
never touched) and pushes without force. A push that lost a race (the branch moved) is
refetched, re-rendered on the new head and retried, as the git ledger does. A failed push fails
the deploy: the local files are put back and nothing was published. ``restore`` after a push
(a later target failed) pushes a commit that puts the files back, where the branch still holds
what was pushed.

The push is part of ``apply``, not ``commit``: ``commit`` runs after history recorded the deploy
as done, and a push that failed then would leave history saying "deployed" while the branch
Argo CD applies says otherwise -- the very failure this exists to prevent.

>>> commit_message("production", "a" * 40, "sha256:" + "b" * 64, ["k.yaml"]).splitlines()[0]
'shatag: production -> aaaaaaaaaaaa (sha256:bbbbbbbbbbbb)'
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from shatag._sys import subproc
from shatag._sys.gitcli import DENIED_WORDS, git_argv, git_env, is_conflict, tail
from shatag.core import ImageRef
from shatag.errors import ConfigError, DeployFailed, ToolFailure, ToolMissing, ToolTimeout

log = logging.getLogger("shatag.targets")

#: The configuration keys of write-back, on each GitOps kind.
GIT_KEYS: Final = frozenset({"git_push", "git_remote", "git_branch"})
#: Pushes that lost a race before the deploy gives up (the git ledger's bound).
PUSH_RETRIES: Final = 12
GIT_TIMEOUT_SEC: Final = 120.0


@dataclass(frozen=True, slots=True)
class GitPush:
    """Where a target's edit is pushed: ``remote`` and ``branch`` (``""``: the clone's current
    branch)."""

    remote: str = "origin"
    branch: str = ""


def parse_git(where: str, raw: Mapping[str, Any]) -> GitPush | None:
    """The write-back settings of a target (``None``: no write-back)."""
    push = raw.get("git_push", False)
    if not isinstance(push, bool):
        raise ConfigError(f"{where}.git_push must be true or false")
    remote, branch = raw.get("git_remote", "origin"), raw.get("git_branch", "")
    if not push:
        if "git_remote" in raw or "git_branch" in raw:
            raise ConfigError(f"{where}: git_remote and git_branch need git_push: true")
        return None
    for key, value in (("git_remote", remote), ("git_branch", branch)):
        if not isinstance(value, str) or value.startswith("-") or any(c.isspace() for c in value):
            raise ConfigError(f"{where}.{key} must be a git remote/branch name, not {value!r}")
    if not remote:
        raise ConfigError(f"{where}.git_remote must name a remote")
    return GitPush(remote=remote, branch=branch)


def commit_message(env_name: str, sha: str, digest: str, files: Sequence[str]) -> str:
    """The write-back commit's message: environment, SHA and digest, then the files."""
    head = f"shatag: {env_name} -> {sha[:12]} ({digest[:19]})"
    body = [f"environment: {env_name}", f"sha: {sha}", f"digest: {digest}", "files:"]
    return "\n".join([head, "", *body, *(f"  {f}" for f in files)]) + "\n"


class Clone:
    """The GitOps repository's clone at ``top``, pushing to ``remote``/``branch``."""

    def __init__(self, top: Path, push: GitPush, env: Mapping[str, str], label: str) -> None:
        self.top = top
        self.remote = push.remote
        self.env = dict(env)
        self.label = label
        self.branch = push.branch or self._current_branch()
        self.pushes = 0

    @classmethod
    def of(cls, path: Path, push: GitPush, env: Mapping[str, str], label: str) -> Clone:
        """The clone that holds ``path`` (a ConfigError when it is in none)."""
        argv = git_argv(
            Path(os.path.dirname(os.path.realpath(path))), "rev-parse", "--show-toplevel"
        )
        try:
            top = subproc.run(argv, timeout=GIT_TIMEOUT_SEC, env=git_env(env)).stdout.strip()
        except ToolMissing:
            raise ConfigError(f"{label}: git_push needs the git program on PATH") from None
        except ToolFailure:
            raise ConfigError(
                f"{label}: git_push needs {path} to be in a git clone of the GitOps repository"
            ) from None
        return cls(Path(top), push, env, label)

    @property
    def where(self) -> str:
        return f"{self.remote}/{self.branch}"

    def git(
        self, *args: str, stdin: str = "", check: bool = True, index: str = ""
    ) -> subproc.Result:
        env = git_env(self.env) | ({"GIT_INDEX_FILE": index} if index else {})
        try:
            return subproc.run(
                git_argv(self.top, *args), timeout=GIT_TIMEOUT_SEC, env=env, stdin=stdin,
                check=check,
            )  # fmt: skip
        except (ToolFailure, ToolTimeout) as exc:
            raise DeployFailed(f"{self.label}: git {args[0]} in {self.top} failed: {exc}") from None

    def _current_branch(self) -> str:
        result = self.git("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        if result.returncode != 0 or not result.stdout.strip():
            raise ConfigError(
                f"{self.label}: the clone {self.top} is on no branch (detached HEAD); set "
                "git_branch to the branch Argo CD or Flux watches"
            )
        return result.stdout.strip()

    def relative(self, path: Path) -> str:
        return Path(os.path.realpath(path)).relative_to(os.path.realpath(self.top)).as_posix()

    def fetch_head(self) -> str:
        """Fetch the branch onto its remote-tracking ref; its commit."""
        ref = f"refs/remotes/{self.remote}/{self.branch}"
        result = self.git(
            "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", self.remote,
            f"+refs/heads/{self.branch}:{ref}", check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise DeployFailed(
                f"{self.label}: cannot fetch {self.branch!r} from {self.remote!r} in "
                f"{self.top}: {tail(result.stderr)}; nothing was changed"
            )
        return self.git("rev-parse", "--verify", f"{ref}^{{commit}}").stdout.strip()

    def read(self, commit: str, rel: str) -> str | None:
        """The file ``rel`` as ``commit`` has it (``None``: absent)."""
        result = self.git("cat-file", "blob", f"{commit}:{rel}", check=False)
        return result.stdout if result.returncode == 0 else None

    def commit(self, parent: str, files: Mapping[str, str], message: str) -> str:
        """A commit on ``parent`` with ``files`` (path → content) changed, built in a temporary
        index (a file's mode is kept)."""
        with tempfile.TemporaryDirectory(prefix="shatag-index-") as tmp:
            index = str(Path(tmp) / "index")
            self.git("read-tree", parent, index=index)
            for rel, content in files.items():
                blob = self.git("hash-object", "-w", "--stdin", stdin=content).stdout.strip()
                listed = self.git("ls-tree", parent, "--", rel).stdout.split()
                mode = listed[0] if listed else "100644"
                self.git(
                    "update-index", "--add", "--cacheinfo", f"{mode},{blob},{rel}", index=index
                )
            tree = self.git("write-tree", index=index).stdout.strip()
        return self.git(
            "commit-tree", "--no-gpg-sign", tree, "-p", parent, "-m", message
        ).stdout.strip()

    def push(self, commit: str) -> bool:
        """Push ``commit`` to the branch without force: False when the branch moved (refetch
        and retry), a DeployFailed when the remote refused or could not be reached."""
        self.pushes += 1
        result = self.git(
            "push", "--porcelain", "--no-verify", "--quiet", self.remote,
            f"{commit}:refs/heads/{self.branch}", check=False,
        )  # fmt: skip
        if result.returncode == 0:
            return True
        rejected = [line for line in result.stdout.splitlines() if line.startswith("!")]
        if rejected and all(is_conflict(line) for line in rejected):
            return False
        text = f"{result.stdout}\n{result.stderr}"
        hint = (
            " (the runner needs push access to the GitOps repository: a deploy key or token with "
            "contents: write)"
            if rejected or any(w in text.lower() for w in DENIED_WORDS)
            else ""
        )
        raise DeployFailed(
            f"{self.label}: git push to {self.where} failed: {tail(text)}{hint}; the local files "
            "are put back"
        )


class Part(Protocol):
    """A file edit that can be pushed (:class:`shatag.targets.files.FileTarget` or
    :class:`~shatag.targets.files.SharedFile`)."""

    path: Path

    @property
    def label(self) -> str: ...

    @property
    def new(self) -> str:
        """The content ``apply`` writes (after ``prepare``)."""
        ...

    def plan(self, image: ImageRef) -> str: ...

    def prepare(self, image: ImageRef) -> None: ...

    def rebase(self, current: str) -> None:
        """Render the prepared image's edit on ``current`` (the branch's version) instead."""
        ...

    def apply(self) -> None: ...

    def restore(self) -> None: ...

    def commit(self) -> None: ...

    def journal(self) -> dict[str, Any]: ...


class PushGroup:
    """The file edits of one deploy that go to one clone's ``remote``/``branch``: rendered on
    the branch's head once every member is prepared, committed and pushed as **one** commit when
    the last member is applied (see the module docstring). Each member is a :class:`PushedFile`
    in the deploy's list, so each has its own journal entry (checked against its own target)."""

    def __init__(self, clone: Clone, env_name: str) -> None:
        self.clone = clone
        self.env_name = env_name
        self.parts: list[Part] = []
        self._image: ImageRef | None = None
        self._head = ""
        self.base: dict[str, str] = {}
        #: After a push: path -> (what was pushed, what the branch had before).
        self.pushed: dict[str, tuple[str, str]] = {}

    @property
    def label(self) -> str:
        return " + ".join(p.label for p in self.parts)

    def rel(self, part: Part) -> str:
        return self.clone.relative(part.path)

    def prepared(self, part: Part, image: ImageRef) -> None:
        """A member is prepared; after the last one (members are prepared in order), fetch the
        head and render every member's edit on it."""
        self._image = image
        if part is self.parts[-1]:
            self._rebase(self.clone.fetch_head())

    def _rebase(self, head: str) -> None:
        """Render every edit on the files as ``head`` has them."""
        self._head, self.base = head, {}
        for part in self.parts:
            rel = self.rel(part)
            base = self.clone.read(head, rel)
            if base is None:
                raise ConfigError(
                    f"{part.label}: {rel} is not on {self.clone.where}; commit and push it "
                    "before shatag pushes edits of it"
                )
            self.base[rel] = base
            part.rebase(base)

    def publish(self) -> None:
        """Commit every member's file on the head and push it, retrying a lost race."""
        assert self._image is not None  # noqa: S101 -- apply() after prepare()
        image = self._image
        for attempt in range(PUSH_RETRIES):
            files = {self.rel(part): part.new for part in self.parts}
            if all(self.base[rel] == text for rel, text in files.items()):
                log.info("%s: %s already holds this release; nothing to push", self.label,
                         self.clone.where)  # fmt: skip
                return
            message = commit_message(self.env_name, image.sha, image.digest, list(files))
            commit = self.clone.commit(self._head, files, message)
            if self.clone.push(commit):
                self.pushed = {rel: (text, self.base[rel]) for rel, text in files.items()}
                log.info("%s: pushed %s to %s", self.label, commit[:12], self.clone.where)
                return
            log.info("%s: %s moved; fetching it and retrying", self.label, self.clone.where)
            pause(attempt)
            self._rebase(self.clone.fetch_head())
            for part in self.parts:
                part.apply()  # the local files follow the new head
        raise DeployFailed(
            f"{self.label}: {self.clone.where} kept moving: {PUSH_RETRIES} pushes lost the race; "
            "the local files are put back"
        )

    def take_back(self) -> None:
        """Undo the push (once, whichever member's restore comes first)."""
        if self.pushed:
            pushed, self.pushed = self.pushed, {}
            log.info("%s: %s", self.label, unpublish(self.clone, pushed, self.env_name))


class PushedFile:
    """One member of a :class:`PushGroup`: its file edit, pushed with the others."""

    #: A pushed edit is always made (a branch that already holds it gets no new commit).
    unchanged: bool = False

    def __init__(self, part: Part, group: PushGroup) -> None:
        self.part = part
        self.group = group
        group.parts.append(part)

    @property
    def label(self) -> str:
        return self.part.label

    @property
    def path(self) -> Path:
        return self.part.path

    def plan(self, image: ImageRef) -> str:
        return self.part.plan(image)  # a file target's plan says where it is pushed

    def prepare(self, image: ImageRef) -> None:
        self.part.prepare(image)  # the local file: its own checks, before anything is fetched
        self.group.prepared(self.part, image)

    def apply(self) -> None:
        self.part.apply()
        if self.part is self.group.parts[-1]:
            self.group.publish()

    def restore(self) -> None:
        try:
            self.group.take_back()
        finally:
            self.part.restore()

    def commit(self) -> None:
        self.group.pushed = {}
        self.part.commit()

    def journal(self) -> dict[str, Any]:
        """The file's entry, and what ``recover`` needs to take its push back (a crash after
        the push and before history recorded it): remote, branch, what is pushed and what the
        branch had. The clone is found from the file's path, never taken from the entry."""
        clone, rel = self.group.clone, self.group.rel(self.part)
        git = {"remote": clone.remote, "branch": clone.branch, "pushed": self.part.new,
               "before": self.group.base.get(rel)}  # fmt: skip
        return {**self.part.journal(), "git": git}


def unpublish(clone: Clone, pushed: Mapping[str, tuple[str, str | None]], env_name: str) -> str:
    """Push a commit that puts back each file (path -> (pushed, before)) the branch still
    holds as pushed; a file someone changed since is left as it is. What was done."""
    for attempt in range(PUSH_RETRIES):
        head = clone.fetch_head()
        files = {
            rel: before for rel, (text, before) in pushed.items()
            if before is not None and clone.read(head, rel) == text
        }  # fmt: skip
        if not files:
            return f"{clone.where} no longer holds what was pushed; left as it is"
        message = f"shatag: {env_name}: take back the failed deploy's edit\n"
        if clone.push(clone.commit(head, files, message)):
            return f"pushed the previous {', '.join(files)} to {clone.where}"
        pause(attempt)
    raise DeployFailed(f"{clone.label}: could not push the previous files to {clone.where}")


def recover_pushed(entry: Mapping[str, Any], env: Mapping[str, str], env_name: str) -> str:
    """Take back the push of a deploy killed before history recorded it (its journal entry),
    in the clone that holds the entry's file."""
    git = entry["git"]
    push = GitPush(remote=str(git["remote"]), branch=str(git["branch"]))
    path = Path(str(entry["path"]))
    clone = Clone.of(path, push, env, f"{entry.get('kind')}:{path}")
    before = git.get("before")
    pushed = {clone.relative(path): (str(git["pushed"]), None if before is None else str(before))}
    return unpublish(clone, pushed, env_name)


def matches_push(entry: Mapping[str, Any], push: GitPush | None) -> bool:
    """A journal entry's write-back is the target's own: none when the target has none, else
    the same remote (and branch, when the target names one)."""
    git = entry.get("git")
    if push is None or not isinstance(git, Mapping):
        return push is None and git is None
    return git.get("remote") == push.remote and (
        not push.branch or git.get("branch") == push.branch
    )


def pause(attempt: int) -> None:
    """A jittered pause between two pushes that lost a race."""
    time.sleep(random.uniform(0.05, 0.2) * min(attempt + 1, 5))  # noqa: S311 -- jitter


__all__ = [
    "GIT_KEYS", "Clone", "GitPush", "PushGroup", "PushedFile", "commit_message", "matches_push",
    "parse_git", "recover_pushed",
]  # fmt: skip
