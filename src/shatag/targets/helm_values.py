"""GitOps: a Helm values file (what Flux image automation and Argo CD Image Updater write),
edited so that every other byte stays.

Three configurable dotted key paths: ``repository_key`` (default ``image.repository``),
``tag_key`` (``image.tag``) and ``digest_key`` (default: ``image.digest`` when the file has it,
else none; empty: none). The repository always goes to ``repository_key``; the SHA to
``tag_key``; the digest to ``digest_key`` unless the pin is ``tag`` (then the digest key is
emptied). Without a digest key and with a pin carrying the digest, the tag gets
``<sha>@sha256:…``, so ``{{ .Values.image.repository }}:{{ .Values.image.tag }}`` still renders
the pinned reference.

The edit cannot miss (issue 23, item 2): every key path must already exist in the file as a
scalar -- a misspelled ``tag_key`` is refused, not created -- unless ``create_keys: true`` (then
a missing last key is added beside its siblings). With ``chart`` set and ``helm`` on PATH, ``helm
template`` renders the chart with the edited file, and an image of the pinned release must come
out; else the file is put back and the deploy refused.

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

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from shatag._sys import subproc
from shatag.core import ImageRef, PinFormat
from shatag.errors import ConfigError, DeployFailed, ToolFailure, ToolMissing, ToolTimeout
from shatag.targets._yamledit import image_name, images_in, load_all
from shatag.targets.files import FileKindSpec, FileTarget, file_kind, parse_file_spec
from shatag.targets.writeback import GIT_KEYS, GitPush, parse_git

log = logging.getLogger("shatag.targets")

NAME: Final = "helm_values"
KEYS: Final = (
    frozenset({"kind", "path", "repository_key", "tag_key", "digest_key", "pin", "create_keys",
               "chart"})
    | GIT_KEYS
)  # fmt: skip
#: The digest key used when the file has it and ``digest_key`` is not configured.
DEFAULT_DIGEST_KEY: Final = "image.digest"
RENDER_TIMEOUT_SEC: Final = 120.0


@dataclass(frozen=True, slots=True)
class HelmValuesSpec(FileKindSpec):
    """The validated configuration of one ``helm_values`` target."""

    KIND_NAME: ClassVar[str] = NAME
    path: str
    repository_key: str = "image.repository"
    tag_key: str = "image.tag"
    #: ``None``: :data:`DEFAULT_DIGEST_KEY` if the file has it, else none; ``""``: none.
    digest_key: str | None = None
    pin: PinFormat = "tag+digest"
    create_keys: bool = False
    chart: str = ""
    git: GitPush | None = None


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
            digest_key=str(raw["digest_key"] or "") if "digest_key" in raw else None,
            pin=pin,
            create_keys=raw.get("create_keys", False),
            chart=str(raw.get("chart", "") or ""),
            git=parse_git(where, raw),
        ),
        needs="the path of a values file",
    )
    if not isinstance(spec.create_keys, bool):
        raise ConfigError(f"{where}.create_keys must be true or false")
    digest = DEFAULT_DIGEST_KEY if spec.digest_key is None else spec.digest_key
    keys = [spec.repository_key, spec.tag_key] + ([digest] if digest else [])
    for what, key in zip(("repository_key", "tag_key", "digest_key"), keys, strict=False):
        parse_key_path(key, what=f"{where}.{what}")
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{where}: repository_key, tag_key and digest_key must differ")
    return spec


class HelmValuesTarget(FileTarget[HelmValuesSpec]):
    def render(self, current: str | None, image: ImageRef) -> str:
        from shatag.targets._yamledit import load

        if current is None:
            raise ConfigError(f"{self.label}: values file {self.path} does not exist")
        document = load(current, self.label)
        digest_key = self.spec.digest_key
        if digest_key is None:  # the default: the chart's digest value, if it has one
            digest_key = "" if key_problem(document, DEFAULT_DIGEST_KEY) else DEFAULT_DIGEST_KEY
        values = values_for(
            str(image.repository), image.sha, image.digest, self.spec.pin,
            repository_key=self.spec.repository_key, tag_key=self.spec.tag_key,
            digest_key=digest_key,
        )  # fmt: skip
        if not self.spec.create_keys:
            self._check_keys(document, values)
        return set_values(current, values, where=self.label)

    def _check_keys(self, document: Any, values: Mapping[str, str]) -> None:
        """Every key path is already a scalar of the file (a new key would render nothing)."""
        names = dict(zip(values, ("repository_key", "tag_key", "digest_key"), strict=False))
        for dotted in values:
            problem = key_problem(document, dotted)
            if problem:
                raise ConfigError(
                    f"{self.label}: refused: {names[dotted]} {dotted} {problem}; a key the chart "
                    "does not read would change nothing that runs. Fix the key path, or set "
                    "create_keys: true to add it. Nothing was written"
                )

    def verify(self) -> None:
        """With ``chart`` and ``helm`` on PATH: the chart renders the release's image."""
        if not self.spec.chart or self._image is None:
            return
        env = {**os.environ, **(self.ctx.env if self.ctx else {})}
        helm = subproc.which("helm", env)
        if helm is None:
            log.warning("%s: helm is not on PATH: the chart %s is not rendered to check the edit",
                        self.label, self.spec.chart)  # fmt: skip
            return
        argv = [helm, "template", "shatag-check", self.spec.chart, "-f", str(self.path)]
        try:
            out = subproc.run(argv, timeout=RENDER_TIMEOUT_SEC, env=env).stdout
        except (ToolFailure, ToolTimeout, ToolMissing) as exc:
            raise DeployFailed(
                f"{self.label}: helm template of {self.spec.chart} with the edited values fails "
                f"({exc}); the file is left as it was"
            ) from None
        image = self._image
        rendered = sorted(set(images_in(load_all(out))))
        if not any(renders_release(i, image) for i in rendered):
            raise ConfigError(
                f"{self.label}: refused: helm template {self.spec.chart} renders no image of "
                f"{image.reference(self.spec.pin)} (it renders {', '.join(rendered) or 'no image'}"
                "); the file is left as it was"
            )


def renders_release(reference: str, image: ImageRef) -> bool:
    """``reference`` names ``image``'s repository and its SHA tag or its digest.

    >>> from shatag.core import parse_repository
    >>> img = ImageRef(parse_repository("r.io/api"), "a" * 40, "sha256:" + "b" * 64)
    >>> renders_release(img.pinned, img), renders_release("r.io/api:latest", img)
    (True, False)
    """
    name = image_name(reference)
    rest = reference[len(name) :]
    return name == str(image.repository) and (
        rest.startswith(f":{image.sha}") or rest.endswith(f"@{image.digest}")
    )


def key_problem(document: Any, dotted: str) -> str:
    """Why the dotted key path is not a scalar of ``document`` (``""``: it is one).

    >>> from shatag.targets._yamledit import load
    >>> doc = load("image:\\n  repository: r\\n  tag: v\\n", "v")
    >>> key_problem(doc, "image.tag"), key_problem(doc, "image.tg")
    ('', 'is not in the values file (image has repository, tag)')
    """
    node: Any = document
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, Mapping) or part not in node:
            at = ".".join(parts[:depth]) or "the file"
            has = ", ".join(str(k) for k in node) if isinstance(node, Mapping) else ""
            return f"is not in the values file ({at} has {has or 'no keys'})"
        node = node[part]
    if isinstance(node, Mapping | list):
        return f"is a {'mapping' if isinstance(node, Mapping) else 'list'}, not a value"
    return ""


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


KIND: Final = file_kind(NAME, KEYS, parse, HelmValuesTarget, paths=frozenset({"chart"}))
