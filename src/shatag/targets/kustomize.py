"""GitOps: the ``images:`` entry of a ``kustomization.yaml`` (what Argo CD Image Updater and
Flux image automation write), edited so that every other byte stays.

The entry whose ``name`` is the target's ``name`` gets ``newName`` (the repository), ``newTag``
(the SHA) and ``digest`` per the target's ``pin``: ``tag+digest`` writes both (kustomize renders
``repo:sha@sha256:…``), ``digest`` writes the digest and drops ``newTag``, ``tag`` writes the tag
and drops ``digest``. A missing entry is appended to ``images:`` (created at the end of the
file if absent). Argo CD or Flux applies the committed file; shatag writes it (and, with
``git_push``, commits and pushes it: :mod:`shatag.targets.writeback`).

The edit cannot miss (issue 23, item 2): after the write, the kustomization is rendered
(``renderer``: ``kustomize build`` or ``kubectl kustomize``, whichever is on PATH, or the one
configured) and the output must hold the pinned reference; else the file is put back and the
deploy refused. Without a renderer (``renderer: none``, or none on PATH) the check is static and
made before anything is written: ``name`` must be the image of a container in the listed
resources (local files, and the kustomizations of local directories, recursively).

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

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final

from shatag._sys import subproc
from shatag.core import ImageRef, PinFormat
from shatag.errors import ConfigError, DeployFailed, ToolFailure, ToolMissing, ToolTimeout
from shatag.targets._yamledit import image_name, images_in, load_all
from shatag.targets.files import FileKindSpec, FileTarget, file_kind, parse_file_spec
from shatag.targets.writeback import GIT_KEYS, GitPush, parse_git

if TYPE_CHECKING:
    from ruamel.yaml.comments import CommentedSeq

NAME: Final = "kustomize"
KEYS: Final = frozenset({"kind", "path", "name", "pin", "renderer"}) | GIT_KEYS
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
    #: ``""``: ``kustomize`` or ``kubectl`` from PATH; ``none``: the static check; else the
    #: program (``kubectl``-named: ``<it> kustomize <dir>``, else ``<it> build <dir>``).
    renderer: str = ""
    git: GitPush | None = None


def parse(where: str, raw: Mapping[str, Any]) -> KustomizeSpec:
    spec = parse_file_spec(
        where, raw, KEYS, NAME,
        lambda pin: KustomizeSpec(path=str(raw.get("path", "")), name=str(raw.get("name", "")),
                                  pin=pin, renderer=str(raw.get("renderer", "") or ""),
                                  git=parse_git(where, raw)),
        needs="the path of a kustomization.yaml",
    )  # fmt: skip
    if not spec.name or any(c.isspace() for c in spec.name):
        raise ConfigError(f"{where}: a {NAME} target needs name: <the image name to replace>")
    return spec


class KustomizeTarget(FileTarget[KustomizeSpec]):
    def render(self, current: str | None, image: ImageRef) -> str:
        if current is None:
            raise ConfigError(f"{self.label}: {self.path} does not exist")
        if self._renderer() is None:
            self._check_static(current)
        fields = image_fields(str(image.repository), image.sha, image.digest, self.spec.pin)
        return set_kustomize_image(current, self.spec.name, fields, where=self.label)

    def _renderer(self) -> list[str] | None:
        """The command that renders the kustomization's directory (``None``: none)."""
        env = {**os.environ, **self._env()}
        directory = str(self.path.parent)
        if self.spec.renderer == "none":
            return None
        if self.spec.renderer:
            found = subproc.which(self.spec.renderer, env)
            if found is None:
                raise ConfigError(f"{self.label}: renderer {self.spec.renderer!r} is not on PATH")
            sub = "kustomize" if Path(found).name.startswith("kubectl") else "build"
            return [found, sub, directory]
        for program, sub in (("kustomize", "build"), ("kubectl", "kustomize")):
            found = subproc.which(program, env)
            if found is not None:
                return [found, sub, directory]
        return None

    def _env(self) -> dict[str, str]:
        return dict(self.ctx.env) if self.ctx else {}

    def verify(self) -> None:
        """The written kustomization renders the pinned reference (when a renderer is there)."""
        argv = self._renderer()
        if argv is None or self._image is None:
            return
        try:
            out = subproc.run(argv, timeout=RENDER_TIMEOUT_SEC, env=self._env()).stdout
        except (ToolFailure, ToolTimeout, ToolMissing) as exc:
            raise DeployFailed(
                f"{self.label}: the edited kustomization does not render ({exc}); it is left as "
                "it was (renderer: none checks the resources statically instead)"
            ) from None
        expected = self._image.reference(self.spec.pin)
        images = sorted(set(images_in(load_all(out))))
        if expected not in images:
            raise ConfigError(
                f"{self.label}: refused: {Path(argv[0]).name} {argv[1]} renders no container "
                f"image {expected} -- no resource uses the image name {self.spec.name!r} (it "
                f"renders {', '.join(images) or 'no image'}); the file is left as it was"
            )

    def _check_static(self, current: str) -> None:
        """``name`` is the image of a container in the listed resources (no renderer)."""
        found, unknown = _resource_images(self.path.parent, current, set())
        names = {image_name(i) for i in found}
        if self.spec.name in names:
            return
        if unknown:
            log.warning(
                "%s: cannot check that a resource uses the image %r (%s; no renderer: install "
                "kustomize or kubectl, or set renderer)", self.label, self.spec.name,
                ", ".join(unknown),
            )  # fmt: skip
            return
        raise ConfigError(
            f"{self.label}: refused: no resource of {self.path} uses the image name "
            f"{self.spec.name!r} (they use {', '.join(sorted(names)) or 'no image'}); the edit "
            "would change nothing that runs. Nothing was written"
        )


log = logging.getLogger("shatag.targets")
RENDER_TIMEOUT_SEC: Final = 120.0
#: The kustomization file names kustomize looks for in a directory.
KUSTOMIZATION_FILES: Final = ("kustomization.yaml", "kustomization.yml", "Kustomization")


def _resource_images(directory: Path, text: str, seen: set[str]) -> tuple[list[str], list[str]]:
    """The images of the resources a kustomization lists, and what could not be read."""
    found: list[str] = []
    unknown: list[str] = []
    docs = load_all(text)
    kustomization = docs[0] if docs and isinstance(docs[0], Mapping) else {}
    entries = [
        str(e) for key in ("resources", "bases", "components")
        for e in (kustomization.get(key) or []) if isinstance(e, str)
    ]  # fmt: skip
    for entry in entries:
        where = directory / entry
        real = os.path.realpath(where)
        if "://" in entry or entry.startswith(("github.com/", "git@")):
            unknown.append(f"{entry} is remote")
        elif real in seen:
            continue
        elif where.is_dir():
            seen.add(real)
            inner = next((where / n for n in KUSTOMIZATION_FILES if (where / n).is_file()), None)
            if inner is None:
                unknown.append(f"{entry} has no kustomization")
                continue
            more, missing = _resource_images(where, inner.read_text(encoding="utf-8"), seen)
            found += more
            unknown += missing
        elif where.is_file():
            seen.add(real)
            found += images_in(load_all(where.read_text(encoding="utf-8")))
        else:
            unknown.append(f"{entry} is not found")
    return found, unknown


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
