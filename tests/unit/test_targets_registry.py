"""The target kinds registry (issue 11): one lookup per operation, errors naming the kinds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shatag.config import Settings
from shatag.core import ImageRef, parse_repository
from shatag.errors import ConfigError
from shatag.ledger import open_ledger
from shatag.targets import KINDS, TargetContext, finish, make_target, parse_target, recover

IMG = ImageRef(parse_repository("127.0.0.1:5000/api"), "a" * 40, "sha256:" + "b" * 64)


def test_every_kind_is_registered_under_its_own_name() -> None:
    assert sorted(KINDS) == ["docker", "helm_values", "kubernetes", "kustomize", "sdl", "tfvars"]
    for name, kind in KINDS.items():
        assert kind.name == name
        assert "kind" in kind.keys


def test_an_unknown_kind_lists_the_registered_ones() -> None:
    kinds = "docker, helm_values, kubernetes, kustomize, sdl, tfvars"
    with pytest.raises(ConfigError, match=rf"kind must be one of {kinds}, not 'ftp'"):
        Settings.from_mapping({"environments": {"p": {"targets": [{"kind": "ftp"}]}}})
    with pytest.raises(ConfigError, match=f"known: {kinds}"):
        recover({"kind": "ftp"}, TargetContext())
    assert finish({"kind": "ftp"}, TargetContext()) == "nothing to do"


def test_specs_name_the_file_they_edit(tmp_path: Path) -> None:
    sdl = parse_target("t", {"kind": "sdl", "path": "deploy.yaml", "service": "api"})
    tf = parse_target("t", {"kind": "tfvars", "path": str(tmp_path / "x.auto.tfvars.json")})
    docker = parse_target("t", {"kind": "docker", "name": "n", "port": 1, "container_port": 2})
    assert sdl.edits == Path("deploy.yaml").absolute()
    assert tf.edits == tmp_path / "x.auto.tfvars.json"
    assert docker.edits is None
    assert (sdl.label, docker.label) == ("sdl:deploy.yaml", "docker:n")


def test_plan_of_a_file_target_is_a_diff_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "deploy.yaml"
    path.write_text("services:\n  api:\n    image: old:1\n")
    spec = parse_target("t", {"kind": "sdl", "path": str(path), "service": "api"})
    plan = make_target(spec, TargetContext()).plan(IMG)
    assert "-    image: old:1\n" in plan
    assert f"+    image: {IMG.pinned}\n" in plan
    assert path.read_text() == "services:\n  api:\n    image: old:1\n"
    absent = parse_target("t", {"kind": "tfvars", "path": str(tmp_path / "new.json")})
    assert make_target(absent, TargetContext()).plan(IMG).startswith("--- /dev/null")


def test_the_ledger_keeps_the_journal_until_cleared(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path, "prod")
    assert ledger.read_journal() is None
    ledger.write_journal({"attempt": "a1", "targets": []})
    assert ledger.read_journal() == {"attempt": "a1", "targets": []}
    ledger.clear_journal()
    assert ledger.read_journal() is None
    (tmp_path / "prod" / "pending.json").write_text("[1]")  # JSON, but not a journal
    assert ledger.read_journal() is None
    assert not (tmp_path / "prod" / "pending.json").exists()


_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20), st.lists(st.none())
)


@given(
    st.dictionaries(
        st.sampled_from(sorted({"other", *(k for kind in KINDS.values() for k in kind.keys)})),
        _values,
    ),
    st.sampled_from([*sorted(KINDS), "ftp", None]),
)
def test_property_any_target_mapping_parses_or_is_a_config_error(
    raw: dict[str, Any], kind: str | None
) -> None:
    if kind is not None:
        raw = {**raw, "kind": kind}
    try:
        spec = parse_target("t", raw)
    except ConfigError as exc:
        error: ConfigError | None = exc
    else:
        error = None
        assert spec.kind == raw["kind"]
        assert spec.label.startswith(f"{spec.kind}:")
    assert error is None or str(error).startswith("t")
