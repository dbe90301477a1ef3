"""What every kind's spec and ``parse`` share: the ``kind`` property and the defaults of the
optional hooks of :class:`~shatag.targets.TargetSpec` (no ``claims``, no ``secrets``, the
journal rule of :func:`names_in_journal`), the checks of unknown keys and of the ``pin`` option,
typed conversions."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from shatag.core import PIN_FORMATS, PinFormat
from shatag.errors import ConfigError
from shatag.limits import names

T = TypeVar("T")


class KindSpec:
    """The base of every kind's frozen spec dataclass: ``kind`` is the class's ``KIND_NAME``;
    a kind overrides the hooks below that concern it (a dataclass field does, too)."""

    __slots__ = ()
    KIND_NAME: ClassVar[str]

    @property
    def kind(self) -> str:
        return self.KIND_NAME

    @property
    def claims(self) -> tuple[str, ...]:
        """Host-global resources this target owns (default: none)."""
        return ()

    @property
    def secrets(self) -> tuple[str, ...]:
        """Variables of the deploying process the target passes on (default: none)."""
        return ()

    def matches_journal(self, entry: Mapping[str, Any]) -> bool:
        """Whether a journal entry is about this target (default: it is of this kind and
        names no file and no container)."""
        return names_in_journal(entry, self.kind)


def names_in_journal(
    entry: Mapping[str, Any], kind: str, *, path: str = "", name: str = ""
) -> bool:
    """The journal rule of a kind whose identity is a file or a container name: the entry is
    of ``kind`` and names the same file (as an absolute path) or the same container name where
    it names one; an entry that names neither is about any target of the kind.

    >>> names_in_journal({"kind": "docker", "name": "api"}, "docker", name="api")
    True
    >>> names_in_journal({"kind": "sdl", "path": "/x/d.yaml"}, "sdl", path="/x/e.yaml")
    False
    """
    if entry.get("kind") != kind:
        return False
    if "path" in entry:
        return bool(path) and str(Path(path).absolute()) == str(entry["path"])
    if "name" in entry:
        return bool(name) and name == str(entry["name"])
    return True


def check_keys(where: str, raw: Mapping[str, Any], keys: frozenset[str], kind: str) -> None:
    unknown = sorted(str(k) for k in set(raw) - keys)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {names(unknown)} for kind {kind}")


def parse_pin(where: str, raw: Mapping[str, Any]) -> PinFormat:
    value = raw.get("pin", "tag+digest")
    for pin in PIN_FORMATS:
        if value == pin:
            return pin
    raise ConfigError(f"{where}.pin must be tag+digest, digest or tag")


def parse_prelude(where: str, raw: Mapping[str, Any], keys: frozenset[str], kind: str) -> PinFormat:
    """The checks a kind's ``parse`` starts with: no unknown key, then the ``pin``, returned."""
    check_keys(where, raw, keys, kind)
    return parse_pin(where, raw)


def converted(where: str, build: Callable[[], T]) -> T:
    """``build()``, with a value of the wrong type (``port: abc``) as a ConfigError."""
    try:
        return build()
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
