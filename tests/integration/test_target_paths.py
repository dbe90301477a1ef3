"""A real ``shatag deploy`` run from a subdirectory of the application repository (issue 23,
item 7): ``shatag.yaml`` at the git top-level names a kustomization and a Helm values file by
paths relative to itself, and those files are the ones edited -- not files under the working
directory."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from shatag._testing.localregistry import LocalRegistry
from tests.conftest import InvResult, cli_env, new_app, run_inv

KUSTOMIZATION = """\
resources:
  - ../../base
images:
  - name: api
    newName: ghcr.io/example/api  # shatag writes the pinned image here
    newTag: latest
"""

#: The base the overlay lists: a kustomization that renders is what a GitOps edit is checked
#: against (issue 23, item 2).
BASE = {
    "kustomization.yaml": "resources:\n  - deployment.yaml\n",
    "deployment.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\nspec:\n"
    "  template:\n    spec:\n      containers:\n        - name: api\n          image: api\n",
}

VALUES = """\
image:
  repository: ghcr.io/example/api
  tag: "latest"
"""


def _shatag(args: list[str], env: dict[str, str], cwd: Path) -> InvResult:
    """The ``shatag`` console script of this interpreter's environment, run in ``cwd``."""
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "shatag"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return InvResult(proc.returncode, proc.stdout, proc.stderr)


def test_deploy_from_a_subdirectory_edits_the_files_the_config_file_names(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    env = cli_env(registry, tmp_path, f"paths-{uuid.uuid4().hex[:8]}")
    app = new_app(tmp_path / "app")
    sha = app.commit('{"release": "A"}', "A")
    built = run_inv(
        ["build", f"--sha={sha}", "--branch=main"],
        {**env, "INVOKE_SHATAG_CONTEXT": str(app.path)},
    )
    assert built.returncode == 0, built.stderr
    digest = built.record["image_digest"]
    repo = env["INVOKE_SHATAG_CANONICAL_REPOSITORY"]

    kustomization = app.path / "deploy" / "overlays" / "prod" / "kustomization.yaml"
    kustomization.parent.mkdir(parents=True)
    kustomization.write_text(KUSTOMIZATION)
    (app.path / "deploy" / "base").mkdir()
    for name, text in BASE.items():
        (app.path / "deploy" / "base" / name).write_text(text)
    values = app.path / "deploy" / "values-prod.yaml"
    values.write_text(VALUES)
    targets = [
        {"kind": "kustomize", "path": "deploy/overlays/prod/kustomization.yaml", "name": "api"},
        {"kind": "helm_values", "path": "deploy/values-prod.yaml"},
    ]
    (app.path / "shatag.yaml").write_text(json.dumps({"shatag": {
        "state_dir": str(tmp_path / "state"),
        "environments": {"production": {"repository_type": "canonical", "targets": targets}},
    }}))  # fmt: skip
    cwd = app.path / "www"  # a subdirectory: shatag.yaml is found at the git top-level
    before = sorted(p.relative_to(cwd) for p in cwd.rglob("*"))

    result = _shatag(["deploy", f"--sha={sha}", "--env=production"], env, cwd)

    assert result.returncode == 0, result.stderr
    assert result.record["targets"] == [f"kustomize:{kustomization}", f"helm_values:{values}"]
    text = kustomization.read_text()
    assert f"    newName: {repo}  # shatag writes the pinned image here\n" in text
    assert f"    newTag: {sha}\n    digest: {digest}\n" in text
    # No image.digest in the file: the tag carries the digest (issue 23, item 2).
    assert values.read_text() == f'image:\n  repository: {repo}\n  tag: "{sha}@{digest}"\n'

    assert sorted(p.relative_to(cwd) for p in cwd.rglob("*")) == before, "nothing made here"
