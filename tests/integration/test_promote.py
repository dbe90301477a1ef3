"""``promote`` end to end (issue 26): a real registry with two repositories (staging and
canonical), real images built by ``inv build --sign``, real cosign, the real CLI.

Two commits, A and B, are built once for the module on a feature branch (so into the staging
repository) and signed; each test has its own state directory and target files. The staging
environment pulls from the staging repository, production from the canonical one: a promotion
copies the image across, by digest.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.error
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shatag._testing.localregistry import LocalRegistry
from shatag.core import parse_repository, short_sha
from shatag.errors import DigestMismatch
from shatag.supplychain.copy import copy_image
from shatag.supplychain.registry import RegistryClient
from tests._gitremote import GitRemote
from tests.conftest import EXAMPLE, ROOT, InvResult, cli_env, new_app, run_inv
from tests.integration._signing_support import generate_key_pair, tag_digest, tool_path

PASSWORD = "promote-test-password"


@dataclass
class World:
    root: Path
    env: dict[str, str]
    app_path: Path
    public_key: Path
    staging_repo: str
    canonical_repo: str
    #: SHA -> digest in the staging repository.
    built: dict[str, str]
    shas: list[str]
    #: A commit on a side branch, never merged: not main-line code.
    side_sha: str
    registry: LocalRegistry

    def canonical_tag(self, tag: str) -> str | None:
        """The digest the canonical repository's ``tag`` names, ``None`` when absent."""
        try:
            return tag_digest(self.registry, self.canonical_repo.split("/", 1)[1], tag)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise


@pytest.fixture(scope="module")
def world(registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory) -> World:
    if not (EXAMPLE / "bin" / "busybox").exists():
        pytest.fail("examples/api/bin/busybox is missing: run `bash ci/setup.sh` first")
    root = tmp_path_factory.mktemp("promote")
    name = f"promo-{uuid.uuid4().hex[:8]}"
    key, pub = generate_key_pair(root / "keys", PASSWORD)
    env = {
        **cli_env(registry, root, name),
        "INVOKE_SHATAG_COSIGN_KEY": str(key),
        "INVOKE_SHATAG_COSIGN_PUBLIC_KEY": str(pub),
        "COSIGN_PASSWORD": PASSWORD,
    }
    app = new_app(root / "app")
    built: dict[str, str] = {}
    for label in ("A", "B"):
        app.commit(json.dumps({"release": label}), label)
    _git(app.path, "checkout", "-q", "-b", "side")
    side = app.commit(json.dumps({"release": "side"}), "side")
    _git(app.path, "checkout", "-q", "main")
    for sha in (*app.shas[:2], side):
        result = run_inv(
            ["build", f"--sha={sha}", "--branch=feature", "--sign"],
            {**env, "INVOKE_SHATAG_CONTEXT": str(app.path)},
        )
        assert result.returncode == 0, result.stderr
        assert result.record["repository_type"] == "staging"
        built[sha] = result.record["image_digest"]
    return World(
        root=root,
        env={**env, "INVOKE_SHATAG_CONTEXT": str(app.path)},
        app_path=app.path,
        public_key=pub,
        staging_repo=env["INVOKE_SHATAG_STAGING_REPOSITORY"],
        canonical_repo=env["INVOKE_SHATAG_CANONICAL_REPOSITORY"],
        built=built,
        shas=app.shas[:2],
        side_sha=side,
        registry=registry,
    )


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@dataclass
class Setup:
    world: World
    config: Path
    staging_file: Path
    production_file: Path

    def run(self, *args: str, cwd: Path | None = None) -> InvResult:
        return run_inv(["-f", str(self.config), *args], self.world.env, cwd=cwd)

    def history(self, env: str) -> list[dict[str, Any]]:
        return self.run("history", f"--env={env}", "--json").records

    def history_at(self, env: str, runner: Path) -> list[dict[str, Any]]:
        return self.run("history", f"--env={env}", "--json", cwd=runner).records


def _setup(
    world: World,
    tmp_path: Path,
    *,
    soak_sec: float = 0,
    checks: list[list[str]] | None = None,
    **settings: Any,
) -> Setup:
    staging_file = tmp_path / "staging.auto.tfvars.json"
    production_file = tmp_path / "production.auto.tfvars.json"
    promotion: dict[str, Any] = {"from": "staging", "soak_sec": soak_sec}
    if checks is not None:
        promotion["checks"] = checks
    config = tmp_path / "shatag.yaml"
    config.write_text(json.dumps({"shatag": {
        **settings,
        "state_dir": str(tmp_path / "state"),
        "environments": {
            "staging": {
                "repository_type": "staging",
                "targets": [{"kind": "tfvars", "path": str(staging_file)}],
            },
            "production": {
                "repository_type": "canonical",
                "targets": [{"kind": "tfvars", "path": str(production_file)}],
                "promotion": promotion,
            },
        },
    }}))  # fmt: skip
    return Setup(world, config, staging_file, production_file)


def _deploy_staging(s: Setup, sha: str) -> None:
    result = s.run("deploy", f"--sha={sha}", "--env=staging")
    assert result.returncode == 0, result.stderr


def test_soak_not_yet_elapsed_is_refused_and_nothing_changes(world: World, tmp_path: Path) -> None:
    s = _setup(world, tmp_path, soak_sec=3600)
    sha = world.shas[0]
    _deploy_staging(s, sha)
    plan = s.run("promote", "--to=production", "--plan")
    assert plan.returncode == 0, plan.stderr
    assert plan.record["blocked"] is True
    states = {g["gate"]: g["state"] for g in plan.record["gates"]}
    assert states == {"current": "pass", "soak": "fail", "mainline": "pass", "checks": "not run"}
    assert "plan: blocked — nothing was changed" in plan.stderr

    result = s.run("promote", "--to=production")

    assert result.returncode == 1
    assert "error: PROMOTION_BLOCKED: promotion to 'production' held by gate soak:" in result.stderr
    assert "soak_sec is 3600" in result.stderr
    assert "Nothing was changed" in result.stderr
    assert not s.production_file.exists()
    assert s.history("production") == []
    print(result.stderr.strip())  # the gate message, for the closing note


def test_a_failing_check_is_refused_and_sees_the_promotion_variables(
    world: World, tmp_path: Path
) -> None:
    seen = tmp_path / "seen.txt"
    check = [
        "sh",
        "-c",
        f'echo "$SHATAG_PROMOTE_SHA $SHATAG_PROMOTE_DIGEST $SHATAG_PROMOTE_FROM '
        f'$SHATAG_PROMOTE_TO" > {seen}; exit 3',
    ]
    s = _setup(world, tmp_path, checks=[["true"], check])
    sha = world.shas[0]
    _deploy_staging(s, sha)

    result = s.run("promote", "--to=production")

    assert result.returncode == 1
    assert "error: PROMOTION_BLOCKED: promotion to 'production' held by gate checks:" in (
        result.stderr
    )
    assert "check 2/2" in result.stderr
    assert seen.read_text().split() == [sha, world.built[sha], "staging", "production"]
    assert not s.production_file.exists()
    assert s.history("production") == []
    print(result.stderr.strip())


def test_a_sha_rolled_back_in_staging_is_refused(world: World, tmp_path: Path) -> None:
    s = _setup(world, tmp_path)
    a, b = world.shas
    _deploy_staging(s, a)
    _deploy_staging(s, b)
    rolled = s.run("rollback", "--env=staging")
    assert rolled.returncode == 0, rolled.stderr

    result = s.run("promote", "--to=production", f"--sha={b}")

    assert result.returncode == 1
    assert "held by gate current:" in result.stderr
    assert f"{b} was rolled back in 'staging'" in result.stderr
    assert f"(to {a})" in result.stderr
    assert not s.production_file.exists()
    print(result.stderr.strip())


def test_a_sha_that_is_not_main_line_is_refused_for_a_canonical_target(
    world: World, tmp_path: Path
) -> None:
    s = _setup(world, tmp_path)
    _deploy_staging(s, world.side_sha)

    result = s.run("promote", "--to=production")

    assert result.returncode == 1
    assert "held by gate mainline:" in result.stderr
    assert "FR-016" in result.stderr
    assert world.canonical_tag(world.side_sha) is None
    print(result.stderr.strip())


def test_a_clean_promotion_copies_across_repositories_by_digest_and_stays_signed(
    world: World, tmp_path: Path
) -> None:
    sha = world.shas[1]
    s = _setup(world, tmp_path, checks=[["sh", "-c", 'test "$SHATAG_PROMOTE_SHA" = ' + sha]])
    _deploy_staging(s, sha)

    plan = s.run("promote", "--to=production", "--plan")
    assert plan.returncode == 0, plan.stderr
    assert [g["state"] for g in plan.record["gates"]] == ["pass"] * 4
    assert plan.record["copy"] == {"from": world.staging_repo, "to": world.canonical_repo}
    assert not s.production_file.exists()

    result = s.run("promote", "--to=production")

    assert result.returncode == 0, result.stderr
    record = result.record
    digest = world.built[sha]
    assert record["phase"] == "promote"
    assert record["promoted_from"] == "staging"
    assert record["image_digest"] == digest
    assert record["image_ref"] == f"{world.canonical_repo}:{sha}@{digest}"
    assert record["repository_type"] == "canonical"
    assert record["signature_status"] == "verified"
    assert record["copied_to"] == world.canonical_repo
    assert record["tags_written"] == [sha, short_sha(sha)]
    assert f"{digest.replace(':', '-')}.sig" in record["signature_tags"]
    assert record["blobs_mounted"] >= 2  # one registry: config and layers mounted, not copied
    assert record["blobs_copied"] == 0
    assert digest in s.production_file.read_text()
    assert world.canonical_tag(sha) == digest
    assert world.canonical_tag(short_sha(sha)) == digest
    verify = subprocess.run(
        [
            tool_path("cosign"),
            "verify",
            "--key",
            str(world.public_key),
            "--insecure-ignore-tlog",
            "--allow-insecure-registry",
            f"{world.canonical_repo}@{digest}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr
    history = s.history("production")
    assert history[0]["action"] == "promote"
    assert history[0]["promoted_from"] == "staging"
    print(result.stdout)


def test_two_runners_promoting_at_once_one_waits_on_the_lock(world: World, tmp_path: Path) -> None:
    log = tmp_path / "checks.log"
    check = [
        "sh",
        "-c",
        f"echo start $(date +%s.%N) >> {log}; sleep 2; echo end $(date +%s.%N) >> {log}",
    ]
    s = _setup(world, tmp_path, checks=[check])
    sha = world.shas[1]
    _deploy_staging(s, sha)
    results: list[InvResult] = []

    def runner() -> None:
        results.append(s.run("promote", "--to=production"))

    threads = [threading.Thread(target=runner) for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.2)
    for thread in threads:
        thread.join(timeout=300)

    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    events = [line.split() for line in log.read_text().splitlines()]
    assert [e[0] for e in events] == ["start", "end", "start", "end"]  # never overlapping
    assert float(events[2][1]) >= float(events[1][1])
    history = s.history("production")
    assert [h["action"] for h in history] == ["promote", "promote"]
    assert {(h["sha"], h["digest"]) for h in history} == {(sha, world.built[sha])}


def test_a_rollback_in_production_after_a_promotion(world: World, tmp_path: Path) -> None:
    s = _setup(world, tmp_path)
    a, b = world.shas
    _deploy_staging(s, a)
    assert s.run("promote", "--to=production").returncode == 0
    _deploy_staging(s, b)
    second = s.run("promote", "--to=production")
    assert second.returncode == 0, second.stderr
    assert second.record["previous_sha"] == a

    rolled = s.run("rollback", "--env=production")

    assert rolled.returncode == 0, rolled.stderr
    assert rolled.record["image_sha"] == a
    assert rolled.record["image_digest"] == world.built[a]
    assert world.built[a] in s.production_file.read_text()
    assert [h["action"] for h in s.history("production")] == ["rollback", "promote", "promote"]


def test_the_soak_is_measured_from_the_shared_ledger_on_another_runner(
    world: World, tmp_path: Path
) -> None:
    """state_backend git: staging is deployed from one runner's clone, the promotion runs on a
    fresh clone that never saw that deploy; the soak counts from the record on the remote."""
    (tmp_path / "remote").mkdir()
    remote = GitRemote(tmp_path / "remote")
    first, second = remote.clone(), remote.clone()
    s = _setup(world, tmp_path, soak_sec=4, state_backend="git", state_remote="origin")
    sha = world.shas[0]
    deployed = s.run("deploy", f"--sha={sha}", "--env=staging", cwd=first)
    assert deployed.returncode == 0, deployed.stderr

    early = s.run("promote", "--to=production", cwd=second)
    assert early.returncode == 1
    assert "held by gate soak:" in early.stderr
    assert "soak_sec is 4" in early.stderr
    time.sleep(4.5)
    late = s.run("promote", "--to=production", cwd=second)

    assert late.returncode == 0, late.stderr
    assert late.record["promoted_from"] == "staging"
    assert late.record["image_digest"] == world.built[sha]
    assert [h["action"] for h in s.history_at("production", first)] == ["promote"]


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    """Debian's headless Chromium (installed by ci/setup.sh's test set-up), no network."""
    binary = shutil.which("chromium")
    assert binary, "chromium is required for this test: run `bash ci/setup.sh test`"
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_board_shows_what_serves_and_what_waits_and_renders_in_chromium(
    world: World, tmp_path: Path
) -> None:
    s = _setup(world, tmp_path, soak_sec=3600)
    a, b = world.shas
    _deploy_staging(s, a)
    s.config.write_text(s.config.read_text().replace('"soak_sec": 3600', '"soak_sec": 0'))
    assert s.run("promote", "--to=production").returncode == 0
    s.config.write_text(s.config.read_text().replace('"soak_sec": 0', '"soak_sec": 3600'))
    _deploy_staging(s, b)
    page = tmp_path / "board.html"

    result = s.run("board", f"--html={page}")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"staging: {b[:12]} since ")
    assert lines[1].startswith(f"production (promotes from staging): {a[:12]} since ")
    assert "signature verified (n/a); provenance attested" in lines[1]
    assert lines[2].startswith(f"  waiting: {b[:12]} from staging — soak: ")
    text = page.read_text()
    assert "<script" not in text
    assert "http://" not in text
    assert "https://" not in text
    dom = _chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr
    assert "shatag release board" in dom.stdout
    assert 'id="env-production"' in dom.stdout
    assert a in dom.stdout
    assert b in dom.stdout
    assert "promote from staging" in dom.stdout
    assert "soak_sec is 3600" in dom.stdout
    shot = ROOT / "build" / "board.png"
    shot.parent.mkdir(exist_ok=True)
    shot.unlink(missing_ok=True)
    taken = _chromium(
        f"--screenshot={shot}",
        "--window-size=1280,720",
        page.as_uri(),
        profile=tmp_path / "profile-shot",
    )
    assert taken.returncode == 0, taken.stderr
    assert shot.stat().st_size > 10_000
    print(result.stdout, shot)


def _client(repository: str) -> RegistryClient:
    return RegistryClient(parse_repository(repository), env={"HOME": str(Path.home())})


def test_across_registries_the_blobs_are_copied_and_the_signature_still_verifies(
    world: World, tmp_path: Path
) -> None:
    """No mount between two registries: every blob is streamed across (the fallback)."""
    sha = world.shas[0]
    digest = world.built[sha]
    with LocalRegistry(tmp_path / "other") as other:
        target = f"{other.address}/mirror"
        report = copy_image(_client(world.staging_repo), _client(target), sha, digest)

        assert report.mounted == 0
        assert report.copied >= 2
        assert report.bytes_copied > 500_000  # busybox and the app: real bytes moved
        assert report.tags == [sha, short_sha(sha)]
        assert f"{digest.replace(':', '-')}.sig" in report.signatures
        assert tag_digest(other, "mirror", sha) == digest
        again = copy_image(_client(world.staging_repo), _client(target), sha, digest)
        assert (again.copied, again.mounted, again.tags, again.signatures) == (0, 0, [], [])
        verify = subprocess.run(
            [
                tool_path("cosign"),
                "verify",
                "--key",
                str(world.public_key),
                "--insecure-ignore-tlog",
                "--allow-insecure-registry",
                f"{target}@{digest}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert verify.returncode == 0, verify.stderr
        print(report.human_line())


def test_a_target_tag_naming_another_digest_is_never_overwritten(
    world: World, tmp_path: Path
) -> None:
    a, b = world.shas
    with LocalRegistry(tmp_path / "other") as other:
        target = f"{other.address}/mirror"
        copy_image(_client(world.staging_repo), _client(target), a, world.built[a])
        # Someone tags B's SHA with A's image in the target repository.
        manifest = _client(target).manifest(world.built[a])
        assert manifest is not None
        _client(target).put_manifest(b, manifest)

        with pytest.raises(DigestMismatch, match="never overwritten \\(FR-009\\)"):
            copy_image(_client(world.staging_repo), _client(target), b, world.built[b])

        assert tag_digest(other, "mirror", b) == world.built[a]
        assert _client(target).manifest_digest(short_sha(b)) is None


def test_the_target_verification_policy_refuses_before_anything_is_copied(
    world: World, tmp_path: Path
) -> None:
    """Production trusts only another key (issue 25's ``verify:`` block): the promotion goes
    through the deploy path's verification and is refused, and the canonical repository never
    got the image (the policy is checked before the copy)."""
    _key, other_pub = generate_key_pair(tmp_path / "other-key", "other-password")
    s = _setup(world, tmp_path)
    config = json.loads(s.config.read_text())
    config["shatag"]["environments"]["production"]["verify"] = {
        "signature": "required",
        "signers": [{"key": str(other_pub)}],
    }
    s.config.write_text(json.dumps(config))
    sha = world.side_sha  # never promoted by another test: absent from the canonical repository
    _git(world.app_path, "branch", "-f", "promote-policy-test", sha)  # reachable from no main
    config["shatag"]["main_branches"] = ["main", "promote-policy-test"]
    s.config.write_text(json.dumps(config))
    _deploy_staging(s, sha)

    result = s.run("promote", "--to=production")

    assert result.returncode == 1
    assert "error: SIGNATURE_REQUIRED:" in result.stderr
    assert world.canonical_tag(sha) is None
    assert not s.production_file.exists()
    assert s.history("production") == []
    print(result.stderr.strip())
