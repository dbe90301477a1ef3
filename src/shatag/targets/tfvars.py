"""Terraform/OpenTofu variables: a ``*.tfvars.json`` file with the deployed image.

Without ``variables`` the keys ``image_sha``, ``image_digest`` and ``image_ref`` are written.
With ``variables`` (issue 13) exactly the variables a configuration declares are written, each
from a template over ``{repository}``, ``{sha}``, ``{short_sha}``, ``{digest}`` and ``{ref}``
(:mod:`shatag.templates`), e.g. ``{image_repo: "{repository}", image_tag: "{sha}@{digest}"}``.
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
>>> mapped = parse("t", {"kind": "tfvars", "path": "x.tfvars.json",
...                      "variables": {"image_repo": "{repository}", "image_tag": "{short_sha}"}})
>>> print(TfvarsTarget(mapped).render(None, img))
{
  "image_repo": "127.0.0.1:5000/api",
  "image_tag": "aaaaaaaaaaaa"
}
<BLANKLINE>
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from shatag.core import ImageRef, PinFormat
from shatag.errors import ConfigError
from shatag.targets.files import FileKindSpec, FileTarget, file_kind, parse_file_spec
from shatag.templates import Template, parse_template

NAME: Final = "tfvars"
KEYS: Final = frozenset({"kind", "path", "pin", "variables"})
# A Terraform variable name: a letter or underscore, then letters, digits, _ and -.
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


@dataclass(frozen=True, slots=True)
class TfvarsSpec(FileKindSpec):
    """The validated configuration of one ``tfvars`` target."""

    KIND_NAME: ClassVar[str] = NAME
    path: str
    pin: PinFormat = "tag+digest"
    #: variable name → template; empty: the three default keys.
    variables: tuple[tuple[str, Template], ...] = ()


def parse(where: str, raw: Mapping[str, Any]) -> TfvarsSpec:
    return parse_file_spec(
        where,
        raw,
        KEYS,
        NAME,
        lambda pin: TfvarsSpec(
            path=str(raw.get("path", "")),
            pin=pin,
            variables=_variables(f"{where}.variables", raw.get("variables")),
        ),
    )


def _variables(where: str, raw: object) -> tuple[tuple[str, Template], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(
            f"{where} must be a mapping of variable name → template, e.g. "
            '{image_repo: "{repository}", image_tag: "{sha}@{digest}"}'
        )
    out: list[tuple[str, Template]] = []
    for name, text in raw.items():
        if not isinstance(name, str) or not _VARIABLE.fullmatch(name):
            raise ConfigError(f"{where}: {name!r} is not a variable name")
        out.append((name, parse_template(text, where=f"{where}.{name}")))
    return tuple(out)


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
        if self.spec.variables:
            repository = str(image.repository)
            for name, template in self.spec.variables:
                data[name] = template.render(
                    repository=repository, sha=image.sha, digest=image.digest
                )
        else:
            data["image_sha"] = image.sha
            data["image_digest"] = image.digest
            data["image_ref"] = image.reference(self.spec.pin)
        return json.dumps(data, indent=2) + "\n"


KIND: Final = file_kind(NAME, KEYS, parse, TfvarsTarget)
