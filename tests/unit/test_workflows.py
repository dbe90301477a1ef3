"""The GitHub workflows call the same tasks an operator runs, one line per step (seed T016-T018).

- api-build/deploy/rollback run their task through the repository's own action (``uses: ./``,
  ``action.yml``, issue 13 item 7); the action pins the third-party actions it uses by commit;
- every ``run:`` step is one ``inv``/``nox`` call or one allow-listed setup line; no shell logic;
- only allow-listed actions are used (no docker build/push action anywhere);
- rollback has no build step and read-only registry access (FR-007, FR-013);
- deploy never references a floating tag and takes the SHA only from its input (FR-005);
- every ``inv`` task and flag a workflow names exists in the real collection.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from shatag._action import TASKS, action_argv
from tests.unit.invoke_commands import InvCommand, find_inv_commands, load_tasks, problems

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
ACTION = ROOT / "action.yml"
NAMES = ("api-build.yml", "api-deploy.yml", "api-rollback.yml", "api-promote.yml", "ci.yml")

# One command per step; setup lines are the only exceptions and each is a single program call.
_SETUP_LINES = re.compile(
    r"python -m pip install (\.|nox)|ci/install-tools\.sh|ci/setup\.sh|\.ci/run"
)
_TASK_LINE = re.compile(r"(inv|nox) [^;&|`<>\n]+")
_ALLOWED_ACTIONS = (
    "./",  # the repository's own action.yml
    "actions/checkout@",
    "actions/setup-python@",
    "actions/upload-artifact@",
    "docker/login-action@",
)
_BUILD_WORDS = re.compile(r"\binv build\b|\bdocker (image )?(build|push)\b|\bbuildx\b|\bnox\b")
_FLOATING = re.compile(r"\b(latest|stable|edge|nightly)\b|:v?\d+(\.\d+)+\b|:main\b|:master\b")
_SHA_TAG = re.compile(r"[0-9a-f]{40}")
_EXPRESSION = re.compile(r"\$\{\{[^}]*\}\}")


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


def action_steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    """The steps that run shatag through the repository's own action (``uses: ./``)."""
    return [step for step in steps(workflow) if step.get("uses") == "./"]


def action_command(step: dict[str, Any]) -> str:
    """The task line an action step runs (``task`` + ``args``), as written in the workflow."""
    with_ = step.get("with") or {}
    return " ".join(part for part in (str(with_["task"]), str(with_.get("args", ""))) if part)


def load_action() -> dict[str, Any]:
    data = yaml.safe_load(ACTION.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


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
    (build,) = action_steps(workflow)
    assert build["with"]["task"] == "build"
    assert build["with"]["args"] == "--sha=${{ env.IMAGE_SHA }} --branch=${{ env.BRANCH }}"
    assert not any(line.startswith("inv build") for line in run_lines(workflow))
    env = workflow["jobs"]["build"]["env"]
    # PR events carry a temporary merge commit in github.sha; the head SHA is the real one.
    assert env["IMAGE_SHA"] == "${{ github.event.pull_request.head.sha || github.sha }}"
    assert "github.ref_name" in env["BRANCH"]
    # Checkout and login come before the build, the artifact upload after it.
    order = [str(step.get("uses", step.get("run", ""))) for step in steps(workflow)]
    assert order.index("actions/checkout@v4") < order.index("./")
    assert order.index("docker/login-action@v3") < order.index("./")
    upload = next(s for s in steps(workflow) if str(s.get("uses", "")).startswith("actions/upload"))
    assert order.index("./") < order.index(upload["uses"])
    assert "outputs.image_sha" in upload["with"]["name"], "artifact is named with the SHA"
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
    assert [action_command(step) for step in action_steps(workflow)] == [
        f"{task} --sha=${{{{ env.IMAGE_SHA }}}} --env=${{{{ env.DEPLOY_ENV }}}}"
    ]
    assert not any(line.startswith("inv ") for line in run_lines(workflow))


def test_rollback_has_no_build_step() -> None:
    workflow = load("api-rollback.yml")
    for line in [*run_lines(workflow), *map(action_command, action_steps(workflow))]:
        assert not _BUILD_WORDS.search(f"inv {line}"), f"rollback must not build or push: {line!r}"
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
    for line in [*run_lines(workflow), *map(action_command, action_steps(workflow))]:
        assert "--tag" not in line
        assert not _BUILD_WORDS.search(f"inv {line}"), f"deploy must not build: {line!r}"


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
        workflow = load(name)
        for line in run_lines(workflow):
            for command in find_inv_commands(line, source=name):
                found.extend(problems(command, tasks))
        for step in action_steps(workflow):
            line = action_command(step)
            argv = action_argv(
                {
                    "SHATAG_ACTION_TASK": str(step["with"]["task"]),
                    "SHATAG_ACTION_ARGS": _EXPRESSION.sub("VALUE", str(step["with"].get("args"))),
                }
            )
            found.extend(problems(InvCommand(source=name, line=line, argv=argv[1:]), tasks))
    assert not found, "\n".join(found)


# --- action.yml (issue 13, item 7) ---------------------------------------------------------


def test_action_is_composite_with_the_documented_inputs_and_outputs() -> None:
    action = load_action()
    assert action["runs"]["using"] == "composite"
    inputs = action["inputs"]
    assert inputs["task"]["required"] is True
    assert {"task", "args", "config"} <= set(inputs)
    assert {"cosign-version", "syft-version", "python-version"} <= set(inputs)
    for name, spec in inputs.items():
        assert spec.get("description"), f"input {name} needs a description"
    # Every output a task writes to $GITHUB_OUTPUT is the step's output.
    for name in ("image_ref", "image_digest", "image_sha", "repository", "previous_sha"):
        assert action["outputs"][name]["value"] == f"${{{{ steps.task.outputs.{name} }}}}"
    for task in TASKS:
        assert task in inputs["task"]["description"]


def test_action_pins_third_party_actions_by_commit() -> None:
    uses = [str(step["uses"]) for step in load_action()["runs"]["steps"] if "uses" in step]
    names = {use.split("@")[0] for use in uses}
    assert {"sigstore/cosign-installer", "anchore/sbom-action/download-syft"} <= names
    for use in uses:
        assert re.fullmatch(r"[\w./-]+@[0-9a-f]{40}", use), f"{use}: pin a full commit SHA"
    runs = [str(step.get("run", "")) for step in load_action()["runs"]["steps"]]
    assert not any("go install" in run for run in runs), "released binaries, never built per run"


def test_action_inputs_reach_scripts_only_through_the_environment() -> None:
    for step in load_action()["runs"]["steps"]:
        if "run" in step:
            assert "${{" not in str(step["run"]), f"expression spliced into a script: {step}"
            assert step["shell"] == "bash"
    (task,) = [s for s in load_action()["runs"]["steps"] if s.get("id") == "task"]
    assert task["env"]["SHATAG_ACTION_ARGS"] == "${{ inputs.args }}"
    assert task["run"] == "python3 -m shatag._action"


def test_action_tool_versions_match_the_pinned_test_tools() -> None:
    """The action installs the cosign and syft versions the test suite runs against."""
    script = (ROOT / "ci" / "install-tools.sh").read_text(encoding="utf-8")
    inputs = load_action()["inputs"]
    for tool, key in (("COSIGN", "cosign-version"), ("SYFT", "syft-version")):
        match = re.search(rf'{tool}_VERSION="\$\{{{tool}_VERSION:-(v[\d.]+)\}}"', script)
        assert match, f"{tool}_VERSION pin not found in ci/install-tools.sh"
        assert inputs[key]["default"] == match.group(1), key


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("", ["shatag", "build"]),
        ("--sha=abc --branch=main", ["shatag", "build", "--sha=abc", "--branch=main"]),
        ("--sha='a b'", ["shatag", "build", "--sha=a b"]),
        ("--sha=$(id) ; rm -rf /", ["shatag", "build", "--sha=$(id)", ";", "rm", "-rf", "/"]),
    ],
)
def test_action_args_are_split_into_words_never_run_by_a_shell(
    args: str, expected: list[str]
) -> None:
    assert action_argv({"SHATAG_ACTION_TASK": "build", "SHATAG_ACTION_ARGS": args}) == expected


@pytest.mark.parametrize(
    ("task", "args"), [("publish", ""), ("", ""), ("build", "--sha='unclosed")]
)
def test_action_refuses_unknown_tasks_and_unsplittable_args(task: str, args: str) -> None:
    from shatag.errors import InvalidInput

    with pytest.raises(InvalidInput):
        action_argv({"SHATAG_ACTION_TASK": task, "SHATAG_ACTION_ARGS": args})


@given(st.lists(st.text(st.characters(exclude_categories=["Cs"]), min_size=1), max_size=6))
def test_action_args_round_trip_any_words(words: list[str]) -> None:
    """Whatever words a workflow quotes into ``args``, the task gets exactly those words."""
    argv = action_argv({"SHATAG_ACTION_TASK": "history", "SHATAG_ACTION_ARGS": shlex.join(words)})
    assert argv == ["shatag", "history", *words]


def test_the_action_entry_point_runs_one_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m shatag._action`` as the composite step runs it: inputs from the environment,
    the syft directory first on PATH, the task's JSON on stdout."""
    from shatag import _action

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INVOKE_RUNTIME_CONFIG", raising=False)
    monkeypatch.setenv("SHATAG_ACTION_TASK", "history")
    monkeypatch.setenv("SHATAG_ACTION_ARGS", "--json --limit=5")
    monkeypatch.setenv("SHATAG_ACTION_SYFT", "/opt/hostedtoolcache/syft/1.57.1/x64/syft")
    monkeypatch.setenv("PATH", os.environ["PATH"])  # restored after the test
    _action.main()
    assert os.environ["PATH"].startswith("/opt/hostedtoolcache/syft/1.57.1/x64" + os.pathsep)
    assert "shatag: history --json --limit=5" in capsys.readouterr().err
    monkeypatch.setenv("SHATAG_ACTION_TASK", "publish")
    with pytest.raises(SystemExit) as refused:
        _action.main()
    assert refused.value.code == 1
    assert "error: INVALID_INPUT: action input task must be one of" in capsys.readouterr().err
