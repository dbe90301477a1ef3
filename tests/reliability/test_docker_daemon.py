"""The docker daemon stops during build and during deploy (issue 6).

Stopping the machine's shared daemon would break every other suite running on it, so this test
starts its *own* real ``dockerd`` (Debian's docker.io, own data-root, exec-root, socket and
bridge) and points shatag at it with ``DOCKER_HOST``; stopping that daemon (SIGTERM, as
``systemctl stop docker`` does) is the fault. It is restarted the way ``ci/setup.sh`` starts
one (``setsid dockerd``) and waited for.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from shatag._testing.localregistry import free_port
from shatag.targets.docker.owned import owner_labels
from shatag.targets.docker.proxy import NETWORK_SUFFIX as NET
from tests.conftest import InvResult
from tests.reliability._shim import PathShim
from tests.reliability.conftest import Ledger, Site, World, describe, error_code, wait_for

BRIDGE = "shatagrel0"
BRIDGE_CIDR = "10.213.7.1/24"
PX_BRIDGE = "shatagrelpx0"


class PrivateDaemon:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.sock = root / "docker.sock"
        self.host = f"unix://{self.sock}"
        self.proc: subprocess.Popen[bytes] | None = None

    def docker(self, *args: str, check: bool = True) -> str:
        out = subprocess.run(
            ["docker", "-H", self.host, *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
        )
        return out.stdout.strip()

    def answers(self) -> bool:
        return (
            subprocess.run(
                ["docker", "-H", self.host, "info"], capture_output=True, timeout=30, check=False
            ).returncode
            == 0
        )

    def start(self) -> None:
        with (self.root / "dockerd.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    "dockerd",
                    "--data-root",
                    str(self.root / "data"),
                    "--exec-root",
                    str(self.root / "exec"),
                    "--pidfile",
                    str(self.root / "docker.pid"),
                    "-H",
                    self.host,
                    "--bridge",
                    BRIDGE,
                    "--iptables=false",
                    "--ip-masq=false",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        if not wait_for(self.answers, 60, 0.5):
            raise RuntimeError(f"private dockerd did not start: {self.root / 'dockerd.log'}")

    def stop(self) -> None:
        """SIGTERM, as `systemctl stop docker` does; containers stop with the daemon."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None


@pytest.fixture(scope="module")
def daemon() -> Iterator[PrivateDaemon]:
    if os.geteuid() != 0 or shutil.which("dockerd") is None or shutil.which("ip") is None:
        pytest.skip("needs root, dockerd and ip to run a private docker daemon")
    created_bridge = False
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True, check=False).returncode:
        for argv in (
            ["ip", "link", "add", BRIDGE, "type", "bridge"],
            ["ip", "addr", "add", BRIDGE_CIDR, "dev", BRIDGE],
            ["ip", "link", "set", BRIDGE, "up"],
        ):
            subprocess.run(argv, check=True, capture_output=True, timeout=30)
        created_bridge = True
    # A short path: the daemon's unix socket path must stay under 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="shatag-rd-"))
    d = PrivateDaemon(root)
    d.start()
    try:
        yield d
    finally:
        if d.proc is not None:
            with contextlib.suppress(subprocess.CalledProcessError):
                names = d.docker("ps", "-aq")
                if names:
                    d.docker("rm", "-f", *names.split(), check=False)
        d.stop()
        shutil.rmtree(root, ignore_errors=True)
        if created_bridge:
            subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)


def _run_and_stop_daemon(
    argv: list[str],
    env: dict[str, str],
    daemon: PrivateDaemon,
    trigger: Callable[[list[str]], bool],
) -> InvResult:
    """Start ``argv``; once ``trigger(stderr lines so far)`` holds -- a line the run printed --
    stop the daemon. Returns the run's result and leaves the daemon stopped."""
    err_lines: list[str] = []
    with subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:

        def read_err() -> None:
            assert proc.stderr is not None
            err_lines.extend(proc.stderr)

        reader = threading.Thread(target=read_err, daemon=True)
        reader.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if trigger(list(err_lines)):
                break
            time.sleep(0.05)
        daemon.stop()
        out = proc.stdout.read() if proc.stdout else ""
        proc.wait(timeout=300)
        reader.join(timeout=30)
    return InvResult(proc.returncode, out, "".join(err_lines))


def test_daemon_stopped_during_build(ledger: Ledger, world: World, daemon: PrivateDaemon) -> None:
    from tests.conftest import inv_argv

    env = {**world.env, "DOCKER_HOST": daemon.host, "INVOKE_SHATAG_CONTEXT": str(world.app.path)}
    # 1. stopped before the build starts
    daemon.stop()
    ledger.count("faults_injected")
    sha1 = world.app.commit('{"daemon": "down"}', "daemon down")
    down = InvResult(0, "", "")
    try:
        from tests.reliability.conftest import rinv

        down = rinv(ledger, ["build", f"--sha={sha1}", "--branch=main"], env)
    finally:
        daemon.start()
    # 2. stopped while docker build runs
    sha2 = world.app.commit('{"daemon": "dies"}', "daemon dies")
    ledger.count("faults_injected")
    mid = _run_and_stop_daemon(
        inv_argv("build", f"--sha={sha2}", "--branch=main"),
        env,
        daemon,
        lambda lines: any("Step 1/" in line or "#1 " in line for line in lines),
    )
    ledger.capture("build, daemon stopped", mid.stdout + mid.stderr)
    daemon.start()
    client = world.client()
    pushed = [client.manifest_digest(s) is not None for s in (sha1, sha2)]
    mid_ok = error_code(mid) in ("BUILD_FAILURE", "PUSH_FAILURE") or (
        mid.returncode == 0 and pushed[1]
    )
    ok = (
        error_code(down) == "BUILD_FAILURE"
        and "daemon" in down.stderr
        and mid_ok
        and "Traceback" not in down.stderr + mid.stderr
        and not pushed[0]
        and (pushed[1] == (mid.returncode == 0))
    )
    ledger.record(
        "docker daemon stopped before / during build (private dockerd)",
        "BUILD_FAILURE naming the daemon (PUSH_FAILURE if it dies while pushing); no tag "
        "pushed for a failed build",
        f"before: {describe(down)}; during: {describe(mid)}; tags pushed {pushed}",
        ok,
    )
    assert ok, (down.stderr[-400:], mid.stderr[-3000:])


def _docker_site(make_site: Callable[..., Site], daemon: PrivateDaemon) -> tuple[Site, str]:
    name = f"shatag-rel-{uuid.uuid4().hex[:8]}"
    site = make_site()
    spec = json.loads(site.config.read_text())
    spec["shatag"]["environments"]["rel"]["targets"].append(
        # the stop-then-start switch, whose container is <name> (proxy: false); its undo waits
        # up to health_timeout_sec for a daemon that went away to answer again
        {
            "kind": "docker",
            "name": name,
            "port": free_port(),
            "container_port": 8080,
            "proxy": False,
            "health_timeout_sec": UNDO_WAIT_SEC,
            "watch_sec": 1,  # the post-switch watch (5 s by default) is not what this tests
        }
    )
    site.config.write_text(json.dumps(spec))
    site.extra_env = {"DOCKER_HOST": daemon.host}
    return site, name


def _container(daemon: PrivateDaemon, name: str) -> list[str]:
    fmt = '{{.Id}} {{.State.Running}} {{index .Config.Labels "shatag.sha"}}'
    return daemon.docker("inspect", "--format", fmt, name, check=False).split()


UNDO_WAIT_SEC = 10


@dataclass(frozen=True)
class Moment:
    """Where the daemon is stopped: at the shim's held call (``pattern`` before/after it), and
    whether it is started again while the run still waits for it (``back_in_run``)."""

    held: str
    when: Literal["before", "after"]
    back_in_run: bool
    #: calls that must not have been made when the fault hit / that must have been
    not_yet: tuple[str, ...]
    made: tuple[str, ...]


MOMENTS = {
    # prepare done (inspected, image present), the old container not touched yet
    "before the switch": Moment("stop *", "before", False, ("stop", "rename", "run"), ()),
    # the old container stopped and parked, the new one created and started
    "during the switch": Moment("run *", "after", False, (), ("stop", "rename", "run")),
    # the old container stopped by the switch (so the daemon will not restart it), not yet
    # parked; the daemon comes back while the run's undo waits for it (issue 27)
    "restarted during the switch": Moment("rename *", "before", True, ("run",), ("stop",)),
}


def _words(calls: list[str]) -> list[str]:
    """The docker subcommand of each call (``container inspect`` → ``inspect``)."""
    out = []
    for call in calls:
        parts = call.split()
        if parts and parts[0] in ("container", "image", "network") and len(parts) > 1:
            parts = parts[1:]
        out.append(parts[0] if parts else "")
    return out


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_daemon_stopped_during_deploy(
    ledger: Ledger,
    world: World,
    daemon: PrivateDaemon,
    make_site: Callable[..., Site],
    moment: str,
) -> None:
    """The daemon is stopped at a named docker call of the switch (a PATH shim holds that
    call while the daemon stops), never after a delay (issue 27)."""
    from tests.conftest import inv_argv

    at = MOMENTS[moment]
    a, b = world.images[0], world.images[1]
    site, name = _docker_site(make_site, daemon)
    first = site.deploy(ledger, a)
    assert first.returncode == 0, first.stderr[-600:]
    old_id = _container(daemon, name)[0]
    shim = PathShim(site.dir / "shim")
    shim.hold(at.held, at.when)
    ledger.count("faults_injected")
    argv = inv_argv("-f", str(site.config), "deploy", f"--sha={b.sha}", "--env=rel")
    with subprocess.Popen(
        argv, env=shim.env(site.env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            held = shim.wait_held(120, lambda: proc.poll() is None)
            before_fault = shim.calls()
            daemon.stop()
            shim.release()
            waited = False
            if at.back_in_run:
                # the run's undo found the daemon gone and polls `docker version` for it
                waited = wait_for(lambda: "version" in _words(shim.calls()), 60, 0.05)
                daemon.start()
            out, err = proc.communicate(timeout=300)
        finally:
            shim.release()
            if proc.poll() is None:
                proc.kill()
    result = InvResult(proc.returncode, out, err)
    ledger.capture("deploy, daemon stopped", result.stdout + result.stderr)
    journal_left = (site.state / "rel" / "pending.json").exists()
    state_at_end = _container(daemon, name) if at.back_in_run else []
    if daemon.proc is None:
        daemon.start()
    # the run was at the named moment: the held call came, after what must have been made
    words = _words(before_fault)
    at_moment = (
        held
        and shim.held_call().startswith(at.held.rstrip(" *"))
        and all(w in words for w in at.made)
        and not any(w in words[:-1] for w in at.not_yet)
    )
    recovered = ""
    if moment == "during the switch":
        # The old container was already stopped and parked when the daemon died, and it did
        # not come back within the run: the next run of shatag for this environment restores
        # it before doing anything else. A deploy of a SHA that is not in the registry shows
        # that restore alone (it then fails MISSING_TAG).
        probe = site.inv(ledger, "deploy", f"--sha={'0' * 40}", "--env=rel")
        recovered = f"; next run (recovery, then {describe(probe)})"
    wait_for(lambda: _container(daemon, name)[1:2] == ["true"], 20, 0.5)
    state = _container(daemon, name)
    untouched = state == [old_id, "true", a.sha]
    in_run = not at.back_in_run or (
        waited
        and state_at_end == [old_id, "true", a.sha]
        and not journal_left
        and "previous container was restored" in result.stderr
    )
    again = site.deploy(ledger, b)
    ok = bool(
        at_moment
        and result.returncode != 0
        and error_code(result)
        and "Traceback" not in result.stderr
        and untouched
        and in_run
        and again.returncode == 0
    )
    after = {
        "before the switch": " (it was never stopped: the daemon restarts it)",
        "during the switch": " after the next shatag run's recovery",
        "restarted during the switch": " when the run ends (its undo waited for the daemon)",
    }[moment]
    ledger.record(
        f"docker daemon stopped during deploy, {moment} (private dockerd, at `docker "
        f"{at.held.rstrip(' *')}`)",
        "deploy fails with a code; once the daemon is back the old container (same id, "
        f"release A) runs{after}; the next deploy works",
        f"{describe(result)}{recovered}; old container (same id, A, running)={untouched}; "
        f"next deploy {describe(again)}",
        ok,
    )
    listing = daemon.docker("ps", "-a", "--format", "{{.Names}} {{.Status}}", check=False)
    assert ok, (
        at_moment,
        before_fault,
        journal_left,
        state_at_end,
        state,
        old_id[:12],
        listing,
        result.stderr[-1500:],
    )


def test_daemon_restart_brings_the_proxied_release_back(
    ledger: Ledger, world: World, daemon: PrivateDaemon, make_site: Callable[..., Site]
) -> None:
    """The proxy-gated switch (the default) on the private daemon, which is then restarted as
    ``systemctl restart docker`` does (every container stops with it): the proxy and the
    serving release come back by themselves (``--restart unless-stopped``), the proxy forwards
    to the release history names, and the next deploy works."""
    name, port = f"shatag-rel-{uuid.uuid4().hex[:8]}", free_port()
    site = make_site()
    spec = json.loads(site.config.read_text())
    spec["shatag"]["environments"]["rel"]["targets"].append(
        # watch_sec: the post-switch watch (5 s by default) is not what this tests
        {"kind": "docker", "name": name, "port": port, "container_port": 8080, "watch_sec": 1}
    )
    site.config.write_text(json.dumps(spec))
    site.extra_env = {"DOCKER_HOST": daemon.host}
    # The private daemon runs with --iptables=false, and this machine bridges through iptables
    # (br_netfilter; the shared daemon's FORWARD policy is DROP): the proxy could not reach the
    # release on its network. So the test makes the network shatag would make (same name and
    # labels; shatag reuses it) on a bridge of a known name, and lets that bridge forward to
    # itself with one FORWARD rule, deleted at the end.
    labels = [f"--label={k}={v}" for k, v in owner_labels("rel", name, "network").items()]
    bridge = f"com.docker.network.bridge.name={PX_BRIDGE}"
    daemon.docker("network", "create", "--driver", "bridge", "-o", bridge, *labels, name + NET)
    rule = ["FORWARD", "-i", PX_BRIDGE, "-o", PX_BRIDGE, "-j", "ACCEPT"]
    subprocess.run(["iptables", "-I", *rule], check=True, capture_output=True, timeout=30)
    try:
        _restart_under_proxy(ledger, world, daemon, site, port=port)
    finally:
        subprocess.run(["iptables", "-D", *rule], check=False, capture_output=True, timeout=30)
        ids = daemon.docker("ps", "-aq", "--filter", f"label=shatag.target={name}", check=False)
        if ids:
            daemon.docker("rm", "-f", *ids.split(), check=False)
        daemon.docker("network", "rm", name + NET, check=False)


def _restart_under_proxy(
    ledger: Ledger, world: World, daemon: PrivateDaemon, site: Site, *, port: int
) -> None:
    import urllib.request

    a, b = world.images[0], world.images[1]

    def serves() -> str:
        try:
            url = f"http://127.0.0.1:{port}/api.json"
            with urllib.request.urlopen(url, timeout=2) as response:
                return str(json.loads(response.read()).get("release", "?"))
        except (OSError, ValueError):
            return ""

    first = site.deploy(ledger, a)
    assert first.returncode == 0, first.stderr[-800:]
    before = serves()
    ledger.count("faults_injected")
    daemon.stop()
    daemon.start()
    back = wait_for(lambda: serves() == before, 60, 0.5)
    after = serves()
    again = site.deploy(ledger, b)
    moved = serves()
    # world.images are releases A, B, C; history's current release is A until the deploy of B
    ok = before == "A" and back and again.returncode == 0 and moved == "B"
    ledger.record(
        "docker daemon restarted under the proxy-gated switch (private dockerd)",
        "proxy and serving release come back by themselves and serve what history names; "
        "the next deploy works",
        f"before restart: {before!r}; after: {after!r} (back={back}); next deploy "
        f"{describe(again)}, then serving {moved!r}",
        ok,
    )
    listing = daemon.docker("ps", "-a", "--format", "{{.Names}} {{.Status}}", check=False)
    assert ok, (listing, again.stderr[-1500:])
