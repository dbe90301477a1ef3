"""Shared plumbing of the file targets (SDL, tfvars, kustomize, Helm values): the spec's common
properties and parse prelude, snapshot, atomic write, restore, diff.

A file kind's module holds only what is its own: its spec fields, the checks of its own keys
(``build`` and ``needs`` of :func:`parse_file_spec`) and ``render``; :func:`file_kind` makes its
:class:`~shatag.targets.TargetKind`.
"""

from __future__ import annotations

import abc
import contextlib
import difflib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, Self, TypeVar

from shatag._sys.fs import atomic_write_text, real_path
from shatag.core import ImageRef, PinFormat
from shatag.errors import ConfigError, DeployFailed
from shatag.targets import Target, TargetContext, TargetSpec
from shatag.targets._spec import KindSpec, converted, names_in_journal, parse_prelude

if TYPE_CHECKING:
    from shatag.targets import Observed, TargetKind
    from shatag.targets.writeback import GitPush, PushGroup


class FileSpec(TargetSpec, Protocol):
    """What every file kind's spec has: a target spec with the file it edits."""

    @property
    def path(self) -> str: ...

    @property
    def git(self) -> GitPush | None: ...


class FileKindSpec(KindSpec):
    """The properties every file kind's spec shares (a base of its frozen dataclass, which
    declares ``path``): ``<kind>:<path>`` as its label, ``path`` as the file it edits."""

    __slots__ = ()
    path: str  # a field of each subclass's dataclass (only declared here: no slot, no default)

    @property
    def label(self) -> str:
        return f"{self.KIND_NAME}:{self.path}"

    @property
    def edits(self) -> Path | None:
        return Path(self.path).absolute()

    @property
    def git(self) -> GitPush | None:
        """Where the edit is pushed (``git_push``; default: nowhere, the file is only edited)."""
        return None

    def matches_journal(self, entry: Mapping[str, Any]) -> bool:
        """An entry of this kind about the same file (or one that names no file), pushed where
        this target pushes (or not at all, like it)."""
        from shatag.targets.writeback import matches_push  # lazy: only git_push targets push

        return names_in_journal(entry, self.KIND_NAME, path=self.path) and matches_push(
            entry, self.git
        )


F = TypeVar("F", bound=FileSpec)


def parse_file_spec(
    where: str,
    raw: Mapping[str, Any],
    keys: frozenset[str],
    name: str,
    build: Callable[[PinFormat], F],
    *,
    needs: str = "a path",
) -> F:
    """The parse every file kind starts with: no unknown key, a valid ``pin``, the spec built
    by ``build(pin)`` (a wrongly typed value is a ConfigError), and a non-empty ``path``
    (``needs`` says what the path must name)."""
    pin = parse_prelude(where, raw, keys, name)
    spec = converted(where, lambda: build(pin))
    if not spec.path:
        raise ConfigError(f"{where}: a {name} target needs {needs}")
    return spec


class _FileEdit(abc.ABC):
    """One file re-rendered for the new image and written atomically, undone as a whole: the
    life cycle that :class:`FileTarget` (one target) and :class:`SharedFile` (several targets
    on one file) share."""

    path: Path
    #: A file edit is always made, even when the content stays the same.
    unchanged: bool = False

    def __init__(self) -> None:
        self._previous: str | None = None
        self._new: str | None = None
        self._image: ImageRef | None = None
        self._applied = False

    @property
    @abc.abstractmethod
    def label(self) -> str: ...

    @property
    @abc.abstractmethod
    def _kind(self) -> str:
        """The kind that the journal entry names (its ``recover`` restores the file)."""

    @abc.abstractmethod
    def _read(self) -> str | None:
        """The file's current content (``None``: absent)."""

    @abc.abstractmethod
    def _render(self, current: str | None, image: ImageRef) -> str:
        """The new file content for ``image``."""

    def plan(self, image: ImageRef) -> str:
        """The change as a unified diff of the file (empty when nothing would change)."""
        current = self._read()
        return _diff(self.path, current, self._render(current, image))

    @abc.abstractmethod
    def _verify(self) -> None:
        """After the write: check that the edit takes effect (the kustomize kind renders the
        kustomization); raise to refuse it (the file is then put back)."""

    @property
    def new(self) -> str:
        """The content ``apply`` writes."""
        if self._new is None:
            raise RuntimeError("new before prepare()")
        return self._new

    def prepare(self, image: ImageRef) -> None:
        self._image = image
        self._previous = self._read()
        self._new = self._render(self._previous, image)

    def rebase(self, current: str) -> None:
        """Render the prepared edit on ``current`` (the GitOps branch's version of the file,
        :mod:`shatag.targets.writeback`) instead of the local file; ``restore`` still puts the
        local file back."""
        if self._image is None:
            raise RuntimeError("rebase() before prepare()")
        self._new = self._render(current, self._image)

    def apply(self) -> None:
        if self._new is None:
            raise RuntimeError("apply() before prepare()")
        _write(self.label, self.path, self._new)
        self._applied = True
        try:
            self._verify()
        except BaseException:
            self.restore()  # refused: nothing stays written
            raise

    def restore(self) -> None:
        if self._applied:
            _restore_one(self.journal())
            self._applied = False

    def commit(self) -> None:
        self._applied = False

    def journal(self) -> dict[str, Any]:
        return {"kind": self._kind, "path": str(self.path), "previous": self._previous}


class FileTarget(_FileEdit, Generic[F]):
    """A text file whose content is re-rendered for the new image and written atomically."""

    def __init__(self, spec: F, ctx: TargetContext | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.path = Path(spec.path).absolute()
        #: The deploy's context (its environment name and variables: the write-back's git).
        self.ctx = ctx

    @classmethod
    def make(cls, spec: F, ctx: TargetContext) -> Self:
        """The kind's ``make``."""
        return cls(spec, ctx)

    def verify(self) -> None:
        """After the write: refuse (raise) an edit that does not take effect (default: every
        edit does)."""

    def plan(self, image: ImageRef) -> str:
        """The diff of the local file, and where ``git_push`` sends it."""
        diff = super().plan(image)
        push = self.spec.git
        if push is None or not diff:
            return diff
        branch = push.branch or "the clone's branch"
        return diff + f"(then committed and pushed to {push.remote}/{branch}, without force)\n"

    def _verify(self) -> None:
        self.verify()

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def _kind(self) -> str:
        return self.spec.kind

    @abc.abstractmethod
    def render(self, current: str | None, image: ImageRef) -> str:
        """The new file content for ``image`` given the current content (``None``: absent)."""

    def _render(self, current: str | None, image: ImageRef) -> str:
        return self.render(current, image)

    def _read(self) -> str | None:
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self.label}: cannot read {self.path}: {exc}") from None


def _diff(path: Path, current: str | None, new: str) -> str:
    return "".join(
        difflib.unified_diff(
            (current or "").splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=f"{path}" if current is not None else "/dev/null",
            tofile=f"{path}",
        )
    )


def _write(label: str, path: Path, text: str) -> None:
    try:
        atomic_write_text(path, text)
    except OSError as exc:  # full or read-only file system (issue 14, item 9)
        raise DeployFailed(
            f"{label}: cannot write {path}: {exc.strerror or exc}; it keeps its previous content"
        ) from None


def restore_file(entry: Mapping[str, Any], ctx: TargetContext) -> str:
    """Put a file back as a journal entry recorded it (or remove it if it did not exist); a
    pushed file's entry (:class:`~shatag.targets.writeback.PushedFile`) also takes the push back
    where the branch still holds it."""
    done = [_restore_one(entry)]
    if entry.get("git"):
        from shatag.targets.writeback import recover_pushed

        done.append(recover_pushed(entry, ctx.env, ctx.env_name))
    return "; ".join(done)


def _restore_one(entry: Mapping[str, Any]) -> str:
    path = Path(str(entry["path"]))
    previous = entry.get("previous")
    if previous is None:
        with contextlib.suppress(FileNotFoundError):
            real_path(path).unlink()  # a link to a file that did not exist stays a link
        return f"removed {path} (it did not exist before)"
    atomic_write_text(path, str(previous))
    return f"restored {path}"


def nothing_to_finish(entry: Mapping[str, Any], ctx: object) -> str:
    """A file target's commit leaves nothing behind."""
    del entry, ctx
    return "nothing to do"


class SharedFile(_FileEdit):
    """Several file targets on one file (two SDL services, say): read once, every edit applied
    in configuration order, written once, undone as one (issue 14, item 2)."""

    def __init__(self, parts: list[FileTarget[Any]]) -> None:
        super().__init__()
        self.parts = parts
        self.path = parts[0].path

    @property
    def label(self) -> str:
        return " + ".join(part.label for part in self.parts)

    @property
    def _kind(self) -> str:
        return str(self.parts[0].spec.kind)

    def _read(self) -> str | None:
        return self.parts[0]._read()

    def _verify(self) -> None:
        for part in self.parts:
            part.verify()

    def _render(self, current: str | None, image: ImageRef) -> str:
        content = current
        for part in self.parts:
            content = part.render(content, image)
        assert content is not None  # at least one part rendered  # noqa: S101
        return content


def merge_shared_files(targets: list[Target]) -> list[Target]:
    """``targets`` with the file targets that name one real file (through symlinks, too)
    merged into one :class:`SharedFile` at the first one's place; those pushed to one GitOps
    branch (``git_push``) share one commit (public as
    :func:`shatag.targets.merge_shared_files`)."""
    return _merge_pushed(_merge_same_file(targets))


def _merge_pushed(targets: list[Target]) -> list[Target]:
    """Each file edit whose target sets ``git_push`` as a
    :class:`~shatag.targets.writeback.PushedFile` of the group of its clone, remote and branch
    (one commit per group)."""
    groups: dict[tuple[str, str, str], PushGroup] = {}
    out: list[Target] = []
    for target in targets:
        first = target.parts[0] if isinstance(target, SharedFile) else target
        push = first.spec.git if isinstance(first, FileTarget) else None
        if push is None or not isinstance(first, FileTarget) or not isinstance(target, _FileEdit):
            out.append(target)
            continue
        from shatag.targets import writeback  # lazy: a target without git_push never needs it

        ctx = first.ctx or TargetContext()
        clone = writeback.Clone.of(target.path, push, ctx.env, target.label)
        key = (os.path.realpath(clone.top), clone.remote, clone.branch)
        group = groups.setdefault(key, writeback.PushGroup(clone, ctx.env_name))
        out.append(writeback.PushedFile(target, group))
    return out


def _merge_same_file(targets: list[Target]) -> list[Target]:
    groups: dict[str, list[FileTarget[Any]]] = {}
    for target in targets:
        if isinstance(target, FileTarget):
            groups.setdefault(os.path.realpath(target.path), []).append(target)
    out: list[Target] = []
    for target in targets:
        if not isinstance(target, FileTarget):
            out.append(target)
            continue
        group = groups[os.path.realpath(target.path)]
        if len(group) == 1:
            out.append(target)
        elif group[0] is target:
            out.append(SharedFile(group))
    return out


#: The path key every file kind has: a relative ``path`` resolves against the directory of the
#: configuration file that set it (issue 13), whatever the kind.
FILE_PATHS: Final = frozenset({"path"})


def file_kind(
    name: str,
    keys: frozenset[str],
    parse: Callable[[str, Mapping[str, Any]], F],
    target: type[FileTarget[F]],
    paths: frozenset[str] = frozenset(),
) -> TargetKind[F]:
    """The :class:`~shatag.targets.TargetKind` of a file kind: ``target`` edits the file named
    by ``path`` (a path key, :data:`FILE_PATHS`), a journal entry is undone by putting the file
    back, a commit leaves nothing behind."""
    from shatag.targets import TargetKind

    return TargetKind(
        name, keys, parse, target.make, restore_file, nothing_to_finish, FILE_PATHS | paths,
        observe=observe_file(target),
    )  # fmt: skip


def observe_file(
    target: type[FileTarget[F]],
) -> Callable[[F, TargetContext, ImageRef | None], Observed]:
    """The ``observe`` hook of a file kind (``status``, issue 23 item 5): the file pins the
    ledger's release when rendering it for that release changes no byte; otherwise the lines
    a deploy would replace say what it pins instead. An absent file is ``down``."""

    def observe(spec: F, ctx: TargetContext, image: ImageRef | None) -> Observed:
        from shatag.targets import Observed

        edit = target.make(spec, ctx)
        try:
            current = edit._read()
        except ConfigError as exc:
            return Observed("down", detail=exc.message)
        if current is None:
            return Observed("down", detail=f"{edit.path} does not exist")
        if image is None:
            return Observed("none", pinned_in(current), f"{edit.path} (no release recorded)")
        try:
            diff = _diff(edit.path, current, edit.render(current, image))
        except ConfigError as exc:
            return Observed("drift", detail=f"cannot pin {image.pinned} in it: {exc.message}")
        if not diff:
            return Observed("in_sync", image.pinned, f"{edit.path} pins it")
        removed = "".join(
            line[1:]
            for line in diff.splitlines(keepends=True)
            if line[:1] == "-" and line[:3] != "---"
        )
        running = pinned_in(removed) or "something else"
        return Observed("drift", running, f"{edit.path} pins {running}, not {image.pinned}")

    return observe


def pinned_in(text: str) -> str:
    """The ``sha256:`` digests (else the 40-hex SHAs) a text names, comma-separated.

    >>> pinned_in("image: r/api:" + "a" * 40 + "@sha256:" + "b" * 64)
    'sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb'
    >>> pinned_in("tag: latest")
    ''
    """
    import re

    digests = re.findall(r"sha256:[0-9a-f]{64}", text)
    found = digests or re.findall(r"(?<![0-9a-f])[0-9a-f]{40}(?![0-9a-f])", text)
    return ", ".join(dict.fromkeys(found))
