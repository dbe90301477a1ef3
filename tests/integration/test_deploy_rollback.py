"""Deploy, history and rollback on the real docker engine and a real registry (issue 4).

Images A and B are built once per module by the real ``inv build`` from two commits of a git
repo holding ``examples/api``; their responses differ. Each test gets its own state directory,
SDL and tfvars files, container name and host port.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from shatag._testing.localregistry import LocalRegistry, free_port
from shatag.core import parse_repository
from shatag.supplychain.registry import RegistryClient
from tests._gitremote import GitRemote
from tests.conftest import EXAMPLE, ROOT, App, InvResult, cli_env, inv_argv, new_app, run_inv

SDL_TEXT = """\
---
# Akash SDL (hand-maintained; shatag only touches the image line)
version: "2.0"
services:
  api:
    image: ghcr.io/mconstant/pay2slay-api:latest  # pinned by shatag
    expose:
      - port: 8080
        as: 80
        to:
          - global: true
profiles:
  compute:
    api: {resources: {cpu: {units: 0.5}}}
"""
TFVARS_TEXT = (
    '{\n  "region": "eu-west",\n  "image_sha": "",\n  "image_digest": "",\n  "image_ref": ""\n}\n'
)


@dataclass
class Built:
    sha: str
    digest: str
    content: str
    metadata: Path

    def pinned(self, repository: str) -> str:
        return f"{repository}:{self.sha}@{self.digest}"


@dataclass
class World:
    env: dict[str, str]
    app: App
    canonical: str
    staging: str
    a: Built
    b: Built
    root: Path

    def build(
        self,
        content: str,
        *,
        branch: str = "main",
        drop_health: bool = False,
        no_healthcheck: bool = False,
    ) -> Built:
        if drop_health:
            (self.app.path / "www" / "healthz").unlink(missing_ok=True)
        else:
            (self.app.path / "www" / "healthz").write_text("ok\n")
        dockerfile = self.app.path / "Dockerfile"
        original = (EXAMPLE / "Dockerfile").read_text()
        if no_healthcheck:  # an image with no HEALTHCHECK: the target probes health_path itself
            kept = [
                line
                for line in original.splitlines()
                if not line.startswith(("HEALTHCHECK", "  CMD"))
            ]
            dockerfile.write_text("\n".join(kept) + "\n")
        else:
            dockerfile.write_text(original)
        sha = self.app.commit(content, f"content {content}")
        meta = self.root / "metadata" / f"{sha}.json"
        env = {**self.env, "INVOKE_SHATAG_CONTEXT": str(self.app.path)}
        result = run_inv(["build", f"--sha={sha}", f"--branch={branch}"], env)
        assert result.returncode == 0, result.stderr
        return Built(sha, result.record["image_digest"], content, meta)


@pytest.fixture(scope="module")
def world(registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("deploy-world")
    name = f"dep-{uuid.uuid4().hex[:8]}"
    env = {**cli_env(registry, root, name), "USER": "operator-tests"}
    app = new_app(root / "app")
    world = World(
        env=env,
        app=app,
        canonical=env["INVOKE_SHATAG_CANONICAL_REPOSITORY"],
        staging=env["INVOKE_SHATAG_STAGING_REPOSITORY"],
        a=None,  # type: ignore[arg-type]
        b=None,  # type: ignore[arg-type]
        root=root,
    )
    world.a = world.build('{"release": "A"}')
    world.b = world.build('{"release": "B"}')
    assert world.a.digest != world.b.digest
    return world


@dataclass
class Site:
    """One deployment site: config file, state dir, SDL/tfvars files, a container."""

    world: World
    dir: Path
    config: Path
    sdl: Path
    tfvars: Path
    container: str
    port: int
    metrics: Path

    def inv(self, *args: str, env: dict[str, str] | None = None) -> InvResult:
        return run_inv(["-f", str(self.config), *args], {**self.world.env, **(env or {})})

    def deploy(self, built: Built | str, *extra: str) -> InvResult:
        sha = built if isinstance(built, str) else built.sha
        return self.inv("deploy", f"--sha={sha}", "--env=production", *extra)

    def rollback(self, *extra: str) -> InvResult:
        return self.inv("rollback", "--env=production", *extra)

    def history(self) -> list[dict[str, Any]]:
        result = self.inv("history", "--env=production", "--json")
        assert result.returncode == 0, result.stderr
        return result.records

    def serves(self) -> str:
        url = f"http://127.0.0.1:{self.port}/api.json"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode()).strip()

    def running_digest(self) -> str:
        image_id = _docker("inspect", "--format", "{{.Image}}", self.container)
        repo_digests = json.loads(
            _docker("image", "inspect", "--format", "{{json .RepoDigests}}", image_id)
        )
        return next(
            str(d).split("@", 1)[1] for d in repo_digests if str(d).startswith(self.world.canonical)
        )

    def sdl_image(self) -> str:
        return str(YAML().load(self.sdl.read_text())["services"]["api"]["image"])

    def tfvars_data(self) -> dict[str, Any]:
        data = json.loads(self.tfvars.read_text())
        assert isinstance(data, dict)
        return data

    def assert_runs(self, built: Built) -> None:
        assert self.serves() == built.content
        assert self.running_digest() == built.digest
        pinned = built.pinned(self.world.canonical)
        assert self.sdl_image() == pinned
        assert self.tfvars_data() == {
            "region": "eu-west",
            "image_sha": built.sha,
            "image_digest": built.digest,
            "image_ref": pinned,
        }


def _docker(*args: str) -> str:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.strip()


def _containers(prefix: str) -> list[str]:
    names = _docker("ps", "-a", "--format", "{{.Names}}", "--filter", f"name={prefix}")
    return [n for n in names.splitlines() if n.startswith(prefix)]


@pytest.fixture
def make_site(world: World, tmp_path: Path) -> Iterator[Callable[..., Site]]:
    created: list[str] = []

    def factory(apply: str = "", lock_timeout: float = 60.0, health_timeout: float = 30.0) -> Site:
        d = tmp_path / f"site-{len(created)}"
        d.mkdir()
        container = f"shatag-it-{uuid.uuid4().hex[:8]}"
        created.append(container)
        port = free_port()
        sdl = d / "deploy.yaml"
        sdl.write_text(SDL_TEXT)
        tfvars = d / "image.auto.tfvars.json"
        tfvars.write_text(TFVARS_TEXT)
        config = d / "shatag.yaml"
        metrics = d / "metrics.prom"
        spec = {
            "shatag": {
                "state_dir": str(d / "state"),
                "deploy_lock_timeout_sec": lock_timeout,
                "metrics_textfile": str(metrics),
                "environments": {
                    "production": {
                        "repository_type": "canonical",
                        "apply": apply,
                        "targets": [
                            {"kind": "sdl", "path": str(sdl), "service": "api"},
                            {"kind": "tfvars", "path": str(tfvars)},
                            {
                                "kind": "docker",
                                "name": container,
                                "port": port,
                                "container_port": 8080,
                                "health_path": "/healthz",
                                "health_timeout_sec": health_timeout,
                                # The post-switch watch (5 s by default) is not what
                                # these tests are about.
                                "watch_sec": 1,
                                # These tests cover the stop-then-start switch on the port
                                # (<name> is the app container); the proxy-gated switch is
                                # tested in tests/integration/test_proxy_deploy.py.
                                "proxy": False,
                            },
                        ],
                    }
                },
            }
        }
        config.write_text(json.dumps(spec))
        return Site(world, d, config, sdl, tfvars, container, port, metrics)

    yield factory
    for name in created:
        for leftover in _containers(name):
            subprocess.run(["docker", "rm", "-f", leftover], capture_output=True, check=False)


def _registry_tags(world: World) -> list[str]:
    return sorted(RegistryClient(parse_repository(world.canonical), env={}).tags())


def _image_ids(world: World) -> set[str]:
    """Local images of our repositories (other test sessions may build at the same time)."""
    ids: set[str] = set()
    for repo in (world.canonical, world.staging):
        ids |= set(_docker("image", "ls", "-q", "--no-trunc", repo).split())
    return ids


# -- the seed's flow, for real ---------------------------------------------------------------


def test_deploy_a_deploy_b_rollback_runs_a_again_without_building(
    world: World, make_site: Callable[..., Site]
) -> None:
    site = make_site()
    a, b = world.a, world.b

    first = site.deploy(a)
    assert first.returncode == 0, first.stderr
    site.assert_runs(a)
    assert first.record["previous_sha"] == ""
    assert f"deployed: production {a.pinned(world.canonical)} (was nothing)" in first.stderr

    # Python reports every module it imports: the switch never loads python-on-whales (0.2-0.3 s
    # of CPU, issue 17); it drives the docker CLI through shatag._sys.subproc.
    second = site.inv(
        "deploy", f"--sha={b.sha}", "--env=production", env={"PYTHONPROFILEIMPORTTIME": "1"}
    )
    assert second.returncode == 0, second.stderr
    assert "python_on_whales" not in second.stderr
    assert "import time:" in second.stderr  # so the line above is not vacuous
    site.assert_runs(b)
    record = second.record
    for key in (
        "image_sha",
        "image_digest",
        "repository",
        "repository_type",
        "signature_status",
        "signature_reason",
        "deploy_duration_sec",
        "previous_sha",
        "targets",
    ):
        assert key in record, key
    assert record["phase"] == "deploy"
    assert record["image_sha"] == b.sha
    assert record["image_digest"] == b.digest
    assert record["repository_type"] == "canonical"
    assert record["previous_sha"] == a.sha
    assert len(record["targets"]) == 3
    assert f"deployed: production {b.pinned(world.canonical)} (was {a.sha})" in second.stderr

    tags_before = _registry_tags(world)
    images_before = _image_ids(world)
    started = time.monotonic()
    back = site.rollback()
    rollback_wall = time.monotonic() - started
    assert back.returncode == 0, back.stderr
    rb = back.record
    assert rb["phase"] == "rollback"
    assert rb["image_sha"] == a.sha
    assert rb["previous_sha"] == b.sha
    assert rb["image_digest"] == a.digest
    assert rb["initiated_by"] == "operator-tests"
    assert rb["rollback_duration_sec"] <= rollback_wall
    # the running container serves A again, by A's digest; the files name A pinned by digest
    site.assert_runs(a)
    # no build, no push: no new local image, the registry's tags are exactly the same
    assert _image_ids(world) == images_before
    assert _registry_tags(world) == tags_before
    assert "docker build" not in back.stderr

    rows = site.history()
    assert [(r["action"], r["sha"], r["previous_sha"]) for r in rows] == [
        ("rollback", a.sha, b.sha),
        ("deploy", b.sha, a.sha),
        ("deploy", a.sha, ""),
    ]
    assert [r["current"] for r in rows] == [True, False, False]
    assert all(r["result"] == "ok" for r in rows)
    assert rows[0]["digest"] == a.digest
    assert rows[0]["signature_status"] in ("verified", "unverified")

    table = site.inv("history", "--env=production")
    assert table.returncode == 0, table.stderr
    current_line = next(line for line in table.stdout.splitlines() if line.startswith("*"))
    assert a.sha in current_line
    assert "rollback" in current_line

    assert 'rollback_total{repository_type="canonical"} 1.0' in site.metrics.read_text()
    assert not _containers(site.container + "-shatag-prev")
    print(f"rollback wall time: {rollback_wall:.2f}s, tool-reported {rb['rollback_duration_sec']}s")


def test_rollback_with_explicit_sha_and_nothing_to_roll_back_to(
    world: World, make_site: Callable[..., Site]
) -> None:
    site = make_site()
    empty = site.rollback()
    assert empty.returncode != 0
    assert "error: NO_ROLLBACK_TARGET:" in empty.stderr
    assert site.deploy(world.a).returncode == 0
    only_one = site.rollback()
    assert "error: NO_ROLLBACK_TARGET:" in only_one.stderr
    explicit = site.rollback(f"--sha={world.b.sha}")
    assert explicit.returncode == 0, explicit.stderr
    site.assert_runs(world.b)
    assert site.history()[0]["action"] == "rollback"


# -- refusals: nothing changes ---------------------------------------------------------------


def _assert_untouched(site: Site) -> None:
    assert site.sdl.read_text() == SDL_TEXT
    assert site.tfvars.read_text() == TFVARS_TEXT
    assert not _containers(site.container)
    assert site.history() == []


def test_missing_tag_is_refused_without_pulling(
    world: World, make_site: Callable[..., Site]
) -> None:
    site = make_site()
    result = site.deploy("f" * 40)
    assert result.returncode != 0
    assert "error: MISSING_TAG:" in result.stderr
    assert result.record["error_code"] == "MISSING_TAG"
    _assert_untouched(site)


@pytest.mark.parametrize("ref", ["latest", "main", "v1.2.3", "stable"])
def test_floating_tags_are_refused(world: World, make_site: Callable[..., Site], ref: str) -> None:
    site = make_site()
    result = site.deploy(ref)
    assert result.returncode != 0
    assert "error: POLICY_VIOLATION:" in result.stderr
    _assert_untouched(site)


def test_short_sha_is_not_a_deploy_reference(world: World, make_site: Callable[..., Site]) -> None:
    site = make_site()
    result = site.deploy(world.a.sha[:12])
    assert "error: MISSING_SHA:" in result.stderr
    _assert_untouched(site)


def test_staging_sha_into_production_names_the_repository(
    world: World, make_site: Callable[..., Site]
) -> None:
    feature = world.build('{"release": "feature"}', branch="feature-x")
    site = make_site()
    result = site.deploy(feature)
    assert result.returncode != 0
    assert "error: POLICY_VIOLATION:" in result.stderr
    assert world.staging in result.stderr
    _assert_untouched(site)
    # its metadata names the staging repository: refused as well
    result = site.deploy(feature, f"--metadata={feature.metadata}")
    assert "error: POLICY_VIOLATION:" in result.stderr
    # rollback's contract: not in the canonical repository is MISSING_TAG, naming staging
    result = site.rollback(f"--sha={feature.sha}")
    assert "error: MISSING_TAG:" in result.stderr
    assert world.staging in result.stderr
    _assert_untouched(site)


def test_tampered_tag_is_refused_by_metadata_and_by_history(
    world: World, make_site: Callable[..., Site]
) -> None:
    victim = world.build('{"release": "C"}')
    site = make_site()
    assert site.deploy(victim).returncode == 0
    assert site.deploy(world.a).returncode == 0
    # Someone re-points the SHA tag at another image after the build.
    tag = f"{world.canonical}:{victim.sha}"
    _docker("tag", f"{world.canonical}:{world.b.sha}", tag)
    _docker("push", tag)
    assert (
        RegistryClient(parse_repository(world.canonical), env={}).manifest_digest(victim.sha)
        == world.b.digest
    )

    with_metadata = make_site().deploy(victim, f"--metadata={victim.metadata}")
    assert "error: DIGEST_MISMATCH:" in with_metadata.stderr
    from_history = site.deploy(victim)
    assert "error: DIGEST_MISMATCH:" in from_history.stderr
    rollback = site.rollback(f"--sha={victim.sha}")
    assert "error: DIGEST_MISMATCH:" in rollback.stderr
    assert rollback.returncode != 0
    site.assert_runs(world.a)  # nothing changed
    assert [r["sha"] for r in site.history()] == [world.a.sha, victim.sha]


# -- failures after the switch started: the old state comes back -----------------------------


def test_unhealthy_new_image_restores_the_old_container(
    world: World, make_site: Callable[..., Site]
) -> None:
    sick = world.build('{"release": "sick"}', drop_health=True)
    site = make_site(health_timeout=20)
    assert site.deploy(world.a).returncode == 0
    old_id = _docker("inspect", "--format", "{{.Id}}", site.container)
    result = site.deploy(sick)
    assert result.returncode != 0
    assert "error: DEPLOY_FAILED:" in result.stderr
    assert "unhealthy" in result.stderr
    site.assert_runs(world.a)
    assert _docker("inspect", "--format", "{{.Id}}", site.container) == old_id
    assert not _containers(site.container + "-shatag-prev")
    rows = site.history()
    assert rows[0]["sha"] == sick.sha
    assert rows[0]["result"] == "failed"
    assert rows[0]["error_code"] == "DEPLOY_FAILED"
    assert rows[1]["sha"] == world.a.sha
    assert rows[1]["current"] is True


def test_image_without_healthcheck_is_gated_by_an_http_probe(
    world: World, make_site: Callable[..., Site]
) -> None:
    """No HEALTHCHECK in the image: GET health_path on the published port decides (issue 4)."""
    plain = world.build('{"release": "plain"}', no_healthcheck=True)
    assert "Healthcheck" not in _docker(
        "image", "inspect", "--format", "{{json .Config}}", f"{world.canonical}:{plain.sha}"
    )
    site = make_site(health_timeout=20)
    assert site.deploy(world.a).returncode == 0
    result = site.deploy(plain)
    assert result.returncode == 0, result.stderr
    assert site.serves() == plain.content
    # ... and a health_path that never answers 2xx fails the gate and restores the old one
    broken = world.build('{"release": "plain-broken"}', drop_health=True, no_healthcheck=True)
    site_short = make_site(health_timeout=3)
    assert site_short.deploy(plain).returncode == 0
    old_id = _docker("inspect", "--format", "{{.Id}}", site_short.container)
    result = site_short.deploy(broken)
    assert result.returncode != 0
    assert "error: DEPLOY_FAILED:" in result.stderr
    assert "HTTP 404" in result.stderr
    assert _docker("inspect", "--format", "{{.Id}}", site_short.container) == old_id
    assert site_short.serves() == plain.content


def test_failing_apply_command_restores_every_target(
    world: World, make_site: Callable[..., Site], tmp_path: Path
) -> None:
    marker = tmp_path / "break-apply"
    seen = tmp_path / "apply-saw"
    script = f'test ! -e {marker} && echo "$SHATAG_IMAGE_REF $SHATAG_IMAGE_SHA" > {seen}'
    site = make_site(apply=f"sh -c '{script}'")
    assert site.deploy(world.a).returncode == 0
    assert seen.read_text().split() == [world.a.pinned(world.canonical), world.a.sha]
    sdl_before, tf_before = site.sdl.read_bytes(), site.tfvars.read_bytes()

    marker.touch()
    result = site.deploy(world.b)
    assert result.returncode != 0
    assert "error: DEPLOY_FAILED:" in result.stderr
    assert "apply command" in result.stderr
    assert site.sdl.read_bytes() == sdl_before
    assert site.tfvars.read_bytes() == tf_before
    site.assert_runs(world.a)
    assert site.history()[1]["current"] is True


# -- concurrency and crashes ------------------------------------------------------------------


def test_held_lock_fails_deploy_locked(world: World, make_site: Callable[..., Site]) -> None:
    from shatag.ledger.lock import env_lock

    site = make_site(lock_timeout=1)
    with env_lock(site.dir / "state", "production", timeout=0, holder="test holder"):
        result = site.deploy(world.a)
    assert result.returncode != 0
    assert "error: DEPLOY_LOCKED:" in result.stderr
    assert "test holder" in result.stderr
    _assert_untouched(site)


def test_concurrent_deploys_never_interleave(world: World, make_site: Callable[..., Site]) -> None:
    site = make_site(lock_timeout=120)
    env = {**world.env}
    procs = [
        subprocess.Popen(
            inv_argv("-f", str(site.config), "deploy", f"--sha={built.sha}", "--env=production"),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for built in (world.a, world.b)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    rows = site.history()
    assert len(rows) == 2
    newer, older = rows
    assert older["finished_at"] <= newer["started_at"]  # one after the other
    assert newer["previous_sha"] == older["sha"]
    winner = world.a if newer["sha"] == world.a.sha else world.b
    site.assert_runs(winner)


def test_kill_9_during_deploy_leaves_a_consistent_state(
    world: World, make_site: Callable[..., Site], tmp_path: Path
) -> None:
    """SIGKILL mid-switch, at a named moment (issue 27): the files are switched, the old
    container is parked, and the new one is being started -- a PATH shim for ``docker`` holds
    the ``docker run`` of B and says so by creating a file. B never ran, so the next deploy
    undoes the attempt and records it ``failed (INTERRUPTED)``."""
    site = make_site()
    assert site.deploy(world.a).returncode == 0
    journal = site.dir / "state" / "production" / "pending.json"
    starting, release = tmp_path / "docker-run-held", tmp_path / "release"
    shim = tmp_path / "shim"
    shim.mkdir()
    real = shutil.which("docker", path=world.env.get("PATH"))
    assert real is not None
    (shim / "docker").write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do [ "$a" = run ] || continue\n'
        f"  touch {starting}; while [ ! -f {release} ]; do sleep 0.05; done; exit 1\n"
        "done\n"
        f'exec {real} "$@"\n'
    )
    (shim / "docker").chmod(0o755)
    proc = subprocess.Popen(
        inv_argv("-f", str(site.config), "deploy", f"--sha={world.b.sha}", "--env=production"),
        cwd=ROOT,
        env={**world.env, "PATH": f"{shim}:{world.env.get('PATH', '')}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not starting.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert starting.exists(), "the deploy never started its new container"
    assert journal.exists()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    release.touch()  # a held `docker run` (in its own process group) gives up, starting nothing

    # Files are whole: exactly A's or exactly B's, never half-written.
    assert site.sdl_image() in (world.a.pinned(world.canonical), world.b.pinned(world.canonical))
    assert site.tfvars_data()["image_sha"] in (world.a.sha, world.b.sha)
    rows = site.history()
    assert rows[0]["sha"] == world.a.sha
    assert rows[0]["current"] is True

    # The next deploy undoes the interrupted attempt first, then works.
    again = site.deploy(world.b)
    assert again.returncode == 0, again.stderr
    assert again.record.get("recovered")
    site.assert_runs(world.b)
    assert not journal.exists()
    assert not _containers(site.container + "-shatag-prev")
    actions = [(r["sha"], r["result"], r.get("error_code", "")) for r in site.history()]
    assert actions == [
        (world.b.sha, "ok", ""),
        (world.b.sha, "failed", "INTERRUPTED"),
        (world.a.sha, "ok", ""),
    ]


def test_a_deploy_killed_after_its_switch_is_finished_by_a_runner_in_another_clone(
    world: World, make_site: Callable[..., Site], tmp_path: Path
) -> None:
    """Issue 23, item 6: the git ledger, two clones of one app repo with a bare remote. Runner
    1 is SIGKILLed while it pushes its record of B (the remote's pre-receive hook holds that
    push and says so by creating a file): the container, SDL and tfvars already run B. Runner
    2 (the other clone, its own empty state_dir) finds the journal, sees every target run B
    healthy, records B ``ok`` with a note naming the killed attempt, retires the parked
    previous container, then deploys A on top (``previous_sha`` = B)."""
    site = make_site()
    spec = json.loads(site.config.read_text())
    spec["shatag"] |= {"state_backend": "git", "state_remote": "origin"}
    site.config.write_text(json.dumps(spec))
    other = site.dir / "shatag-two.yaml"
    spec["shatag"]["state_dir"] = str(tmp_path / "state-of-runner-two")
    other.write_text(json.dumps(spec))
    (tmp_path / "app").mkdir()
    remote = GitRemote(tmp_path / "app", "app.git")
    one, two = remote.clone(), remote.clone()
    first = run_inv(
        ["-f", str(site.config), "deploy", f"--sha={world.a.sha}", "--env=production"],
        world.env,
        cwd=one,
    )
    assert first.returncode == 0, first.stderr
    pushed, release = tmp_path / "record-pushed", tmp_path / "release"
    remote.hook(
        'while read old new ref; do [ "$ref" = refs/shatag/production ] || continue\n'
        f"  touch {pushed}\n"
        f"  while [ ! -f {release} ]; do sleep 0.05; done; exit 1\n"
        "done; exit 0\n"
    )
    proc = subprocess.Popen(
        inv_argv("-f", str(site.config), "deploy", f"--sha={world.b.sha}", "--env=production"),
        cwd=one,
        env=world.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not pushed.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert pushed.exists(), "the deploy never pushed its record"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    (remote.bare / "hooks" / "pre-receive").unlink()
    release.touch()  # a push still held by the hook is refused: B's record never lands
    assert "refs/shatag-journal/production" in remote.refs()
    site.assert_runs(world.b)
    assert _containers(site.container + "-shatag-prev")  # A, parked, not yet retired

    again = run_inv(
        ["-f", str(other), "deploy", f"--sha={world.a.sha}", "--env=production"],
        world.env,
        cwd=two,
    )
    assert again.returncode == 0, again.stderr
    recovered = again.record.get("recovered") or []
    assert recovered, again.stderr
    assert str(recovered[0]).startswith("finished attempt "), recovered
    assert again.record["previous_sha"] == world.b.sha
    site.assert_runs(world.a)
    assert not _containers(site.container + "-shatag-prev")
    rows = run_inv(
        ["-f", str(other), "history", "--env=production", "--json", "--limit=0"],
        world.env,
        cwd=two,
    ).records
    assert [(r["sha"], r["result"], r["error_code"]) for r in rows] == [
        (world.a.sha, "ok", ""),
        (world.b.sha, "ok", ""),
        (world.a.sha, "ok", ""),
    ]
    assert rows[1]["note"].startswith(f"the runner of attempt {rows[1]['attempt']} (started ")
    assert "interrupted after its apply" in rows[1]["note"]
    assert rows[1]["previous_sha"] == world.a.sha
    assert set(remote.refs()) == {"refs/shatag/production"}
