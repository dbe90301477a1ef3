"""`inv build` end to end on the real docker engine and a real registry (issue 2)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from shatag._testing.localregistry import LocalRegistry, free_port
from shatag.core import parse_repository
from shatag.supplychain.registry import RegistryClient
from tests.conftest import BUILD_LOG_KEYS, TOOLS_BIN, App, InvResult, inv_argv

BUILD_KEYS = BUILD_LOG_KEYS | {"image_ref"}
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def client(env: dict[str, str], key: str) -> RegistryClient:
    return RegistryClient(parse_repository(env[key]), env={}, retries=1)


def build(inv: Callable[..., InvResult], env: dict[str, str], app: App, *extra: str) -> InvResult:
    env = {**env, "INVOKE_SHATAG_CONTEXT": str(app.path)}
    return inv(["build", f"--sha={app.sha}", *extra], env)


def test_main_branch_goes_to_canonical_only_with_proven_digests(
    inv: Callable[..., InvResult],
    shatag_env: dict[str, str],
    make_app: Callable[..., App],
    tmp_path: Path,
) -> None:
    app = make_app('{"version": "main"}')
    result = build(inv, shatag_env, app, "--branch=main")
    assert result.returncode == 0, result.stderr
    record = result.record
    assert set(record) >= BUILD_KEYS
    assert record["repository"] == shatag_env["INVOKE_SHATAG_CANONICAL_REPOSITORY"]
    assert record["repository_type"] == "canonical"
    assert record["reused"] is False
    assert record["digest_verification"] == "ok"
    assert record["arch"] == "linux/amd64"
    canonical = client(shatag_env, "INVOKE_SHATAG_CANONICAL_REPOSITORY")
    staging = client(shatag_env, "INVOKE_SHATAG_STAGING_REPOSITORY")
    served = canonical.manifest_digest(app.sha)
    # digest in the JSON == the registry's HEAD == what docker push reported
    assert DIGEST.fullmatch(record["image_digest"])
    assert record["image_digest"] == served == record["post_push_digest"]
    assert record["push_reported_digest"] == served
    # FR-002: the short tag resolves to the same manifest
    assert canonical.manifest_digest(app.sha[:12]) == served
    # the image config in the registry is the image we built
    assert canonical.config_digest(app.sha) == record["pre_push_digest"]
    assert staging.tags() == []
    assert f"image: {record['repository']}:{app.sha}@{served}" in result.stderr
    metadata = json.loads((tmp_path / "metadata" / f"{app.sha}.json").read_text())
    assert metadata == record


def test_feature_branch_goes_to_staging_only(
    inv: Callable[..., InvResult], shatag_env: dict[str, str], make_app: Callable[..., App]
) -> None:
    app = make_app('{"version": "feature"}')
    result = build(inv, shatag_env, app, "--branch=feature/login")
    assert result.returncode == 0, result.stderr
    assert result.record["repository_type"] == "staging"
    assert result.record["repository"] == shatag_env["INVOKE_SHATAG_STAGING_REPOSITORY"]
    staging = client(shatag_env, "INVOKE_SHATAG_STAGING_REPOSITORY")
    canonical = client(shatag_env, "INVOKE_SHATAG_CANONICAL_REPOSITORY")
    assert sorted(staging.tags()) == sorted([app.sha, app.sha[:12]])
    assert canonical.manifest_digest(app.sha) is None
    assert canonical.tags() == []


def test_second_build_reuses_without_building_or_pushing(
    inv: Callable[..., InvResult], shatag_env: dict[str, str], make_app: Callable[..., App]
) -> None:
    app = make_app('{"version": "reuse"}')
    first = build(inv, shatag_env, app, "--branch=main")
    assert first.returncode == 0, first.stderr
    canonical = client(shatag_env, "INVOKE_SHATAG_CANONICAL_REPOSITORY")
    tags_before = sorted(canonical.tags())
    second = build(inv, shatag_env, app, "--branch=main")
    assert second.returncode == 0, second.stderr
    assert second.record["reused"] is True
    assert second.record["image_digest"] == first.record["image_digest"]
    # neither a docker build nor a docker push ran
    assert "Step 1/" not in second.stderr
    assert "Pushed" not in second.stderr
    assert "digest: sha256" not in second.stderr
    assert sorted(canonical.tags()) == tags_before


def test_rebuild_of_changed_context_fails_and_keeps_the_tag(
    inv: Callable[..., InvResult], shatag_env: dict[str, str], make_app: Callable[..., App]
) -> None:
    app = make_app('{"version": "one"}')
    # build_source: worktree, so an untracked file of the work tree reaches the image: the same
    # SHA with different bytes (the default, commit, never lets it in: see below)
    env = {**shatag_env, "INVOKE_SHATAG_BUILD_SOURCE": "worktree"}
    first = build(inv, env, app, "--branch=main")
    assert first.returncode == 0, first.stderr
    (app.path / "www" / "extra.json").write_text('{"version": "tampered"}\n')
    second = build(inv, env, app, "--branch=main", "--rebuild")
    assert second.returncode != 0
    assert "error: DIGEST_MISMATCH:" in second.stderr
    assert second.record["error_code"] == "DIGEST_MISMATCH"
    assert "Traceback" not in second.stderr
    canonical = client(shatag_env, "INVOKE_SHATAG_CANONICAL_REPOSITORY")
    assert canonical.manifest_digest(app.sha) == first.record["image_digest"]
    assert canonical.manifest_digest(app.sha[:12]) == first.record["image_digest"]


def test_worktree_mode_refuses_another_head_or_modified_files_before_building(
    inv: Callable[..., InvResult], shatag_env: dict[str, str], make_app: Callable[..., App]
) -> None:
    """build_source: worktree: an image tagged <sha> holds exactly that commit, so another HEAD
    or modified tracked files are refused — before the build starts (issue 13, item 3)."""
    app = make_app('{"version": "A"}')
    sha_a = app.sha
    app.commit('{"version": "B"}')
    env = {
        **shatag_env,
        "INVOKE_SHATAG_CONTEXT": str(app.path),
        "INVOKE_SHATAG_BUILD_SOURCE": "worktree",
    }
    result = inv(["build", f"--sha={sha_a}", "--branch=main"], env)
    assert result.returncode != 0
    assert "error: SOURCE_MISMATCH:" in result.stderr
    assert f"not at {sha_a}" in result.stderr
    assert "Step 1/" not in result.stderr  # the cheap HEAD check runs before any build
    (app.path / "www" / "api.json").write_text('{"version": "edited"}\n')
    result = inv(["build", f"--sha={app.sha}", "--branch=main"], env)
    assert result.returncode != 0
    assert "error: SOURCE_MISMATCH:" in result.stderr
    assert "uncommitted changes" in result.stderr
    assert "Step 1/" not in result.stderr  # the clean check, too, runs before the build
    assert client(shatag_env, "INVOKE_SHATAG_CANONICAL_REPOSITORY").tags() == []


def _image_file(reference: str, path: str) -> str | None:
    """The content of ``path`` in the image (its busybox ``cat``), ``None`` when absent."""
    run = ["docker", "run", "--rm", "--network=none", "--entrypoint", "/bin/busybox", reference]
    proc = subprocess.run(
        [*run, "cat", path],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.stdout if proc.returncode == 0 else None


def test_the_image_holds_exactly_the_commit(
    inv: Callable[..., InvResult], shatag_env: dict[str, str], make_app: Callable[..., App]
) -> None:
    """The default build context is the commit's tree (issue 13, item 3): another checked-out
    commit, modified and untracked files and what the commit's .dockerignore excludes never
    enter the image — and none of them blocks the build."""
    app = make_app('{"version": "A"}')
    (app.path / ".dockerignore").write_text(".git\nwww/private.txt\n")
    (app.path / "www" / "private.txt").write_text("excluded by .dockerignore\n")
    sha_a = app.commit('{"version": "A"}', "A with a .dockerignore")
    app.commit('{"version": "B"}')  # HEAD is now B
    (app.path / "www" / "api.json").write_text('{"version": "edited"}\n')  # modified, tracked
    (app.path / "www" / "untracked.txt").write_text("never committed\n")
    env = {**shatag_env, "INVOKE_SHATAG_CONTEXT": str(app.path)}
    result = inv(["build", f"--sha={sha_a}", "--branch=main"], env)
    assert result.returncode == 0, result.stderr
    assert result.record["build_source"] == "commit"
    image = result.record["image_ref"]
    assert _image_file(image, "/www/api.json") == '{"version": "A"}\n'
    assert _image_file(image, "/www/untracked.txt") is None
    assert _image_file(image, "/www/private.txt") is None
    # a SHA the repository does not hold: SOURCE_MISMATCH before any build
    missing = "0" * 40
    result = inv(["build", f"--sha={missing}", "--branch=main"], env)
    assert result.returncode != 0
    assert "error: SOURCE_MISMATCH:" in result.stderr
    assert "Step 1/" not in result.stderr


def test_untracked_build_inputs_are_declared_and_recorded(
    inv: Callable[..., InvResult], shatag_env: dict[str, str], make_app: Callable[..., App]
) -> None:
    """The example's static busybox is not in git: it enters the image only as a declared
    build input, listed with its sha256 (issue 13, item 3)."""
    app = make_app('{"version": "inputs"}')
    (app.path / ".gitignore").write_text("bin/\n")
    subprocess.run(
        ["git", "-C", str(app.path), "rm", "-q", "--cached", "bin/busybox"], check=True, timeout=30
    )
    app.commit('{"version": "inputs"}', "busybox is not tracked any more")
    env = {**shatag_env, "INVOKE_SHATAG_CONTEXT": str(app.path)}
    undeclared = inv(["build", f"--sha={app.sha}", "--branch=main"], env)
    assert undeclared.returncode != 0
    assert "error: BUILD_FAILURE:" in undeclared.stderr
    declared = inv(
        ["build", f"--sha={app.sha}", "--branch=main"],
        {**env, "INVOKE_SHATAG_BUILD_INPUTS": "bin/busybox"},
    )
    assert declared.returncode == 0, declared.stderr
    busybox = (app.path / "bin" / "busybox").read_bytes()
    assert declared.record["build_inputs"] == [
        {
            "path": "bin/busybox",
            "sha256": hashlib.sha256(busybox).hexdigest(),
            "size": len(busybox),
        }
    ]
    meta = json.loads(
        (Path(shatag_env["INVOKE_SHATAG_METADATA_DIR"]) / f"{app.sha}.json").read_text()
    )
    assert meta["build_inputs"] == declared.record["build_inputs"]


def test_failing_build_streams_its_output_and_pushes_nothing(
    inv: Callable[..., InvResult], shatag_env: dict[str, str], make_app: Callable[..., App]
) -> None:
    app = make_app()
    canary = f"shatag-canary-line-{uuid.uuid4().hex[:8]}"
    dockerfile = app.path / "Dockerfile"
    dockerfile.write_text(
        dockerfile.read_text().replace(
            "COPY www /www",
            f'COPY www /www\nRUN ["/bin/busybox", "sh", "-c", "echo {canary}; exit 7"]',
        )
    )
    app.commit('{"version": "broken"}', "break the build")
    result = build(inv, shatag_env, app, "--branch=main")
    assert result.returncode != 0
    assert "error: BUILD_FAILURE:" in result.stderr
    assert canary in result.stderr  # the build's own output is not lost
    assert result.stderr.index(canary) < result.stderr.index("error: BUILD_FAILURE")
    assert client(shatag_env, "INVOKE_SHATAG_CANONICAL_REPOSITORY").tags() == []
    # The failed RUN step's container is not left behind on the engine.
    left = subprocess.run(
        ["docker", "ps", "-a", "--no-trunc", "--format", "{{.Command}}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert canary not in left


def test_metrics_textfile_counts_builds_per_repository_type(
    inv: Callable[..., InvResult],
    shatag_env: dict[str, str],
    make_app: Callable[..., App],
    tmp_path: Path,
) -> None:
    """image_build_total{repository_type} accumulates across runs; reuse is not a build."""
    textfile = tmp_path / "shatag.prom"
    env = {**shatag_env, "INVOKE_SHATAG_METRICS_TEXTFILE": str(textfile)}
    app = make_app('{"version": "m1"}')
    assert build(inv, env, app, "--branch=main").returncode == 0
    app.commit('{"version": "m2"}')
    assert build(inv, env, app, "--branch=main").returncode == 0
    assert build(inv, env, app, "--branch=main").record["reused"] is True
    app.commit('{"version": "m3"}')
    assert build(inv, env, app, "--branch=feature").returncode == 0
    text = textfile.read_text()
    assert 'image_build_total{repository_type="canonical"} 2.0' in text
    assert 'image_build_total{repository_type="staging"} 1.0' in text


def test_metrics_are_off_by_default(
    inv: Callable[..., InvResult],
    shatag_env: dict[str, str],
    make_app: Callable[..., App],
    tmp_path: Path,
) -> None:
    app = make_app('{"version": "nometrics"}')
    assert build(inv, shatag_env, app, "--branch=main").returncode == 0
    assert not list(tmp_path.rglob("*.prom"))


def _buildx_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """Where the docker CLI lacks buildx, link the plugin ci/setup.sh built into a private
    DOCKER_CONFIG, so only this test sees it."""
    probe = subprocess.run(
        ["docker", "buildx", "version"], capture_output=True, timeout=60, check=False
    )
    if probe.returncode == 0:
        return env
    plugin = TOOLS_BIN / "buildx"
    if not plugin.exists():
        pytest.fail(f"{plugin} is missing: run `bash ci/setup.sh` (it builds buildx with Go)")
    config = tmp_path / "docker-config"
    (config / "cli-plugins").mkdir(parents=True)
    (config / "cli-plugins" / "docker-buildx").symlink_to(plugin)
    return {**env, "DOCKER_CONFIG": str(config)}


@pytest.mark.parametrize("builder", ["buildx", "classic"])
def test_both_builders_produce_a_proven_single_manifest(
    inv: Callable[..., InvResult],
    shatag_env: dict[str, str],
    make_app: Callable[..., App],
    tmp_path: Path,
    builder: str,
) -> None:
    """BuildKit when the CLI has buildx (attestations off: one manifest), classic otherwise."""
    env = _buildx_env(shatag_env, tmp_path)
    if builder == "classic":
        env["SHATAG_BUILDER"] = "classic"
    app = make_app(f'{{"builder": "{builder}"}}')
    result = build(inv, env, app, "--branch=main")
    assert result.returncode == 0, result.stderr
    record = result.record
    assert record["builder"] == builder
    assert record["digest_verification"] == "ok"
    canonical = client(shatag_env, "INVOKE_SHATAG_CANONICAL_REPOSITORY")
    manifest = canonical.manifest(app.sha)
    assert manifest is not None
    assert manifest.digest == record["image_digest"]
    assert "manifests" not in manifest.parsed()  # a single image manifest, not an index (FR-015)
    assert canonical.config_digest(app.sha) == record["pre_push_digest"]
    assert canonical.manifest_digest(app.sha[:12]) == record["image_digest"]


def test_sha_defaults_to_git_head_of_the_context(
    inv: Callable[..., InvResult], shatag_env: dict[str, str], make_app: Callable[..., App]
) -> None:
    app = make_app('{"version": "head"}')
    env = {**shatag_env, "INVOKE_SHATAG_CONTEXT": str(app.path)}
    result = inv(["build"], env)
    assert result.returncode == 0, result.stderr
    assert result.record["image_sha"] == app.sha
    assert result.record["repository_type"] == "canonical"  # make_app's branch is main


def test_github_actions_outputs_and_summary(
    inv: Callable[..., InvResult],
    shatag_env: dict[str, str],
    make_app: Callable[..., App],
    tmp_path: Path,
) -> None:
    app = make_app('{"version": "gha"}')
    outputs, summary = tmp_path / "out.txt", tmp_path / "summary.md"
    env = {
        **shatag_env,
        "GITHUB_ACTIONS": "true",
        "GITHUB_OUTPUT": str(outputs),
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_REF_NAME": "main",
    }
    result = build(inv, env, app)
    assert result.returncode == 0, result.stderr
    written = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    assert written == {
        "image_ref": result.record["image_ref"],
        "image_digest": result.record["image_digest"],
        "image_sha": app.sha,
        "repository": result.record["repository"],
    }
    assert result.record["image_ref"] in summary.read_text()
    assert "::group::docker build" in result.stderr
    assert "::endgroup::" in result.stderr


@pytest.mark.parametrize(
    ("sha", "code"),
    [
        ("", "MISSING_SHA"),
        ("0123456789abcdef0123456789abcdef0123456", "MISSING_SHA"),  # 39
        ("0123456789abcdef0123456789abcdef012345678", "MISSING_SHA"),  # 41
        ("0123456789ABCDEF0123456789ABCDEF01234567", "MISSING_SHA"),  # uppercase
        ("g123456789abcdef0123456789abcdef01234567", "POLICY_VIOLATION"),  # non-hex: tag-shaped
        (" 0123456789abcdef0123456789abcdef01234567", "MISSING_SHA"),
        ("0123456789abcdef0123456789abcdef01234567\n", "MISSING_SHA"),
        ("latest", "POLICY_VIOLATION"),
        ("$(touch /tmp/pwned)", "MISSING_SHA"),
        ("abc;rm -rf /", "MISSING_SHA"),
    ],
)
def test_bad_sha_builds_and_pushes_nothing(
    inv: Callable[..., InvResult],
    shatag_env: dict[str, str],
    make_app: Callable[..., App],
    sha: str,
    code: str,
) -> None:
    app = make_app('{"version": "bad"}')
    env = {**shatag_env, "INVOKE_SHATAG_CONTEXT": str(app.path)}
    result = inv(["build", f"--sha={sha}", "--branch=main"], env)
    assert result.returncode != 0
    assert f"error: {code}:" in result.stderr
    assert result.record["error_code"] == code
    assert "Traceback" not in result.stderr
    assert "Step 1/" not in result.stderr
    assert client(shatag_env, "INVOKE_SHATAG_CANONICAL_REPOSITORY").tags() == []


def test_missing_context_and_dockerfile_fail_naming_the_path(
    inv: Callable[..., InvResult],
    shatag_env: dict[str, str],
    make_app: Callable[..., App],
    tmp_path: Path,
) -> None:
    sha = make_app().sha
    missing = tmp_path / "nowhere"
    result = inv(
        ["build", f"--sha={sha}", "--branch=main"],
        {**shatag_env, "INVOKE_SHATAG_CONTEXT": str(missing)},
    )
    assert result.returncode != 0
    assert "error: BUILD_FAILURE:" in result.stderr
    assert str(missing) in result.stderr
    app = make_app()
    result = inv(
        ["build", f"--sha={app.sha}", "--branch=main"],  # a commit of this context's repository
        {
            **shatag_env,
            "INVOKE_SHATAG_CONTEXT": str(app.path),
            "INVOKE_SHATAG_DOCKERFILE": "Nope.Dockerfile",
        },
    )
    assert result.returncode != 0
    assert "error: BUILD_FAILURE:" in result.stderr
    assert "Nope.Dockerfile" in result.stderr


def test_unreachable_registry_fails_after_bounded_retry(
    inv: Callable[..., InvResult], shatag_env: dict[str, str], make_app: Callable[..., App]
) -> None:
    app = make_app()
    dead = f"127.0.0.1:{free_port()}"
    env = {
        **shatag_env,
        "INVOKE_SHATAG_CONTEXT": str(app.path),
        "INVOKE_SHATAG_CANONICAL_REPOSITORY": f"{dead}/api",
        "INVOKE_SHATAG_STAGING_REPOSITORY": f"{dead}/api-staging",
    }
    result = inv(["build", f"--sha={app.sha}", "--branch=main"], env, timeout=120)
    assert result.returncode != 0
    assert "error: REGISTRY_UNAVAILABLE:" in result.stderr
    assert dead in result.stderr
    assert "after 3 attempts" in result.stderr
    assert "Step 1/" not in result.stderr


def test_registry_refusing_pushes_is_a_push_failure(
    inv: Callable[..., InvResult],
    shatag_env: dict[str, str],
    make_app: Callable[..., App],
    tmp_path: Path,
) -> None:
    """A real registry in read-only maintenance mode: reads work, `docker push` is refused."""
    app = make_app()
    with LocalRegistry(tmp_path / "ro", readonly=True) as reg:
        env = {
            **shatag_env,
            "INVOKE_SHATAG_CONTEXT": str(app.path),
            "INVOKE_SHATAG_CANONICAL_REPOSITORY": f"{reg.address}/api",
            "INVOKE_SHATAG_STAGING_REPOSITORY": f"{reg.address}/api-staging",
        }
        result = inv(["build", f"--sha={app.sha}", "--branch=main"], env)
        assert result.returncode != 0
        assert "error: PUSH_FAILURE:" in result.stderr
        assert reg.address in result.stderr
        assert result.record["error_code"] == "PUSH_FAILURE"
        assert "Traceback" not in result.stderr
        assert RegistryClient(parse_repository(f"{reg.address}/api"), env={}).tags() == []


def test_registry_stopped_during_build_fails_before_any_push(
    inv: Callable[..., InvResult],
    shatag_env: dict[str, str],
    make_app: Callable[..., App],
    tmp_path: Path,
) -> None:
    """The registry dies after the pre-build check: the re-check before pushing catches it."""
    app = make_app()
    # The test stops the registry as soon as the build output starts (the build step sleeps
    # 3 s so the stop lands before the push).
    reg = LocalRegistry(tmp_path / "dying").start()
    env = {
        **shatag_env,
        "INVOKE_SHATAG_CONTEXT": str(app.path),
        "INVOKE_SHATAG_CANONICAL_REPOSITORY": f"{reg.address}/api",
        "INVOKE_SHATAG_STAGING_REPOSITORY": f"{reg.address}/api-staging",
    }
    dockerfile = app.path / "Dockerfile"
    dockerfile.write_text(
        dockerfile.read_text().replace(
            "COPY www /www", 'COPY www /www\nRUN ["/bin/busybox", "sleep", "3"]'
        )
    )
    app.commit('{"version": "slow build"}', "a build step that takes 3 s")
    proc = subprocess.Popen(
        inv_argv("build", f"--sha={app.sha}", "--branch=main"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    err_lines: list[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            err_lines.append(line)
            if "Step 1/" in line:
                reg.stop()

    pumper = threading.Thread(target=pump)
    pumper.start()
    assert proc.stdout is not None
    with proc.stdout:
        out = proc.stdout.read()
    proc.wait(timeout=300)
    pumper.join()
    assert proc.stderr is not None
    proc.stderr.close()
    stderr = "".join(err_lines)
    assert proc.returncode != 0
    assert "error: REGISTRY_UNAVAILABLE:" in stderr, stderr
    assert reg.address in stderr
    assert "Pushed" not in stderr
    assert json.loads(out.splitlines()[-1])["error_code"] == "REGISTRY_UNAVAILABLE"
