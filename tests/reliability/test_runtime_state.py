"""The docker target's runtime state on the host, not in a checkout (issue 23, item 1).

Two git clones of one application repository (each with its own ``shatag.yaml`` state
directory, as two CI jobs have) deploy the same docker target on one docker host, under a
60 req/s loopback loop (:mod:`tests.reliability._traffic`). The proxy's home is
``<runtime_dir>/proxy/<env>/<name>`` (``INVOKE_SHATAG_RUNTIME_DIR``, shared by both clones), so:

* 10 hand-overs between the clones: 0 failed requests, the proxy never re-created;
* both clones deleted and cloned again between deploys (what ``actions/checkout`` does):
  0 failed requests;
* two deploys started at once from the two clones: the host lock serialises them;
* an install of shatag before issue 23 (the code of the commit below, run from a
  ``git archive`` of it), whose proxy mounts a home inside a clone: the next deploy adopts
  that home by moving it (0 failed requests, the proxy kept), and the proxy still starts after a
  restart; where the move cannot (another file system) the proxy is re-created: measured.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shatag._testing.localregistry import free_port
from tests.conftest import ROOT, InvResult, run_inv
from tests.reliability._traffic import Load, docker
from tests.reliability.conftest import Built, Ledger, World

#: The last commit before issue 23 moved the proxy's home: a real "existing install".
BEFORE_ISSUE_23: str = "56b92c1fa79c0ec9ebfe829514e227b8a9fdf3e0"
HANDOVERS = 10
ENV = "px"


@dataclass
class Host:
    """One docker target deployed from clones of one repository on this host."""

    world: World
    ledger: Ledger
    root: Path
    name: str
    port: int

    @property
    def origin(self) -> Path:
        return self.root / "origin.git"

    @property
    def runtime(self) -> Path:
        return self.root / "runtime"

    @property
    def home(self) -> Path:
        return self.runtime / "proxy" / ENV / self.name

    def watch_for(self, sec: float) -> None:
        """Commit ``watch_sec: sec`` to the docker target's entry on the origin (the fixture's
        file has none: the shatag from before issue 23, which does not know the key, deploys
        it too); for tests that only the current shatag deploys and that are not about the
        post-switch watch, whose 5 s default would be most of their time."""
        seed = self.root / "seed"
        path = seed / "shatag.yaml"
        spec = json.loads(path.read_text())
        spec["shatag"]["environments"][ENV]["targets"][0]["watch_sec"] = sec
        path.write_text(json.dumps(spec, indent=2) + "\n")
        git = ["git", "-C", str(seed), "-c", "user.name=t", "-c", "user.email=t@example.com"]
        for argv in (["commit", "-qam", "watch"], ["push", "-q", str(self.origin), "main"]):
            subprocess.run([*git, *argv], check=True, capture_output=True, timeout=60)

    def clone(self, label: str) -> Path:
        """A fresh ``git clone`` (a deleted one cloned again is a new, empty workspace)."""
        path = self.root / label
        if path.exists():
            shutil.rmtree(path)
        subprocess.run(
            ["git", "clone", "--quiet", str(self.origin), str(path)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return path

    def deploy(self, clone: Path, built: Built, *, old: Path | None = None) -> InvResult:
        """The real CLI in ``clone``; ``old``: shatag's tree from before issue 23 instead."""
        args = ["-f", str(clone / "shatag.yaml"), "deploy", f"--sha={built.sha}", f"--env={ENV}"]
        env = {**self.world.env, "INVOKE_SHATAG_RUNTIME_DIR": str(self.runtime)}
        if old is None:
            result = run_inv(args, env, cwd=clone)
        else:
            del env["INVOKE_SHATAG_RUNTIME_DIR"]  # a key that version does not know
            argv = [sys.executable, "-m", "invoke", "--search-root", str(old), *args]
            proc = subprocess.run(
                argv,
                cwd=clone,
                env={**env, "PYTHONPATH": str(old / "src")},
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            result = InvResult(proc.returncode, proc.stdout, proc.stderr)
        self.ledger.capture(f"deploy from {clone.name}", result.stdout + "\n" + result.stderr)
        return result

    def proxy_id(self) -> str:
        return docker("inspect", "--format", "{{.Id}}", f"{self.name}-proxy", check=False)

    def serves(self) -> str:
        """The release that answers ``GET /api.json`` (retried briefly: a restarting proxy)."""
        deadline = time.monotonic() + 20
        while True:
            try:
                url = f"http://127.0.0.1:{self.port}/api.json"
                with urllib.request.urlopen(url, timeout=5) as response:
                    return str(json.loads(response.read())["release"])
            except (OSError, ValueError, KeyError):
                if time.monotonic() > deadline:
                    return ""
                time.sleep(0.2)

    def cleanup(self) -> None:
        ids = docker("ps", "-aq", "--filter", f"label=shatag.target={self.name}").split()
        if ids:
            docker("rm", "-f", *ids, check=False)
        docker("network", "rm", f"{self.name}-shatag-net", check=False)


@pytest.fixture
def host(world: World, ledger: Ledger, tmp_path: Path) -> Iterator[Host]:
    """A bare repository holding ``shatag.yaml`` (state in ``.shatag`` of each clone)."""
    root = tmp_path / f"rt-{uuid.uuid4().hex[:6]}"
    root.mkdir()
    ledger.watch(root)
    h = Host(world, ledger, root, f"shatag-rt-{uuid.uuid4().hex[:8]}", free_port())
    work = root / "seed"
    work.mkdir()
    target = {
        "kind": "docker",
        "name": h.name,
        "port": h.port,
        "container_port": 8080,
        "health_path": "/healthz",
        "health_timeout_sec": 8,
        # No watch_sec here: the same file is deployed by the shatag from before issue 23.
    }
    spec = {
        "shatag": {
            "state_dir": ".shatag",
            "deploy_lock_timeout_sec": 120,
            "environments": {ENV: {"repository_type": "canonical", "targets": [target]}},
        }
    }
    (work / "shatag.yaml").write_text(json.dumps(spec, indent=2) + "\n")
    (work / ".gitignore").write_text(".shatag/\n")
    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for argv in (["init", "--quiet", "-b", "main"], ["add", "."], ["commit", "-qm", "app"]):
        subprocess.run([*git, *argv], check=True, capture_output=True, timeout=60)
    subprocess.run(
        ["git", "clone", "--quiet", "--bare", str(work), str(h.origin)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    try:
        yield h
    finally:
        h.cleanup()


def _old_shatag(dest: Path) -> Path:
    """shatag's ``tasks.py`` and ``src`` at :data:`BEFORE_ISSUE_23`, from this repository."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", BEFORE_ISSUE_23, "tasks.py", "src"],
        check=True,
        capture_output=True,
        timeout=120,
    ).stdout
    dest.mkdir(parents=True)
    tar = dest / "old.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as fh:
        fh.extractall(dest, filter="data")
    return dest


def test_two_clones_hand_over_without_recreating_the_proxy(
    host: Host, ledger: Ledger, world: World
) -> None:
    a, b = world.images[0], world.images[1]
    host.watch_for(1)
    clones = [host.clone("one"), host.clone("two")]
    first = host.deploy(clones[0], a)
    assert first.returncode == 0, first.stderr
    proxy = host.proxy_id()
    problems: list[str] = []
    with Load(host.port) as handovers:
        for i in range(HANDOVERS):
            clone, built = clones[(i + 1) % 2], (b if i % 2 == 0 else a)
            result = host.deploy(clone, built)
            if result.returncode != 0:
                problems.append(f"hand-over {i}: {result.stderr[-300:]}")
    recreated = host.proxy_id() != proxy
    ledger.record(
        f"issue 23: {HANDOVERS} hand-overs between two clones on one docker host",
        "0 failed requests at >= 50 req/s; the proxy never re-created",
        f"{handovers.sent} requests at {handovers.achieved_rate:.0f} req/s: "
        f"{handovers.failed} failed {dict(handovers.errors())}; longest gap "
        f"{handovers.longest_gap * 1000:.0f} ms; proxy re-created: {recreated}",
        handovers.failed == 0 and not recreated and not problems,
    )
    assert not problems, problems
    assert handovers.failed == 0, handovers.errors()
    assert handovers.achieved_rate >= 50
    assert not recreated

    # Both clones deleted and cloned again before every deploy (actions/checkout).
    with Load(host.port) as fresh:
        for i in range(4):
            shutil.rmtree(clones[0])
            shutil.rmtree(clones[1])
            clones = [host.clone("one"), host.clone("two")]
            result = host.deploy(clones[i % 2], b if i % 2 == 0 else a)
            if result.returncode != 0:
                problems.append(f"fresh clone {i}: {result.stderr[-300:]}")
    recreated = host.proxy_id() != proxy
    ledger.record(
        "issue 23: both clones deleted and cloned again between 4 deploys",
        "0 failed requests; the proxy never re-created",
        f"{fresh.sent} requests at {fresh.achieved_rate:.0f} req/s: {fresh.failed} failed "
        f"{dict(fresh.errors())}; proxy re-created: {recreated}",
        fresh.failed == 0 and not recreated and not problems,
    )
    assert not problems, problems
    assert fresh.failed == 0, fresh.errors()
    assert not recreated

    # Two deploys at once, one from each clone: the host lock serialises their switches.
    with Load(host.port) as racing:
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "invoke",
                    "--search-root",
                    str(ROOT),
                    "-f",
                    str(clone / "shatag.yaml"),
                    "deploy",
                    f"--sha={built.sha}",
                    f"--env={ENV}",
                ],
                cwd=clone,
                env={**host.world.env, "INVOKE_SHATAG_RUNTIME_DIR": str(host.runtime)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for clone, built in ((clones[0], b), (clones[1], a))
        ]
        outs = [p.communicate(timeout=600) for p in procs]
    codes = [p.returncode for p in procs]
    serving = docker("ps", "-q", "--filter", f"label=shatag.target={host.name}")
    waited = sum("waiting for another deploy's switch" in err for _, err in outs)
    ledger.record(
        "issue 23: two deploys started at once from two clones",
        "both succeed one after the other (host lock); 0 failed requests; one release serves",
        f"exit codes {codes}; {waited} said it waited for the other's switch; "
        f"{racing.sent} requests: {racing.failed} failed "
        f"{dict(racing.errors())}; containers of the target running: {len(serving.split())}",
        codes == [0, 0] and racing.failed == 0 and len(serving.split()) == 2,
    )
    assert codes == [0, 0], [err[-400:] for _, err in outs]
    assert racing.failed == 0, racing.errors()
    assert len(serving.split()) == 2  # the proxy and one application container
    assert host.proxy_id() == proxy


def test_an_existing_install_migrates_without_a_failed_request(
    host: Host, ledger: Ledger, world: World, tmp_path: Path
) -> None:
    a, b = world.images[0], world.images[1]
    old = _old_shatag(tmp_path / "old-shatag")
    clone = host.clone("one")
    first = host.deploy(clone, a, old=old)
    assert first.returncode == 0, first.stderr
    old_home = clone / ".shatag" / ENV / "proxy" / host.name
    assert (old_home / "upstream").is_file()  # the layout before issue 23
    proxy = host.proxy_id()

    with Load(host.port) as moving:
        result = host.deploy(clone, b)
    kept = host.proxy_id() == proxy
    ledger.record(
        "issue 23: first deploy after the upgrade adopts the proxy's home in the checkout",
        "0 failed requests; the proxy kept running, its home moved to the runtime directory",
        f"{moving.sent} requests at {moving.achieved_rate:.0f} req/s: {moving.failed} failed "
        f"{dict(moving.errors())}; proxy kept: {kept}",
        result.returncode == 0 and moving.failed == 0 and kept,
    )
    assert result.returncode == 0, result.stderr
    assert moving.failed == 0, moving.errors()
    assert moving.achieved_rate >= 50
    assert kept
    assert (host.home / "upstream").is_file()
    moved_from = old_home.parent.resolve() / old_home.name
    assert (host.home / "migrated-from").read_text().strip() == str(moved_from)
    assert old_home.is_symlink()

    # A restart of the kept container (daemon restart, reboot) still finds its home.
    docker("restart", f"{host.name}-proxy")
    assert host.serves() == "B"

    # The checkout deleted: the proxy does not notice; the next deploy from another clone keeps it.
    shutil.rmtree(clone)
    with Load(host.port) as after:
        again = host.deploy(host.clone("two"), a)
    assert again.returncode == 0, again.stderr
    assert after.failed == 0, after.errors()
    assert host.proxy_id() == proxy
    assert host.serves() == "A"


def test_an_old_home_on_another_file_system_is_copied_and_the_proxy_recreated(
    host: Host, ledger: Ledger, world: World, tmp_path: Path
) -> None:
    """``rename`` across file systems fails (EXDEV): the files are copied and the proxy is
    re-created with the new home -- a gap, measured (not gated)."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm (tmpfs) to put the runtime directory on another file system")
    a, b = world.images[0], world.images[1]
    old = _old_shatag(tmp_path / "old-shatag")
    clone = host.clone("one")
    assert host.deploy(clone, a, old=old).returncode == 0
    runtime = shm / f"shatag-rt-{uuid.uuid4().hex[:8]}"
    host.runtime.symlink_to(runtime, target_is_directory=True)
    runtime.mkdir()
    try:
        proxy = host.proxy_id()
        with Load(host.port) as moving:
            result = host.deploy(clone, b)
        assert result.returncode == 0, result.stderr
        recreated = host.proxy_id() != proxy
        ledger.record(
            "issue 23: an old home on another file system than runtime_dir (copied, proxy "
            "re-created)",
            "measured: the re-creation of the proxy is a gap",
            f"{moving.sent} requests at {moving.achieved_rate:.0f} req/s: {moving.failed} "
            f"failed {dict(moving.errors())}; longest gap {moving.longest_gap * 1000:.0f} ms; "
            f"proxy re-created: {recreated}",
            recreated,
        )
        assert recreated
        assert host.serves() == "B"
    finally:
        host.cleanup()
        shutil.rmtree(runtime, ignore_errors=True)
