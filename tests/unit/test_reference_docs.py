"""The reference docs name every key the code accepts, and no other (issue 22, item 1).

The accepted keys come from the code, not from a list kept here: the kinds of
``shatag.targets.KIND_MODULES`` and each kind's ``KEYS`` (what its ``parse`` checks with
``check_keys``), the top-level keys of ``shatag._defaults.DEFAULTS`` and the environment keys
``shatag.config`` accepts. The documented keys are the first column of the key tables in
docs/targets.md (one ``## `kind``` section per kind) and docs/configuration.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shatag import config
from shatag._defaults import DEFAULTS
from shatag.targets import KIND_MODULES, KINDS

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ROOT / "docs" / "targets.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"


def sections(text: str) -> dict[str, str]:
    """``{heading: body}`` of the ``## `` sections (backticks dropped from the heading)."""
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    return {
        head.strip().strip("`"): body for head, body in zip(parts[1::2], parts[2::2], strict=True)
    }


def table_keys(body: str) -> set[str]:
    """The backticked names in the first column of the section's table rows."""
    return set(re.findall(r"^\| `([a-z_]+)` \|", body, flags=re.MULTILINE))


def intro(text: str) -> str:
    return re.split(r"^## ", text, maxsplit=1, flags=re.MULTILINE)[0]


def documented_kind_keys(text: str, kind: str) -> set[str]:
    """A kind's section table, plus ``kind`` and ``pin`` when the intro says every kind takes
    them."""
    common = {
        key
        for key in ("kind", "pin")
        if re.search(rf"Every kind takes .*`{key}`", intro(text), re.S)
    }
    return table_keys(sections(text).get(kind, "")) | common


@pytest.mark.parametrize("kind", sorted(KIND_MODULES))
def test_every_key_of_every_kind_is_documented_once_and_only_those(kind: str) -> None:
    text = TARGETS.read_text(encoding="utf-8")
    assert kind in sections(text), f"docs/targets.md has no '## `{kind}`' section"
    documented = documented_kind_keys(text, kind)
    accepted = set(KINDS[kind].keys)
    assert accepted - documented == set(), f"{kind}: accepted but not documented"
    assert documented - accepted == set(), f"{kind}: documented but refused by the code"


def test_the_kinds_table_and_the_readme_name_every_kind() -> None:
    summary = table_keys(intro(TARGETS.read_text(encoding="utf-8")))
    assert summary == set(KIND_MODULES)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [kind for kind in KIND_MODULES if f"`{kind}`" not in readme]
    assert not missing, f"README's targets summary misses {missing}"


def test_every_top_level_key_is_documented_and_only_those() -> None:
    documented = table_keys(sections(CONFIGURATION.read_text(encoding="utf-8"))["Top-level keys"])
    assert documented == set(DEFAULTS)


def test_every_environment_key_is_documented_and_only_those() -> None:
    body = sections(CONFIGURATION.read_text(encoding="utf-8"))["Environment keys"]
    assert table_keys(body) == set(config._ENV_KEYS)


def test_the_check_fails_when_a_key_is_dropped_from_the_docs() -> None:
    """Guard the guard: the docs with one row removed no longer cover the code."""
    text = TARGETS.read_text(encoding="utf-8")
    row = re.search(r"^\| `rollout_timeout_sec` \|.*\n", text, flags=re.MULTILINE)
    assert row
    cut = text.replace(row.group(0), "")
    assert "rollout_timeout_sec" not in documented_kind_keys(cut, "kubernetes")
    assert "rollout_timeout_sec" in documented_kind_keys(text, "kubernetes")


ERRORS = ROOT / "docs" / "errors.md"


def test_every_error_code_has_its_row_in_docs_errors_md_and_only_those() -> None:
    """docs/errors.md: one row per code of ``shatag.errors.ALL_CODES``, with its exit status."""
    from shatag import errors

    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| (\d+) \|", ERRORS.read_text(), flags=re.M))
    assert set(rows) == set(errors.ALL_CODES)
    statuses = {
        cls.code: cls.exit_status
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.ShatagError)
    }
    assert {code: int(rows[code]) for code in rows} == {c: statuses[c] for c in rows}


def test_the_readme_stays_short() -> None:
    """Issue 22, item 4: the README is the pitch, two commands, a tour and links (≤ 150 lines);
    reference material lives under docs/."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move reference text to docs/"
