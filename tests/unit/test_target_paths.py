"""Path keys of every target kind resolve against the directory of the configuration file that
set them (issue 13; issue 23, item 7): ``shatag`` run from a subdirectory (``shatag.yaml`` found
at the git top-level) or with ``-f FILE`` from another directory edits the files the file names.

The settings are loaded as a run loads them: invoke's configuration with the file as its runtime
file, then :func:`shatag.tasks._settings`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from invoke.config import Config
from invoke.context import Context

from shatag._defaults import invoke_defaults
from shatag._invoke import find_config_file
from shatag.config import Settings
from shatag.targets import KINDS, TargetSpec
from shatag.targets.kubernetes import KubernetesSpec

#: Each kind's path keys; a new kind has to say which of its keys are paths.
PATH_KEYS = {
    "docker": frozenset(),  # volumes: a relative host path is refused, not resolved
    "sdl": frozenset({"path"}),
    "tfvars": frozenset({"path"}),
    "kustomize": frozenset({"path"}),
    "helm_values": frozenset({"path", "chart"}),  # chart: what `helm template` renders
    "kubernetes": frozenset({"kubeconfig"}),
}

#: One target of each kind with a path key, as written in the file (the path relative).
TARGETS: dict[str, dict[str, Any]] = {
    "sdl": {"kind": "sdl", "path": "infra/akash/deploy.yaml", "service": "api"},
    "tfvars": {"kind": "tfvars", "path": "infra/image.auto.tfvars.json"},
    "kustomize": {"kind": "kustomize", "path": "overlays/prod/kustomization.yaml", "name": "api"},
    "helm_values": {"kind": "helm_values", "path": "charts/api/values-prod.yaml"},
    "kubernetes": {"kind": "kubernetes", "deployment": "api", "container": "api",
                   "kubeconfig": "kube/prod.yaml"},
}  # fmt: skip


def _relative(target: dict[str, Any]) -> str:
    (key,) = PATH_KEYS[target["kind"]] - {"chart"}  # the file the target edits or reads
    value = target[key]
    assert isinstance(value, str)
    return value


def _resolved(spec: TargetSpec) -> Path:
    """The path the target will use: the file it edits, or the kubeconfig kubectl gets."""
    if isinstance(spec, KubernetesSpec):
        kubeconfig = spec.kubectl().kubeconfig
        assert kubeconfig == spec.as_journal()["kubeconfig"], "the journal names the same file"
        return Path(kubeconfig)
    assert spec.edits is not None
    return spec.edits


def _settings(config_file: Path) -> Settings:
    """What a run in the working directory loads (``config_file``: the file it found or -f)."""
    from shatag.tasks import _settings

    config = Config(
        defaults={**Config.global_defaults(), "shatag": invoke_defaults()},
        runtime_path=config_file,
    )
    config.load_runtime()
    return _settings(Context(config), {})


def _write_config(path: Path, target: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    environments = {"production": {"repository_type": "canonical", "targets": [target]}}
    path.write_text(json.dumps({"shatag": {"environments": environments}}))


def test_every_kind_declares_its_path_keys() -> None:
    assert {name: kind.paths for name, kind in KINDS.items()} == PATH_KEYS
    for name, kind in KINDS.items():
        assert kind.paths <= kind.keys, f"{name}: a path key it does not accept"


@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_a_path_resolves_against_the_file_found_from_a_subdirectory(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``shatag.yaml`` at the git top-level, the run in ``services/api``: the path is the
    top-level's, not the subdirectory's."""
    app = tmp_path / "app"
    (app / ".git").mkdir(parents=True)
    target = TARGETS[kind]
    _write_config(app / "shatag.yaml", target)
    cwd = app / "services" / "api"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    found = find_config_file(Path.cwd())
    assert found == app / "shatag.yaml"  # what `shatag` loads here
    (spec,) = _settings(found).environment("production").targets
    assert spec.kind == kind
    assert _resolved(spec) == app / _relative(target)


@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_a_path_resolves_against_the_file_named_by_f_from_another_directory(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``shatag -f ../app/deploy/shatag.yaml`` from a sibling directory: the path is relative
    to the file's own directory (not the working directory, nor the git top-level)."""
    conf = tmp_path / "app" / "deploy"
    target = TARGETS[kind]
    _write_config(conf / "shatag.yaml", target)
    cwd = tmp_path / "clone"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    given = Path("../app/deploy/shatag.yaml").expanduser().absolute()  # as `shatag -f` does
    (spec,) = _settings(given).environment("production").targets
    # ``clone/../app/deploy/...``: the file's directory as given, not normalised (a symlink may
    # make ``..`` mean something else than dropping a component).
    assert _resolved(spec).resolve() == (conf / _relative(target)).resolve()


@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_an_absolute_path_is_kept(kind: str, tmp_path: Path) -> None:
    target = TARGETS[kind]
    absolute = tmp_path / "elsewhere" / "file.yaml"
    (key,) = PATH_KEYS[kind] - {"chart"}
    _write_config(tmp_path / "app" / "shatag.yaml", {**target, key: str(absolute)})
    (spec,) = _settings(tmp_path / "app" / "shatag.yaml").environment("production").targets
    assert _resolved(spec) == absolute
