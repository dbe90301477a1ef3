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


# --- environments (item 2), paths (item 1), apply (item 6) --------------------------------

from shatag.cli import program  # noqa: E402
from shatag.config import Settings  # noqa: E402

PROD = {"production": {"targets": [{"kind": "tfvars", "path": "infra/image.auto.tfvars.json"}]}}


def test_without_environments_the_builtin_local_is_the_default() -> None:
    settings = Settings.from_mapping({})
    assert sorted(settings.environments) == ["local"]
    assert settings.environment(None).name == "local"


def test_configured_environments_replace_the_builtin_and_need_env() -> None:
    settings = Settings.from_mapping({"environments": PROD})
    assert sorted(settings.environments) == ["production"]
    with pytest.raises(ConfigError, match=r"--env=NAME \(configured: production\)"):
        settings.environment(None)
    with pytest.raises(ConfigError, match="'local' is not configured"):
        settings.environment("local")
    chosen = Settings.from_mapping({"environments": PROD, "default_env": "production"})
    assert chosen.environment(None).name == "production"
    with pytest.raises(ConfigError, match="default_env names 'staging'"):
        Settings.from_mapping({"environments": PROD, "default_env": "staging"})


def test_relative_paths_resolve_against_the_file_that_set_them(tmp_path: Path) -> None:
    app, cwd = tmp_path / "app", tmp_path / "elsewhere"
    settings = Settings.from_mapping(
        {
            "context": "svc",
            "state_dir": "/var/lib/shatag",
            "metadata_dir": "meta",
            "cosign_key": "env://COSIGN_KEY",
            "cosign_public_key": "keys/cosign.pub",
            "environments": PROD,
        },
        base_dirs={"context": app, "metadata_dir": cwd, "cosign_public_key": app},
        base_dir=app,
    )
    assert settings.context == app / "svc"
    assert settings.state_dir == Path("/var/lib/shatag")
    assert settings.metadata_dir == cwd / "meta"  # set by a variable: the working directory
    assert settings.sbom_dir == app / "build/sbom"  # a default: the file's directory
    assert settings.cosign_key == "env://COSIGN_KEY"
    assert settings.cosign_public_key == str(app / "keys/cosign.pub")
    (target,) = settings.environment("production").targets
    assert target.label == f"tfvars:{app / 'infra/image.auto.tfvars.json'}"
    assert settings.base_dir == app


@pytest.mark.parametrize(
    ("apply", "argv"),
    [
        (
            "tofu -chdir=infra apply -auto-approve",
            ("tofu", "-chdir=infra", "apply", "-auto-approve"),
        ),
        (
            ["sh", "-c", "echo $SHATAG_IMAGE_REF | tee x"],
            ("sh", "-c", "echo $SHATAG_IMAGE_REF | tee x"),
        ),
        ("", ()),
        (None, ()),
    ],
)
def test_apply_is_an_argument_list(apply: object, argv: tuple[str, ...]) -> None:
    envs = {"p": {**PROD["production"], "apply": apply}}
    assert Settings.from_mapping({"environments": envs}).environment("p").apply == argv


@pytest.mark.parametrize("apply", ["tofu 'unclosed", [1, 2], {"cmd": "x"}, ["", "x"]])
def test_a_bad_apply_is_a_config_error(apply: object) -> None:
    with pytest.raises(ConfigError, match=r"environments\.p\.apply"):
        Settings.from_mapping({"environments": {"p": {**PROD["production"], "apply": apply}}})


def test_list_keys_take_comma_separated_values() -> None:
    settings = Settings.from_mapping(
        {"main_branches": "trunk, release", "build_inputs": "bin/busybox,dist"}
    )
    assert settings.main_branches == ("trunk", "release")
    assert settings.build_inputs == ("bin/busybox", "dist")
    with pytest.raises(ConfigError, match="build_source"):
        Settings.from_mapping({"build_source": "tree"})


def _run_shatag(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[str, str]:
    program.run(["shatag", *argv], exit=False)
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_dry_is_refused_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INVOKE_RUNTIME_CONFIG", raising=False)
    _, err = _run_shatag(capsys, "--dry", "deploy", f"--sha={'a' * 40}")
    assert "error: INVALID_INPUT: -R/--dry" in err
    assert "--plan" in err
    assert not (tmp_path / ".shatag").exists()


def test_a_variable_over_a_list_from_the_file_is_no_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``INVOKE_SHATAG_MAIN_BRANCHES=trunk`` with a list in the file was UncastableEnvVar."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INVOKE_RUNTIME_CONFIG", raising=False)
    (tmp_path / "shatag.yaml").write_text("shatag:\n  main_branches: [main, master]\n")
    monkeypatch.setenv("INVOKE_SHATAG_MAIN_BRANCHES", "trunk")
    _, err = _run_shatag(capsys, "history", "--json")
    assert "Traceback" not in err
    assert "error:" not in err, err
    monkeypatch.setenv("INVOKE_SHATAG_CANONICAL_REPO", "ghcr.io/x/y")
    _, err = _run_shatag(capsys, "history")
    assert "error: CONFIG_ERROR: INVOKE_SHATAG_CANONICAL_REPO is not a shatag setting; " in err
    assert "did you mean INVOKE_SHATAG_CANONICAL_REPOSITORY?" in err


def test_a_debug_line_names_the_loaded_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``inv`` and ``shatag`` both log which file they loaded (SHATAG_DEBUG=1 shows it)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INVOKE_RUNTIME_CONFIG", raising=False)
    (tmp_path / "shatag.yaml").write_text("shatag: {}\n")
    with caplog.at_level("DEBUG", logger="shatag.tasks"):
        _run_shatag(capsys, "history", "--json")
    assert f"configuration file: {tmp_path / 'shatag.yaml'}" in caplog.text


def test_each_key_resolves_against_the_layer_that_set_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``inv -f ../app/invoke.yaml`` from elsewhere finds the app's files (item 1): a key from
    the file resolves against the file's directory, a variable against the working directory,
    a default against the loaded file's directory."""
    from invoke.config import Config

    from shatag._defaults import invoke_defaults
    from shatag._invoke import layer_dirs

    app, cwd = tmp_path / "app", tmp_path / "clone"
    app.mkdir()
    cwd.mkdir()
    (app / "invoke.yaml").write_text(
        "shatag:\n  context: svc\n  environments:\n    p:\n      targets:\n"
        "        - {kind: sdl, path: infra/akash/deploy.yaml, service: api}\n"
    )
    monkeypatch.setenv("INVOKE_SHATAG_METADATA_DIR", "meta")
    config = Config(
        defaults={**Config.global_defaults(), "shatag": invoke_defaults()},
        runtime_path=app / "invoke.yaml",
    )
    config.load_runtime()
    config.load_shell_env()
    loaded, dirs = layer_dirs(config, cwd)
    assert loaded == app / "invoke.yaml"
    assert dirs["context"] == app
    assert dirs["metadata_dir"] == cwd
    assert dirs["state_dir"] == app
    from shatag.tasks import _plain

    settings = Settings.from_mapping(_plain(config.get("shatag")), base_dirs=dirs, base_dir=app)
    assert settings.context == app / "svc"
    assert settings.metadata_dir == cwd / "meta"
    (target,) = settings.environment("p").targets
    assert target.label == f"sdl:{app / 'infra/akash/deploy.yaml'}"


def test_a_variable_overrides_the_same_key_in_shatag_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``INVOKE_SHATAG_STATE_BACKEND=git`` over ``state_backend: local`` in shatag.yaml silently
    stayed on local state (issue 23, item 7): variables override the file, as documented."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INVOKE_RUNTIME_CONFIG", raising=False)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    (tmp_path / "shatag.yaml").write_text("shatag:\n  state_backend: local\n")
    _, err = _run_shatag(capsys, "history", "--json")
    assert "error:" not in err, err
    monkeypatch.setenv("INVOKE_SHATAG_STATE_BACKEND", "git")
    _, err = _run_shatag(capsys, "history", "--json")
    assert "error: LEDGER_UNAVAILABLE:" in err, err  # the git ledger, in a directory without git
    assert not (tmp_path / ".shatag").exists()
