"""What every kind's spec and ``parse`` share: the ``kind`` property, the checks of unknown keys
and of the ``pin`` option, typed conversions."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from shatag.core import PIN_FORMATS, PinFormat
from shatag.errors import ConfigError
from shatag.limits import names

T = TypeVar("T")


class KindSpec:
    """A base of a kind's frozen spec dataclass: ``kind`` is the class's ``KIND_NAME``."""

    __slots__ = ()
    KIND_NAME: ClassVar[str]

    @property
    def kind(self) -> str:
        return self.KIND_NAME


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
