"""File targets (issue 4): SDL round-trip edits only the image line; tfvars JSON; restore."""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from shatag.core import ImageRef, parse_repository
from shatag.errors import ConfigError
from shatag.targets import TargetContext, make_target, recover
from shatag.targets.sdl import SdlSpec, SdlTarget, set_service_image
from shatag.targets.tfvars import TfvarsSpec, TfvarsTarget

IMG = ImageRef(parse_repository("127.0.0.1:5000/api"), "a" * 40, "sha256:" + "b" * 64)
PINNED = IMG.pinned

SDL = """\
---
# Akash SDL for the API (hand-maintained: keep comments!)
version: "2.0"

services:
  api:
    image: ghcr.io/mconstant/pay2slay-api:latest   # set by shatag
    expose:
      - port: 8080
        as: 80
        to:
          - global: true
    env:
      - "LOG_LEVEL=info"
  worker:
    image: 'ghcr.io/mconstant/worker:1.0'
profiles:
  compute:
    api:
      resources: {cpu: {units: 0.5}}
"""


def changed_lines(old: str, new: str) -> list[str]:
    return [
        line
        for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def test_sdl_only_the_image_line_changes() -> None:
    new = set_service_image(SDL, "api", PINNED)
    assert changed_lines(SDL, new) == [
        "-    image: ghcr.io/mconstant/pay2slay-api:latest   # set by shatag",
        f"+    image: {PINNED}   # set by shatag",
    ]
    assert YAML().load(new)["services"]["api"]["image"] == PINNED


def test_sdl_keeps_single_quotes_of_the_other_service() -> None:
    new = set_service_image(SDL, "worker", PINNED)
    assert changed_lines(SDL, new) == [
        "-    image: 'ghcr.io/mconstant/worker:1.0'",
        f"+    image: '{PINNED}'",
    ]


def test_sdl_double_quoted_and_flow_style() -> None:
    text = 'services:\n  api: {image: "old:1", count: 2}  # flow\n'
    new = set_service_image(text, "api", PINNED)
    assert new == f'services:\n  api: {{image: "{PINNED}", count: 2}}  # flow\n'
    text = "services:\n  api: {image: old:1, count: 2}\n"
    assert YAML().load(set_service_image(text, "api", PINNED))["services"]["api"] == {
        "image": PINNED,
        "count": 2,
    }


def test_sdl_block_scalar_falls_back_to_round_trip_dump() -> None:
    text = "# top\nservices:\n  api:\n    image: >-\n      old:1\n    port: 1 # keep\n"
    new = set_service_image(text, "api", PINNED)
    data = YAML().load(new)
    assert data["services"]["api"]["image"] == PINNED
    assert "# top" in new
    assert "# keep" in new


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("version: 2\n", "no 'services'"),
        ("services:\n  web:\n    image: x\n", "no service 'api' (found: web)"),
        ("services:\n  api:\n    port: 1\n", "no 'image' key"),
        ("services: [\n", "not valid YAML"),
    ],
)
def test_sdl_errors_are_config_errors(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        set_service_image(text, "api", PINNED)


@pytest.mark.parametrize(
    ("pin", "expected"),
    [
        ("tag+digest", PINNED),
        ("digest", "127.0.0.1:5000/api@sha256:" + "b" * 64),
        ("tag", "127.0.0.1:5000/api:" + "a" * 40),
    ],
)
def test_pin_option_chooses_the_written_form(tmp_path: Path, pin: str, expected: str) -> None:
    sdl = tmp_path / "deploy.yaml"
    sdl.write_text(SDL)
    target = SdlTarget(SdlSpec(path=str(sdl), service="api", pin=pin))  # type: ignore[arg-type]
    target.prepare(IMG)
    target.apply()
    assert YAML().load(sdl.read_text())["services"]["api"]["image"] == expected
    tf = tmp_path / "image.auto.tfvars.json"
    tft = TfvarsTarget(TfvarsSpec(path=str(tf), pin=pin))  # type: ignore[arg-type]
    tft.prepare(IMG)
    tft.apply()
    data = json.loads(tf.read_text())
    assert data == {"image_sha": IMG.sha, "image_digest": IMG.digest, "image_ref": expected}


def test_sdl_apply_restore_and_journal_recovery(tmp_path: Path) -> None:
    sdl = tmp_path / "deploy.yaml"
    sdl.write_text(SDL)
    target = make_target(SdlSpec(path=str(sdl), service="api"), TargetContext())
    target.prepare(IMG)
    assert sdl.read_text() == SDL  # prepare changes nothing
    target.apply()
    assert PINNED in sdl.read_text()
    target.restore()
    assert sdl.read_text() == SDL
    target.apply()
    assert recover(target.journal(), TargetContext()) == f"restored {sdl}"
    assert sdl.read_text() == SDL


def test_sdl_missing_file_is_a_config_error(tmp_path: Path) -> None:
    target = SdlTarget(SdlSpec(path=str(tmp_path / "no.yaml"), service="api"))
    with pytest.raises(ConfigError, match="does not exist"):
        target.prepare(IMG)


def test_tfvars_created_then_restored_by_removal(tmp_path: Path) -> None:
    tf = tmp_path / "infra" / "image.auto.tfvars.json"
    target = TfvarsTarget(TfvarsSpec(path=str(tf)))
    target.prepare(IMG)
    target.apply()
    assert json.loads(tf.read_text())["image_ref"] == PINNED
    target.restore()
    assert not tf.exists()


def test_tfvars_keeps_other_keys_in_order(tmp_path: Path) -> None:
    tf = tmp_path / "image.auto.tfvars.json"
    tf.write_text('{"region": "eu", "image_sha": "old", "replicas": 2}\n')
    target = TfvarsTarget(TfvarsSpec(path=str(tf)))
    target.prepare(IMG)
    target.apply()
    assert list(json.loads(tf.read_text())) == [
        "region",
        "image_sha",
        "replicas",
        "image_digest",
        "image_ref",
    ]


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_tfvars_invalid_content_is_a_config_error(tmp_path: Path, content: str) -> None:
    tf = tmp_path / "image.auto.tfvars.json"
    tf.write_text(content)
    with pytest.raises(ConfigError):
        TfvarsTarget(TfvarsSpec(path=str(tf))).prepare(IMG)
    assert tf.read_text() == content


# -- property: any comment/quoting/indentation, only the image line changes ---------------

_words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_ ", min_size=0, max_size=20)
_image = st.from_regex(
    r"[a-z0-9.]{1,10}(:[0-9]{1,5})?/[a-z0-9]{1,8}(:[a-z0-9.]{1,8})?", fullmatch=True
)


@settings(max_examples=150, deadline=None)
@given(
    indent=st.sampled_from([2, 4]),
    quote=st.sampled_from(["", "'", '"']),
    comment=st.one_of(st.just(""), _words.map(lambda w: "  # " + w)),
    header=_words,
    old=_image,
    before=st.lists(
        st.sampled_from(["port: 80", "count: 1", "env: [a, b]", "# note"]), max_size=3, unique=True
    ),
    after=st.lists(
        st.sampled_from(["expose: 80", "replicas: 3", "args: {x: 1}", "# tail"]),
        max_size=3,
        unique=True,
    ),
)
def test_property_sdl_diff_is_the_image_line_only(
    *,
    indent: int,
    quote: str,
    comment: str,
    header: str,
    old: str,
    before: list[str],
    after: list[str],
) -> None:
    pad = " " * indent
    body = [f"{pad * 2}{line}" for line in before]
    body.append(f"{pad * 2}image: {quote}{old}{quote}{comment}")
    body += [f"{pad * 2}{line}" for line in after]
    text = "\n".join([f"# {header}", "services:", f"{pad}api:", *body, "other: 1", ""])
    new = set_service_image(text, "api", PINNED)
    diff = changed_lines(text, new)
    assert len(diff) == 2, diff
    assert diff[1] == f"+{pad * 2}image: {quote}{PINNED}{quote}{comment}"
    assert YAML().load(new)["services"]["api"]["image"] == PINNED
