"""The whole adoption story in a throwaway application repository (issue 13, item 9).

A new user's path, for real: this package ``pip install``-ed (``uv pip``) into a fresh venv
outside this repository, a git repository shaped like a real API (``Dockerfile``, an Akash SDL in
``infra/akash/deploy.yaml``, an OpenTofu configuration in ``infra/akash-api/`` with exactly
``image_repo``/``image_tag``, a ``.dockerignore`` excluding ``infra/``, an untracked build input
``bin/busybox``) and ``shatag.yaml`` at its root. From the app's root, with no flags naming a
config file:

    shatag build                      (A on main → canonical)
    shatag deploy --sha=A --env=production     (edits the tracked SDL; tofu apply → A)
    shatag build                      (feature branch → staging, despite the SDL edit)
    shatag build                      (B on main, after the merge)
    shatag deploy --sha=B --env=production --plan   (diff shown, nothing changed)
    shatag deploy --sha=B --env=production          (tofu apply → B)
    shatag rollback --env=production                (tofu apply → A)

and the SDL keeps every byte but the image value.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shatag._testing.localregistry import LocalRegistry, free_port
from tests.conftest import EXAMPLE, ROOT, App, InvResult, _git, cli_env, run_inv
from tests.integration._tofu import FIXTURE, apply, tofu_binary

SDL_TEXT = """\
---
# Akash SDL (hand-maintained; shatag only touches the image value)
version: "2.0"

services:
  api:
    image: ghcr.io/example/api:latest   # pinned by shatag
    env:
      - LOG_LEVEL=info
    expose:
      - port: 8080
        as: 80
        to:
          - global: true

profiles:
  compute:
    api:
      resources: {cpu: {units: 0.5}, memory: {size: 512Mi}, storage: {size: 1Gi}}
  placement:
    dcloud:
      pricing: {api: {denom: uakt, amount: 1000}}

deployment:
  api:
    dcloud: {profile: api, count: 1}
"""
SOURCE_URL = "https://github.com/example/api"


@dataclass
class Story:
    app: Path
    venv: Path
    env: dict[str, str]
    canonical: str
    staging: str

    def shatag(self, *args: str, cwd: Path | None = None) -> InvResult:
        proc = subprocess.run(
            [str(self.venv / "bin" / "shatag"), *args],
            cwd=cwd or self.app,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        return InvResult(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, cwd: Path | None = None) -> dict[str, Any]:
        result = self.shatag(*args, cwd=cwd)
        assert result.returncode == 0, f"shatag {' '.join(args)}:\n{result.stderr}"
        return result.record

    def git(self, *args: str) -> str:
        return _git(self.app, *args)

    def commit(self, release: str, message: str) -> str:
        (self.app / "www" / "api.json").write_text(json.dumps({"release": release}) + "\n")
        self.git("add", "www/api.json")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with this package installed as a user installs it (not editable)."""
    uv = shutil.which("uv")
    assert uv is not None, "uv is required (bash ci/setup.sh installs it)"
    path = tmp_path_factory.mktemp("adopter") / "venv"
    env = {**os.environ, "VIRTUAL_ENV": ""}
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    subprocess.run(
        [uv, "venv", "-q", "--python", version, str(path)],
        check=True,
        env=env,
        timeout=300,
    )
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(path / "bin" / "python"), str(ROOT)],
        check=True,
        env=env,
        timeout=600,
    )
    return path


def _write_app(app: Path, registry: LocalRegistry, name: str) -> None:
    """A git repository shaped like a real API repository, with ``shatag.yaml`` at its root."""
    app.mkdir()
    shutil.copy2(EXAMPLE / "Dockerfile", app / "Dockerfile")
    shutil.copytree(EXAMPLE / "www", app / "www")
    (app / "bin").mkdir()
    shutil.copy2(EXAMPLE / "bin" / "busybox", app / "bin" / "busybox")
    (app / ".gitignore").write_text(
        "bin/\n.shatag/\nbuild/\n.terraform/\n*.tfstate\n*.tfstate.backup\n"
    )
    (app / ".dockerignore").write_text(".git\ninfra/\nbuild/\n.shatag/\n")
    (app / "infra" / "akash").mkdir(parents=True)
    (app / "infra" / "akash" / "deploy.yaml").write_text(SDL_TEXT)
    shutil.copytree(FIXTURE, app / "infra" / "akash-api")
    (app / "shatag.yaml").write_text(
        f"""\
shatag:
  canonical_repository: {registry.address}/{name}
  staging_repository: {registry.address}/{name}-staging
  build_inputs: [bin/busybox]
  environments:
    production:
      repository_type: canonical
      targets:
        - {{kind: sdl, path: infra/akash/deploy.yaml, service: api}}
        - kind: tfvars
          path: infra/akash-api/image.auto.tfvars.json
          variables:
            image_repo: "{{repository}}"
            image_tag: "{{sha}}@{{digest}}"
"""
    )
    _git(app, "init", "-q", "-b", "main")
    _git(app, "remote", "add", "origin", f"{SOURCE_URL}.git")


@pytest.fixture
def story(venv: Path, registry: LocalRegistry, tmp_path: Path) -> Iterator[Story]:
    name = f"adopt-{uuid.uuid4().hex[:8]}"
    app = tmp_path / "api"
    _write_app(app, registry, name)
    home = tmp_path / "home"
    home.mkdir()
    env = {
        # A new user's shell: the venv and the system tools on PATH, no shatag tools dir.
        "PATH": os.pathsep.join([str(venv / "bin"), os.environ.get("PATH", os.defpath)]),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "USER": "adopter",
        "GIT_AUTHOR_NAME": "adopter",
        "GIT_AUTHOR_EMAIL": "adopter@example.invalid",
        "GIT_COMMITTER_NAME": "adopter",
        "GIT_COMMITTER_EMAIL": "adopter@example.invalid",
    }
    for key in ("DOCKER_HOST", "SHATAG_BUILDER"):
        if key in os.environ:
            env[key] = os.environ[key]
    yield Story(app, venv, env, f"{registry.address}/{name}", f"{registry.address}/{name}-staging")
    for image in subprocess.run(
        ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", f"*/{name}*"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    ).stdout.split():
        subprocess.run(["docker", "image", "rm", image], capture_output=True, check=False)


def _image_has(image: str, path: str) -> bool:
    """Whether ``path`` exists in ``image`` (its busybox ``test -e``, no network)."""
    run = ["docker", "run", "--rm", "--network=none", "--entrypoint", "/bin/busybox", image]
    proc = subprocess.run(
        [*run, "test", "-e", path],
        capture_output=True,
        check=False,
        timeout=120,
    )
    return proc.returncode == 0


def test_whole_story_in_a_throwaway_app_repository(story: Story) -> None:
    tofu_binary()  # fail early and clearly when OpenTofu is not built yet
    app = story.app
    story.git("add", "-A")
    story.git("commit", "-q", "-m", "api with infra")
    sha_a = story.commit("A", "release A")

    # An untracked file in the context never enters an image (item 3).
    (app / "www" / "untracked.txt").write_text("not in any commit\n")

    # The console script reads shatag.yaml from the current directory (item 1) — and from the
    # git top-level when run in a subdirectory.
    help_ = story.shatag("--help")
    assert help_.returncode == 0
    assert str(app / "shatag.yaml") in help_.stdout + help_.stderr
    build_a = story.ok("build", cwd=app / "www")
    assert build_a["image_sha"] == sha_a
    assert build_a["repository"] == story.canonical
    inputs = build_a["build_inputs"]
    assert [entry["path"] for entry in inputs] == ["bin/busybox"]
    busybox = (app / "bin" / "busybox").read_bytes()
    assert inputs[0]["sha256"] == hashlib.sha256(busybox).hexdigest()
    assert (app / "build" / "metadata" / f"{sha_a}.json").is_file(), "relative to shatag.yaml"
    assert not _image_has(build_a["image_ref"], "/www/untracked.txt")
    inspect = ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}"]
    labels = json.loads(
        subprocess.run(
            [*inspect, build_a["image_ref"]], capture_output=True, text=True, check=True, timeout=60
        ).stdout
    )
    assert labels["org.opencontainers.image.source"] == SOURCE_URL  # item 8

    # No implicit environment (item 2): --env is required, `local` does not exist.
    no_env = story.shatag("deploy", f"--sha={sha_a}")
    assert no_env.returncode != 0
    assert "error: CONFIG_ERROR" in no_env.stderr
    assert "production" in no_env.stderr
    local = story.shatag("deploy", f"--sha={sha_a}", "--env=local")
    assert local.returncode != 0
    assert "error: CONFIG_ERROR" in local.stderr

    # Deploy A: the tracked SDL is edited, OpenTofu sees A's pinned image (item 4).
    deployed_a = story.ok("deploy", f"--sha={sha_a}", "--env=production")
    pinned_a = f"{story.canonical}:{sha_a}@{build_a['image_digest']}"
    assert deployed_a["image_ref"] == pinned_a
    sdl = app / "infra" / "akash" / "deploy.yaml"
    assert sdl.read_text() == SDL_TEXT.replace("ghcr.io/example/api:latest", pinned_a)
    tfvars = json.loads((app / "infra" / "akash-api" / "image.auto.tfvars.json").read_text())
    tag_a = f"{sha_a}@{build_a['image_digest']}"
    assert tfvars == {"image_repo": story.canonical, "image_tag": tag_a}
    assert apply(app / "infra" / "akash-api") == pinned_a

    # A feature branch builds to staging although the deploy left the SDL modified (item 3).
    story.git("checkout", "-q", "-b", "feature")
    sha_f = story.commit("F", "feature work")
    build_f = story.ok("build")
    assert build_f["image_sha"] == sha_f
    assert build_f["repository"] == story.staging
    refused = story.shatag("deploy", f"--sha={sha_f}", "--env=production")
    assert refused.returncode != 0
    assert "error: MISSING_TAG" in refused.stderr or "error: POLICY_VIOLATION" in refused.stderr

    # Merge to main, build B there.
    story.git("checkout", "-q", "main")
    story.git("merge", "-q", "--no-ff", "-m", "merge feature", "feature")
    sha_b = story.git("rev-parse", "HEAD")
    build_b = story.ok("build")
    assert build_b["repository"] == story.canonical
    pinned_b = f"{story.canonical}:{sha_b}@{build_b['image_digest']}"

    # --plan shows what would change and changes nothing (item 5); -R/--dry is refused.
    before = sdl.read_bytes()
    plan = story.shatag("deploy", f"--sha={sha_b}", "--env=production", "--plan")
    assert plan.returncode == 0, plan.stderr
    assert f"-    image: {pinned_a}" in plan.stderr + plan.stdout
    assert f"+    image: {pinned_b}" in plan.stderr + plan.stdout
    assert sdl.read_bytes() == before
    dry = story.shatag("--dry", "deploy", f"--sha={sha_b}", "--env=production")
    assert dry.returncode != 0
    assert "--plan" in dry.stderr
    assert sdl.read_bytes() == before

    # Deploy B; OpenTofu follows.
    story.ok("deploy", f"--sha={sha_b}", "--env=production")
    assert apply(app / "infra" / "akash-api") == pinned_b

    # Roll back (plan first), OpenTofu follows back to A.
    rollback_plan = story.shatag("rollback", "--env=production", "--plan")
    assert rollback_plan.returncode == 0, rollback_plan.stderr
    assert f"+    image: {pinned_a}" in rollback_plan.stderr + rollback_plan.stdout
    rolled = story.ok("rollback", "--env=production")
    assert rolled["image_sha"] == sha_a
    assert rolled["previous_sha"] == sha_b
    assert apply(app / "infra" / "akash-api") == pinned_a

    # The SDL keeps every other byte: comments, order, spacing, the trailing comment.
    assert sdl.read_text() == SDL_TEXT.replace("ghcr.io/example/api:latest", pinned_a)

    # `shatag --help | head` ends without a traceback (item 8): the reader is gone before the
    # help is written (the interpreter takes far longer to start than this close).
    proc = subprocess.Popen(
        [str(story.venv / "bin" / "shatag"), "--help"],
        cwd=app,
        env=story.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err.decode()
    assert "BrokenPipeError" not in err.decode()


def test_a_tls_registry_on_loopback_gets_a_tls_hint(tmp_path: Path) -> None:
    """HTTP 400 from a loopback registry that serves TLS names TLS and certs.d (item 8)."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is required for this test")
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    names = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        [*request, "-keyout", "key.pem", "-out", "cert.pem", *names],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=60,
    )
    reg = LocalRegistry(
        tmp_path / "registry",
        cert=tmp_path / "cert.pem",
        key=tmp_path / "key.pem",
        ca_file=tmp_path / "cert.pem",
    ).start()
    try:
        env = {
            **cli_env(reg, tmp_path, "tls"),
            "INVOKE_SHATAG_STATE_DIR": str(tmp_path / "state"),
        }
        result = run_inv(["deploy", f"--sha={'a' * 40}"], env)
    finally:
        reg.stop()
    assert result.returncode != 0
    assert "error: REGISTRY_UNAVAILABLE:" in result.stderr
    assert "HTTP 400" in result.stderr
    assert "TLS" in result.stderr
    assert f"/etc/docker/certs.d/{reg.address}/ca.crt" in result.stderr
    assert "Traceback" not in result.stderr


def test_plan_of_a_container_names_both_images_and_changes_nothing(
    make_app: Callable[..., App], shatag_env: dict[str, str], tmp_path: Path
) -> None:
    """``--plan`` for a docker target: ``old → new`` image, no container started, no history
    (item 5); ``-R/--dry`` is refused before anything runs."""
    app = make_app('{"version": "plan"}')
    env = {**shatag_env, "INVOKE_SHATAG_CONTEXT": str(app.path)}
    built = run_inv(["build", f"--sha={app.sha}", "--branch=main"], env)
    assert built.returncode == 0, built.stderr
    name = f"shatag-plan-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "plan.yaml"
    config.write_text(
        "shatag:\n  environments:\n    box:\n      targets:\n"
        f"        - {{kind: docker, name: {name}, port: {free_port()}, container_port: 8080}}\n"
    )
    plan = run_inv(["-f", str(config), "deploy", f"--sha={app.sha}", "--env=box", "--plan"], env)
    assert plan.returncode == 0, plan.stderr
    assert f"docker:{name}: nothing → {built.record['image_ref']}" in plan.stderr
    record = plan.record
    assert record["phase"] == "plan"
    assert record["action"] == "deploy"
    assert record["image_ref"] == built.record["image_ref"]
    assert [c["target"] for c in record["changes"]] == [f"docker:{name}"]
    inspect = subprocess.run(
        ["docker", "container", "inspect", name], capture_output=True, timeout=60, check=False
    )
    assert inspect.returncode != 0, "a plan starts no container"
    history = run_inv(["-f", str(config), "history", "--env=box", "--json"], env)
    assert history.returncode == 0, history.stderr
    assert history.records == []
    dry = run_inv(["-f", str(config), "--dry", "deploy", f"--sha={app.sha}", "--env=box"], env)
    assert dry.returncode != 0
    assert "error: INVALID_INPUT: -R/--dry" in dry.stderr
