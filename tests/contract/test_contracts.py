"""The contracts in specs/003-tag-api-container/contracts are enforced against the real tasks.

Static half: every contract is well formed, its JSON Schemas are valid draft 2020-12, its
failure codes are real error codes and match the failure schema, and the flags it documents are
exactly the flags of the real task (both directions: a new flag without a contract fails).

Dynamic half: the JSON lines the real ``inv build/deploy/rollback/verify`` print against a real
registry validate against the contracts' schemas, and every failure code a contract lists is
produced here by a real failing invocation (a code without a scenario fails the suite).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from jsonschema import Draft202012Validator

from shatag.errors import ALL_CODES
from tests.contract.conftest import (
    CONTRACT_NAMES,
    ROOT,
    InvResult,
    World,
    load_contract,
    new_sha,
)

REQUIRED_SECTIONS = ("contract", "version", "requirements", "inputs", "outputs", "failure_codes")
_FORMAT_CHECKER = Draft202012Validator.FORMAT_CHECKER
_FLAG_RE = re.compile(r"--[a-z][a-z0-9-]*")


def validate(schema: dict[str, Any], record: dict[str, Any]) -> None:
    Draft202012Validator(schema, format_checker=_FORMAT_CHECKER).validate(record)


def schema_of(contract: str, kind: str) -> dict[str, Any]:
    schema = load_contract(contract)["log_line"][kind]
    assert isinstance(schema, dict)
    return schema


# ---------------------------------------------------------------------------------------------
# Static: the contract files themselves
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_contract_has_inputs_outputs_failure_codes_and_schemas(name: str) -> None:
    contract = load_contract(name)
    assert contract["contract"] == name
    for section in REQUIRED_SECTIONS:
        assert section in contract, f"{name}: missing {section}"
    assert set(contract["log_line"]) >= {"success", "failure"}, name
    assert contract.get("applies_to") or contract.get("embedded_in"), f"{name}: governs what?"
    if contract.get("embedded_in"):
        assert "embedded" in contract["log_line"], f"{name}: embedded_in needs an embedded schema"


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_log_line_schemas_are_valid_draft_2020_12(name: str) -> None:
    for kind, schema in load_contract(name)["log_line"].items():
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema", (name, kind)
        Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_failure_codes_are_real_codes_and_match_the_failure_schema(name: str) -> None:
    contract = load_contract(name)
    listed = [entry["code"] for entry in contract["failure_codes"]]
    assert listed, f"{name}: a contract names how it fails"
    assert len(listed) == len(set(listed)), f"{name}: duplicate codes"
    assert set(listed) <= set(ALL_CODES), (
        f"{name}: not in shatag.errors: {set(listed) - set(ALL_CODES)}"
    )
    for entry in contract["failure_codes"]:
        assert entry.get("when"), f"{name}: say when {entry['code']} happens"
    enum = contract["log_line"]["failure"]["properties"]["error_code"]["enum"]
    assert sorted(enum) == sorted(listed), f"{name}: failure_codes and the failure schema differ"


def _task_flags(task_name: str) -> set[str]:
    from invoke.collection import Collection

    import shatag.tasks

    collection = shatag.tasks.ns
    assert isinstance(collection, Collection)
    assert task_name in collection.task_names, f"no task {task_name!r} in shatag.tasks.ns"
    flags: set[str] = set()
    for arg in collection[task_name].get_arguments():
        flags.add("--" + arg.name.replace("_", "-"))
    return flags


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_documented_flags_are_exactly_the_task_flags(name: str) -> None:
    contract = load_contract(name)
    task = contract.get("task")
    if task is None:
        assert "command" not in contract, f"{name}: a command needs its task name"
        return
    assert contract["command"].startswith(f"inv {task}"), name
    documented = {entry["flag"] for entry in contract["inputs"]}
    in_command = set(_FLAG_RE.findall(contract["command"]))
    real = _task_flags(task)
    assert documented == real, f"{name}: contract inputs {documented} vs task flags {real}"
    assert in_command == real, f"{name}: command line {in_command} vs task flags {real}"


def test_every_contract_file_is_known_to_the_suite() -> None:
    on_disk = {p.stem for p in Path(load_contract.__globals__["CONTRACTS_DIR"]).glob("*.yaml")}
    assert on_disk == set(CONTRACT_NAMES)


# ---------------------------------------------------------------------------------------------
# Dynamic: real success lines
# ---------------------------------------------------------------------------------------------


def primary(phase: str) -> list[str]:
    """The contract whose task prints ``phase`` lines (``applies_to``)."""
    return [n for n in CONTRACT_NAMES if phase in load_contract(n).get("applies_to", [])]


def embedding(phase: str) -> list[str]:
    """Contracts whose fields are embedded in ``phase`` lines (signatures, digests, SBOM)."""
    return [n for n in CONTRACT_NAMES if phase in load_contract(n).get("embedded_in", [])]


def check_line(phase: str, record: dict[str, Any]) -> None:
    schemas = [(n, schema_of(n, "success")) for n in primary(phase)]
    schemas += [(n, schema_of(n, "embedded")) for n in embedding(phase)]
    assert schemas, f"no contract governs {phase} lines"
    for name, schema in schemas:
        try:
            validate(schema, record)
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{phase} line breaks contract {name}: {exc.message}\n{record}")


def ok(result: InvResult) -> InvResult:
    assert result.returncode == 0, result.describe()
    return result


def test_build_line_and_metadata_file_match_the_contracts(world: World) -> None:
    sha = world.commit()
    record = ok(world.build(sha)).line("build")
    check_line("build", record)
    assert record["reused"] is False
    assert record["image_sha"] == sha
    assert record["short_sha"] == sha[:12]
    assert record["repository"] == world.canonical
    assert record["repository_type"] == "canonical"
    # digest-verification invariants JSON Schema cannot express: one digest, three witnesses.
    assert record["post_push_digest"] == record["image_digest"]
    assert record["push_reported_digest"] == record["image_digest"]
    assert record["image_ref"] == f"{world.canonical}:{sha}@{record['image_digest']}"
    metadata = json.loads((Path(world.config["metadata_dir"]) / f"{sha}.json").read_text())
    check_line("build", metadata)
    assert metadata == record


def test_staging_build_and_reuse_lines_match_the_contracts(world: World) -> None:
    sha = world.commit()
    first = ok(world.build(sha, branch="feature/x")).line("build")
    check_line("build", first)
    assert first["repository_type"] == "staging"
    assert first["repository"] == world.staging
    again = ok(world.build(sha, branch="feature/x")).line("build")
    check_line("build", again)
    assert again["reused"] is True
    assert again["image_digest"] == first["image_digest"]


def test_deploy_line_matches_the_contract(world: World) -> None:
    sha = world.commit()
    built = ok(world.build(sha)).line("build")
    record = ok(world.inv("deploy", f"--sha={sha}", "--env=production")).line("deploy")
    check_line("deploy", record)
    assert record["image_sha"] == sha
    assert record["image_digest"] == built["image_digest"]
    assert record["image_ref"] == built["image_ref"]
    assert record["env"] == "production"


def test_rollback_line_matches_the_contract(world: World) -> None:
    first = world.commit()
    ok(world.build(first))
    second = world.commit()
    for sha in (first, second):
        ok(world.build(sha))
        ok(world.inv("deploy", f"--sha={sha}", "--env=production"))
    result = ok(world.inv("rollback", f"--sha={first}", "--env=production"))
    record = result.line("rollback")
    check_line("rollback", record)
    assert record["image_sha"] == first
    assert record["previous_sha"] == second
    assert "build" not in {line["phase"] for line in result.lines}, "rollback never builds"


def test_verify_line_matches_the_contract(world: World) -> None:
    sha = world.commit()
    ok(world.build(sha))
    record = ok(world.inv("verify", f"--sha={sha}")).line("verify")
    check_line("verify", record)
    assert record["image_sha"] == sha


# ---------------------------------------------------------------------------------------------
# Dynamic: every listed failure code, produced by a real failing invocation
# ---------------------------------------------------------------------------------------------

Scenario = Callable[[Callable[..., World], Any], InvResult]
SCENARIOS: dict[tuple[str, str], Scenario] = {}


def scenario(contract: str, *codes: str) -> Callable[[Scenario], Scenario]:
    def register(fn: Scenario) -> Scenario:
        for code in codes:
            SCENARIOS[(contract, code)] = fn
        return fn

    return register


def _deployed(world: World) -> str:
    sha = world.commit()
    ok(world.build(sha))
    return sha


@scenario("build-workflow", "MISSING_SHA")
def _build_bad_sha(make_world: Callable[..., World], _: Any) -> InvResult:
    return make_world().build("abc123")


@scenario("build-workflow", "POLICY_VIOLATION")
def _build_floating(make_world: Callable[..., World], _: Any) -> InvResult:
    return make_world().build("latest")


@scenario("build-workflow", "INVALID_INPUT")
def _build_bad_branch(make_world: Callable[..., World], _: Any) -> InvResult:
    world = make_world()
    return world.build(world.commit(), branch="bad..branch")


@scenario("build-workflow", "BUILD_FAILURE")
def _build_broken_dockerfile(make_world: Callable[..., World], _: Any) -> InvResult:
    world = make_world()
    world.write_context(dockerfile="FROM scratch\nCOPY no-such-file.txt /\n")
    return world.build()


@scenario("build-workflow", "PUSH_FAILURE")
def _build_push_refused(make_world: Callable[..., World], readonly: Any) -> InvResult:
    return make_world(readonly).build()


@scenario("build-workflow", "REGISTRY_UNAVAILABLE")
def _build_no_registry(make_world: Callable[..., World], _: Any) -> InvResult:
    from tests.contract.conftest import _free_port

    port = _free_port()  # nothing listens here
    return make_world(
        canonical_repository=f"127.0.0.1:{port}/api", staging_repository=f"127.0.0.1:{port}/s"
    ).build()


@scenario("build-workflow", "DIGEST_MISMATCH")
@scenario("digest-verification", "DIGEST_MISMATCH")
def _rebuild_differs(make_world: Callable[..., World], _: Any) -> InvResult:
    # The commit is the same; an untracked build input (issue 13) differs between the builds.
    world = make_world(build_inputs=["input.txt"])
    world.write_context(dockerfile="FROM scratch\nCOPY payload.txt input.txt /\n")
    sha = world.commit()
    (Path(world.config["context"]) / "input.txt").write_text("first", encoding="utf-8")
    ok(world.build(sha))
    (Path(world.config["context"]) / "input.txt").write_text("second", encoding="utf-8")
    return world.build(sha, "--rebuild")


@scenario("deploy-workflow", "MISSING_SHA")
def _deploy_bad_sha(make_world: Callable[..., World], _: Any) -> InvResult:
    return make_world().inv("deploy", "--sha=12345", "--env=production")


@scenario("deploy-workflow", "POLICY_VIOLATION")
def _deploy_floating(make_world: Callable[..., World], _: Any) -> InvResult:
    return make_world().inv("deploy", "--sha=latest", "--env=production")


@scenario("deploy-workflow", "MISSING_TAG")
def _deploy_never_built(make_world: Callable[..., World], _: Any) -> InvResult:
    return make_world().inv("deploy", f"--sha={new_sha()}", "--env=production")


@scenario("deploy-workflow", "DIGEST_MISMATCH")
def _deploy_metadata_disagrees(make_world: Callable[..., World], _: Any) -> InvResult:
    world = make_world()
    sha = _deployed(world)
    # The metadata of *another* build, presented as this SHA's: the registry digest differs.
    other = _deployed(world)
    meta_dir = Path(world.config["metadata_dir"])
    record = json.loads((meta_dir / f"{other}.json").read_text())
    record["image_sha"] = sha
    wrong = world.root / "wrong-metadata.json"
    wrong.write_text(json.dumps(record))
    return world.inv("deploy", f"--sha={sha}", "--env=production", f"--metadata={wrong}")


@scenario("deploy-workflow", "CONFIG_ERROR")
def _deploy_unknown_env(make_world: Callable[..., World], _: Any) -> InvResult:
    world = make_world()
    return world.inv("deploy", f"--sha={_deployed(world)}", "--env=nowhere")


@scenario("rollback-workflow", "MISSING_SHA")
def _rollback_bad_sha(make_world: Callable[..., World], _: Any) -> InvResult:
    return make_world().inv("rollback", "--sha=0123abc", "--env=production")


@scenario("rollback-workflow", "POLICY_VIOLATION")
def _rollback_floating(make_world: Callable[..., World], _: Any) -> InvResult:
    return make_world().inv("rollback", "--sha=stable", "--env=production")


@scenario("rollback-workflow", "MISSING_TAG")
def _rollback_never_built(make_world: Callable[..., World], _: Any) -> InvResult:
    return make_world().inv("rollback", f"--sha={new_sha()}", "--env=production")


@scenario("rollback-workflow", "NO_ROLLBACK_TARGET")
def _rollback_nothing_before(make_world: Callable[..., World], _: Any) -> InvResult:
    return make_world().inv("rollback", "--env=production")


def _fake_tool(world: World, name: str, body: str) -> None:
    """A real executable named like the tool, first on PATH: for tool faults that the real
    cosign/syft cannot be made to produce on demand (crash with garbage, failing scan)."""
    bindir = world.root / "fakebin"
    bindir.mkdir(exist_ok=True)
    script = bindir / name
    script.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    script.chmod(0o755)
    world.env["PATH"] = f"{bindir}{os.pathsep}{world.env['PATH']}"


@scenario("build-workflow", "SOURCE_MISMATCH")
def _build_context_at_other_commit(make_world: Callable[..., World], _: Any) -> InvResult:
    world = make_world()
    world.commit()
    return world.build(new_sha())  # not a commit of the context's repository


@scenario("build-workflow", "TOOL_FAILURE")
@scenario("sbom-linkage", "TOOL_FAILURE")
def _build_sbom_tool_fails_fake_syft(make_world: Callable[..., World], _: Any) -> InvResult:
    world = make_world()
    _fake_tool(world, "syft", "echo 'syft: scan exploded' >&2; exit 1")
    return world.build()


@scenario("build-workflow", "MISSING_TAG")
def _build_recorded_tag_gone(make_world: Callable[..., World], _: Any) -> InvResult:
    """Issue 14, item 6: the metadata file records this SHA's digest, the tag is gone."""
    world = make_world()
    sha = world.commit()
    meta = Path(world.config["metadata_dir"]) / f"{sha}.json"
    meta.parent.mkdir(parents=True, exist_ok=True)
    record = {"image_sha": sha, "repository": world.canonical, "image_digest": "sha256:" + "e" * 64}
    meta.write_text(json.dumps(record), encoding="utf-8")
    return world.build(sha)


def _history_is_a_directory(world: World, task: str) -> InvResult:
    """Issue 14, item 9: the history file is a directory; refused before anything changes."""
    sha = _deployed(world)
    (Path(world.config["state_dir"]) / "production" / "history.jsonl").mkdir(parents=True)
    return world.inv(task, f"--sha={sha}", "--env=production")


@scenario("deploy-workflow", "STATE_ERROR")
def _deploy_history_is_a_directory(make_world: Callable[..., World], _: Any) -> InvResult:
    return _history_is_a_directory(make_world(), "deploy")


@scenario("rollback-workflow", "STATE_ERROR")
def _rollback_history_is_a_directory(make_world: Callable[..., World], _: Any) -> InvResult:
    return _history_is_a_directory(make_world(), "rollback")


@scenario("signature-verification", "MISSING_SHA")
def _verify_bad_sha(make_world: Callable[..., World], _: Any) -> InvResult:
    return make_world().inv("verify", "--sha=abc")


@scenario("signature-verification", "MISSING_TAG")
def _verify_never_built(make_world: Callable[..., World], _: Any) -> InvResult:
    return make_world().inv("verify", f"--sha={new_sha()}")


@scenario("signature-verification", "SIGNATURE_REQUIRED")
def _verify_enforce_unsigned(make_world: Callable[..., World], _: Any) -> InvResult:
    world = make_world(signature_policy="enforce")
    return world.inv("verify", f"--sha={_deployed(world)}")


@scenario("signature-verification", "SOFT_VERIFY_TOOL_ERROR")
def _verify_cosign_crashes_fake_cosign(make_world: Callable[..., World], _: Any) -> InvResult:
    world = make_world()
    sha = _deployed(world)
    key = world.root / "cosign.pub"
    key.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    _fake_tool(world, "cosign", "printf 'panic: \\001\\002 garbage\\n' >&2; exit 2")
    return world.inv("verify", f"--sha={sha}", config={"cosign_public_key": str(key)})


@scenario("deploy-workflow", "DEPLOY_FAILED")
def _deploy_apply_fails(make_world: Callable[..., World], _: Any) -> InvResult:
    world = make_world()
    sha = _deployed(world)
    envs = json.loads(json.dumps(world.config["environments"]))
    envs["production"]["apply"] = "false"
    return world.inv("deploy", f"--sha={sha}", "--env=production", config={"environments": envs})


@scenario("deploy-workflow", "DEPLOY_LOCKED")
def _deploy_while_locked(make_world: Callable[..., World], _: Any) -> InvResult:
    from shatag.ledger.lock import env_lock

    world = make_world(deploy_lock_timeout_sec=0.5)
    sha = _deployed(world)
    with env_lock(Path(world.config["state_dir"]), "production", timeout=5):
        return world.inv("deploy", f"--sha={sha}", "--env=production")


@scenario("deploy-workflow", "SIGNATURE_REQUIRED")
def _deploy_enforce_unsigned(make_world: Callable[..., World], _: Any) -> InvResult:
    world = make_world(signature_policy="enforce")
    return world.inv("deploy", f"--sha={_deployed(world)}", "--env=production")


@scenario("deploy-workflow", "LEDGER_DENIED")
def _deploy_ledger_remote_refuses(make_world: Callable[..., World], _: Any) -> InvResult:
    """state_backend git, and the remote's pre-receive hook refuses every push (issue 15)."""
    world = make_world(state_backend="git")
    sha = _deployed(world)
    bare = world.root / "remote.git"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run([*git, "init", "-q", "--bare", str(bare)], check=True, timeout=30)
    hook = bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'no push for this token' >&2\nexit 1\n", encoding="utf-8")
    hook.chmod(0o755)
    subprocess.run([*git, "-C", str(world.root), "init", "-q"], check=True, timeout=30)
    subprocess.run(
        [*git, "-C", str(world.root), "remote", "add", "origin", str(bare)], check=True, timeout=30
    )
    return world.inv("deploy", f"--sha={sha}", "--env=production")


@scenario("deploy-workflow", "LEDGER_UNAVAILABLE")
def _deploy_ledger_outside_a_clone(make_world: Callable[..., World], _: Any) -> InvResult:
    """state_backend git, run where there is no git clone to hold the ledger (issue 15)."""
    world = make_world(state_backend="git")
    return world.inv("deploy", f"--sha={_deployed(world)}", "--env=production")


def _with_foreign_container(world: World, sha: str, *args: str) -> InvResult:
    """A docker target whose name is taken by a container shatag did not create."""
    name = f"shatag-ct-{secrets.token_hex(4)}"
    envs = json.loads(json.dumps(world.config["environments"]))
    envs["production"]["targets"].append(
        {"kind": "docker", "name": name, "port": 1, "container_port": 8080}
    )
    docker = ["docker", "create", "--name", name, "--label", "owner=someone-else"]
    docker += ["--entrypoint", "/none", f"{world.canonical}:{sha}"]
    subprocess.run(docker, check=True, capture_output=True, timeout=60)
    try:
        return world.inv(*args, config={"environments": envs})
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60, check=False)


@scenario("deploy-workflow", "NOT_OWNED")
def _deploy_foreign_container(make_world: Callable[..., World], _: Any) -> InvResult:
    world = make_world()
    sha = _deployed(world)
    return _with_foreign_container(world, sha, "deploy", f"--sha={sha}", "--env=production")


@scenario("rollback-workflow", "NOT_OWNED")
def _rollback_foreign_container(make_world: Callable[..., World], _: Any) -> InvResult:
    world = make_world()
    sha = _deployed(world)
    return _with_foreign_container(world, sha, "rollback", f"--sha={sha}", "--env=production")


def _interrupted(world: World, *args: str) -> InvResult:
    """SIGTERM while the environment's apply command runs (as CI cancellation sends it)."""
    marker = world.root / "apply-started"
    envs = json.loads(json.dumps(world.config["environments"]))
    envs["production"]["apply"] = f"sh -c 'touch {marker}; sleep 60'"
    config = {**world.config, "environments": envs}
    config_file = world.root / f"invoke-{secrets.token_hex(4)}.yaml"
    config_file.write_text(json.dumps({"shatag": config}), encoding="utf-8")
    argv = [sys.executable, "-m", "invoke", "-r", str(ROOT), "-f", str(config_file), *args]
    proc = subprocess.Popen(
        argv, cwd=world.root, env=world.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    return InvResult(argv[3:], proc.returncode, out.decode(), err.decode())


@scenario("deploy-workflow", "INTERRUPTED")
def _deploy_sigterm(make_world: Callable[..., World], _: Any) -> InvResult:
    world = make_world()
    return _interrupted(world, "deploy", f"--sha={_deployed(world)}", "--env=production")


@scenario("rollback-workflow", "INTERRUPTED")
def _rollback_sigterm(make_world: Callable[..., World], _: Any) -> InvResult:
    world = make_world()
    sha = _deployed(world)
    ok(world.inv("deploy", f"--sha={sha}", "--env=production"))
    return _interrupted(world, "rollback", f"--sha={sha}", "--env=production")


def _listed() -> list[tuple[str, str]]:
    return [
        (name, entry["code"])
        for name in CONTRACT_NAMES
        for entry in load_contract(name)["failure_codes"]
    ]


@pytest.mark.parametrize(("contract", "code"), _listed(), ids=str)
def test_listed_failure_code_is_produced_by_a_real_invocation(
    contract: str,
    code: str,
    make_world: Callable[..., World],
    readonly_registry: Any,
) -> None:
    fn = SCENARIOS.get((contract, code))
    assert fn is not None, (
        f"contract {contract} lists {code} but no test produces it: add a scenario or drop the code"
    )
    result = fn(make_world, readonly_registry)
    assert result.returncode != 0, result.describe()
    assert f"error: {code}: " in result.stderr, result.describe()
    failures = [line for line in result.lines if "error_code" in line]
    assert len(failures) == 1, result.describe()
    failure = failures[0]
    assert failure["error_code"] == code, result.describe()
    validate(schema_of(contract, "failure"), failure)
    # The task's own contract (the one with the command) must list the code as well.
    for name in primary(failure["phase"]):
        validate(schema_of(name, "failure"), failure)


def test_every_scenario_belongs_to_a_listed_code() -> None:
    """The reverse direction: a code the tool produces must be written into the contract."""
    stale = set(SCENARIOS) - set(_listed())
    assert not stale, f"scenarios for codes the contracts do not list: {sorted(stale)}"
