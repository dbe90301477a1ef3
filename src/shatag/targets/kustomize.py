"""GitOps: the ``images:`` entry of a ``kustomization.yaml`` (what Argo CD Image Updater and
Flux image automation write), edited so that every other byte stays.

The entry whose ``name`` is the target's ``name`` gets ``newName`` (the repository), ``newTag``
(the SHA) and ``digest`` per the target's ``pin``: ``tag+digest`` writes both (kustomize renders
``repo:sha@sha256:…``), ``digest`` writes the digest and drops ``newTag``, ``tag`` writes the tag
and drops ``digest``. A missing entry is appended to ``images:`` (created at the end of the
file if absent). Argo CD or Flux applies the committed file; shatag only writes it.

>>> text = "resources:\\n- deployment.yaml\\nimages:\\n- name: api  # app\\n  newTag: old\\n"
>>> print(set_kustomize_image(text, "api", {"newName": "r/api", "newTag": "abc",
...                                          "digest": None}), end="")
resources:
- deployment.yaml
images:
- name: api  # app
  newTag: abc
  newName: r/api
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final

from shatag.core import ImageRef, PinFormat
from shatag.errors import ConfigError
from shatag.targets.files import FileKindSpec, FileTarget, file_kind, parse_file_spec

if TYPE_CHECKING:
    from ruamel.yaml.comments import CommentedSeq

NAME: Final = "kustomize"
KEYS: Final = frozenset({"kind", "path", "name", "pin"})
#: Field order of a new entry (kustomize's own order in `kustomize edit set image`).
FIELDS: Final = ("newName", "newTag", "digest")


@dataclass(frozen=True, slots=True)
class KustomizeSpec(FileKindSpec):
    """``path``: the kustomization.yaml; ``name``: the image name its resources use (the
    ``images:`` entry's ``name``)."""

    KIND_NAME: ClassVar[str] = NAME
    path: str
    name: str
    pin: PinFormat = "tag+digest"


def parse(where: str, raw: Mapping[str, Any]) -> KustomizeSpec:
    spec = parse_file_spec(
        where, raw, KEYS, NAME,
        lambda pin: KustomizeSpec(path=str(raw.get("path", "")), name=str(raw.get("name", "")),
                                  pin=pin),
        needs="the path of a kustomization.yaml",
    )  # fmt: skip
    if not spec.name or any(c.isspace() for c in spec.name):
        raise ConfigError(f"{where}: a {NAME} target needs name: <the image name to replace>")
    return spec


class KustomizeTarget(FileTarget[KustomizeSpec]):
    def render(self, current: str | None, image: ImageRef) -> str:
        if current is None:
            raise ConfigError(f"{self.label}: {self.path} does not exist")
        fields = image_fields(str(image.repository), image.sha, image.digest, self.spec.pin)
        return set_kustomize_image(current, self.spec.name, fields, where=self.label)


def image_fields(repository: str, sha: str, digest: str, pin: str) -> dict[str, str | None]:
    """``newName``/``newTag``/``digest`` for a pin format (``None``: the key is removed).

    >>> image_fields("r/api", "a" * 4, "sha256:b", "digest")
    {'newName': 'r/api', 'newTag': None, 'digest': 'sha256:b'}
    """
    return {
        "newName": repository,
        "newTag": None if pin == "digest" else sha,
        "digest": None if pin == "tag" else digest,
    }


def set_kustomize_image(
    text: str, name: str, fields: Mapping[str, str | None], *, where: str = "kustomize"
) -> str:
    """``text`` with the ``images:`` entry ``name`` set to ``fields``; nothing else changes."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    from shatag.targets._yamledit import Edit, apply_edits, load

    document = load(text, where)
    if document is None:
        document = CommentedMap()
    if not isinstance(document, CommentedMap):
        raise ConfigError(f"{where}: the kustomization is not a mapping")
    images = document.get("images")
    if images is None:
        return _append_images_block(text, name, fields)
    if not isinstance(images, CommentedSeq):
        raise ConfigError(f"{where}: 'images' in the kustomization is not a list")
    for index, entry in enumerate(images):
        if isinstance(entry, CommentedMap) and entry.get("name") == name:
            edits: list[Edit] = [(("images", index, k), fields.get(k)) for k in FIELDS]
            return apply_edits(text, edits, where=where)
    return _append_entry(text, images, name, fields, where)


def _entry_lines(indent: str, name: str, fields: Mapping[str, str | None]) -> list[str]:
    from shatag.targets._yamledit import plain_or_quoted

    lines = [f"{indent}- name: {plain_or_quoted(name)}\n"]
    lines += [
        f"{indent}  {k}: {plain_or_quoted(v)}\n" for k in FIELDS if (v := fields.get(k)) is not None
    ]
    return lines


def _append_images_block(text: str, name: str, fields: Mapping[str, str | None]) -> str:
    prefix = text if not text or text.endswith("\n") else text + "\n"
    return prefix + "images:\n" + "".join(_entry_lines("", name, fields))


def _append_entry(
    text: str, images: CommentedSeq, name: str, fields: Mapping[str, str | None], where: str
) -> str:
    """A new item after the last one of ``images`` (same indentation); the result is checked
    by re-parsing, else written by the round-trip dumper."""
    from ruamel.yaml.comments import CommentedMap

    from shatag.targets._yamledit import checked_or_dumped, intended, load

    expected = load(text, where)
    expected["images"].append(CommentedMap([("name", name)]))
    intended(
        expected, [(("images", len(images), k), v) for k, v in fields.items() if v is not None]
    )
    lines = text.splitlines(keepends=True)
    if images.fa.flow_style() or not images:
        candidate = None
    else:
        line, _col = images.lc.item(len(images) - 1)
        first = lines[line] if line < len(lines) else ""
        dash = len(first) - len(first.lstrip(" "))  # the column of the item's "- "
        if first.lstrip(" ").startswith("-"):
            end = _block_end(lines, line + 1, dash)
            before = lines[:end]
            if before and not before[-1].endswith("\n"):
                before[-1] += "\n"
            entry = _entry_lines(" " * dash, name, fields)
            candidate = "".join([*before, *entry, *lines[end:]])
        else:
            candidate = None
    return checked_or_dumped(candidate, expected)


def _block_end(lines: list[str], start: int, col: int) -> int:
    """The index after the last line that belongs to the sequence item that began before
    ``start`` at column ``col`` (blank and comment lines inside it included)."""
    end = start
    for i in range(start, len(lines)):
        stripped = lines[i].strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(lines[i]) - len(lines[i].lstrip(" "))
        if indent <= col:
            break
        end = i + 1
    return max(end, start)


KIND: Final = file_kind(NAME, KEYS, parse, KustomizeTarget)
