"""The docker target's default switch through the Caddy proxy, on the real engine (issue 12).

The proxy image is the default one, built by shatag FROM scratch from the static caddy binary
of ``$SHATAG_TOOLS_DIR/bin`` (``bash ci/setup.sh``). Figures under traffic, signals and kills
are in tests/reliability/test_proxy_switch.py.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shatag._testing.localregistry import LocalRegistry, free_port
from tests.conftest import App, InvResult, cli_env, new_app, run_inv


def _docker(*args: str, check: bool = True) -> str:
    out = subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=check, timeout=120
    )
    return out.stdout.strip()


class Px:
    def __init__(self, root: Path, env: dict[str, str], **target: object) -> None:
        # The post-switch watch (issue 23, 5 s by default) at 1 s unless a test sets it.
        target.setdefault("watch_sec", 1)
        self.name = f"shatag-itpx-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.state = root / "state"
        self.runtime = root / "runtime"
        # A variable, as CI would set it: it wins over any file (issue 23, item 7).
        self.env = {**env, "INVOKE_SHATAG_RUNTIME_DIR": str(self.runtime)}
        self.config = root / f"{self.name}.json"
        spec = {
            "state_dir": str(self.state),
            "environments": {
                "prod": {
                    "targets": [
                        {
                            "kind": "docker",
                            "name": self.name,
                            "port": self.port,
                            "container_port": 8080,
                            "health_path": "/healthz",
                            "health_timeout_sec": 6,
                            **target,
                        }
                    ]
                }
            },
        }
        self.config.write_text(json.dumps({"shatag": spec}))

    def deploy(self, sha: str) -> InvResult:
        return run_inv(["-f", str(self.config), "deploy", f"--sha={sha}", "--env=prod"], self.env)

    def rollback(self) -> InvResult:
        return run_inv(["-f", str(self.config), "rollback", "--env=prod"], self.env)

    def serves(self) -> str:
        url = f"http://127.0.0.1:{self.port}/api.json"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode()).strip()

    def apps(self) -> list[str]:
        out = _docker(
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
            "--filter",
            f"label=shatag.target={self.name}",
            "--filter",
            "label=shatag.role=app",
        )
        return out.split()

    def cleanup(self) -> None:
        ids = _docker("ps", "-aq", "--filter", f"label=shatag.target={self.name}").split()
        if ids:
            _docker("rm", "-f", *ids, check=False)
        _docker("network", "rm", f"{self.name}-shatag-net", check=False)


@pytest.fixture(scope="module")
def built(
    registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, str], dict[str, str]]:
    root = tmp_path_factory.mktemp("px-world")
    env = {**cli_env(registry, root, f"px-{uuid.uuid4().hex[:8]}"), "USER": "px-tests"}
    app: App = new_app(root / "app")
    (app.path / "www" / "healthz").write_text("ok\n")
    shas = {}
    for release in ("A", "B"):
        sha = app.commit(json.dumps({"release": release}), release)
        result = run_inv(
            ["build", f"--sha={sha}", "--branch=main"],
            {**env, "INVOKE_SHATAG_CONTEXT": str(app.path)},
        )
        assert result.returncode == 0, result.stderr
        shas[release] = sha
    return env, shas


@pytest.fixture
def px(built: tuple[dict[str, str], dict[str, str]], tmp_path: Path) -> Iterator[Px]:
    site = Px(tmp_path, built[0])
    try:
        yield site
    finally:
        site.cleanup()


def test_deploy_switch_and_rollback_go_through_the_proxy(
    px: Px, built: tuple[dict[str, str], dict[str, str]]
) -> None:
    shas = built[1]
    first = px.deploy(shas["A"])
    assert first.returncode == 0, first.stderr
    assert json.loads(px.serves()) == {"release": "A"}
    proxy = json.loads(_docker("inspect", f"{px.name}-proxy"))[0]
    labels = proxy["Config"]["Labels"]
    assert labels["shatag.env"] == "prod"
    assert labels["shatag.target"] == px.name
    assert labels["shatag.role"] == "proxy"
    # published on loopback only; the admin endpoint is no port at all, a 0700 unix socket
    ports = proxy["HostConfig"]["PortBindings"]
    assert ports == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(px.port)}]}
    assert "2019/tcp" not in json.dumps(proxy["NetworkSettings"]["Ports"])
    home = px.runtime / "proxy" / "prod" / px.name
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_ISSOCK((home / "admin.sock").stat().st_mode)
    assert proxy["Config"]["User"] == f"{os.getuid()}:{os.getgid()}"
    (app_a,) = px.apps()
    app = json.loads(_docker("inspect", app_a))[0]
    assert app["HostConfig"]["PortBindings"] in ({}, None)  # the app publishes nothing
    assert list(app["NetworkSettings"]["Networks"]) == [f"{px.name}-shatag-net"]
    net = json.loads(_docker("network", "inspect", f"{px.name}-shatag-net"))[0]
    assert net["Labels"]["shatag.target"] == px.name

    argv = ["-f", str(px.config), "deploy", f"--sha={shas['B']}", "--env=prod"]
    second = run_inv(argv, {**px.env, "PYTHONPROFILEIMPORTTIME": "1"})
    assert second.returncode == 0, second.stderr
    assert "python_on_whales" not in second.stderr  # the CLI alone switches (issue 17)
    assert "import time:" in second.stderr  # so the line above is not vacuous
    assert json.loads(px.serves()) == {"release": "B"}
    (app_b,) = px.apps()  # the old one retired
    assert app_b != app_a

    back = px.rollback()
    assert back.returncode == 0, back.stderr
    assert back.record["image_sha"] == shas["A"]
    assert json.loads(px.serves()) == {"release": "A"}

    # the proxy gone (someone removed it): the next deploy brings it back, serving A at once
    (serving,) = px.apps()
    _docker("rm", "-f", f"{px.name}-proxy")
    again = px.deploy(shas["A"])
    assert again.returncode == 0, again.stderr
    assert again.record["unchanged"] == [f"docker:{px.name}"]
    assert px.apps() == [serving]
    assert json.loads(px.serves()) == {"release": "A"}


def test_a_wrong_container_port_fails_the_gate_and_moves_no_traffic(
    built: tuple[dict[str, str], dict[str, str]], tmp_path: Path
) -> None:
    env, shas = built
    good = Px(tmp_path, env)
    try:
        assert good.deploy(shas["A"]).returncode == 0
        spec = json.loads(good.config.read_text())
        spec["shatag"]["environments"]["prod"]["targets"][0]["container_port"] = 9999
        good.config.write_text(json.dumps(spec))
        result = good.deploy(shas["B"])
        assert result.returncode == 1
        assert "error: DEPLOY_FAILED:" in result.stderr
        assert "port 9999" in result.stderr
        assert "traffic was not moved" in result.stderr
        assert json.loads(good.serves()) == {"release": "A"}
        assert len(good.apps()) == 1
    finally:
        good.cleanup()


def _set_target(site: Px, **changes: object) -> None:
    spec = json.loads(site.config.read_text())
    target = spec["shatag"]["environments"]["prod"]["targets"][0]
    for key, value in changes.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    site.config.write_text(json.dumps(spec))


def test_turning_the_proxy_on_migrates_the_stop_then_start_container(
    built: tuple[dict[str, str], dict[str, str]], tmp_path: Path
) -> None:
    """An environment deployed with ``proxy: false`` (the app container ``<name>`` publishes
    the port) and then configured with the default proxy: the next deploy gates the new release
    first (a release that fails it leaves the old container serving), then puts the proxy on
    the port in the old container's place; the old container is retired, and rollback goes
    through the proxy."""
    env, shas = built
    site = Px(tmp_path, env, proxy=False)
    try:
        assert site.deploy(shas["A"]).returncode == 0
        assert json.loads(site.serves()) == {"release": "A"}
        assert site.apps() == [site.name]

        _set_target(site, proxy=None, container_port=9999)  # proxy on, and a gate that fails
        refused = site.deploy(shas["B"])
        assert refused.returncode == 1
        assert "traffic was not moved" in refused.stderr
        assert json.loads(site.serves()) == {"release": "A"}
        assert site.apps() == [site.name]
        assert _docker("ps", "-aq", "--filter", f"name=^{site.name}-proxy$") == ""

        _set_target(site, container_port=8080)
        moved = site.deploy(shas["B"])
        assert moved.returncode == 0, moved.stderr
        assert json.loads(site.serves()) == {"release": "B"}
        (serving,) = site.apps()  # <name> and <name>-shatag-prev are gone
        assert serving.startswith(f"{site.name}-{shas['B'][:12]}-")
        proxy = json.loads(_docker("inspect", f"{site.name}-proxy"))[0]
        assert proxy["State"]["Running"]

        back = site.rollback()
        assert back.returncode == 0, back.stderr
        assert json.loads(site.serves()) == {"release": "A"}
        assert len(site.apps()) == 1
    finally:
        site.cleanup()


def test_turning_the_proxy_off_is_refused_with_what_to_do(
    px: Px, built: tuple[dict[str, str], dict[str, str]]
) -> None:
    """The reverse migration would take the port from the proxy (a gap in service): the deploy
    refuses it, changes nothing, and says how to do it on purpose."""
    shas = built[1]
    assert px.deploy(shas["A"]).returncode == 0
    (serving,) = px.apps()
    _set_target(px, proxy=False)
    refused = px.deploy(shas["B"])
    assert refused.returncode == 1
    assert "error: CONFIG_ERROR:" in refused.stderr
    assert f"docker rm -f {px.name}-proxy" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert px.apps() == [serving]
    assert json.loads(px.serves()) == {"release": "A"}
