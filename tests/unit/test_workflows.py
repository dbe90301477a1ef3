"""The GitHub workflows call the same tasks an operator runs, one line per step (seed T016-T018).

- every ``run:`` step is one ``inv``/``nox`` call or one allow-listed setup line; no shell logic;
- only allow-listed actions are used (no docker build/push action anywhere);
- rollback has no build step and read-only registry access (FR-007, FR-013);
- deploy never references a floating tag and takes the SHA only from its input (FR-005);
- every ``inv`` task and flag a workflow names exists in the real collection.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.invoke_commands import find_inv_commands, load_tasks, problems

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
NAMES = ("api-build.yml", "api-deploy.yml", "api-rollback.yml", "ci.yml")

# One command per step; setup lines are the only exceptions and each is a single program call.
_SETUP_LINES = re.compile(
    r"python -m pip install (\.|nox)|ci/install-tools\.sh|ci/setup\.sh|\.ci/run"
)
_TASK_LINE = re.compile(r"(inv|nox) [^;&|`<>\n]+")
_ALLOWED_ACTIONS = (
    "actions/checkout@",
    "actions/setup-python@",
    "actions/upload-artifact@",
    "docker/login-action@",
)
_BUILD_WORDS = re.compile(r"\binv build\b|\bdocker (image )?(build|push)\b|\bbuildx\b|\bnox\b")
_FLOATING = re.compile(r"\b(latest|stable|edge|nightly)\b|:v?\d+(\.\d+)+\b|:main\b|:master\b")
_SHA_TAG = re.compile(r"[0-9a-f]{40}")


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict), name
    # YAML 1.1 reads the key `on` as the boolean True.
    if True in data:
        data["on"] = data.pop(True)
    return data


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def run_lines(workflow: dict[str, Any]) -> list[str]:
    return [str(step["run"]) for step in steps(workflow) if "run" in step]


def strings(node: Any, *, skip_keys: frozenset[str] = frozenset()) -> list[str]:
    """Every string value in a parsed workflow (keys in ``skip_keys`` left out)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [
            s
            for k, v in node.items()
            if k not in skip_keys
            for s in [*strings(k), *strings(v, skip_keys=skip_keys)]
        ]
    if isinstance(node, list):
        return [s for item in node for s in strings(item, skip_keys=skip_keys)]
    return []


@pytest.mark.parametrize("name", NAMES)
def test_workflow_exists_and_parses(name: str) -> None:
    workflow = load(name)
    assert workflow["jobs"], name
    assert "permissions" in workflow, f"{name}: set least-privilege permissions explicitly"


@pytest.mark.parametrize("name", NAMES)
def test_every_run_step_is_one_task_or_setup_line(name: str) -> None:
    for line in run_lines(load(name)):
        assert "\n" not in line.strip(), f"{name}: multi-line run step {line!r}"
        assert "${{" not in line, f"{name}: expressions go through env:, not the script: {line!r}"
        assert "$(" not in line, f"{name}: no command substitution: {line!r}"
        assert _SETUP_LINES.fullmatch(line.strip()) or _TASK_LINE.fullmatch(line.strip()), (
            f"{name}: {line!r} is not a single inv/nox call or allow-listed setup line"
        )


@pytest.mark.parametrize("name", NAMES)
def test_only_allow_listed_actions(name: str) -> None:
    for step in steps(load(name)):
        if "uses" in step:
            assert str(step["uses"]).startswith(_ALLOWED_ACTIONS), f"{name}: {step['uses']}"


def test_build_runs_on_every_branch_with_the_documented_permissions() -> None:
    workflow = load("api-build.yml")
    push = workflow["on"]["push"]
    assert push.get("branches") in (None, ["**"]), "FR-001/FR-016: every branch builds"
    assert "branches-ignore" not in push
    assert workflow["permissions"] == {
        "contents": "read",
        "packages": "write",
        "id-token": "write",
    }
    lines = run_lines(workflow)
    builds = [line for line in lines if line.startswith("inv build")]
    assert builds == ['inv build --sha="$IMAGE_SHA" --branch="$BRANCH"'], lines
    env = workflow["jobs"]["build"]["env"]
    # PR events carry a temporary merge commit in github.sha; the head SHA is the real one.
    assert env["IMAGE_SHA"] == "${{ github.event.pull_request.head.sha || github.sha }}"
    assert "github.ref_name" in env["BRANCH"]
    # Setup comes before the build, the artifact upload after it.
    order = [step.get("uses", step.get("run", "")) for step in steps(workflow)]
    assert order.index("python -m pip install .") < order.index(builds[0])
    assert order.index("ci/install-tools.sh") < order.index(builds[0])
    upload = next(s for s in steps(workflow) if str(s.get("uses", "")).startswith("actions/upload"))
    assert order.index(builds[0]) < order.index(upload["uses"])
    assert "IMAGE_SHA" in upload["with"]["name"], "artifact is named with the SHA"
    assert "build/metadata/" in upload["with"]["path"]


@pytest.mark.parametrize(
    ("name", "task"), [("api-deploy.yml", "deploy"), ("api-rollback.yml", "rollback")]
)
def test_deploy_and_rollback_take_the_sha_from_a_required_input(name: str, task: str) -> None:
    workflow = load(name)
    inputs = workflow["on"]["workflow_dispatch"]["inputs"]
    assert inputs["image_sha"]["required"] is True
    assert "default" not in inputs["image_sha"], "no default SHA: never a floating choice"
    # contents: write for the git ledger's refs only (issue 15); the registry stays read-only.
    assert workflow["permissions"] == {"contents": "write", "packages": "read"}
    (job,) = workflow["jobs"].values()
    assert job["env"]["IMAGE_SHA"] == "${{ inputs.image_sha }}"
    tasks = [line for line in run_lines(workflow) if line.startswith("inv ")]
    assert tasks == [f'inv {task} --sha="$IMAGE_SHA" --env="$DEPLOY_ENV"']


def test_rollback_has_no_build_step() -> None:
    workflow = load("api-rollback.yml")
    for line in run_lines(workflow):
        assert not _BUILD_WORDS.search(line), f"rollback must not build or push: {line!r}"
    for step in steps(workflow):
        uses = str(step.get("uses", ""))
        assert "build-push-action" not in uses
        assert "setup-buildx" not in uses
        assert "upload-artifact" not in uses
    for job in workflow["jobs"].values():
        assert "permissions" not in job, "job-level permissions could widen the read-only scope"
    assert workflow["permissions"]["packages"] == "read", "rollback never writes the registry"


@pytest.mark.parametrize("name", ["api-deploy.yml", "api-rollback.yml"])
def test_deploy_and_rollback_keep_their_state_in_the_git_ledger(name: str) -> None:
    """Issue 15: a fresh runner has no state_dir; history, lock and journal live on
    refs/shatag*/ of the repository, which the job's token may push."""
    workflow = load(name)
    (job,) = workflow["jobs"].values()
    assert job["env"]["INVOKE_SHATAG_STATE_BACKEND"] == "git"
    assert job["env"]["INVOKE_SHATAG_STATE_REMOTE"] == "origin"
    assert workflow["permissions"]["contents"] == "write"
    checkout = next(s for s in steps(workflow) if str(s.get("uses", "")).startswith("actions/che"))
    assert checkout["with"]["persist-credentials"] is True, "the token must stay to push refs"


def test_deploy_never_references_a_floating_tag() -> None:
    workflow = load("api-deploy.yml")
    # Action versions (`uses: x@v4`) and runner labels are not image references.
    for text in strings(workflow, skip_keys=frozenset({"uses", "description", "name", "runs-on"})):
        assert not _FLOATING.search(text), f"floating tag in deploy workflow: {text!r}"
        for ref_tag in re.findall(r"[\w.-]+/[\w./-]+:([\w][\w.-]*)", text):
            assert _SHA_TAG.fullmatch(ref_tag), f"non-SHA image tag {ref_tag!r} in {text!r}"
    for line in run_lines(workflow):
        assert "--tag" not in line
        assert not _BUILD_WORDS.search(line), f"deploy must not build: {line!r}"


def test_deploy_and_rollback_share_one_lock_per_environment() -> None:
    deploy = load("api-deploy.yml")["concurrency"]
    rollback = load("api-rollback.yml")["concurrency"]
    assert deploy == rollback
    assert "inputs.environment" in deploy["group"]
    assert deploy["cancel-in-progress"] is False


def test_ci_runs_the_readme_test_command() -> None:
    lines = run_lines(load("ci.yml"))
    assert lines[-1] == ".ci/run"


def test_workflow_inv_commands_exist_in_the_task_collection() -> None:
    tasks = load_tasks()
    found: list[str] = []
    for name in NAMES:
        for line in run_lines(load(name)):
            for command in find_inv_commands(line, source=name):
                found.extend(problems(command, tasks))
    assert not found, "\n".join(found)
