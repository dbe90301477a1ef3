"""``kind: kubernetes`` against the real cluster of ``ci/kube_cluster.py`` (issue 16, items 1
and 3): the real CLI (``inv deploy|rollback``) patches a real Deployment whose pods run images
built by ``inv build`` and pulled by the kubelet from the session registry.

The Deployments use ``hostNetwork`` with the ``Recreate`` strategy and one port per Deployment
(on one node a RollingUpdate's new pod cannot bind the port the old pod holds; NOTES-kubernetes.md).
"""

from __future__ import annotations

import json
import os
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

from shatag._testing.localregistry import LocalRegistry
from tests.conftest import EXAMPLE, App, InvResult, cli_env, inv_argv, new_app, run_inv
from tests.kubernetes.conftest import Kube, free_port, http_get, httpd_deployment

ANNOTATION_SHA = "shatag.dev/image-sha"
ANNOTATION_DIGEST = "shatag.dev/image-digest"


@dataclass
class Built:
    sha: str
    digest: str
    content: str
    repository: str

    @property
    def pinned(self) -> str:
        return f"{self.repository}:{self.sha}@{self.digest}"


@dataclass
class World:
    registry: LocalRegistry
    env: dict[str, str]
    app: App
    root: Path
    canonical: str
    built: dict[str, Built]

    def build(self, label: str, content: str, *, dockerfile: str | None = None,
              healthz: bool = True, env: dict[str, str] | None = None) -> Built:  # fmt: skip
        health = self.app.path / "www" / "healthz"
        if healthz:
            health.write_text("ok\n")
        else:
            health.unlink(missing_ok=True)
        (self.app.path / "Dockerfile").write_text(
            dockerfile or (EXAMPLE / "Dockerfile").read_text()
        )
        sha = self.app.commit(content, f"release {label}")
        build_env = {**self.env, **(env or {}), "INVOKE_SHATAG_CONTEXT": str(self.app.path)}
        result = run_inv(["build", f"--sha={sha}", "--branch=main"], build_env)
        assert result.returncode == 0, result.stderr
        repository = build_env["INVOKE_SHATAG_CANONICAL_REPOSITORY"]
        built = Built(sha, result.record["image_digest"], content, repository)
        self.built[label] = built
        return built


# An image whose httpd cannot start: no /www to serve (the container exits, kubelet restarts it).
CRASHING_DOCKERFILE = """\
FROM scratch
COPY bin/busybox /bin/busybox
USER 65534:65534
ENTRYPOINT ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
"""


@pytest.fixture(scope="module")
def world(registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("k8s-world")
    env = {**cli_env(registry, root, f"k8s-{uuid.uuid4().hex[:8]}"), "USER": "operator-tests"}
    world = World(
        registry, env, new_app(root / "app"), root, env["INVOKE_SHATAG_CANONICAL_REPOSITORY"], {}
    )
    world.build("A", '{"release": "A"}')
    world.build("B", '{"release": "B"}')
    world.build("unready", '{"release": "unready"}', healthz=False)
    world.build("crash", '{"release": "crash"}', dockerfile=CRASHING_DOCKERFILE)
    return world


@dataclass
class Site:
    """One Deployment on the cluster and one shatag configuration deploying to it."""

    kube: Kube
    world: World
    name: str
    port: int
    config: Path
    env: dict[str, str]

    def inv(self, *args: str) -> InvResult:
        return run_inv(["-f", str(self.config), *args], self.env, timeout=300)

    def deploy(self, built: Built) -> InvResult:
        return self.inv("deploy", f"--sha={built.sha}", "--env=production")

    def deployment(self) -> dict[str, Any]:
        return self.kube.get("deployment", self.name)

    def image(self) -> str:
        return str(self.deployment()["spec"]["template"]["spec"]["containers"][0]["image"])

    def annotations(self) -> dict[str, str]:
        return dict(self.deployment()["metadata"].get("annotations") or {})

    def serves(self) -> str:
        return http_get(self.port, "/api.json").strip()

    def running_digests(self) -> set[str]:
        pods = self.kube.get("pods", "-l", f"app={self.name}")["items"]
        return {
            cs["imageID"].rsplit("@", 1)[-1]
            for pod in pods
            if not pod["metadata"].get("deletionTimestamp")
            for cs in pod["status"].get("containerStatuses", [])
            if cs.get("ready")
        }

    def assert_serves(self, built: Built) -> None:
        assert self.image() == built.pinned
        assert self.serves() == built.content
        assert self.running_digests() == {built.digest}


@pytest.fixture
def make_site(kube: Kube, world: World, tmp_path: Path) -> Iterator[Callable[..., Site]]:
    created: list[str] = []

    def factory(*, deadline: int = 60, rollout_timeout: float = 120, start: str = "A") -> Site:
        name = f"shatag-{uuid.uuid4().hex[:8]}"
        created.append(name)
        port = free_port()
        manifest = httpd_deployment(
            name,
            world.built[start].pinned,
            port,
            container_name="api",
            progress_deadline=deadline,
            failure_threshold=1,
        )
        kube.apply(manifest)
        kube.kubectl("rollout", "status", f"deployment/{name}", "--timeout=120s", timeout=130)
        config = tmp_path / f"{name}.yaml"
        target = {
            "kind": "kubernetes",
            "namespace": "default",
            "deployment": name,
            "container": "api",
            "kubeconfig": str(kube.kubeconfig),
            "context": "shatag-kube",
            "rollout_timeout_sec": rollout_timeout,
        }
        spec = {
            "shatag": {
                "state_dir": str(tmp_path / f"state-{name}"),
                "environments": {
                    "production": {"repository_type": "canonical", "targets": [target]}
                },
            }
        }
        config.write_text(json.dumps(spec))
        env = {**world.env, "PATH": kube.env["PATH"]}
        return Site(kube, world, name, port, config, env)

    yield factory
    for name in created:
        kube.kubectl("delete", "deployment", name, "--wait=true", "--timeout=60s", timeout=70)


def test_deploy_a_then_b_rolls_out_serves_b_and_annotates_sha_and_digest(
    world: World, make_site: Callable[..., Site]
) -> None:
    site = make_site()
    a, b = world.built["A"], world.built["B"]
    first = site.deploy(a)
    assert first.returncode == 0, first.stderr
    site.assert_serves(a)
    result = site.deploy(b)
    assert result.returncode == 0, result.stderr
    record = result.record
    assert record["image_sha"] == b.sha
    assert record["previous_sha"] == a.sha
    assert record["targets"] == [f"kubernetes:default/{site.name}/api"]
    site.assert_serves(b)
    annotations = site.annotations()
    assert annotations[ANNOTATION_SHA] == b.sha
    assert annotations[ANNOTATION_DIGEST] == b.digest


def test_readiness_failure_is_deploy_failed_and_a_is_restored_and_serving(
    world: World, make_site: Callable[..., Site]
) -> None:
    site = make_site(deadline=8)
    a = world.built["A"]
    assert site.deploy(a).returncode == 0
    result = site.deploy(world.built["unready"])
    assert result.returncode != 0
    assert result.record["error_code"] == "DEPLOY_FAILED"
    assert "error: DEPLOY_FAILED:" in result.stderr
    assert "Readiness probe failed" in result.stderr or "NotReady" in result.stderr
    site.assert_serves(a)
    assert site.annotations()[ANNOTATION_SHA] == a.sha


def _drop_top_layer_blob(registry: LocalRegistry, built: Built) -> None:
    """Make ``built`` unpullable for real: delete its top layer's blob (``COPY www``, unique to
    this build) from the registry's storage. The manifest and the config blob (what ``inv
    deploy`` checks: the tag by HEAD, the platform in the config, FR-015) stay; the kubelet's
    pull then fails on the layer."""
    name = built.repository.split("/", 1)[1]
    request = urllib.request.Request(
        f"http://{registry.address}/v2/{name}/manifests/{built.sha}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 -- loopback http
        layer_digest = json.loads(response.read())["layers"][-1]["digest"]
    hexdigest = layer_digest.split(":", 1)[1]
    blob = (
        registry.workdir / "storage" / "docker" / "registry" / "v2" / "blobs" / "sha256"
        / hexdigest[:2] / hexdigest / "data"
    )  # fmt: skip
    blob.unlink()


def test_image_that_cannot_be_pulled_is_deploy_failed_fast_with_the_reason(
    world: World, make_site: Callable[..., Site]
) -> None:
    """The registry lost a layer blob of the image: the tag, manifest and config are there (the
    deploy's checks pass) but the kubelet's pull fails (ErrImagePull / ImagePullBackOff). The deploy
    fails on the pull error, long before the 120 s progress deadline."""
    site = make_site(deadline=120, rollout_timeout=120)
    a = world.built["A"]
    assert site.deploy(a).returncode == 0
    unpullable = world.build("unpullable", '{"release": "unpullable"}')
    _drop_top_layer_blob(world.registry, unpullable)
    started = time.monotonic()
    result = site.deploy(unpullable)
    took = time.monotonic() - started
    assert result.returncode != 0
    assert result.record["error_code"] == "DEPLOY_FAILED"
    assert "ErrImagePull" in result.stderr or "ImagePullBackOff" in result.stderr
    assert took < 60, f"an unpullable image took {took:.0f} s to fail (deadline is 120 s)"
    site.assert_serves(a)


def test_crash_loop_is_deploy_failed_with_the_reason_and_a_is_restored(
    world: World, make_site: Callable[..., Site]
) -> None:
    site = make_site(deadline=120, rollout_timeout=120)
    a = world.built["A"]
    assert site.deploy(a).returncode == 0
    result = site.deploy(world.built["crash"])
    assert result.returncode != 0
    assert result.record["error_code"] == "DEPLOY_FAILED"
    assert "CrashLoopBackOff" in result.stderr
    site.assert_serves(a)


def test_rollback_is_a_deploy_of_the_earlier_sha_from_history(
    world: World, make_site: Callable[..., Site]
) -> None:
    site = make_site()
    a, b = world.built["A"], world.built["B"]
    assert site.deploy(a).returncode == 0
    assert site.deploy(b).returncode == 0
    site.assert_serves(b)
    result = site.inv("rollback", "--env=production")
    assert result.returncode == 0, result.stderr
    assert result.record["image_sha"] == a.sha
    site.assert_serves(a)
    assert site.annotations()[ANNOTATION_SHA] == a.sha
    assert site.annotations()[ANNOTATION_DIGEST] == a.digest
    revisions = site.kube.kubectl("rollout", "history", f"deployment/{site.name}")
    assert revisions  # shatag did not use `rollout undo`: the history only grew


def _kill_once_patched(site: Site, built: Built) -> Path:
    """Start ``deploy`` of ``built`` and SIGKILL it as soon as the Deployment holds its image
    (the patch made, the rollout not yet awaited): an event of the run, not a delay. Returns
    the journal the killed run left."""
    proc = subprocess.Popen(
        inv_argv("-f", str(site.config), "deploy", f"--sha={built.sha}", "--env=production"),
        env=site.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and site.image() != built.pinned:
            time.sleep(0.05)
        assert site.image() == built.pinned, "the deploy never patched the Deployment"
        os.killpg(proc.pid, signal.SIGKILL)  # mid-rollout: the patch is made, not yet waited
    finally:
        proc.wait(timeout=30)
    state = site.config.parent / f"state-{site.name}" / "production" / "pending.json"
    assert state.exists(), "a killed deploy leaves its journal"
    return state


def test_kill_9_during_a_rollout_that_cannot_complete_is_undone_by_the_next_command(
    world: World, make_site: Callable[..., Site]
) -> None:
    """The killed run's release never becomes ready (its pods fail their readiness probe), so
    the next command cannot find it applied: it puts A back and records INTERRUPTED."""
    site = make_site()
    a, b, unready = world.built["A"], world.built["B"], world.built["unready"]
    assert site.deploy(a).returncode == 0
    state = _kill_once_patched(site, unready)
    again = site.deploy(b)  # the next command first puts A back, then deploys B for good
    assert again.returncode == 0, again.stderr
    notes = again.record.get("recovered", [])
    assert any(f"restored {a.pinned}" in note for note in notes), notes
    assert not state.exists()
    site.assert_serves(b)
    records = site.inv("history", "--env=production", "--json").records
    assert any(r.get("error_code") == "INTERRUPTED" for r in records), records


def test_kill_9_during_a_rollout_that_completes_is_finished_by_the_next_command(
    world: World, make_site: Callable[..., Site]
) -> None:
    """Issue 23, item 6: the killed run's rollout completes on its own (the test waits until
    every ready pod runs B); the next command finds B applied and finishes the attempt -- the
    record says B is ok and that its runner was interrupted, and no INTERRUPTED is recorded."""
    site = make_site()
    a, b = world.built["A"], world.built["B"]
    assert site.deploy(a).returncode == 0
    state = _kill_once_patched(site, b)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and site.running_digests() != {b.digest}:
        time.sleep(0.2)
    assert site.running_digests() == {b.digest}, "B's rollout never completed"
    site.kube.kubectl("rollout", "status", f"deployment/{site.name}", "--timeout=120s")
    again = site.deploy(b)
    assert again.returncode == 0, again.stderr
    notes = again.record.get("recovered", [])
    assert any("finished attempt" in note and b.pinned in note for note in notes), notes
    assert not state.exists()
    site.assert_serves(b)
    records = site.inv("history", "--env=production", "--json").records
    assert not any(r.get("error_code") == "INTERRUPTED" for r in records), records
    finished = [r for r in records if r.get("sha") == b.sha and r.get("note")]
    assert finished, records
    assert finished[0]["result"] == "ok"
    assert "interrupted after its apply" in finished[0]["note"]
