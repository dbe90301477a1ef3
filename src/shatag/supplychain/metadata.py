"""The build metadata files (``<metadata_dir>/<sha>.json``, FR-006): the one reader.

``inv build`` writes one per image (:func:`shatag.output.write_json_atomic`); the build's reuse
check, the deploy's digest guard (``--metadata``) and ``inv signatures`` read them here.

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "meta.json"
>>> load_metadata(path) is None
True
>>> _ = path.write_text('{"image_sha": "abc"}')
>>> load_metadata(path)
{'image_sha': 'abc'}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final, TypedDict, TypeGuard

from shatag.errors import InvalidInput


class BuildMetadata(TypedDict, total=False):
    """What a metadata file holds: the build record (:meth:`shatag.app.build.BuildRecord.as_dict`)
    -- the keys read back are typed here; :func:`load_metadata` checks their types. A file
    written by an older version may lack any of them."""

    phase: str
    image_sha: str
    short_sha: str
    repository: str
    repository_type: str
    image_digest: str
    image_ref: str
    arch: str
    signature_status: str
    signature_reason: str
    sbom_status: str
    sbom_ref: str
    sbom_digest: str
    build_duration_sec: float
    pre_push_digest: str
    post_push_digest: str
    config_digest: str
    push_reported_digest: str
    digest_verification: str
    reused: bool
    builder: str
    branch: str
    created_at: str
    build_source: str
    #: ``{path, sha256, size}`` each (:class:`shatag._sys.source.BuildInput`).
    build_inputs: list[dict[str, object]]
    #: ``{path, sha}`` each: the submodules the context held (issue 24).
    submodules: list[dict[str, str]]
    #: ``NAME -> value``: the rendered ``build_args`` (issue 23, item 7).
    build_args: dict[str, str]
    manifest_kind: str
    error_code: str


#: The JSON types of the keys of :class:`BuildMetadata` that are not text.
_NOT_TEXT: Final[dict[str, tuple[type, ...]]] = {
    "build_duration_sec": (int, float),
    "reused": (bool,),
    "build_inputs": (list,),
    "submodules": (list,),
    "build_args": (dict,),
}
_KEYS: Final = frozenset(BuildMetadata.__annotations__)


def load_metadata(path: Path) -> BuildMetadata | None:
    """The JSON object in ``path``; ``None`` when the file does not exist.

    Raises :class:`InvalidInput` when it exists but is unreadable, not a JSON object, or a key
    of :class:`BuildMetadata` holds another JSON type (``null``: as if the key were missing).
    """
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"metadata file {path} is unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"metadata file {path} does not hold a JSON object")
    data = {k: v for k, v in data.items() if not (v is None and k in _KEYS)}
    if not _is_metadata(data):
        key = _wrong_key(data)
        raise InvalidInput(
            f"metadata file {path} is unreadable: {key} holds {type(data[key]).__name__}"
        )
    return data


def _is_metadata(data: dict[str, object]) -> TypeGuard[BuildMetadata]:
    return _wrong_key(data) == ""


def _wrong_key(data: dict[str, object]) -> str:
    """The first key of :class:`BuildMetadata` in ``data`` whose value has another JSON type
    (``""``: none)."""
    for key in sorted(_KEYS & data.keys()):
        value = data[key]
        kinds = _NOT_TEXT.get(key, (str,))
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            return key
    return ""
