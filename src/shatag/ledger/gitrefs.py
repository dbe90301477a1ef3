"""The git plumbing under the git ledger (:mod:`shatag.ledger.git`): commits built without a
checkout, compare-and-swap pushes, fetches of ref namespaces, blob reads in one call.

Every call goes through :func:`shatag._sys.subproc.run` (argument list, timeout)
 as ``git -C <repo>``
with no prompt, no background gc and a fixed committer, so it works on a CI runner without a
git identity. Objects are written with ``hash-object``/``mktree``/``commit-tree``: the work
tree, the index and HEAD are never touched.

>>> is_conflict("!\\tabc:refs/shatag/p\\t[rejected] (stale info)")
True
>>> is_conflict("!\\tabc:refs/shatag/p\\t[remote rejected] (pre-receive hook declined)")
False
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from shatag._sys import subproc
from shatag._sys.gitcli import DENIED_WORDS, git_argv, git_env, is_conflict, tail
from shatag.errors import LedgerDenied, LedgerUnavailable, ToolFailure, ToolMissing, ToolTimeout

log = logging.getLogger("shatag.ledger")


class GitRefs:
    """Refs of ``remote`` seen from the clone at ``repo``; counts its fetches and pushes."""

    def __init__(self, repo: Path, remote: str, *, env: Mapping[str, str], timeout: float) -> None:
        self.repo = repo
        self.remote = remote
        self.timeout = timeout
        self.env = dict(env)
        self.fetches = 0
        self.pushes = 0
        self.conflicts = 0

    def git(
        self, *args: str, stdin: str = "", check: bool = True, raise_timeout: bool = False
    ) -> subproc.Result:
        """Run ``git -C <repo> <args>``; a failure (or, unless ``raise_timeout``, a timeout)
        is LEDGER_UNAVAILABLE."""
        env = git_env(self.env)
        argv = git_argv(self.repo, *args)
        try:
            return subproc.run(argv, timeout=self.timeout, env=env, stdin=stdin, check=check)
        except ToolMissing:
            raise LedgerUnavailable(
                "state_backend git needs the git program on PATH; install git or use "
                "state_backend: local"
            ) from None
        except ToolTimeout:
            if raise_timeout:
                raise
            raise LedgerUnavailable(
                f"git {args[0]} did not finish within {self.timeout:g}s (state remote "
                f"{self.remote!r}); retry, or raise shatag.tool_timeout_sec"
            ) from None
        except ToolFailure as exc:
            hint = ""
            if "not a git repository" in exc.output:
                hint = (
                    f"; state_backend git runs in a git clone of the application (with the "
                    f"remote {self.remote!r}): run shatag from one, or use state_backend: local"
                )
            raise LedgerUnavailable(
                f"git {args[0]} failed in {self.repo}: {exc.message}{hint}"
            ) from None

    def commit(self, content: str, name: str, parent: str | None, message: str) -> str:
        """A commit whose tree holds the file ``name`` with ``content`` (loose objects)."""
        blob = self.git("hash-object", "-w", "--stdin", stdin=content).stdout.strip()
        tree = self.git("mktree", stdin=f"100644 blob {blob}\t{name}\n").stdout.strip()
        argv = ["commit-tree", "--no-gpg-sign", tree, "-m", message]
        if parent:
            argv[2:2] = ["-p", parent]
        return self.git(*argv).stdout.strip()

    def push(self, refspecs: Sequence[tuple[str, str, str]]) -> bool:
        """Push ``(new commit or "" to delete, ref, expected old value or "" for absent)``
        with a lease on each ref. False when a lease did not hold (refetch and retry); an
        error when the remote refused (LEDGER_DENIED) or could not be reached.

        ``--no-verify``: the user's own pre-push hooks are for their branches, not for this.
        """
        argv = ["push", "--porcelain", "--no-verify", "--quiet"]
        argv += [f"--force-with-lease={ref}:{old}" for _new, ref, old in refspecs]
        argv.append(self.remote)
        argv += [f"{new}:{ref}" for new, ref, _old in refspecs]
        self.pushes += 1
        try:
            result = self.git(*argv, check=False, raise_timeout=True)
        except ToolTimeout:
            # Ambiguous: it may have landed. Callers refetch and check before retrying.
            log.warning("git push to %s timed out after %gs; refetching", self.remote, self.timeout)
            self.conflicts += 1
            return False
        if result.returncode == 0:
            return True
        text = f"{result.stdout}\n{result.stderr}"
        rejected = [line for line in result.stdout.splitlines() if line.startswith("!")]
        if rejected and all(is_conflict(line) for line in rejected):
            self.conflicts += 1
            return False
        refs = ", ".join(ref for _new, ref, _old in refspecs)
        detail = tail(text)
        if rejected or any(w in text.lower() for w in DENIED_WORDS):
            raise LedgerDenied(
                f"the state remote {self.remote!r} refused to update {refs}: {detail}. The "
                "ledger needs push access to refs/shatag*/ (in GitHub Actions: permissions: "
                "contents: write, and actions/checkout with persist-credentials)"
            )
        raise LedgerUnavailable(
            f"git push of {refs} to the state remote {self.remote!r} failed: {detail}"
        )

    def fetch(self, namespaces: Sequence[str]) -> list[tuple[str, str]]:
        """Mirror the remote's refs under each namespace (``refs/x/``) onto the same local
        refs, pruning what the remote no longer has, in one ``git fetch``; then list them as
        ``(commit, ref)``, most recently committed first."""
        self.fetches += 1
        result = self.git(
            "fetch", "--quiet", "--no-tags", "--prune", "--no-write-fetch-head", self.remote,
            *(f"+{ns}*:{ns}*" for ns in namespaces), check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise LedgerUnavailable(
                f"cannot fetch the deployment ledger from {self.remote!r} in {self.repo} "
                f"({tail(result.stderr)}); state_backend git needs a git clone of the "
                "application with that remote"
            )
        listing = self.git(
            "for-each-ref", "--sort=-committerdate", "--format=%(objectname) %(refname)",
            *namespaces,
        ).stdout  # fmt: skip
        pairs = (line.partition(" ") for line in listing.splitlines())
        return [(oid, ref) for oid, _, ref in pairs if oid and ref]

    def fetch_ref(self, ref: str) -> str:
        """Mirror one ref of the remote; its commit, or '' when the remote has none."""
        self.fetches += 1
        result = self.git(
            "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", self.remote,
            f"+{ref}:{ref}", check=False,
        )  # fmt: skip
        if result.returncode != 0:
            if "couldn't find remote ref" in result.stderr.lower():
                return ""
            raise LedgerUnavailable(
                f"cannot fetch {ref} from {self.remote!r}: {tail(result.stderr)}"
            )
        return self.git("rev-parse", "--verify", "-q", f"{ref}^{{commit}}").stdout.strip()

    def blobs(self, specs: Sequence[str]) -> list[str | None]:
        """The content of each ``<commit>:<path>`` (``None`` where missing), in one call."""
        if not specs:
            return []
        out = self.git("cat-file", "--batch", stdin="".join(f"{s}\n" for s in specs)).stdout
        data = out.encode("utf-8")
        found: list[str | None] = []
        pos = 0
        for _spec in specs:
            end = data.find(b"\n", pos)
            if end < 0:
                break
            header = data[pos:end].decode("utf-8", "replace").split()
            pos = end + 1
            if len(header) != 3 or not header[2].isdigit():
                found.append(None)  # "<spec> missing" / "ambiguous"
                continue
            size = int(header[2])
            found.append(data[pos : pos + size].decode("utf-8", "replace"))
            pos += size + 1
        return found + [None] * (len(specs) - len(found))


__all__ = ["GitRefs", "is_conflict", "tail"]
