"""``kind: kustomize`` and ``kind: helm_values`` (issue 16, item 2) through the real CLI: the
files a GitOps controller applies are edited in place (every other byte kept), and the
kustomization renders, with the real ``kubectl kustomize``, a Deployment running the pinned image.
No cluster is needed: Argo CD or Flux would apply what is committed."""

from __future__ import annotations

import difflib
import json
import subprocess
import uuid
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from shatag._testing.localregistry import LocalRegistry
from tests.conftest import TOOLS_BIN, cli_env, new_app, run_inv

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
spec:
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: api}
    spec:
      containers:
        - name: api
          image: api   # replaced by the overlay's images entry
"""

KUSTOMIZATION = """\
# production overlay: Argo CD applies this directory
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../base
namePrefix: prod-
images:
  - name: api
    newName: ghcr.io/example/api   # shatag writes the pinned image here
    newTag: latest
  - name: sidecar
    newTag: "1.2"
"""

VALUES = """\
# Helm values for production (hand-maintained)
replicaCount: 3
image:
  repository: ghcr.io/example/api  # shatag
  tag: "latest"
  pullPolicy: IfNotPresent
resources: {limits: {cpu: 500m}}
"""


#: The test set-up's kubectl, else the one on PATH (`kubectl kustomize` needs no cluster).
KUBECTL = str(TOOLS_BIN / "kubectl") if (TOOLS_BIN / "kubectl").exists() else "kubectl"


def changed(old: str, new: str) -> list[str]:
    return [
        line
        for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def rendered_image(overlay: Path) -> str:
    out = subprocess.run(
        [KUBECTL, "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    deployment = next(d for d in YAML(typ="safe").load_all(out) if d["kind"] == "Deployment")
    assert deployment["metadata"]["name"] == "prod-api"
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def test_kustomize_and_helm_values_get_the_pinned_image_and_keep_every_other_byte(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    env = cli_env(registry, tmp_path, f"gitops-{uuid.uuid4().hex[:8]}")
    app = new_app(tmp_path / "app")
    shas, digests = [], []
    for release in ("A", "B"):
        sha = app.commit(f'{{"release": "{release}"}}', release)
        result = run_inv(
            ["build", f"--sha={sha}", "--branch=main"],
            {**env, "INVOKE_SHATAG_CONTEXT": str(app.path)},
        )
        assert result.returncode == 0, result.stderr
        shas.append(sha)
        digests.append(result.record["image_digest"])
    repo = env["INVOKE_SHATAG_CANONICAL_REPOSITORY"]

    gitops = tmp_path / "gitops"
    (gitops / "base").mkdir(parents=True)
    (gitops / "base" / "deployment.yaml").write_text(DEPLOYMENT)
    (gitops / "base" / "kustomization.yaml").write_text("resources:\n  - deployment.yaml\n")
    overlay = gitops / "overlays" / "production"
    overlay.mkdir(parents=True)
    kustomization = overlay / "kustomization.yaml"
    kustomization.write_text(KUSTOMIZATION)
    values = gitops / "values-production.yaml"
    values.write_text(VALUES)
    config = tmp_path / "shatag.yaml"
    targets = [
        {"kind": "kustomize", "path": str(kustomization), "name": "api"},
        {"kind": "helm_values", "path": str(values)},
    ]
    config.write_text(json.dumps({"shatag": {
        "state_dir": str(tmp_path / "state"),
        "environments": {"production": {"repository_type": "canonical", "targets": targets}},
    }}))  # fmt: skip

    for sha, digest in zip(shas, digests, strict=True):
        result = run_inv(["-f", str(config), "deploy", f"--sha={sha}", "--env=production"], env)
        assert result.returncode == 0, result.stderr
        pinned = f"{repo}:{sha}@{digest}"
        assert rendered_image(overlay) == pinned
        assert changed(KUSTOMIZATION, kustomization.read_text()) == [
            "-    newName: ghcr.io/example/api   # shatag writes the pinned image here",
            "-    newTag: latest",
            f"+    newName: {repo}   # shatag writes the pinned image here",
            f"+    newTag: {sha}",
            f"+    digest: {digest}",
        ]
        # No image.digest in the file: the tag carries the digest, no key is created
        # (issue 23, item 2: it used to add a digest line the chart never reads).
        assert changed(VALUES, values.read_text()) == [
            "-  repository: ghcr.io/example/api  # shatag",
            '-  tag: "latest"',
            f"+  repository: {repo}  # shatag",
            f'+  tag: "{sha}@{digest}"',
        ]

    rolled = run_inv(["-f", str(config), "rollback", "--env=production"], env)
    assert rolled.returncode == 0, rolled.stderr
    assert rendered_image(overlay) == f"{repo}:{shas[0]}@{digests[0]}"


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ({"kind": "kustomize", "path": "k.yaml"}, "needs name"),
        ({"kind": "kustomize", "name": "api"}, "needs the path"),
        ({"kind": "helm_values", "path": "v.yaml", "tag_key": "image..tag"}, "dotted key path"),
        ({"kind": "helm_values", "path": "v.yaml", "tag_key": "image.repository"}, "must differ"),
        ({"kind": "kubernetes", "deployment": "api"}, "needs container"),
        ({"kind": "kubernetes", "deployment": "Bad_Name", "container": "api"}, "deployment"),
        ({"kind": "kubernetes", "deployment": "api", "container": "api",
          "rollout_timeout_sec": "soon"}, "CONFIG_ERROR"),
        ({"kind": "kubernetes", "deployment": "api", "container": "api", "replicas": 3},
         "unknown keys replicas"),
    ],
)  # fmt: skip
def test_bad_target_keys_are_config_errors(
    registry: LocalRegistry, tmp_path: Path, target: dict[str, object], fragment: str
) -> None:
    env = cli_env(registry, tmp_path, "bad-keys")
    config = tmp_path / "shatag.yaml"
    config.write_text(json.dumps({"shatag": {"environments": {"production": {
        "repository_type": "canonical", "targets": [target]}}}}))  # fmt: skip
    result = run_inv(["-f", str(config), "deploy", f"--sha={'a' * 40}", "--env=production"], env)
    assert result.returncode != 0
    assert "error: CONFIG_ERROR:" in result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=60, check=True,
        env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
             "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin", "HOME": str(cwd)},
    ).stdout  # fmt: skip


def test_deploy_and_rollback_push_to_the_gitops_branch_from_stale_clones(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    """``git_push: true`` through the real CLI (issue 23, item 3): each deploy and the rollback
    is one commit on the remote branch, made from a clone older than the branch."""
    env = cli_env(registry, tmp_path, f"gitops-push-{uuid.uuid4().hex[:8]}")
    app = new_app(tmp_path / "app")
    shas, digests = [], []
    for release in ("A", "B"):
        sha = app.commit(f'{{"release": "{release}"}}', release)
        built = run_inv(["build", f"--sha={sha}", "--branch=main"],
                        {**env, "INVOKE_SHATAG_CONTEXT": str(app.path)})  # fmt: skip
        assert built.returncode == 0, built.stderr
        shas.append(sha)
        digests.append(built.record["image_digest"])
    repo = env["INVOKE_SHATAG_CANONICAL_REPOSITORY"]

    bare = tmp_path / "gitops.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    seed = tmp_path / "seed"
    subprocess.run(["git", "clone", "-q", str(bare), str(seed)], check=True, capture_output=True)
    _git(seed, "checkout", "-q", "-b", "main")
    (seed / "base").mkdir()
    (seed / "base" / "deployment.yaml").write_text(DEPLOYMENT)
    (seed / "base" / "kustomization.yaml").write_text("resources:\n  - deployment.yaml\n")
    (seed / "overlays" / "production").mkdir(parents=True)
    (seed / "overlays" / "production" / "kustomization.yaml").write_text(KUSTOMIZATION)
    (seed / "values-production.yaml").write_text(VALUES)
    _git(seed, "add", "-A")
    _git(seed, "commit", "-q", "-m", "seed")
    _git(seed, "push", "-q", "origin", "main")
    runners = []
    for n in range(2):  # two CI runners' checkouts, cloned now: stale after the first push
        checkout = tmp_path / f"runner-{n}"
        subprocess.run(["git", "clone", "-q", str(bare), str(checkout)], check=True)
        config = checkout / "shatag.yaml"
        targets = [
            {"kind": "kustomize", "path": "overlays/production/kustomization.yaml",
             "name": "api", "git_push": True},
            {"kind": "helm_values", "path": "values-production.yaml", "git_push": True},
        ]  # fmt: skip
        config.write_text(json.dumps({"shatag": {
            "state_dir": str(tmp_path / "state"),
            "environments": {"production": {"repository_type": "canonical", "targets": targets}},
        }}))  # fmt: skip
        runners.append(config)

    steps = [
        (runners[0], ["deploy", f"--sha={shas[0]}"], 0),
        (runners[1], ["deploy", f"--sha={shas[1]}"], 1),
        (runners[0], ["rollback"], 0),
    ]
    for config, args, expect in steps:
        result = run_inv(["-f", str(config), *args, "--env=production"], env)
        assert result.returncode == 0, result.stderr
        subject = _git(bare, "log", "-1", "--format=%s", "main").strip()
        assert subject == f"shatag: production -> {shas[expect][:12]} ({digests[expect][:19]})"
        fresh = tmp_path / f"fresh-{len(_git(bare, 'rev-list', 'main').split())}"
        subprocess.run(["git", "clone", "-q", str(bare), str(fresh)], check=True)
        pinned = f"{repo}:{shas[expect]}@{digests[expect]}"
        assert rendered_image(fresh / "overlays" / "production") == pinned
        assert (
            f'tag: "{shas[expect]}@{digests[expect]}"'
            in (fresh / "values-production.yaml").read_text()
        )
    assert len(_git(bare, "rev-list", "--first-parent", "main").split()) == 4, "seed + 3 pushes"
