"""Checks every kind's ``parse`` shares: unknown keys, the ``pin`` option, typed conversions."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from shatag.core import PIN_FORMATS, PinFormat
from shatag.errors import ConfigError

T = TypeVar("T")


def check_keys(where: str, raw: Mapping[str, Any], keys: frozenset[str], kind: str) -> None:
    unknown = sorted(str(k) for k in set(raw) - keys)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {', '.join(unknown)} for kind {kind}")


def parse_pin(where: str, raw: Mapping[str, Any]) -> PinFormat:
    value = raw.get("pin", "tag+digest")
    for pin in PIN_FORMATS:
        if value == pin:
            return pin
    raise ConfigError(f"{where}.pin must be tag+digest, digest or tag")


def converted(where: str, build: Callable[[], T]) -> T:
    """``build()``, with a value of the wrong type (``port: abc``) as a ConfigError."""
    try:
        return build()
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
