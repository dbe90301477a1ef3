"""GitOps: a Helm values file (what Flux image automation and Argo CD Image Updater write),
edited so that every other byte stays.

Three configurable dotted key paths: ``repository_key`` (default ``image.repository``),
``tag_key`` (``image.tag``) and ``digest_key`` (``image.digest``; empty: the chart has no digest
value). The repository always goes to ``repository_key``; the SHA to ``tag_key``; the digest to
``digest_key`` unless the pin is ``tag`` (then the digest key is emptied). A chart without a
digest value (``digest_key: ""``) and a pin carrying the digest gets ``<sha>@sha256:…`` as its tag,
so ``{{ .Values.image.repository }}:{{ .Values.image.tag }}`` still renders the pinned reference.
Every mapping on a key path must exist; a missing last key is added beside its siblings.

>>> text = "replicaCount: 2\\nimage:\\n  repository: old  # set by CI\\n  tag: \\"1.0\\"\\n"
>>> print(set_values(text, {"image.repository": "r/api", "image.tag": "abc",
...                         "image.digest": "sha256:d"}), end="")
replicaCount: 2
image:
  repository: r/api  # set by CI
  tag: "abc"
  digest: sha256:d
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from shatag.core import ImageRef, PinFormat
from shatag.errors import ConfigError
from shatag.targets.files import FileKindSpec, FileTarget, file_kind, parse_file_spec

NAME: Final = "helm_values"
KEYS: Final = frozenset({"kind", "path", "repository_key", "tag_key", "digest_key", "pin"})


@dataclass(frozen=True, slots=True)
class HelmValuesSpec(FileKindSpec):
    """The validated configuration of one ``helm_values`` target."""

    KIND_NAME: ClassVar[str] = NAME
    path: str
    repository_key: str = "image.repository"
    tag_key: str = "image.tag"
    digest_key: str = "image.digest"
    pin: PinFormat = "tag+digest"


def parse(where: str, raw: Mapping[str, Any]) -> HelmValuesSpec:
    spec = parse_file_spec(
        where,
        raw,
        KEYS,
        NAME,
        lambda pin: HelmValuesSpec(
            path=str(raw.get("path", "")),
            repository_key=str(raw.get("repository_key", "image.repository")),
            tag_key=str(raw.get("tag_key", "image.tag")),
            digest_key=str(raw.get("digest_key", "image.digest") or ""),
            pin=pin,
        ),
        needs="the path of a values file",
    )
    keys = [spec.repository_key, spec.tag_key] + ([spec.digest_key] if spec.digest_key else [])
    for what, key in zip(("repository_key", "tag_key", "digest_key"), keys, strict=False):
        parse_key_path(key, what=f"{where}.{what}")
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{where}: repository_key, tag_key and digest_key must differ")
    return spec


class HelmValuesTarget(FileTarget[HelmValuesSpec]):
    def render(self, current: str | None, image: ImageRef) -> str:
        if current is None:
            raise ConfigError(f"{self.label}: values file {self.path} does not exist")
        values = values_for(
            str(image.repository), image.sha, image.digest, self.spec.pin,
            repository_key=self.spec.repository_key, tag_key=self.spec.tag_key,
            digest_key=self.spec.digest_key,
        )  # fmt: skip
        return set_values(current, values, where=self.label)


def parse_key_path(key: str, *, what: str) -> tuple[str, ...]:
    """``image.tag`` → ``("image", "tag")``; empty parts are refused.

    >>> parse_key_path("app.image.tag", what="tag_key")
    ('app', 'image', 'tag')
    """
    parts = tuple(key.split("."))
    if not key or any(not p.strip() for p in parts):
        raise ConfigError(f"{what} {key!r} is not a dotted key path like image.tag")
    return parts


def values_for(
    repository: str, sha: str, digest: str, pin: str, *, repository_key: str, tag_key: str,
    digest_key: str,
) -> dict[str, str]:  # fmt: skip
    """Key path → value for one image.

    >>> values_for("r", "s", "sha256:d", "tag+digest", repository_key="i.r", tag_key="i.t",
    ...            digest_key="")
    {'i.r': 'r', 'i.t': 's@sha256:d'}
    """
    out = {repository_key: repository}
    if digest_key:
        out[tag_key] = sha
        out[digest_key] = "" if pin == "tag" else digest
    else:
        out[tag_key] = sha if pin == "tag" else f"{sha}@{digest}"
    return out


def set_values(text: str, values: Mapping[str, str], *, where: str = "helm_values") -> str:
    """``text`` with each dotted key set; nothing else changes."""
    from ruamel.yaml.comments import CommentedMap

    from shatag.targets._yamledit import Edit, apply_edits, load

    document = load(text, where)
    if not isinstance(document, CommentedMap):
        raise ConfigError(f"{where}: the values file is not a YAML mapping")
    edits: list[Edit] = []
    for dotted, value in values.items():
        path = parse_key_path(dotted, what="key")
        node: object = document
        for depth, part in enumerate(path[:-1]):
            child = node.get(part) if isinstance(node, CommentedMap) else None
            if not isinstance(child, CommentedMap):
                at = ".".join(path[: depth + 1])
                raise ConfigError(
                    f"{where}: {at} is not a mapping in the values file; add it "
                    f"(e.g. {at}: {{}}) so that {dotted} can be set"
                )
            node = child
        edits.append((path, value))
    return apply_edits(text, edits, where=where)


KIND: Final = file_kind(NAME, KEYS, parse, HelmValuesTarget)
