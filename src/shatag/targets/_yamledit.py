"""Round-trip YAML edits that keep every other byte: set, add or drop scalar keys in block
mappings (the GitOps file targets, ``kustomize`` and ``helm_values``). The one-line scalar
replacement, the structural equality and the round-trip YAML are the SDL target's, too; ruamel.yaml
is imported only when a function needs it (the SDL fast path never does, issue 17).

ruamel.yaml's round-trip loader only *finds* where each key sits; the edits are made on the
text: a one-line scalar is replaced in place (its quoting and trailing comment kept), a missing
key becomes a new line after the last key of its mapping (same indentation), a dropped key's line
goes; a scalar in a flow mapping (``image: {repository: r, tag: v}``) or behind an anchor
(``tag: &t v``) is replaced in place, too. The result is re-parsed and must equal the intended
document; if it does not (a key added to or dropped from a flow mapping, a block scalar, a
multi-line value), the intended document is dumped by ruamel.yaml's round-trip dumper instead,
which keeps comments and order but may re-indent.

>>> text = "images:\\n- name: api  # the app\\n  newTag: old\\n"
>>> print(apply_edits(text, [(("images", 0, "newTag"), "v2"), (("images", 0, "digest"), "d")]),
...       end="")
images:
- name: api  # the app
  newTag: v2
  digest: d
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from shatag.errors import ConfigError
from shatag.limits import check_yaml_expansion

if TYPE_CHECKING:
    from ruamel.yaml import YAML

Key = str | int
Path = tuple[Key, ...]
Edit = tuple[Path, str | None]  # (where, new value); None removes the key


def yaml_rt() -> YAML:
    """The round-trip YAML of the file targets (quotes kept, long references never re-wrapped)."""
    from ruamel.yaml import YAML  # lazy: the SDL fast path and config parsing never load it

    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a long image reference
    return yaml


def load_quiet(text: str) -> Any:
    """The loaded document, or ``None`` when the text is not valid YAML."""
    from ruamel.yaml.error import YAMLError

    try:
        return yaml_rt().load(text)
    except YAMLError:
        return None


def load(text: str, where: str) -> Any:
    from ruamel.yaml.error import YAMLError

    try:
        # Aliases may not expand past a bound: the edit check walks the whole document
        # (issue 14, item 8, as for the SDL target).
        check_yaml_expansion(yaml_rt().compose(text), f"{where}: the YAML file")
        return yaml_rt().load(text)
    except YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from None


def same(a: Any, b: Any) -> bool:
    """Structural equality of two loaded documents (ruamel's scalar subclasses compare as
    their plain values)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return list(a.keys()) == list(b.keys()) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, str) and isinstance(b, str):
        return str(a) == str(b)
    return type(a) is type(b) and bool(a == b)


def _walk(document: Any, path: Sequence[Key]) -> Any:
    node = document
    for key in path:
        node = node[key]
    return node


def intended(document: Any, edits: Sequence[Edit]) -> Any:
    """Apply ``edits`` to the loaded ``document`` in place (the structure the text must have)."""
    for path, value in edits:
        parent = _walk(document, path[:-1])
        if value is None:
            if path[-1] in parent:
                del parent[path[-1]]
        else:
            parent[path[-1]] = value
    return document


def apply_edits(text: str, edits: Sequence[Edit], *, where: str = "yaml") -> str:
    """``text`` with ``edits`` made; every other byte stays unless the fallback is needed.
    Every parent of an edited key must already exist as a mapping."""
    expected = intended(load(text, where), edits)
    candidate: str | None = text
    for path, value in edits:
        candidate = _edit_text(candidate, path, value) if candidate is not None else None
    return checked_or_dumped(candidate, expected)


def checked_or_dumped(candidate: str | None, expected: Any) -> str:
    """``candidate`` (the text edited in place) if it parses to ``expected``; else ``expected``
    written by the round-trip dumper (it keeps comments and order, but may re-indent)."""
    if candidate is not None and same(load_quiet(candidate), expected):
        return candidate
    out = io.StringIO()
    yaml_rt().dump(expected, out)
    return out.getvalue()


def _edit_text(text: str, path: Path, value: str | None) -> str | None:  # noqa: PLR0911
    """One edit made on the text; ``None`` when it cannot be made in place (the caller then
    falls back to the round-trip dumper)."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    document = load_quiet(text)
    if document is None:
        return None
    try:
        parent = _walk(document, path[:-1])
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(parent, CommentedMap):
        return None
    flow = bool(parent.fa.flow_style())
    key = path[-1]
    lines = text.splitlines(keepends=True)
    if key in parent:
        key_line, _key_col = parent.lc.key(key)
        value_line, value_col = parent.lc.value(key)
        if value_line != key_line or isinstance(parent[key], CommentedMap | CommentedSeq):
            return None
        if value is None:
            return None if flow else "".join([*lines[:key_line], *lines[key_line + 1 :]])
        edited = replace_scalar(lines[key_line], value_col, value, flow=flow)
        if edited is None:
            return None
        return "".join([*lines[:key_line], edited, *lines[key_line + 1 :]])
    if value is None:
        return text
    if not parent or flow:
        return None
    last = list(parent.keys())[-1]
    last_line, _ = parent.lc.value(last)
    if isinstance(parent[last], CommentedMap | CommentedSeq):
        return None
    _first_line, col = parent.lc.key(next(iter(parent.keys())))
    new_line = " " * col + f"{key}: {plain_or_quoted(value)}\n"
    if last_line >= len(lines):
        return None
    before = lines[: last_line + 1]
    if before and not before[-1].endswith("\n"):
        before[-1] += "\n"
    return "".join([*before, new_line, *lines[last_line + 1 :]])


def plain_or_quoted(value: str) -> str:
    """A scalar as a plain one when YAML reads it back as the same string, else quoted."""
    probe = load_quiet(f"k: {value}\n")
    if isinstance(probe, Mapping) and probe.get("k") == value and isinstance(probe["k"], str):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def replace_scalar(line: str, col: int, value: str, *, flow: bool) -> str | None:
    """Replace the one-line scalar starting at ``col`` of ``line`` by ``value`` (same quoting);
    ``None`` when the scalar does not end on this line."""
    if line.startswith("&", col):  # an anchored scalar: the anchor stays, its value changes
        space = line.find(" ", col)
        if space < 0:
            return None
        col = space + len(line[space:]) - len(line[space:].lstrip(" "))
    first = line[col] if col < len(line) else "|"
    if first in "|>&*!":  # block scalar, alias, tag: leave it to the fallback
        return None
    if first == '"':
        end = _double_quoted_end(line, col)
        quoted = None if "\\" in value or '"' in value else '"' + value + '"'
    elif first == "'":
        end = _single_quoted_end(line, col)
        quoted = "'" + value.replace("'", "''") + "'"
    else:
        end = _plain_end(line, col, flow=flow)
        quoted = value
    if end is None or quoted is None:
        return None
    return line[:col] + quoted + line[end:]


def _double_quoted_end(line: str, col: int) -> int | None:
    i = col + 1
    while i < len(line):
        if line[i] == "\\":
            i += 2
            continue
        if line[i] == '"':
            return i + 1
        i += 1
    return None


def _single_quoted_end(line: str, col: int) -> int | None:
    i = col + 1
    while i < len(line):
        if line[i] == "'":
            if i + 1 < len(line) and line[i + 1] == "'":
                i += 2
                continue
            return i + 1
        i += 1
    return None


def _plain_end(line: str, col: int, *, flow: bool) -> int:
    stops = ",]}" if flow else ""
    i = col
    while i < len(line):
        ch = line[i]
        if ch in "\r\n" or ch in stops:
            break
        if ch == "#" and i > col and line[i - 1] in " \t":
            break
        i += 1
    while i > col and line[i - 1] in " \t":
        i -= 1
    return i


def image_name(reference: str) -> str:
    """An image reference without its tag and digest.

    >>> image_name("ghcr.io:443/x/api:1.0@sha256:ab"), image_name("api")
    ('ghcr.io:443/x/api', 'api')
    """
    name = reference.split("@", 1)[0]
    head, sep, tag = name.rpartition(":")
    return head if sep and "/" not in tag else name


def load_all(text: str) -> list[Any]:
    """The documents of a multi-document YAML text (safe loader; ``[]``: not YAML), e.g. what
    ``kubectl kustomize`` or ``helm template`` renders."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        return [d for d in YAML(typ="safe").load_all(text) if d is not None]
    except YAMLError:
        return []


def images_in(node: Any) -> Iterator[str]:
    """Every ``image: <string>`` value in a loaded document, at any depth."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "image" and isinstance(value, str):
                yield value
            else:
                yield from images_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from images_in(item)
