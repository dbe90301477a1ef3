"""Akash SDL: set ``services.<service>.image`` and change nothing else.

The file is parsed with ruamel.yaml's round-trip loader only to *find* the image scalar; the
edit itself replaces that scalar's text on its line (keeping its quote style and any trailing
comment), so comments, key order, indentation and every other line stay byte-for-byte the same.
The result is re-parsed and must equal the old document with only the image changed; if it does
not (a block or multi-line scalar), the document is re-dumped by ruamel.yaml's round-trip dumper.

A fast path comes first (issue 17: importing ruamel.yaml costs more than the rest of a deploy to
file targets): the scalar is found with the YAML parser invoke already loaded (its vendored
PyYAML: node positions from ``compose``), edited the same way, and accepted only if the edited
text parses to the old document with only the image changed. Anything else -- an alias, a tag,
a block scalar, an error to report -- goes the ruamel.yaml way above, unchanged.

>>> from shatag.core import parse_repository
>>> img = ImageRef(parse_repository("127.0.0.1:5000/api"), "a" * 40, "sha256:" + "b" * 64)
>>> t = SdlTarget(SdlSpec(path="deploy.yaml", service="api", pin="tag"))
>>> print(t.render("services:\\n  api:\\n    image: 'old:1'  # managed\\n", img), end="")
services:
  api:
    image: '127.0.0.1:5000/api:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'  # managed
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final

from shatag.core import ImageRef, PinFormat
from shatag.errors import ConfigError
from shatag.limits import check_yaml_expansion, flat
from shatag.targets._yamledit import checked_or_dumped, replace_scalar, same, yaml_rt
from shatag.targets.files import FileKindSpec, FileTarget, file_kind, parse_file_spec

if TYPE_CHECKING:
    from ruamel.yaml.comments import CommentedMap

NAME: Final = "sdl"
KEYS: Final = frozenset({"kind", "path", "service", "pin"})


@dataclass(frozen=True, slots=True)
class SdlSpec(FileKindSpec):
    """The validated configuration of one ``sdl`` target."""

    KIND_NAME: ClassVar[str] = NAME
    path: str
    service: str
    pin: PinFormat = "tag+digest"


def parse(where: str, raw: Mapping[str, Any]) -> SdlSpec:
    spec = parse_file_spec(
        where,
        raw,
        KEYS,
        NAME,
        lambda pin: SdlSpec(
            path=str(raw.get("path", "")), service=str(raw.get("service", "")), pin=pin
        ),
    )
    if not spec.service:
        raise ConfigError(f"{where}: an sdl target needs the service name")
    return spec


class SdlTarget(FileTarget[SdlSpec]):
    def render(self, current: str | None, image: ImageRef) -> str:
        if current is None:
            raise ConfigError(
                f"{self.label}: SDL file {self.path} does not exist; create it with "
                f"services.{self.spec.service}.image first"
            )
        return set_service_image(
            current, self.spec.service, image.reference(self.spec.pin), where=self.label
        )


KIND: Final = file_kind(NAME, KEYS, parse, SdlTarget)


def set_service_image(text: str, service: str, value: str, *, where: str = "sdl") -> str:
    """``text`` with ``services.<service>.image`` set to ``value``; nothing else changes."""
    fast = _fast_set_service_image(text, service, value)
    if fast is not None:
        return fast
    document = _load(text, where)
    service_map = _service(document, service, where)
    line, col = service_map.lc.value("image")
    lines = text.splitlines(keepends=True)
    expected = _load(text, where)
    _service(expected, service, where)["image"] = value
    candidate = None
    if line < len(lines):
        edited = replace_scalar(lines[line], col, value, flow=bool(service_map.fa.flow_style()))
        if edited is not None:
            candidate = "".join([*lines[:line], edited, *lines[line + 1 :]])
    # A scalar we cannot edit in place (block or multi-line) falls back to a round-trip dump.
    return checked_or_dumped(candidate, expected)


# Scalars YAML 1.2 (ruamel.yaml) may read as a number, bool or null where YAML 1.1 (PyYAML) reads
# a string (``0E0``, ``1e3``, ``0o17``): the PyYAML check cannot vouch for them. A superset, on
# purpose: stepping aside is always safe.
_YAML12_NOT_STR: Final = re.compile(
    r"[-+]?[0-9._]*(?:[eE][-+]?[0-9]+)?|[-+]?0[box][0-9a-fA-F_]+|[-+]?\.(?:inf|nan)"
    r"|~|null|true|false",
    re.IGNORECASE,
)


def _fast_set_service_image(text: str, service: str, value: str) -> str | None:
    """The in-place edit, checked with invoke's vendored PyYAML; ``None``: use ruamel.yaml."""
    if _YAML12_NOT_STR.fullmatch(value):
        return None
    pyyaml = _pyyaml()
    found = _fast_locate(pyyaml, text, service) if pyyaml is not None else None
    if found is None:
        return None
    line, col, expected = found
    try:
        expected["services"][service]["image"] = value
    except (KeyError, TypeError):  # a key PyYAML typed differently (`123:`): not this way
        return None
    lines = text.splitlines(keepends=True)
    edited = replace_scalar(lines[line], col, value, flow=False)
    if edited is None:
        return None
    candidate = "".join([*lines[:line], edited, *lines[line + 1 :]])
    try:
        loaded = pyyaml.load(candidate, Loader=pyyaml.SafeLoader)
    except Exception:  # noqa: BLE001 - it does not parse: not equal, then
        return None
    return candidate if same(loaded, expected) else None


def _pyyaml() -> Any:
    try:
        return importlib.import_module("invoke.vendor.yaml")
    except ImportError:  # pragma: no cover - invoke has vendored PyYAML since 1.0
        return None


def _fast_locate(pyyaml: Any, text: str, service: str) -> tuple[int, int, Any] | None:
    """Line and column of the one-line string scalar ``services.<service>.image`` (through
    block mappings with unique plain keys only), and the document as PyYAML loads it."""
    try:
        node = pyyaml.compose(text, Loader=pyyaml.SafeLoader)
        # An alias bomb is not walked here (the equality check below would expand it): the
        # ruamel.yaml way counts it and refuses it with CONFIG_ERROR (issue 14, item 8).
        check_yaml_expansion(node, "sdl")
        expected = pyyaml.load(text, Loader=pyyaml.SafeLoader)
    except Exception:  # noqa: BLE001 - any parser complaint: the ruamel.yaml way reports it
        return None
    for key in ("services", service, "image"):
        if node is None or node.id != "mapping" or node.flow_style:
            return None
        keys = [k.value for k, _v in node.value if k.id == "scalar"]
        if len(keys) != len(node.value) or len(keys) != len(set(keys)) or "<<" in keys:
            return None
        node = dict(zip(keys, (v for _k, v in node.value), strict=True)).get(key)
    ok = (
        node is not None
        and node.id == "scalar"
        and node.tag == "tag:yaml.org,2002:str"
        and node.style in (None, "'", '"')
        and node.start_mark.line == node.end_mark.line
        and isinstance(expected, dict)
    )
    return (node.start_mark.line, node.start_mark.column, expected) if ok else None


def _load(text: str, where: str) -> Any:
    from ruamel.yaml.error import YAMLError

    try:
        # Composed first: aliases may not expand past a bound (issue 14, item 8), since the
        # edit check below walks the whole document.
        check_yaml_expansion(yaml_rt().compose(text), f"{where}: the SDL file")
        return yaml_rt().load(text)
    except YAMLError as exc:
        raise ConfigError(f"{where}: the SDL file is not valid YAML: {flat(str(exc))}") from None


def _service(document: Any, service: str, where: str) -> CommentedMap:
    from ruamel.yaml.comments import CommentedMap

    services = document.get("services") if isinstance(document, Mapping) else None
    if not isinstance(services, CommentedMap):
        raise ConfigError(f"{where}: the SDL file has no 'services' mapping")
    entry = services.get(service)
    if not isinstance(entry, CommentedMap):
        known = ", ".join(str(k) for k in services) or "none"
        raise ConfigError(f"{where}: the SDL file has no service {service!r} (found: {known})")
    if "image" not in entry:
        raise ConfigError(f"{where}: services.{service} has no 'image' key; add one first")
    return entry
