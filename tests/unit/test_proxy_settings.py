"""Issue 12, pure parts: the docker target's settings, ownership labels, the proxy's config, and
signals turned into INTERRUPTED. The real proxy runs in tests/reliability/test_proxy_switch.py."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shatag._sys import signals
from shatag.config import Settings
from shatag.errors import ConfigError, NotOwned
from shatag.targets import TargetContext, make_target
from shatag.targets.docker import DockerSpec, DockerTarget
from shatag.targets.docker.app import (
    parse_env,
    parse_secrets,
    parse_volumes,
    validate_container_name,
)
from shatag.targets.docker.caddy import caddy_config, parse_upstream
from shatag.targets.docker.gated import GatedDockerTarget
from shatag.targets.docker.owned import check_owned, owner_labels
from shatag.targets.docker.proxy import established
from shatag.targets.docker.proxy_image import is_static_elf


def _settings(*targets: dict[str, Any], **envs: list[dict[str, Any]]) -> Settings:
    environments = {name: {"targets": t} for name, t in envs.items()}
    if targets:
        environments["one"] = {"targets": list(targets)}
    return Settings.from_mapping({"environments": environments})


def _docker(**extra: Any) -> dict[str, Any]:
    return {"kind": "docker", "name": "api", "port": 8080, "container_port": 8080, **extra}


# -- config keys ----------------------------------------------------------------------------


def test_docker_keys_parse_into_the_target() -> None:
    target = (
        _settings(
            _docker(
                env={"LOG_LEVEL": "info", "WORKERS": 4, "DEBUG": False},
                secrets=["API_TOKEN"],
                volumes=["data:/var/lib/app", "/srv/conf:/etc/app:ro"],
                proxy_image="caddy:2",
            )
        )
        .environment("one")
        .targets[0]
    )
    assert isinstance(target, DockerSpec)
    assert target.env == (("LOG_LEVEL", "info"), ("WORKERS", "4"), ("DEBUG", "false"))
    assert target.secrets == ("API_TOKEN",)
    assert target.volumes == ("data:/var/lib/app", "/srv/conf:/etc/app:ro")
    assert (target.proxy, target.proxy_image) == (True, "caddy:2")


def test_proxy_false_selects_the_stop_then_start_switch() -> None:
    spec = _settings(_docker(proxy=False)).environment("one").targets[0]
    assert isinstance(spec, DockerSpec)
    assert spec.proxy is False
    assert isinstance(make_target(spec, TargetContext()), DockerTarget)
    gated = _settings(_docker()).environment("one").targets[0]
    assert isinstance(make_target(gated, TargetContext()), GatedDockerTarget)


def test_two_environments_with_one_container_name_are_refused_at_config_time() -> None:
    with pytest.raises(ConfigError, match="configured twice"):
        _settings(staging=[_docker()], production=[_docker()])


def test_one_environment_with_the_name_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="configured twice"):
        _settings(_docker(), _docker(port=8081))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"env": ["A=1"]}, "env must be a mapping"),
        ({"env": {"1BAD": "x"}}, "not a valid environment variable name"),
        ({"env": {"A": {"nested": 1}}}, "string, number or boolean"),
        ({"env": {"A": "two\nlines"}}, "one line"),
        ({"env": {"PATH": "/x"}}, "reserved"),
        ({"secrets": "TOKEN,TOKEN"}, "twice"),
        ({"secrets": [{"x": 1}]}, "not a valid"),
        ({"env": {"TOKEN": "x"}, "secrets": ["TOKEN"]}, "both in env and in secrets"),
        ({"volumes": "data:/x"}, "list"),
        ({"volumes": ["data"]}, "SOURCE:DEST"),
        ({"volumes": ["rel/dir:/x"]}, "absolute host path"),
        ({"volumes": ["data:relative"]}, "absolute path"),
        ({"volumes": ["data:/x:z"]}, "ro or rw"),
        ({"proxy": "maybe"}, "true or false"),
        ({"proxy_image": "--privileged"}, "image reference"),
        ({"name": "bad name"}, "name must be"),
        ({"name": "-leading"}, "name must be"),
        ({"health_timeout_sec": 0}, "positive"),
    ],
)
def test_bad_docker_settings_are_config_errors(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _settings(_docker(**extra))


@given(st.dictionaries(st.text(max_size=12), st.none() | st.text(max_size=12) | st.integers()))
def test_any_env_mapping_parses_or_is_a_config_error(raw: dict[str, Any]) -> None:
    try:
        parsed = parse_env(raw, "t")
    except ConfigError:
        return
    assert [k for k, _ in parsed] == list(raw)


@given(st.lists(st.text(max_size=30), max_size=5) | st.text(max_size=30) | st.integers())
def test_any_volume_list_parses_or_is_a_config_error(raw: Any) -> None:
    try:
        parsed = parse_volumes(raw, "t")
    except ConfigError:
        return
    for item in parsed:
        source, dest = item.split(":")[:2]
        assert dest.startswith("/")
        assert source


@given(st.lists(st.text(max_size=20), max_size=5) | st.text(max_size=30))
def test_any_secret_list_parses_or_is_a_config_error(raw: Any) -> None:
    try:
        names = parse_secrets(raw, "t")
    except ConfigError:
        return
    assert all(n.isidentifier() or n.replace("_", "a").isalnum() for n in names)


@given(st.text(max_size=70))
def test_any_container_name_is_valid_or_a_config_error(raw: str) -> None:
    try:
        name = validate_container_name(raw, "t")
    except ConfigError:
        return
    assert name == raw
    assert not name.startswith("-")


# -- ownership ------------------------------------------------------------------------------


def test_only_our_labels_for_this_env_and_target_are_ours() -> None:
    check_owned(
        "container", "api", owner_labels("prod", "api", "app"), env_name="prod", target="api"
    )
    for labels, message in [
        ({}, "no shatag labels"),
        ({"com.example": "x"}, "no shatag labels"),
        (owner_labels("staging", "api", "app"), "belongs to shatag environment 'staging'"),
        (owner_labels("prod", "web", "app"), "target 'web'"),
    ]:
        with pytest.raises(NotOwned, match=message) as info:
            check_owned("container", "api", labels, env_name="prod", target="api")
        assert info.value.code == "NOT_OWNED"


def test_containers_of_earlier_shatag_versions_count_as_ours_in_their_env() -> None:
    legacy = {"shatag.env": "prod", "shatag.sha": "a" * 40}
    check_owned("container", "api", legacy, env_name="prod", target="api")
    with pytest.raises(NotOwned):
        check_owned("container", "api", legacy, env_name="staging", target="api")


# -- the proxy's config ---------------------------------------------------------------------


@given(st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,40}", fullmatch=True), st.integers(1, 65535))
def test_an_upstream_round_trips_through_its_file_text(name: str, port: int) -> None:
    assert parse_upstream(f"{name}:{port}\n") == f"{name}:{port}"


@given(st.text(max_size=40))
def test_any_upstream_text_is_a_dial_or_none(text: str) -> None:
    parsed = parse_upstream(text)
    if parsed is not None:
        assert ":" in parsed
        assert not any(c.isspace() for c in parsed)


def test_the_config_names_no_container_and_no_tcp_admin_port() -> None:
    config = caddy_config()
    assert config["admin"]["listen"].startswith("unix/")  # never a TCP port
    assert "{file." in json.dumps(config)  # the upstream is read per request


def test_established_counts_nothing_for_a_process_that_does_not_exist() -> None:
    assert established(2**22 + 12345, 8080) is None


def test_a_dynamically_linked_binary_is_not_static(tmp_path: Path) -> None:
    assert not is_static_elf(Path(sys.executable).resolve())
    text = tmp_path / "caddy"
    text.write_text("#!/bin/sh\n")
    assert not is_static_elf(text)
    assert not is_static_elf(tmp_path / "missing")


# -- signals --------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_becomes_interrupted_and_is_only_noted_while_held(sig: signal.Signals) -> None:
    before = signal.getsignal(sig)

    def send_twice() -> None:
        with signals.graceful():
            with signals.hold():
                os.kill(os.getpid(), sig)
                assert signals.pending() == (sig.name,)
            os.kill(os.getpid(), sig)

    with pytest.raises(signals.Interrupted) as info:
        send_twice()
    assert info.value.code == "INTERRUPTED"
    assert sig.name in info.value.message
    assert signal.getsignal(sig) == before


def test_after_the_switch_signals_change_nothing() -> None:
    with signals.graceful():
        signals.hold_to_end()
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.pending() == ("SIGTERM",)
    assert not signals.held()
