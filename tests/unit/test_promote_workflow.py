"""``.github/workflows/api-promote.yml`` (issue 26, item 6): one ``promote`` step, in the GitHub
``production`` environment (its required reviewers are the human approval), on the shared git
ledger, serialised with deploy and rollback of production."""

from __future__ import annotations

from shatag._action import action_argv
from tests.unit.test_workflows import action_command, action_steps, load, run_lines, steps


def test_promote_is_one_promote_step_in_the_production_environment() -> None:
    workflow = load("api-promote.yml")
    inputs = workflow["on"]["workflow_dispatch"]["inputs"]
    assert inputs["image_sha"]["required"] is False  # empty: what staging serves now
    (job,) = workflow["jobs"].values()
    assert job["environment"] == "production"
    assert job["env"]["IMAGE_SHA"] == "${{ inputs.image_sha }}"
    assert job["env"]["INVOKE_SHATAG_STATE_BACKEND"] == "git"
    (step,) = action_steps(workflow)
    assert step["with"]["task"] == "promote"
    assert action_command(step) == "promote --to=production ${{ env.SHA_FLAG }}"
    assert not run_lines(workflow), "no shell step: the action is the one real step"
    checkout = next(s for s in steps(workflow) if str(s.get("uses", "")).startswith("actions/che"))
    assert checkout["with"]["fetch-depth"] == 0, "the main-line gate needs main's history"
    assert checkout["with"]["persist-credentials"] is True


def test_promote_writes_the_registry_and_shares_the_deploy_lock_of_production() -> None:
    workflow = load("api-promote.yml")
    assert workflow["permissions"] == {"contents": "write", "packages": "write"}
    deploy = load("api-deploy.yml")["concurrency"]["group"]
    promote = workflow["concurrency"]
    assert promote["group"] == deploy.replace("${{ inputs.environment }}", "production")
    assert promote["cancel-in-progress"] is False


def test_the_action_runs_promote_with_the_given_sha() -> None:
    sha = "a" * 40
    argv = action_argv(
        {"SHATAG_ACTION_TASK": "promote", "SHATAG_ACTION_ARGS": f"--to=production --sha={sha}"}
    )
    assert argv == ["shatag", "promote", "--to=production", f"--sha={sha}"]
