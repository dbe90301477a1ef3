"""Shared plumbing of the file targets (SDL, tfvars): snapshot, atomic write, restore."""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shatag._fs import atomic_write_text
from shatag.config import TargetConfig
from shatag.errors import ConfigError
from shatag.targets import ImageRef


class FileTarget(abc.ABC):
    """A text file whose content is re-rendered for the new image and written atomically."""

    def __init__(self, config: TargetConfig) -> None:
        self.config = config
        self.path = Path(config.path).absolute()
        self._previous: str | None = None
        self._new: str | None = None
        self._applied = False

    @property
    def label(self) -> str:
        return self.config.label

    @abc.abstractmethod
    def render(self, current: str | None, image: ImageRef) -> str:
        """The new file content for ``image`` given the current content (``None``: absent)."""

    def prepare(self, image: ImageRef) -> None:
        try:
            self._previous = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._previous = None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self.label}: cannot read {self.path}: {exc}") from None
        self._new = self.render(self._previous, image)

    def apply(self) -> None:
        if self._new is None:
            raise RuntimeError("apply() before prepare()")
        atomic_write_text(self.path, self._new)
        self._applied = True

    def restore(self) -> None:
        if self._applied:
            restore_file(self.journal())
            self._applied = False

    def commit(self) -> None:
        self._applied = False

    def journal(self) -> dict[str, Any]:
        return {"kind": self.config.kind, "path": str(self.path), "previous": self._previous}


def restore_file(entry: Mapping[str, Any]) -> str:
    """Put a file back as a journal entry recorded it (or remove it if it did not exist)."""
    path = Path(str(entry["path"]))
    previous = entry.get("previous")
    if previous is None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return f"removed {path} (it did not exist before)"
    atomic_write_text(path, str(previous))
    return f"restored {path}"
