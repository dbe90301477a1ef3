"""Terraform variables: ``*.auto.tfvars.json`` with ``image_sha``, ``image_digest``, ``image_ref``.

Other keys of an existing file are kept, in their order; the file is written atomically.

>>> from shatag.core import parse_repository
>>> img = ImageRef(parse_repository("127.0.0.1:5000/api"), "a" * 40, "sha256:" + "b" * 64)
>>> t = TfvarsTarget(parse("t", {"kind": "tfvars", "path": "x.auto.tfvars.json"}))
>>> print(t.render('{"region": "eu"}', img))  # doctest: +ELLIPSIS
{
  "region": "eu",
  "image_sha": "aaaa...",
  "image_digest": "sha256:bbbb...",
  "image_ref": "127.0.0.1:5000/api:aaaa...@sha256:bbbb..."
}
<BLANKLINE>
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from shatag.core import ImageRef, PinFormat
from shatag.errors import ConfigError
from shatag.targets import TargetContext, TargetKind
from shatag.targets._files import FileTarget, nothing_to_finish, restore_file
from shatag.targets._spec import check_keys, converted, parse_pin

NAME: Final = "tfvars"
KEYS: Final = frozenset({"kind", "path", "pin"})


@dataclass(frozen=True, slots=True)
class TfvarsSpec:
    path: str
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


def parse(where: str, raw: Mapping[str, Any]) -> TfvarsSpec:
    check_keys(where, raw, KEYS, NAME)
    pin = parse_pin(where, raw)
    spec = converted(where, lambda: TfvarsSpec(path=str(raw.get("path", "")), pin=pin))
    if not spec.path:
        raise ConfigError(f"{where}: a {NAME} target needs a path")
    return spec


class TfvarsTarget(FileTarget[TfvarsSpec]):
    def render(self, current: str | None, image: ImageRef) -> str:
        data: dict[str, Any] = {}
        if current is not None and current.strip():
            try:
                loaded = json.loads(current)
            except ValueError as exc:
                raise ConfigError(f"{self.label}: {self.path} is not valid JSON: {exc}") from None
            if not isinstance(loaded, dict):
                raise ConfigError(f"{self.label}: {self.path} must hold a JSON object")
            data = loaded
        data["image_sha"] = image.sha
        data["image_digest"] = image.digest
        data["image_ref"] = image.reference(self.spec.pin)
        return json.dumps(data, indent=2) + "\n"


def make(spec: TfvarsSpec, ctx: TargetContext) -> TfvarsTarget:
    del ctx
    return TfvarsTarget(spec)


recover = restore_file
finish = nothing_to_finish

KIND: Final = TargetKind(NAME, KEYS, parse, make, recover, finish)
