"""GitOps write-back (issue 23, item 3) with real git: a bare remote, clones that are stale
(older than the branch), two of them racing; the kustomization rendered by the real
``kubectl kustomize`` from a fresh clone of what was pushed.

The targets run their real life cycle (prepare every target, apply in order, restore what was
applied when one fails, else commit: what ``shatag.app.deploy`` does), on files in real clones.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from shatag.core import ImageRef, parse_repository
from shatag.errors import ConfigError, DeployFailed
from shatag.targets import Target, TargetContext, make_target, parse_target, recover
from shatag.targets.files import merge_shared_files
from shatag.targets.writeback import PushedFile
from tests.conftest import TOOLS_BIN

REPO = parse_repository("registry.example:5000/api")


def image(n: int) -> ImageRef:
    return ImageRef(REPO, f"{n:040x}", f"sha256:{n:064x}")


DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
        - name: api
          image: api
"""
KUSTOMIZATION = """\
# production overlay
resources:
  - ../../base
images:
  - name: api
    newName: ghcr.io/example/api   # written by shatag
    newTag: latest
"""
VALUES = """\
replicaCount: 2
image:
  repository: ghcr.io/example/api  # written by shatag
  tag: "latest"
"""


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=60, check=True,
        env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
             "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin", "HOME": str(cwd)},
    )  # fmt: skip
    return out.stdout


def kubectl() -> str | None:
    bundled = TOOLS_BIN / "kubectl"
    return str(bundled) if bundled.exists() else shutil.which("kubectl")


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A bare GitOps repository whose ``main`` holds a base, an overlay and a values file."""
    bare = tmp_path / "gitops.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    seed = tmp_path / "seed"
    subprocess.run(["git", "clone", "-q", str(bare), str(seed)], check=True, capture_output=True)
    git(seed, "checkout", "-q", "-b", "main")
    (seed / "base").mkdir()
    (seed / "base" / "deployment.yaml").write_text(DEPLOYMENT)
    (seed / "base" / "kustomization.yaml").write_text("resources:\n  - deployment.yaml\n")
    (seed / "overlays" / "prod").mkdir(parents=True)
    (seed / "overlays" / "prod" / "kustomization.yaml").write_text(KUSTOMIZATION)
    (seed / "values.yaml").write_text(VALUES)
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "seed")
    git(seed, "push", "-q", "origin", "main")
    return bare


def clone(remote: Path, where: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(remote), str(where)], check=True)
    return where


def advance(remote: Path, tmp_path: Path, name: str) -> str:
    """Someone else pushes to main (replicaCount changes): every older clone is now stale."""
    other = clone(remote, tmp_path / f"other-{name}")
    values = other / "values.yaml"
    values.write_text(values.read_text().replace("replicaCount: 2", f"replicaCount: {name}"))
    git(other, "commit", "-q", "-am", f"scale to {name}")
    git(other, "push", "-q", "origin", "main")
    return git(other, "rev-parse", "HEAD").strip()


def targets_of(checkout: Path, *, env_name: str = "production", **extra: object) -> list[Target]:
    ctx = TargetContext(env_name=env_name)
    raws = [
        {"kind": "kustomize", "path": str(checkout / "overlays/prod/kustomization.yaml"),
         "name": "api", "git_push": True, **extra},
        {"kind": "helm_values", "path": str(checkout / "values.yaml"), "git_push": True},
    ]  # fmt: skip
    return merge_shared_files([make_target(parse_target(f"t{i}", r), ctx) for i, r in
                               enumerate(raws)])  # fmt: skip


def deploy(targets: list[Target], img: ImageRef) -> None:
    """The targets' life cycle as the deploy use case drives it."""
    for target in targets:
        target.prepare(img)
    applied: list[Target] = []
    try:
        for target in targets:
            applied.append(target)
            target.apply()
    except BaseException:
        for target in reversed(applied):
            target.restore()
        raise
    for target in targets:
        target.commit()


def remote_file(remote: Path, rel: str, ref: str = "main") -> str:
    return git(remote, "show", f"{ref}:{rel}")


def rendered(remote: Path, tmp_path: Path, name: str) -> str:
    fresh = clone(remote, tmp_path / name)
    binary = kubectl()
    assert binary is not None
    out = subprocess.run([binary, "kustomize", str(fresh / "overlays/prod")], capture_output=True,
                         text=True, timeout=60, check=True).stdout  # fmt: skip
    deployment = next(d for d in YAML(typ="safe").load_all(out) if d["kind"] == "Deployment")
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


needs_kubectl = pytest.mark.skipif(kubectl() is None, reason="kubectl missing: not rendered")


@needs_kubectl
def test_a_stale_clone_pushes_one_commit_on_the_remote_head(remote: Path, tmp_path: Path) -> None:
    stale = clone(remote, tmp_path / "runner")
    stale_head = git(stale, "rev-parse", "HEAD").strip()
    moved = advance(remote, tmp_path, "5")
    targets = targets_of(stale)
    assert [type(t) for t in targets] == [PushedFile, PushedFile]
    assert len({id(t.group) for t in targets if isinstance(t, PushedFile)}) == 1, "one commit"
    img = image(1)
    deploy(targets, img)

    assert git(remote, "rev-parse", "main~1").strip() == moved, "on the remote head, no force"
    message = git(remote, "log", "-1", "--format=%B", "main")
    assert message.startswith(f"shatag: production -> {img.sha[:12]} ({img.digest[:19]})")
    assert f"sha: {img.sha}" in message
    assert f"digest: {img.digest}" in message
    changed = git(remote, "diff", "--name-only", "main~1", "main").split()
    assert changed == ["overlays/prod/kustomization.yaml", "values.yaml"]
    values = remote_file(remote, "values.yaml")
    assert values == (
        "replicaCount: 5\nimage:\n"
        f'  repository: {REPO}  # written by shatag\n  tag: "{img.sha}@{img.digest}"\n'
    ), "the other commit's change is kept; only the image lines change"
    assert rendered(remote, tmp_path, "fresh") == img.pinned
    assert (stale / "values.yaml").read_text() == values, "the local file holds what was pushed"
    assert git(stale, "rev-parse", "HEAD").strip() == stale_head, "the clone's HEAD untouched"

    deploy(targets_of(stale), img)  # the branch already holds it: no new commit
    assert git(remote, "rev-list", "--count", "main").strip() == "3"


@needs_kubectl
def test_two_stale_clones_racing_both_land_without_force(remote: Path, tmp_path: Path) -> None:
    clones = [clone(remote, tmp_path / f"runner-{n}") for n in range(2)]
    advance(remote, tmp_path, "3")  # both are stale now
    rounds = 4
    pushes = []
    for r in range(rounds):
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []
        groups = [targets_of(c, env_name=f"env{n}") for n, c in enumerate(clones)]

        def run(n: int, groups: list[list[Target]] = groups, barrier: threading.Barrier = barrier,
                errors: list[BaseException] = errors, r: int = r) -> None:  # fmt: skip
            try:
                targets = groups[n]
                for target in targets:
                    target.prepare(image(2 + 2 * r + n))
                barrier.wait()  # both prepared on the same head: one push must lose
                deploy(targets, image(2 + 2 * r + n))
            except BaseException as exc:  # noqa: BLE001 -- reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        for group in groups:
            assert isinstance(group[0], PushedFile)
            pushes.append(group[0].group.clone.pushes)
    log = git(remote, "log", "--format=%s", "--first-parent", "main").splitlines()
    assert len(log) == 2 + 2 * rounds, "every deploy is one commit, none overwritten"
    assert sum(1 for s in log if s.startswith("shatag: env0")) == rounds
    assert sum(1 for s in log if s.startswith("shatag: env1")) == rounds
    assert max(pushes) >= 2, f"a push lost the race and was retried: {pushes}"
    last = log[0].split()[3]
    assert rendered(remote, tmp_path, "fresh").startswith(f"{REPO}:{last}")
    assert "replicaCount: 3" in remote_file(remote, "values.yaml")


@needs_kubectl
def test_a_later_failure_takes_the_push_back_and_a_refused_push_changes_nothing(
    remote: Path, tmp_path: Path
) -> None:
    runner = clone(remote, tmp_path / "runner")
    deploy(targets_of(runner, renderer="none"), image(1))
    before = git(remote, "rev-parse", "main").strip()
    # A later target that fails for real, in its apply: a kustomization (not pushed) whose
    # resources do not use the image name "api" -- kubectl kustomize renders no pinned image.
    other = tmp_path / "other"
    other.mkdir()
    (other / "deployment.yaml").write_text(DEPLOYMENT.replace("image: api", "image: web"))
    missed = "resources:\n  - deployment.yaml\n"
    (other / "kustomization.yaml").write_text(missed)
    late = make_target(
        parse_target("t9", {"kind": "kustomize", "path": str(other / "kustomization.yaml"),
                            "name": "api", "renderer": kubectl()}),
        TargetContext(),
    )  # fmt: skip
    targets = [*targets_of(runner, renderer="none"), late]
    with pytest.raises(ConfigError) as refused:
        deploy(targets, image(2))
    assert str(refused.value) == (
        f"{late.label}: refused: kubectl kustomize renders no container image {image(2).pinned} "
        "-- no resource uses the image name 'api' (it renders web); the file is left as it was"
    )
    assert (other / "kustomization.yaml").read_text() == missed, "nothing written"
    subjects = git(remote, "log", "--format=%s", f"{before}..main").splitlines()
    assert subjects == [
        "shatag: production: take back the failed deploy's edit",
        f"shatag: production -> {image(2).sha[:12]} ({image(2).digest[:19]})",
    ]
    assert git(remote, "diff", before, "main") == "", "the branch is as it was"
    assert (runner / "values.yaml").read_text() == remote_file(remote, "values.yaml")

    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'branch is protected' >&2\nexit 1\n")
    hook.chmod(0o755)
    local = (runner / "values.yaml").read_text()
    head = git(remote, "rev-parse", "main").strip()
    with pytest.raises(DeployFailed, match=r"git push to origin/main failed: .*protected"):
        deploy(targets_of(runner, renderer="none"), image(3))
    assert git(remote, "rev-parse", "main").strip() == head
    assert (runner / "values.yaml").read_text() == local, "the local file is put back"


def test_a_crash_after_the_push_is_taken_back_from_the_journal(
    remote: Path, tmp_path: Path
) -> None:
    runner = clone(remote, tmp_path / "runner")
    before = git(remote, "rev-parse", "main").strip()
    targets = targets_of(runner, renderer="none")
    for target in targets:
        target.prepare(image(4))
    entries = [t.journal() for t in targets]  # what the deploy stores before any apply
    for target in targets:
        target.apply()  # pushed; then the runner is killed: no commit(), no restore()
    assert git(remote, "rev-parse", "main~1").strip() == before
    # The next run recovers each entry its own target claims (as shatag.app.deploy does).
    specs = [parse_target("t", {"kind": e["kind"], "path": e["path"], "name": "api",
                                "git_push": True} if e["kind"] == "kustomize" else
                          {"kind": e["kind"], "path": e["path"], "git_push": True})
             for e in entries]  # fmt: skip
    assert all(spec.matches_journal(e) for spec, e in zip(specs, entries, strict=True))
    other_remote = parse_target("t", {"kind": "helm_values", "path": entries[1]["path"],
                                      "git_push": True, "git_remote": "upstream"})  # fmt: skip
    assert not other_remote.matches_journal(entries[1]), "pushed elsewhere: not this target's"
    done = [recover(e, TargetContext(env_name="production")) for e in reversed(entries)]
    assert "pushed the previous values.yaml to origin/main" in done[0]
    assert "pushed the previous overlays/prod/kustomization.yaml to origin/main" in done[1]
    assert git(remote, "diff", before, "main") == ""
    assert (runner / "values.yaml").read_text() == VALUES


def test_write_back_needs_a_clone_and_a_branch(remote: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "values.yaml").write_text(VALUES)
    spec = parse_target("t", {"kind": "helm_values", "path": str(plain / "values.yaml"),
                              "git_push": True})  # fmt: skip
    with pytest.raises(ConfigError, match=r"needs .* to be in a git clone"):
        merge_shared_files([make_target(spec, TargetContext())])
    detached = clone(remote, tmp_path / "detached")
    git(detached, "checkout", "-q", "--detach")
    with pytest.raises(ConfigError, match=r"detached HEAD.*set git_branch"):
        targets_of(detached)
