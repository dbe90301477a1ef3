"""Value templates of the tfvars ``variables:`` mapping (issue 13, item 4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shatag.errors import ConfigError
from shatag.templates import PLACEHOLDERS, parse_template

SHA = "0123456789abcdef" * 2 + "01234567"
DIGEST = "sha256:" + "ab" * 32
REPO = "ghcr.io/owner/api"


def render(text: str) -> str:
    return parse_template(text, where="t").render(repository=REPO, sha=SHA, digest=DIGEST)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{repository}", REPO),
        ("{sha}@{digest}", f"{SHA}@{DIGEST}"),
        ("{short_sha}", SHA[:12]),
        ("{ref}", f"{REPO}:{SHA}@{DIGEST}"),
        ("v-{{sha}}-{sha}", "v-{sha}-" + SHA),
        ("plain", "plain"),
    ],
)
def test_placeholders_render(text: str, expected: str) -> None:
    assert render(text) == expected


@pytest.mark.parametrize(
    "text", ["{tag}", "{SHA}", "{}", "{0}", "{sha.x}", "{sha[0]}", "{sha!r}", "{sha:>50}", "{", "}"]
)
def test_anything_else_in_braces_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match=r"variables\.image_tag"):
        parse_template(text, where="variables.image_tag")


@pytest.mark.parametrize("value", [None, 3, ["{sha}"], {"a": "b"}])
def test_a_template_is_a_string(value: object) -> None:
    with pytest.raises(ConfigError, match="template string"):
        parse_template(value, where="variables.x")


_literal = st.text(st.characters(exclude_characters="{}", exclude_categories=["Cs"]), max_size=8)


@given(st.lists(st.tuples(_literal, st.sampled_from(PLACEHOLDERS)), max_size=5), _literal)
def test_known_placeholders_always_render(parts: list[tuple[str, str]], tail: str) -> None:
    values = {
        "repository": REPO,
        "sha": SHA,
        "short_sha": SHA[:12],
        "digest": DIGEST,
        "ref": f"{REPO}:{SHA}@{DIGEST}",
    }
    text = "".join(f"{lit}{{{name}}}" for lit, name in parts) + tail
    expected = "".join(lit + values[name] for lit, name in parts) + tail
    assert render(text) == expected


@given(st.text(max_size=40))
def test_hostile_text_is_a_template_or_a_config_error(text: str) -> None:
    try:
        template = parse_template(text, where="t")
    except ConfigError:
        return  # the one expected failure
    template.render(repository=REPO, sha=SHA, digest=DIGEST)  # a validated one always renders


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ("{sha}", "must be a mapping of variable name"),
        ({}, "must be a mapping of variable name"),
        ({"image tag": "{sha}"}, "is not a variable name"),
        ({"1st": "{sha}"}, "is not a variable name"),
        ({"image_tag": "{tag}"}, r"variables\.image_tag: unknown placeholder \{tag\}"),
        ({"image_tag": 42}, "must be a template string"),
    ],
)
def test_tfvars_variables_are_checked_when_the_configuration_is_read(
    variables: object, message: str
) -> None:
    """A bad ``variables:`` mapping is CONFIG_ERROR at load, never at deploy time (item 4)."""
    from shatag.targets import parse_target

    raw = {"kind": "tfvars", "path": "x.tfvars.json", "variables": variables}
    with pytest.raises(ConfigError, match=message):
        parse_target("shatag.environments.p.targets[0]", raw)
