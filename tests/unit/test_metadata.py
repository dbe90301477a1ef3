"""The build metadata reader (issue 22, item 3): a typed result, and a file whose keys hold
other JSON types is refused rather than typed wrongly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shatag.errors import InvalidInput
from shatag.supplychain.metadata import load_metadata


def test_a_build_record_is_read_back_as_written(tmp_path: Path) -> None:
    record = {
        "phase": "build",
        "image_sha": "a" * 40,
        "image_digest": "sha256:" + "b" * 64,
        "build_duration_sec": 1.5,
        "reused": False,
        "build_inputs": [{"path": "bin/x", "sha256": "c" * 64, "size": 3}],
        "manifest_kind": "index",
        "attestation_manifests": ["sha256:" + "d" * 64],  # not typed: kept as it is
    }
    path = tmp_path / "meta.json"
    path.write_text(json.dumps(record))
    assert load_metadata(path) == record


def test_null_is_read_as_a_missing_key(tmp_path: Path) -> None:
    path = tmp_path / "meta.json"
    path.write_text(json.dumps({"image_sha": "a" * 40, "builder": None, "other": None}))
    assert load_metadata(path) == {"image_sha": "a" * 40, "other": None}


@pytest.mark.parametrize(
    ("key", "value", "held"),
    [
        ("image_digest", 7, "int"),
        ("repository", ["ghcr.io/o/a"], "list"),
        ("reused", "yes", "str"),
        ("build_duration_sec", True, "bool"),
        ("build_inputs", {"path": "x"}, "dict"),
    ],
)
def test_a_key_of_another_type_is_invalid_input(
    tmp_path: Path, key: str, value: object, held: str
) -> None:
    path = tmp_path / "meta.json"
    path.write_text(json.dumps({"image_sha": "a" * 40, key: value}))
    with pytest.raises(InvalidInput, match=f"{key} holds {held}"):
        load_metadata(path)
