"""Shared plumbing of the file targets (SDL, tfvars): snapshot, atomic write, restore, diff."""

from __future__ import annotations

import abc
import contextlib
import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from shatag._fs import atomic_write_text, real_path
from shatag.core import ImageRef, PinFormat
from shatag.errors import ConfigError, DeployFailed


class FileSpec(Protocol):
    """What every file kind's spec has: the file and the reference form."""

    @property
    def kind(self) -> str: ...

    @property
    def label(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def pin(self) -> PinFormat: ...


F = TypeVar("F", bound=FileSpec)


class FileTarget(abc.ABC, Generic[F]):
    """A text file whose content is re-rendered for the new image and written atomically."""

    def __init__(self, spec: F) -> None:
        self.spec = spec
        self.path = Path(spec.path).absolute()
        self._previous: str | None = None
        self._new: str | None = None
        self._applied = False

    @property
    def label(self) -> str:
        return self.spec.label

    @abc.abstractmethod
    def render(self, current: str | None, image: ImageRef) -> str:
        """The new file content for ``image`` given the current content (``None``: absent)."""

    def _read(self) -> str | None:
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self.label}: cannot read {self.path}: {exc}") from None

    def plan(self, image: ImageRef) -> str:
        """The change as a unified diff of the file (empty when nothing would change)."""
        current = self._read()
        return _diff(self.path, current, self.render(current, image))

    def prepare(self, image: ImageRef) -> None:
        self._previous = self._read()
        self._new = self.render(self._previous, image)

    def apply(self) -> None:
        if self._new is None:
            raise RuntimeError("apply() before prepare()")
        _write(self.label, self.path, self._new)
        self._applied = True

    def restore(self) -> None:
        if self._applied:
            restore_file(self.journal(), None)
            self._applied = False

    def commit(self) -> None:
        self._applied = False

    def journal(self) -> dict[str, Any]:
        return {"kind": self.spec.kind, "path": str(self.path), "previous": self._previous}


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


def restore_file(entry: Mapping[str, Any], ctx: object) -> str:
    """Put a file back as a journal entry recorded it (or remove it if it did not exist)."""
    del ctx
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


class SharedFile:
    """Several file targets on one file (two SDL services, say): read once, every edit applied
    in configuration order, written once, undone as one (issue 14, item 2)."""

    def __init__(self, parts: list[FileTarget[Any]]) -> None:
        self.parts = parts
        self.path = parts[0].path
        self._previous: str | None = None
        self._new: str | None = None
        self._applied = False

    @property
    def label(self) -> str:
        return " + ".join(part.label for part in self.parts)

    def _render(self, current: str | None, image: ImageRef) -> str:
        content = current
        for part in self.parts:
            content = part.render(content, image)
        assert content is not None  # at least one part rendered  # noqa: S101
        return content

    def plan(self, image: ImageRef) -> str:
        current = self.parts[0]._read()
        return _diff(self.path, current, self._render(current, image))

    def prepare(self, image: ImageRef) -> None:
        self._previous = self.parts[0]._read()
        self._new = self._render(self._previous, image)

    def apply(self) -> None:
        if self._new is None:
            raise RuntimeError("apply() before prepare()")
        _write(self.label, self.path, self._new)
        self._applied = True

    def restore(self) -> None:
        if self._applied:
            restore_file(self.journal(), None)
            self._applied = False

    def commit(self) -> None:
        self._applied = False

    def journal(self) -> dict[str, Any]:
        kind = self.parts[0].spec.kind
        return {"kind": kind, "path": str(self.path), "previous": self._previous}


def merge_shared_files(targets: list[Any]) -> list[Any]:
    """``targets`` with the file targets that name one real file (through symlinks, too)
    merged into one :class:`SharedFile` at the first one's place."""
    groups: dict[str, list[FileTarget[Any]]] = {}
    for target in targets:
        if isinstance(target, FileTarget):
            groups.setdefault(os.path.realpath(target.path), []).append(target)
    out: list[Any] = []
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
