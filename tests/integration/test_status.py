"""``status`` on the real engine, proxy and registry (issue 23, item 5), and ``--plan`` naming
the serving release of a docker target (item 7).

One environment with a docker target (through the Caddy proxy) and an SDL file: before any
deploy there is nothing to compare (exit 0); after a deploy both are in sync (exit 0); a hand
edit of the file is DRIFT (exit 3); the serving container stopped is TARGET_DOWN (exit 4).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shatag._testing.localregistry import LocalRegistry, free_port
from tests.conftest import App, InvResult, cli_env, new_app, run_inv

SDL = """\
version: "2.0"
services:
  api:
    image: placeholder  # pinned by shatag
    expose:
      - port: 8080
"""


def _docker(*args: str, check: bool = True) -> str:
    out = subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=check, timeout=120
    )
    return out.stdout.strip()


class Site:
    """A docker target behind the proxy plus an SDL file, in environment ``prod``."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.name = f"shatag-itst-{uuid.uuid4().hex[:8]}"
        self.env = env
        self.sdl = root / "deploy.yaml"
        self.sdl.write_text(SDL)
        self.config = root / "status.json"
        targets = [
            {
                "kind": "docker",
                "name": self.name,
                "port": free_port(),
                "container_port": 8080,
                "health_timeout_sec": 6,
                "watch_sec": 1,  # the post-switch watch (5 s by default) is not what this tests
            },
            {"kind": "sdl", "path": str(self.sdl), "service": "api"},
        ]
        spec = {"state_dir": str(root / "state"), "environments": {"prod": {"targets": targets}}}
        self.config.write_text(json.dumps({"shatag": spec}))

    def inv(self, *args: str) -> InvResult:
        return run_inv(["-f", str(self.config), *args, "--env=prod"], self.env)

    def cleanup(self) -> None:
        ids = _docker("ps", "-aq", "--filter", f"label=shatag.target={self.name}").split()
        if ids:
            _docker("rm", "-f", *ids, check=False)
        _docker("network", "rm", f"{self.name}-shatag-net", check=False)


@pytest.fixture(scope="module")
def built(registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("status-world")
    env = {**cli_env(registry, root, f"st-{uuid.uuid4().hex[:8]}"), "USER": "status-tests"}
    app: App = new_app(root / "app")
    (app.path / "www" / "healthz").write_text("ok\n")
    records = {}
    for release in ("A", "B"):
        sha = app.commit(json.dumps({"release": release}), release)
        result = run_inv(
            ["build", f"--sha={sha}", "--branch=main"],
            {**env, "INVOKE_SHATAG_CONTEXT": str(app.path)},
        )
        assert result.returncode == 0, result.stderr
        records[release] = result.record
    return {"env": env, **records}


@pytest.fixture
def site(built: dict[str, Any], tmp_path: Path) -> Iterator[Site]:
    made = Site(tmp_path, built["env"])
    try:
        yield made
    finally:
        made.cleanup()


def _states(result: InvResult) -> dict[str, str]:
    return {t["target"]: t["state"] for t in result.record["targets"]}


def test_status_in_sync_drift_and_down(site: Site, built: dict[str, Any]) -> None:
    a, b = built["A"], built["B"]
    docker_label, sdl_label = f"docker:{site.name}", f"sdl:{site.sdl}"

    before = site.inv("status")
    assert before.returncode == 0, before.stderr
    assert before.record["state"] == "none"

    deployed = site.inv("deploy", f"--sha={a['image_sha']}")
    assert deployed.returncode == 0, deployed.stderr
    synced = site.inv("status")
    assert synced.returncode == 0, synced.stderr
    record = synced.record
    assert record["phase"] == "status"
    assert record["state"] == "in_sync"
    assert record["image_digest"] == a["image_digest"]
    assert _states(synced) == {docker_label: "in_sync", sdl_label: "in_sync"}
    running = {t["target"]: t["running"] for t in record["targets"]}
    assert running[docker_label] == a["image_digest"]  # read from the container, not history
    assert f"status: {docker_label}: in sync" in synced.stderr
    assert "/healthz answers" in synced.stderr

    # --plan names the serving release (it said "nothing →" before, issue 23 item 7).
    plan = site.inv("deploy", f"--sha={b['image_sha']}", "--plan")
    assert plan.returncode == 0, plan.stderr
    assert f"{docker_label}: {a['image_ref']} → {b['image_ref']}" in plan.stderr

    # A hand edit of the file: DRIFT, exit 3, naming what the file pins now.
    site.sdl.write_text(site.sdl.read_text().replace(a["image_digest"], b["image_digest"]))
    drifted = site.inv("status")
    assert drifted.returncode == 3, drifted.stderr
    assert "error: DRIFT:" in drifted.stderr
    assert drifted.record["error_code"] == "DRIFT"
    assert _states(drifted) == {docker_label: "in_sync", sdl_label: "drift"}
    assert b["image_digest"] in drifted.record["targets"][1]["running"]

    # The serving container stopped behind the proxy: TARGET_DOWN, exit 4 (wins over DRIFT).
    serving = _docker(
        "ps", "-q", "--filter", f"label=shatag.target={site.name}", "--filter",
        "label=shatag.role=app",
    )  # fmt: skip
    _docker("stop", "--time", "1", *serving.split())
    down = site.inv("status")
    assert down.returncode == 4, down.stderr
    assert "error: TARGET_DOWN:" in down.stderr
    assert down.record["state"] == "down"
    assert _states(down)[docker_label] == "down"
    assert not [line for line in down.stderr.splitlines() if "Traceback" in line]
