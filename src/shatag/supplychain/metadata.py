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
from typing import Any

from shatag.errors import InvalidInput


def load_metadata(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; ``None`` when the file does not exist.

    Raises :class:`InvalidInput` when it exists but is unreadable or not a JSON object.
    """
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"metadata file {path} is unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"metadata file {path} does not hold a JSON object")
    return data
