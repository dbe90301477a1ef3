"""A throwaway kind (issue 11: how many files a new kind touches): ``IMAGE=<ref>`` in a file.

>>> from shatag.core import parse_repository
>>> img = ImageRef(parse_repository("127.0.0.1:5000/api"), "a" * 40, "sha256:" + "b" * 64)
>>> EnvfileTarget(parse("t", {"kind": "envfile", "path": ".env", "pin": "tag"})).render(
...     "A=1\\nIMAGE=old\\n", img
... ) == "A=1\\nIMAGE=127.0.0.1:5000/api:" + "a" * 40 + "\\n"
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from shatag.core import ImageRef, PinFormat
from shatag.errors import ConfigError
from shatag.targets import TargetContext, TargetKind
from shatag.targets._files import FileTarget, nothing_to_finish, restore_file
from shatag.targets._spec import check_keys, converted, parse_pin

NAME: Final = "envfile"
KEYS: Final = frozenset({"kind", "path", "variable", "pin"})


@dataclass(frozen=True, slots=True)
class EnvfileSpec:
    path: str
    variable: str = "IMAGE"
    pin: PinFormat = "tag+digest"

    @property
    def kind(self) -> str:
        return NAME

    @property
    def label(self) -> str:
        return f"{NAME}:{self.path}"

    @property
    def edits(self) -> Path | None:
        return Path(self.path).absolute()


def parse(where: str, raw: Mapping[str, Any]) -> EnvfileSpec:
    check_keys(where, raw, KEYS, NAME)
    pin = parse_pin(where, raw)
    spec = converted(
        where,
        lambda: EnvfileSpec(str(raw.get("path", "")), str(raw.get("variable", "IMAGE")), pin),
    )
    if not spec.path:
        raise ConfigError(f"{where}: an {NAME} target needs a path")
    return spec


class EnvfileTarget(FileTarget[EnvfileSpec]):
    def render(self, current: str | None, image: ImageRef) -> str:
        prefix = f"{self.spec.variable}="
        kept = [ln for ln in (current or "").splitlines() if not ln.startswith(prefix)]
        return "\n".join([*kept, prefix + image.reference(self.spec.pin)]) + "\n"


def make(spec: EnvfileSpec, ctx: TargetContext) -> EnvfileTarget:
    del ctx
    return EnvfileTarget(spec)


KIND: Final = TargetKind(NAME, KEYS, parse, make, restore_file, nothing_to_finish)
