"""The configuration file and ``INVOKE_SHATAG_*`` variables (issue 13, items 1 and 6)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shatag._invoke import check_env_names, env_var_names, find_config_file, install_env_cast
from shatag.errors import ConfigError

KNOWN = env_var_names(
    {"canonical_repository": "", "main_branches": "", "context": "", "environments": {}}
)


def test_the_file_in_the_current_directory_wins(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "shatag.yaml").write_text("shatag: {}\n")
    sub = tmp_path / "svc"
    sub.mkdir()
    assert find_config_file(tmp_path) == tmp_path / "shatag.yaml"
    assert find_config_file(sub) == tmp_path / "shatag.yaml", "else the git top-level's"
    (sub / "shatag.yaml").write_text("shatag: {}\n")
    assert find_config_file(sub) == sub / "shatag.yaml"


def test_no_file_outside_git_and_without_one(tmp_path: Path) -> None:
    assert find_config_file(tmp_path) is None


@pytest.mark.parametrize(
    ("name", "closest"),
    [
        ("INVOKE_SHATAG_CANONICAL_REPO", "INVOKE_SHATAG_CANONICAL_REPOSITORY"),
        ("INVOKE_SHATAG_MAIN_BRANCH", "INVOKE_SHATAG_MAIN_BRANCHES"),
        ("INVOKE_SHATAG_CONTEX", "INVOKE_SHATAG_CONTEXT"),
    ],
)
def test_a_misspelled_variable_names_the_closest_key(name: str, closest: str) -> None:
    with pytest.raises(
        ConfigError, match=f"{name} is not a shatag setting; did you mean {closest}"
    ):
        check_env_names({name: "x"}, KNOWN)


def test_known_and_foreign_variables_pass() -> None:
    check_env_names({"INVOKE_SHATAG_CONTEXT": ".", "INVOKE_RUN_ECHO": "1", "PATH": "/bin"}, KNOWN)


def test_a_mapping_key_cannot_come_from_a_variable() -> None:
    with pytest.raises(ConfigError, match="cannot be set from an environment variable"):
        check_env_names({"INVOKE_SHATAG_DEFAULTS": "x"}, KNOWN, file_only={"defaults"})


@given(st.from_regex(r"INVOKE_SHATAG_[A-Z_]{1,30}", fullmatch=True))
def test_every_unknown_shatag_variable_is_a_config_error(name: str) -> None:
    if name in KNOWN:
        check_env_names({name: "x"}, KNOWN)
    else:
        with pytest.raises(ConfigError):
            check_env_names({name: "x"}, KNOWN)


def test_variables_over_file_values_reach_validation_without_a_traceback() -> None:
    """``INVOKE_SHATAG_MAIN_BRANCHES=trunk`` over a list from a file was ``UncastableEnvVar``."""
    from invoke.env import Environment

    install_env_cast()
    install_env_cast()  # idempotent
    env = Environment.__new__(Environment)
    assert env._cast(["main", "master"], "trunk, release") == ["trunk", "release"]
    assert env._cast(3, "abc") == "abc", "left to shatag's validation (CONFIG_ERROR)"
    assert env._cast(3, "4") == 4
    assert env._cast(True, "0") is False
    assert env._cast({"a": 1}, "x") == "x"
