"""The ``helm template`` check of a ``helm_values`` target with ``chart:`` (issue 23, item 2),
run for real: a built image, the real ``shatag deploy`` and the real ``helm`` (v4, built once
from ``helm.sh/helm/v4`` by ``ci/install-tools.sh helm``, which the integration session runs)
over three small charts:

- a chart that renders ``{{ .Values.image.repository }}:{{ .Values.image.tag }}``: the deploy
  pins the values file, and ``helm template`` with it renders the pinned reference;
- a chart whose template ignores the edited keys (it reads ``.Values.other.image``): refused
  with ``CONFIG_ERROR`` "renders no image of", the values file byte-identical;
- a chart whose template fails (``required``): refused with ``DEPLOY_FAILED`` "helm template
  of … fails", the values file byte-identical.

A missing ``helm`` fails these tests (without it the check is only a warning, so the deploy
would pass untested): it is never a skip counted as coverage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from shatag._testing.localregistry import LocalRegistry
from tests.conftest import (
    InvResult,
    cli_env,
    new_app,
    required_tool,
    run_inv,
    tools_path,
)

CHART_YAML = 'apiVersion: v2\nname: api\nversion: 0.1.0\nappVersion: "1.0"\n'

#: The usual chart: the image is ``repository:tag`` from the values.
DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-api
spec:
  replicas: {{ .Values.replicaCount }}
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: api}
    spec:
      containers:
        - name: api
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
          imagePullPolicy: {{ .Values.image.pullPolicy }}
"""

CHART_VALUES = """\
replicaCount: 1
image:
  repository: ghcr.io/example/api
  tag: "1.0"
  pullPolicy: IfNotPresent
other:
  image: nginx:1.0
"""

CHARTS = {
    "ok": DEPLOYMENT,
    # Renders an image, but not from the keys the target edits.
    "ignores-keys": DEPLOYMENT.replace(
        "{{ .Values.image.repository }}:{{ .Values.image.tag }}",
        "{{ .Values.other.image }}",
    ),
    # Fails to render whatever the values say.
    "broken": DEPLOYMENT.replace(
        "  replicas: {{ .Values.replicaCount }}\n",
        '  replicas: {{ .Values.replicaCount }}\n  paused: {{ required "missing is required"'
        " .Values.missing }}\n",
    ),
}

#: The environment's values file (outside the chart, as in a GitOps repository).
VALUES = """\
# production values (hand-maintained)
replicaCount: 2
image:
  repository: ghcr.io/example/api  # shatag writes the pinned image here
  tag: "latest"
"""


def helm_binary() -> str:
    """The real ``helm`` (see :func:`tests.conftest.required_tool`)."""
    return required_tool("helm")


@dataclass
class World:
    app: Path
    sha: str
    digest: str
    repository: str
    env: dict[str, str]

    def values(self, chart: str) -> Path:
        return self.app / "deploy" / f"values-{chart}.yaml"

    def chart(self, chart: str) -> Path:
        return self.app / "deploy" / "charts" / chart

    def deploy(self, chart: str) -> InvResult:
        """The ``shatag`` console script: ``deploy --env=<chart>`` from the app repository."""
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "shatag"), "deploy", f"--sha={self.sha}",
             f"--env={chart}"],
            cwd=self.app,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )  # fmt: skip
        return InvResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def world(registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory) -> World:
    """One built image; the app repository has one chart, values file and environment per
    entry of :data:`CHARTS` (each environment: one ``helm_values`` target with ``chart:``)."""
    helm = helm_binary()
    root = tmp_path_factory.mktemp("helm-chart")
    env = cli_env(registry, root, f"helm-{uuid.uuid4().hex[:8]}")
    # The deploy finds helm on PATH: the one these tests name, whatever else PATH holds.
    env["PATH"] = tools_path(os.pathsep.join([str(Path(helm).parent), env["PATH"]]))
    app = new_app(root / "app")
    sha = app.commit('{"release": "helm"}', "helm")
    built = run_inv(
        ["build", f"--sha={sha}", "--branch=main"], {**env, "INVOKE_SHATAG_CONTEXT": str(app.path)}
    )
    assert built.returncode == 0, built.stderr
    world = World(
        app.path, sha, built.record["image_digest"], env["INVOKE_SHATAG_CANONICAL_REPOSITORY"], env
    )
    environments = {}
    for name, template in CHARTS.items():
        chart = world.chart(name)
        (chart / "templates").mkdir(parents=True)
        (chart / "Chart.yaml").write_text(CHART_YAML)
        (chart / "values.yaml").write_text(CHART_VALUES)
        (chart / "templates" / "deployment.yaml").write_text(template)
        world.values(name).write_text(VALUES)
        target = {
            "kind": "helm_values",
            "path": f"deploy/values-{name}.yaml",
            "chart": f"deploy/charts/{name}",  # relative: against shatag.yaml
        }
        environments[name] = {"repository_type": "canonical", "targets": [target]}
    (app.path / "shatag.yaml").write_text(json.dumps({"shatag": {
        "state_dir": str(root / "state"), "environments": environments,
    }}))  # fmt: skip
    return world


def helm_template(world: World, chart: str) -> subprocess.CompletedProcess[str]:
    """``helm template`` of ``chart`` with its environment's values file, as a reviewer runs it."""
    return subprocess.run(
        [helm_binary(), "template", "check", str(world.chart(chart)), "-f",
         str(world.values(chart))],
        env={"PATH": os.environ.get("PATH", os.defpath), "HOME": str(world.app.parent / "home")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip


def test_a_chart_that_renders_the_values_gets_the_pinned_image(world: World) -> None:
    result = world.deploy("ok")

    assert result.returncode == 0, result.stderr
    assert "helm is not on PATH" not in result.stderr, "the chart was rendered"
    pinned = f"{world.repository}:{world.sha}@{world.digest}"
    assert world.values("ok").read_text() == VALUES.replace(
        "ghcr.io/example/api  #", f"{world.repository}  #"
    ).replace('"latest"', f'"{world.sha}@{world.digest}"')
    rendered = helm_template(world, "ok")
    assert rendered.returncode == 0, rendered.stderr
    assert f'image: "{pinned}"' in rendered.stdout


def test_a_chart_that_ignores_the_edited_keys_refuses_the_deploy(world: World) -> None:
    values = world.values("ignores-keys")
    before = values.read_bytes()
    listing = sorted(values.parent.iterdir())

    result = world.deploy("ignores-keys")

    assert result.returncode == 1, result.stderr
    assert "error: CONFIG_ERROR:" in result.stderr
    chart = world.chart("ignores-keys")
    pinned = f"{world.repository}:{world.sha}@{world.digest}"
    assert f"helm template {chart} renders no image of {pinned}" in result.stderr
    assert "(it renders nginx:1.0)" in result.stderr
    assert values.read_bytes() == before, "the values file is left byte-identical"
    assert sorted(values.parent.iterdir()) == listing, "no file left beside it"


def test_a_chart_that_fails_to_render_refuses_the_deploy(world: World) -> None:
    values = world.values("broken")
    before = values.read_bytes()
    listing = sorted(values.parent.iterdir())

    result = world.deploy("broken")

    assert result.returncode == 1, result.stderr
    assert "error: DEPLOY_FAILED:" in result.stderr
    chart = world.chart("broken")  # relative in shatag.yaml, named resolved
    assert f"helm template of {chart} with the edited values fails" in result.stderr
    assert "missing is required" in result.stderr, "helm's own reason is shown"
    assert values.read_bytes() == before, "the values file is left byte-identical"
    assert sorted(values.parent.iterdir()) == listing, "no file left beside it"
