"""Issue 14: the pure pieces -- range checks, bounded YAML, masking, the rollback walk, FR-015
manifest classification -- each property-tested with Hypothesis."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shatag.errors import ConfigError, PolicyViolation
from shatag.ledger.history import HistoryRecord, walk_back_target
from shatag.limits import RANGES, check_string_keys, clip, clip_message, load_yaml, number
from shatag.masking import mask, register, reset, secret_values
from shatag.metrics import safe_url

# -- numbers ---------------------------------------------------------------------------------


@settings(max_examples=300)
@given(
    key=st.sampled_from(sorted(RANGES)),
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(10**12), max_value=10**12),
        st.booleans(),
        st.text(max_size=20),
        st.none(),
    ),
)
def test_number_is_in_range_or_config_error(key: str, value: Any) -> None:
    bounds = RANGES[key]
    try:
        got = number(value, key, f"x.{key}")
    except ConfigError as exc:
        message = exc.message
        assert len(message) < 400
        return
    assert not isinstance(value, bool)
    assert math.isfinite(got)
    assert bounds.low <= got <= bounds.high
    if not bounds.low_inclusive:
        assert got > bounds.low
    if bounds.integer:
        assert got == int(got)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("health_timeout_sec", float("nan")),
        ("health_timeout_sec", float("inf")),
        ("health_timeout_sec", -5),
        ("health_timeout_sec", 0),
        ("registry_retries", 1_000_000),
        ("registry_retries", True),
        ("port", 8080.5),
    ],
)
def test_the_values_the_issue_names_are_refused(key: str, value: Any) -> None:
    with pytest.raises(ConfigError):
        number(value, key, key)


# -- bounded YAML ----------------------------------------------------------------------------


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    with pytest.raises(ConfigError, match="anchors and aliases"):
        load_yaml("\n".join(lines) + "\n", "bomb.yaml")


def test_recursive_alias_is_refused() -> None:
    with pytest.raises(ConfigError):
        load_yaml("a: &a [*a]\n", "loop.yaml")


def test_a_few_aliases_are_fine() -> None:
    data = load_yaml("base: &b {port: 1}\nx: *b\ny: *b\n", "ok.yaml")
    assert data == {"base": {"port": 1}, "x": {"port": 1}, "y": {"port": 1}}


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_load_yaml_returns_data_or_config_error(text: str) -> None:
    try:
        load_yaml(text, "fuzz.yaml")
    except ConfigError as exc:
        message = exc.message
        assert len(clip_message(message)) <= 2_100


@given(
    st.recursive(
        st.none() | st.integers() | st.text(max_size=5),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=3) | st.integers(), children, max_size=3)
        ),
        max_leaves=10,
    )
)
def test_string_keys_or_config_error(data: Any) -> None:
    def has_int_key(value: Any) -> bool:
        if isinstance(value, dict):
            return any(not isinstance(k, str) or has_int_key(v) for k, v in value.items())
        if isinstance(value, list):
            return any(has_int_key(v) for v in value)
        return False

    try:
        check_string_keys(data, "x")
    except ConfigError:
        assert has_int_key(data)
        return
    assert not has_int_key(data)


@given(st.text(max_size=10_000), st.integers(min_value=1, max_value=500))
def test_clip_is_short(value: str, limit: int) -> None:
    assert len(clip(value, limit)) <= limit + 40
    assert len(clip_message(value, limit)) <= limit + 60


# -- masking ---------------------------------------------------------------------------------


@settings(max_examples=300)
@given(
    secrets=st.lists(
        st.text(min_size=6, max_size=20).filter(lambda v: not v.replace(".", "").isdigit()),
        min_size=1,
        max_size=4,
    ),
    text=st.text(max_size=200),
)
def test_mask_hides_every_registered_secret(secrets: list[str], text: str) -> None:
    reset()
    try:
        register(secrets)
        shown = mask(text + "".join(secrets) + text)
        for secret in secrets:
            # a secret may only survive where masking another one created it (*** substrings)
            assert secret not in shown or set(secret) <= set("*")
    finally:
        reset()


def test_secret_looking_names() -> None:
    env = {
        "DEPLOY_TOKEN": "t" * 8,
        "DB_PASSWORD": "p" * 8,
        "APP_SECRET": "s" * 8,
        "API_KEY": "k" * 8,
        "KEYBOARD": "not-a-secret",
        "PATH": "/usr/bin",
        "SHORT_TOKEN": "ab",
        "PIN_PASSWORD": "123456",
    }
    assert set(secret_values(env)) == {"t" * 8, "p" * 8, "s" * 8, "k" * 8}


def test_pushgateway_url_credentials_are_masked() -> None:
    assert safe_url("http://u:pw@gw:9091") == "http://***@gw:9091"
    assert safe_url("http://gw:9091") == "http://gw:9091"


# -- the rollback walk -----------------------------------------------------------------------


def _rec(sha: str, action: str = "deploy", result: str = "ok") -> HistoryRecord:
    return HistoryRecord(action, "e", sha, "sha256:" + "0" * 64, result)  # type: ignore[arg-type]


def _replay(records: list[HistoryRecord]) -> str | None:
    """The reference model: a stack of releases, replayed oldest first."""
    stack: list[str] = []
    for r in records:
        if not r.ok:
            continue
        if r.action == "rollback" and r.sha in stack:
            del stack[len(stack) - stack[::-1].index(r.sha) :]
        elif not stack or stack[-1] != r.sha:
            stack.append(r.sha)
    return stack[-2] if len(stack) >= 2 else None


@settings(max_examples=500)
@given(
    st.lists(
        st.tuples(
            st.sampled_from("ABCDE"),
            st.sampled_from(["deploy", "rollback"]),
            st.sampled_from(["ok", "ok", "failed"]),
        ),
        max_size=25,
    )
)
def test_walk_back_matches_the_stack_model(entries: list[tuple[str, str, str]]) -> None:
    records = [_rec(sha * 40, action, result) for sha, action, result in entries]
    target = walk_back_target(reversed(records))
    expected = _replay(records)
    assert (target.sha if target else None) == expected
    current = next((r for r in reversed(records) if r.ok), None)
    if target is not None:
        assert current is not None
        assert target.sha != current.sha


def test_consecutive_rollbacks_walk_back_then_stop() -> None:
    history = [_rec("A" * 40), _rec("B" * 40), _rec("C" * 40)]
    walked = []
    for _ in range(3):
        target = walk_back_target(reversed(history))
        walked.append(target.sha[0] if target else None)
        if target is None:
            break
        history.append(_rec(target.sha, "rollback"))
    assert walked == ["B", "A", None]


# -- FR-015 ----------------------------------------------------------------------------------


class _Registry:
    """In-memory stand-in for the registry's manifest/blob reads (pure classification)."""

    def __init__(self, manifests: dict[str, tuple[str, bytes]], blobs: dict[str, bytes]) -> None:
        from shatag.core import parse_repository

        self.repository = parse_repository("127.0.0.1:5000/x")
        self._manifests = manifests
        self._blobs = blobs

    def manifest(self, ref: str) -> Any:
        from shatag.supplychain.registry import Manifest

        found = self._manifests.get(ref)
        if found is None:
            return None
        import hashlib

        media, body = found
        return Manifest("sha256:" + hashlib.sha256(body).hexdigest(), media, body)

    def blob(self, digest: str) -> bytes | None:
        return self._blobs.get(digest)


def _image(arch: str) -> tuple[bytes, dict[str, bytes]]:
    config = json.dumps({"os": "linux", "architecture": arch}).encode()
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"digest": "sha256:c" + arch[0] * 63, "size": len(config)},
            "layers": [],
        }
    ).encode()
    return body, {"sha256:c" + arch[0] * 63: config}


@pytest.mark.parametrize(
    ("entries", "ok"),
    [
        ([("amd64", None)], True),
        ([("arm64", None)], False),
        ([("amd64", None), ("arm64", None)], False),
        ([("amd64", None), ("unknown", "attestation-manifest")], True),
        ([], False),
    ],
)
def test_index_classification(entries: list[tuple[str, str | None]], ok: bool) -> None:
    from shatag.supplychain.manifests import check_single_platform

    manifests: dict[str, tuple[str, bytes]] = {}
    blobs: dict[str, bytes] = {}
    index_entries = []
    for i, (arch, kind) in enumerate(entries):
        body, more = _image(arch if arch != "unknown" else "amd64")
        ref = f"m{i}"
        manifests[ref] = ("application/vnd.oci.image.manifest.v1+json", body)
        blobs.update(more)
        entry: dict[str, Any] = {
            "digest": ref,
            "platform": {"os": "linux" if arch != "unknown" else "unknown", "architecture": arch},
        }
        if kind:
            entry["annotations"] = {"vnd.docker.reference.type": kind}
        index_entries.append(entry)
    index = json.dumps({"schemaVersion": 2, "manifests": index_entries}).encode()
    manifests["tag"] = ("application/vnd.oci.image.index.v1+json", index)
    registry: Any = _Registry(manifests, blobs)
    if ok:
        assert check_single_platform(registry, "tag").kind == "index"
    else:
        with pytest.raises(PolicyViolation):
            check_single_platform(registry, "tag")
