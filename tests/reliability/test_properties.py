"""Property tests: every validator and parser, 5,000 generated examples each (issue 6).

The contract of each: it returns a value that satisfies its documented shape, or raises one of
*our* errors (a :class:`ShatagError` with a stable code) -- never another exception, which the
CLI would show as a traceback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shatag._sys.subproc import mask
from shatag.config import DEFAULTS, Settings
from shatag.core import (
    ensure_immutable_tag,
    parse_repository,
    pinned_reference,
    route_repository,
    split_pinned_reference,
    validate_branch,
    validate_digest,
    validate_env_name,
    validate_sha,
)
from shatag.errors import ShatagError, SoftVerifyToolError
from shatag.ledger.history import HistoryRecord
from shatag.supplychain.signing import (
    classify_verify,
    classify_verify_attestation,
    parse_cosign_version,
)
from tests.reliability.conftest import LEDGER

EXAMPLES = 5000
FAST = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # no example database writes: 70,000 examples must stay fast
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
HEX = "0123456789abcdef"
SHA_RE = re.compile(r"[0-9a-f]{40}")

# Text that hits the interesting corners: hex of nearby lengths, look-alikes, separators,
# shell metacharacters, whitespace and control characters, plus arbitrary unicode.
shas = st.text(alphabet=HEX, min_size=40, max_size=40)
hexish = st.text(alphabet=HEX + "ABCDEF", min_size=38, max_size=42)
tricky = st.lists(
    st.sampled_from(
        [
            *HEX,
            *"ABCDEFxyz:/@.-_ ~^?*[]\\${}()`;|&<>'\"\n\t\r\x00",
            *("\u0430", "\uff10", "\u200b"),  # look-alikes: cyrillic a, fullwidth 0, ZWSP
            *("..", "@{", "//", "sha256:", "latest", ".lock"),
        ]
    ),
    max_size=40,
).map("".join)
anything = st.one_of(shas, hexish, tricky, st.text(max_size=120))


def _count() -> None:
    LEDGER.count("hypothesis_examples")


def _only_ours(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; our errors are an answer (returned as the exception), anything else fails."""
    try:
        return fn()
    except ShatagError as exc:
        return exc


@FAST
@given(value=anything)
def test_validate_sha(value: str) -> None:
    _count()
    out = _only_ours(lambda: validate_sha(value))
    if isinstance(out, ShatagError):
        assert out.code.isupper()
    if not isinstance(out, ShatagError):
        assert out == value
        assert SHA_RE.fullmatch(value)
    else:
        assert not SHA_RE.fullmatch(value)
        assert out.code in ("MISSING_SHA", "POLICY_VIOLATION")


@FAST
@given(value=anything)
def test_ensure_immutable_tag(value: str) -> None:
    _count()
    out = _only_ours(lambda: ensure_immutable_tag(value))
    assert (out == value) == bool(SHA_RE.fullmatch(value))
    if isinstance(out, ShatagError):
        assert out.code == "POLICY_VIOLATION"


@FAST
@given(
    value=st.one_of(
        st.builds(lambda h: "sha256:" + h, st.text(HEX, min_size=62, max_size=66)), anything
    )
)
def test_validate_digest(value: str) -> None:
    _count()
    out = _only_ours(lambda: validate_digest(value))
    ok = re.fullmatch(r"sha256:[0-9a-f]{64}", value) is not None
    assert (out == value) == ok


@FAST
@given(value=st.one_of(st.from_regex(r"[a-z][a-z0-9/._-]{0,30}", fullmatch=True), anything))
def test_validate_branch(value: str) -> None:
    _count()
    out = _only_ours(lambda: validate_branch(value))
    if isinstance(out, ShatagError):
        assert out.code == "INVALID_INPUT"
        return
    # What is accepted is safe to log and route on: printable ASCII, no ref syntax.
    assert out == value
    assert value.isascii()
    assert 0 < len(value) <= 255
    assert not any(ch in value for ch in " \t\n\r\x00~^:?*[\\")
    assert ".." not in value
    assert not value.startswith(("-", "/", "."))
    assert "@{" not in value
    assert route_repository(value, ("main",)).value in ("canonical", "staging")


@FAST
@given(value=st.one_of(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,70}", fullmatch=True), anything))
def test_validate_env_name(value: str) -> None:
    _count()
    out = _only_ours(lambda: validate_env_name(value))
    if not isinstance(out, ShatagError):
        # Safe as a directory name under the state dir: no separators, no dot segments.
        assert re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", value)


hosts = st.one_of(
    st.sampled_from(["localhost", "127.0.0.1:5000", "ghcr.io", "registry.example.com:443"]),
    st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,8}){0,2}(:[0-9]{1,6})?", fullmatch=True),
)
paths = st.from_regex(r"[a-z0-9]{1,8}([._/-]{1,2}[a-z0-9]{1,8}){0,3}", fullmatch=True)
repositories = st.one_of(
    st.builds(lambda h, p: f"{h}/{p}", hosts, paths),
    st.builds(lambda h, p, t: f"{h}/{p}{t}", hosts, paths, tricky),
    anything,
)


@FAST
@given(value=repositories)
def test_parse_repository(value: str) -> None:
    _count()
    out = _only_ours(lambda: parse_repository(value))
    if isinstance(out, ShatagError):
        assert out.code in ("CONFIG_ERROR", "POLICY_VIOLATION")
        return
    # Round trip, and nothing in it can be read as a tag, a digest or a shell word.
    assert str(out) == value
    assert "@" not in value
    assert ":" not in out.name
    assert value.isascii()
    assert not any(ch.isspace() for ch in value)
    assert parse_repository(str(out)) == out


@FAST
@given(
    repo=repositories, sha=st.one_of(shas, anything), hexes=st.text(HEX, min_size=64, max_size=64)
)
def test_pinned_reference_round_trip(repo: str, sha: str, hexes: str) -> None:
    _count()
    digest = "sha256:" + hexes

    def round_trip() -> None:
        repository = parse_repository(repo)
        pinned = pinned_reference(repository, sha, digest)
        assert split_pinned_reference(pinned) == (repository, sha, digest)

    _only_ours(round_trip)


@FAST
@given(value=st.one_of(anything, st.builds(lambda a, b: f"{a}@{b}", anything, anything)))
def test_split_pinned_reference(value: str) -> None:
    _count()
    out = _only_ours(lambda: split_pinned_reference(value))
    if not isinstance(out, ShatagError):
        repository, sha, digest = out
        assert pinned_reference(repository, sha, digest) == value


# Configuration values: small and cheap to generate (5,000 examples must stay fast), with the
# shapes that break naive code: wrong types, NaN/inf, huge numbers, empty and hostile strings.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=70000),
    st.sampled_from([2**70, -(2**70)]),
    st.floats(),
    st.sampled_from(
        [
            "",
            "docker",
            "sdl",
            "tfvars",
            "canonical",
            "staging",
            "tag",
            "digest",
            "/healthz",
            "local",
            "localhost:5000/api",
            "x:latest",
            "../x",
            "$(id)",
            "nan",
            "inf",
            "-1",
        ]
    ),
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
config_keys = st.sampled_from([*DEFAULTS, "bogus_key"])


@FAST
@given(raw=st.dictionaries(config_keys, json_values, max_size=6))
def test_settings_from_mapping(raw: dict[str, Any]) -> None:
    _count()
    out = _only_ours(lambda: Settings.from_mapping(raw))
    if not isinstance(out, ShatagError):
        assert out.platform == "linux/amd64"
        assert out.canonical != out.staging
        assert out.registry_retries >= 1
        assert out.registry_timeout_sec > 0


target_keys = st.sampled_from(
    [
        "kind",
        "name",
        "port",
        "container_port",
        "path",
        "service",
        "pin",
        "health_path",
        "health_timeout_sec",
    ]
)
environments = st.dictionaries(
    st.one_of(st.sampled_from(["local", "prod"]), st.text(max_size=8)),
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"targets": st.lists(st.dictionaries(target_keys, scalars, max_size=6), max_size=2)},
            optional={"repository_type": scalars, "apply": scalars},
        ),
    ),
    max_size=2,
)


@FAST
@given(envs=environments)
def test_settings_environments(envs: dict[str, Any]) -> None:
    _count()
    _only_ours(lambda: Settings.from_mapping({"environments": envs}))


@FAST
@given(line=st.one_of(st.binary(max_size=200), st.builds(json.dumps, json_values)))
def test_history_record_from_json(line: bytes | str) -> None:
    """A torn or foreign history line is skipped (None), never an exception."""
    _count()
    record = HistoryRecord.from_json(line)
    if record is not None:
        assert record.action in ("deploy", "rollback")
        assert record.result in ("ok", "failed")
        assert HistoryRecord.from_json(record.to_json()) == record


@FAST
@given(
    returncode=st.integers(min_value=-20, max_value=300),
    stdout=st.one_of(anything, st.builds(json.dumps, json_values)),
    stderr=anything,
    digest=st.one_of(
        st.just(""), st.builds(lambda h: "sha256:" + h, st.text(HEX, min_size=64, max_size=64))
    ),
)
def test_classify_cosign_answers(returncode: int, stdout: str, stderr: str, digest: str) -> None:
    """Whatever cosign prints: a pass/fail answer or SOFT_VERIFY_TOOL_ERROR; 'verified' only
    for exit 0 with cosign's success JSON."""
    _count()
    for classify in (
        lambda: classify_verify(returncode, stdout, stderr, digest=digest),
        lambda: classify_verify_attestation(returncode, stdout, stderr),
    ):
        out = _only_ours(classify)
        if isinstance(out, ShatagError):
            assert isinstance(out, SoftVerifyToolError)
        elif out.status == "verified":
            assert returncode == 0


@FAST
@given(text=st.one_of(anything, st.text(max_size=200)))
def test_parse_cosign_version(text: str) -> None:
    _count()
    version = parse_cosign_version(text)
    assert version is None or min(version.major, version.minor, version.patch) >= 0


secrets = st.text(
    alphabet=st.characters(blacklist_characters="*", codec="utf-8"),
    min_size=3,
    max_size=30,
)


@FAST
@given(secret=secrets, before=anything, after=anything, repeat=st.integers(1, 3))
def test_mask_hides_every_secret(secret: str, before: str, after: str, repeat: int) -> None:
    """The subprocess chokepoint's masking: a secret (>= 3 chars, no '*') never survives."""
    _count()
    text = before + (secret + after) * repeat
    assert secret not in mask(text, [secret, "xy"])
