"""The throwaway envfile kind: configured through Settings, deployed, recovered."""

from __future__ import annotations

from pathlib import Path

import pytest

from shatag.config import Settings
from shatag.core import ImageRef, parse_repository
from shatag.errors import ConfigError
from shatag.targets import TargetContext, make_target, recover

IMG = ImageRef(parse_repository("127.0.0.1:5000/api"), "a" * 40, "sha256:" + "b" * 64)


def test_envfile_kind_end_to_end(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("A=1\nIMAGE=old\n")
    settings = Settings.from_mapping(
        {"environments": {"x": {"targets": [{"kind": "envfile", "path": str(env_file)}]}}}
    )
    target = make_target(settings.environment("x").targets[0], TargetContext())
    target.prepare(IMG)
    target.apply()
    assert env_file.read_text() == f"A=1\nIMAGE={IMG.pinned}\n"
    assert recover(target.journal(), TargetContext()) == f"restored {env_file}"
    assert env_file.read_text() == "A=1\nIMAGE=old\n"
    with pytest.raises(ConfigError, match="unknown keys name for kind envfile"):
        Settings.from_mapping(
            {"environments": {"x": {"targets": [{"kind": "envfile", "path": "p", "name": "n"}]}}}
        )
