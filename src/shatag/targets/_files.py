"""Shared plumbing of the file targets (SDL, tfvars): snapshot, atomic write, restore, diff."""

from __future__ import annotations

import abc
import contextlib
import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from shatag._fs import atomic_write_text
from shatag.core import ImageRef, PinFormat
from shatag.errors import ConfigError


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
        new = self.render(current, image)
        return "".join(
            difflib.unified_diff(
                (current or "").splitlines(keepends=True),
                new.splitlines(keepends=True),
                fromfile=f"{self.path}" if current is not None else "/dev/null",
                tofile=f"{self.path}",
            )
        )

    def prepare(self, image: ImageRef) -> None:
        self._previous = self._read()
        self._new = self.render(self._previous, image)

    def apply(self) -> None:
        if self._new is None:
            raise RuntimeError("apply() before prepare()")
        atomic_write_text(self.path, self._new)
        self._applied = True

    def restore(self) -> None:
        if self._applied:
            restore_file(self.journal(), None)
            self._applied = False

    def commit(self) -> None:
        self._applied = False

    def journal(self) -> dict[str, Any]:
        return {"kind": self.spec.kind, "path": str(self.path), "previous": self._previous}


def restore_file(entry: Mapping[str, Any], ctx: object) -> str:
    """Put a file back as a journal entry recorded it (or remove it if it did not exist)."""
    del ctx
    path = Path(str(entry["path"]))
    previous = entry.get("previous")
    if previous is None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return f"removed {path} (it did not exist before)"
    atomic_write_text(path, str(previous))
    return f"restored {path}"


def nothing_to_finish(entry: Mapping[str, Any], ctx: object) -> str:
    """A file target's commit leaves nothing behind."""
    del entry, ctx
    return "nothing to do"
