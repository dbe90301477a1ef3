"""The pure core: SHA, short SHA, references, routing, config (issue 2 unit tier)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shatag.app.build import BuildRecord
from shatag.config import Settings
from shatag.core import (
    RepositoryType,
    ensure_immutable_tag,
    is_loopback_host,
    parse_repository,
    pinned_reference,
    route_repository,
    short_sha,
    split_pinned_reference,
    validate_branch,
    validate_sha,
)
from shatag.errors import ConfigError, InvalidInput, MissingSha, PolicyViolation, ShatagError
from shatag.targets.docker import DockerSpec
from tests.conftest import BUILD_LOG_KEYS

HEX = "0123456789abcdef"
shas = st.text(alphabet=HEX, min_size=40, max_size=40)
digests = st.text(alphabet=HEX, min_size=64, max_size=64).map(lambda h: "sha256:" + h)


@given(shas)
def test_valid_sha_round_trips_and_short_sha_is_its_prefix(sha: str) -> None:
    assert validate_sha(sha) == sha
    assert short_sha(sha) == sha[:12]
    assert ensure_immutable_tag(sha) == sha


@given(st.text(max_size=80))
def test_anything_else_is_refused_with_a_code(value: str) -> None:
    if len(value) == 40 and set(value) <= set(HEX):
        assert validate_sha(value) == value
        return
    with pytest.raises((MissingSha, PolicyViolation)) as info:
        validate_sha(value)
    assert info.value.code in ("MISSING_SHA", "POLICY_VIOLATION")
    assert len(str(info.value)) < 300  # long hostile input is cut in messages


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("", MissingSha),
        ("0" * 39, MissingSha),
        ("0" * 41, MissingSha),
        ("A" * 40, MissingSha),
        ("latest", PolicyViolation),
        ("main", PolicyViolation),
        ("v1.2.3", PolicyViolation),
        ("stable", PolicyViolation),
        ("sha256:" + "a" * 64, MissingSha),
        ("$(id)", MissingSha),
        ("0" * 40 + "\n", MissingSha),
        ("\uff10" * 40, MissingSha),  # fullwidth digits look like hex
    ],
)
def test_documented_sha_refusals(value: str, error: type[ShatagError]) -> None:
    with pytest.raises(error):
        validate_sha(value)


def test_floating_tags_never_pass_the_guard() -> None:
    for tag in ("latest", "main", "stable", "1.0", "v2", "0123456789ab"):
        with pytest.raises(PolicyViolation):
            ensure_immutable_tag(tag)


@pytest.mark.parametrize(
    ("branch", "expected"),
    [
        ("main", "canonical"),
        ("master", "canonical"),
        ("feature/x", "staging"),
        ("mainx", "staging"),
    ],
)
def test_routing(branch: str, expected: str) -> None:
    assert route_repository(branch, ("main", "master")) is RepositoryType(expected)


@given(st.text(alphabet=string.ascii_letters + string.digits + "-_/.", min_size=1, max_size=40))
def test_routing_is_canonical_only_for_main_branches(branch: str) -> None:
    try:
        validate_branch(branch)
    except InvalidInput:
        return
    kind = route_repository(branch, ("main", "master"))
    assert (kind is RepositoryType.CANONICAL) == (branch in ("main", "master"))


@pytest.mark.parametrize(
    "branch", ["", "-x", "a..b", "a b", "a\nb", "x.lock", "a~1", "a^", "a:b", "a\\b", "é", "/a"]
)
def test_bad_branches(branch: str) -> None:
    with pytest.raises(InvalidInput):
        validate_branch(branch)


def test_repository_parsing() -> None:
    repo = parse_repository("ghcr.io/mconstant/pay2slay-api")
    assert (repo.registry, repo.name, repo.plain_http) == (
        "ghcr.io",
        "mconstant/pay2slay-api",
        False,
    )
    assert parse_repository("localhost:5000/api").plain_http
    assert parse_repository("127.0.0.2:5000/api").plain_http
    with pytest.raises(PolicyViolation):
        parse_repository("ghcr.io/o/api:latest")
    with pytest.raises(PolicyViolation):
        parse_repository("ghcr.io/o/api@sha256:" + "a" * 64)
    for bad in ("api", "ghcr.io/", "ghcr.io/Upper", "ghcr.io/a//b", "", "x" * 300):
        with pytest.raises((ConfigError, PolicyViolation)):
            parse_repository(bad)


def test_loopback_detection() -> None:
    assert is_loopback_host("localhost:5000")
    assert is_loopback_host("127.0.0.1")
    assert is_loopback_host("[::1]:5000")
    assert not is_loopback_host("ghcr.io")
    assert not is_loopback_host("10.0.0.1:5000")


@given(shas, digests)
def test_pinned_reference_round_trip(sha: str, digest: str) -> None:
    repo = parse_repository("localhost:5000/team/api")
    ref = pinned_reference(repo, sha, digest)
    assert ref == f"localhost:5000/team/api:{sha}@{digest}"
    assert split_pinned_reference(ref) == (repo, sha, digest)


def test_config_defaults_and_rejections() -> None:
    s = Settings.from_mapping({})
    assert str(s.canonical) == "localhost:5000/api"
    local = s.environment("local").targets[0]
    assert isinstance(local, DockerSpec)
    assert local.port == 8080
    with pytest.raises(ConfigError):
        Settings.from_mapping({"canonical_repositry": "x"})  # typo → unknown key
    with pytest.raises(ConfigError):
        Settings.from_mapping({"platform": "linux/arm64"})  # FR-015
    with pytest.raises(ConfigError):
        Settings.from_mapping({"staging_repository": "localhost:5000/api"})  # FR-016
    with pytest.raises(PolicyViolation):
        Settings.from_mapping({"canonical_repository": "localhost:5000/api:latest"})
    with pytest.raises(ConfigError):
        Settings.from_mapping({"environments": {"prod": {"targets": [{"kind": "ftp"}]}}})
    with pytest.raises(ConfigError):
        s.environment("nope")
    assert Settings.from_mapping({"main_branches": "trunk, release"}).main_branches == (
        "trunk",
        "release",
    )


def test_build_record_carries_the_build_log_keys() -> None:
    record = BuildRecord(
        image_sha="a" * 40,
        short_sha="a" * 12,
        repository="localhost:5000/api",
        repository_type="canonical",
        image_digest="sha256:" + "b" * 64,
        image_ref="ref",
        arch="linux/amd64",
    ).as_dict()
    assert set(record) >= BUILD_LOG_KEYS
    assert record["phase"] == "build"
