"""Hostile input through the real CLI (issue 6).

Fixed strings for ``--sha``, ``--env``, ``--branch``, repository configuration
(``INVOKE_SHATAG_*``) and metadata paths. Each must exit non-zero with ``error: <CODE>:`` and no
traceback, and leave nothing behind: no tag in the registry, no local image of the repository,
no state (history, locks), no metadata file, no changed deployment target, and no file an
injected shell command would have created.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shatag.core import parse_repository
from shatag.supplychain.registry import RegistryClient
from tests.conftest import App, InvResult
from tests.reliability.conftest import (
    Ledger,
    Site,
    World,
    describe,
    docker_out,
    error_code,
    rinv,
)

HEX40 = "0123456789abcdef0123456789abcdef01234567"
PWNED = "/tmp/shatag-reliability-pwned"  # an injected command would create this
LONG = "a" * 5000

SHA_INPUTS: list[tuple[str, str, set[str]]] = [
    ("empty", "", {"MISSING_SHA"}),
    ("39 hex", HEX40[:39], {"MISSING_SHA"}),
    ("41 hex", HEX40 + "8", {"MISSING_SHA"}),
    ("uppercase hex", HEX40.upper(), {"MISSING_SHA"}),
    ("cyrillic a look-alike", HEX40[:39] + "\u0430", {"MISSING_SHA"}),
    ("fullwidth digits", "\uff10" * 40, {"MISSING_SHA"}),
    ("leading space", " " + HEX40, {"MISSING_SHA"}),
    ("trailing newline", HEX40 + "\n", {"MISSING_SHA"}),
    ("embedded newline", HEX40[:20] + "\n" + HEX40[20:], {"MISSING_SHA"}),
    ("tab", HEX40 + "\t", {"MISSING_SHA"}),
    ("latest", "latest", {"POLICY_VIOLATION"}),
    ("main", "main", {"POLICY_VIOLATION"}),
    ("semver", "v1.2.3", {"POLICY_VIOLATION"}),
    ("digest", "sha256:" + HEX40 + HEX40[:24], {"MISSING_SHA", "POLICY_VIOLATION"}),
    ("short sha", HEX40[:12], {"MISSING_SHA"}),
    ("0x prefix", "0x" + HEX40[:38], {"MISSING_SHA", "POLICY_VIOLATION"}),
    ("command substitution", f"$(touch {PWNED})", {"MISSING_SHA"}),
    ("backticks", f"`touch {PWNED}`", {"MISSING_SHA"}),
    ("semicolon", f"{HEX40};touch {PWNED}", {"MISSING_SHA"}),
    # `build --sha=--rebuild`: invoke's parser stops first; shatag.tasks makes its message an
    # `error: INVALID_INPUT:` line too.
    ("flag injection", "--rebuild", {"MISSING_SHA", "INVALID_INPUT"}),
    ("path traversal", "../../etc/passwd", {"MISSING_SHA"}),
    ("very long", LONG, {"MISSING_SHA", "POLICY_VIOLATION"}),
    ("pinned reference", f"localhost:5000/api:{HEX40}", {"MISSING_SHA"}),
]

ENV_INPUTS: list[tuple[str, str, set[str]]] = [
    ("empty env", "", {"INVALID_INPUT"}),
    ("env traversal", "../../etc", {"INVALID_INPUT"}),
    ("env semicolon", f"local;touch {PWNED}", {"INVALID_INPUT"}),
    ("env command substitution", f"$(touch {PWNED})", {"INVALID_INPUT"}),
    ("env uppercase", "LOCAL", {"INVALID_INPUT"}),
    ("env newline", "local\n", {"INVALID_INPUT"}),
    ("env flag injection", "--help", {"INVALID_INPUT"}),
    ("env very long", LONG, {"INVALID_INPUT"}),
    ("env unknown", "nowhere", {"CONFIG_ERROR"}),
    ("env look-alike", "l\u043ecal", {"INVALID_INPUT"}),
]

BRANCH_INPUTS: list[tuple[str, str, set[str]]] = [
    ("branch empty", "", {"INVALID_INPUT"}),
    ("branch traversal", "../main", {"INVALID_INPUT"}),
    ("branch dotdot", "feature/../main", {"INVALID_INPUT"}),
    ("branch semicolon", f"main;touch {PWNED}", {"INVALID_INPUT"}),
    ("branch command substitution", f"$(touch {PWNED})", {"INVALID_INPUT"}),
    ("branch backticks", f"`touch {PWNED}`", {"INVALID_INPUT"}),
    ("branch newline", "main\nmaster", {"INVALID_INPUT"}),
    ("branch flag injection", "--force", {"INVALID_INPUT"}),
    ("branch very long", "b" * 300, {"INVALID_INPUT"}),
    ("branch .lock", "main.lock", {"INVALID_INPUT"}),
    ("branch reflog syntax", "main@{1}", {"INVALID_INPUT"}),
    ("branch cyrillic look-alike", "m\u0430in", {"INVALID_INPUT"}),
    ("branch space", "main branch", {"INVALID_INPUT"}),
]

# (label, variable, value, expected codes) -- repository and other configuration.
CONFIG_INPUTS: list[tuple[str, str, str, set[str]]] = [
    ("repo empty", "CANONICAL_REPOSITORY", "", {"CONFIG_ERROR"}),
    ("repo floating tag", "CANONICAL_REPOSITORY", "{reg}/api:latest", {"POLICY_VIOLATION"}),
    (
        "repo with digest",
        "CANONICAL_REPOSITORY",
        "{reg}/api@sha256:" + "a" * 64,
        {"POLICY_VIOLATION"},
    ),
    ("repo no host", "CANONICAL_REPOSITORY", "api", {"CONFIG_ERROR"}),
    ("repo traversal", "CANONICAL_REPOSITORY", "{reg}/../../etc", {"CONFIG_ERROR"}),
    ("repo uppercase", "CANONICAL_REPOSITORY", "{reg}/API", {"CONFIG_ERROR"}),
    (
        "repo url scheme",
        "CANONICAL_REPOSITORY",
        "http://{reg}/api",
        {"CONFIG_ERROR", "POLICY_VIOLATION"},
    ),
    (
        "repo command substitution",
        "CANONICAL_REPOSITORY",
        "{reg}/$(touch " + PWNED + ")",
        {"CONFIG_ERROR"},
    ),
    ("repo semicolon", "CANONICAL_REPOSITORY", "{reg}/api;touch " + PWNED, {"CONFIG_ERROR"}),
    ("repo space", "CANONICAL_REPOSITORY", "{reg}/my api", {"CONFIG_ERROR"}),
    ("repo unicode", "CANONICAL_REPOSITORY", "{reg}/\u0430pi", {"CONFIG_ERROR"}),
    ("repo very long", "CANONICAL_REPOSITORY", "{reg}/" + "a" * 400, {"CONFIG_ERROR"}),
    ("repo bad port", "CANONICAL_REPOSITORY", "127.0.0.1:99999999/api", {"CONFIG_ERROR"}),
    ("staging with tag", "STAGING_REPOSITORY", "{reg}/api-staging:main", {"POLICY_VIOLATION"}),
    ("staging == canonical", "STAGING_REPOSITORY", "{canonical}", {"CONFIG_ERROR"}),
    ("platform arm64", "PLATFORM", "linux/arm64", {"CONFIG_ERROR"}),
    ("policy bogus", "SIGNATURE_POLICY", "maybe", {"CONFIG_ERROR"}),
    ("retries negative", "REGISTRY_RETRIES", "-1", {"CONFIG_ERROR"}),
    ("timeout nan", "REGISTRY_TIMEOUT_SEC", "nan", {"CONFIG_ERROR"}),
    ("main_branches traversal", "MAIN_BRANCHES", "main,../x", {"CONFIG_ERROR", "INVALID_INPUT"}),
    ("retries not a number", "REGISTRY_RETRIES", "3; touch " + PWNED, {"CONFIG_ERROR"}),
    (
        "lock timeout not a number",
        "DEPLOY_LOCK_TIMEOUT_SEC",
        "$(touch " + PWNED + ")",
        {"CONFIG_ERROR"},
    ),
]


@dataclass
class Tally:
    tried: int = 0
    bad: list[str] = field(default_factory=list)


def _assert_clean_failure(
    ledger: Ledger, label: str, result: InvResult, codes: set[str], tally: Tally
) -> None:
    tally.tried += 1
    ledger.count("inputs_tried")
    ok = (
        result.returncode != 0
        and error_code(result) in codes
        and "Traceback" not in result.stderr
        and not Path(PWNED).exists()
    )
    if not ok:
        tally.bad.append(f"{label}: {describe(result)}; stderr={result.stderr[-300:]!r}")


def _nothing_changed(env: dict[str, str], root: Path) -> list[str]:
    problems = []
    for key in ("INVOKE_SHATAG_CANONICAL_REPOSITORY", "INVOKE_SHATAG_STAGING_REPOSITORY"):
        client = RegistryClient(parse_repository(env[key]), env={}, retries=1)
        if client.tags():
            problems.append(f"tags pushed to {env[key]}: {client.tags()}")
        if docker_out("image", "ls", "-q", env[key]):
            problems.append(f"local image built for {env[key]}")
    for sub in ("state", "metadata", "sbom"):
        if (root / sub).exists() and any((root / sub).rglob("*")):
            problems.append(f"{sub} dir written: {sorted(map(str, (root / sub).rglob('*')))}")
    if Path(PWNED).exists():
        problems.append(f"injected command ran: {PWNED} exists")
    return problems


@pytest.fixture(autouse=True)
def _no_pwned_file() -> None:
    Path(PWNED).unlink(missing_ok=True)


def test_hostile_sha_env_branch(
    ledger: Ledger, fresh_env: dict[str, str], make_app: Callable[..., App], tmp_path: Path
) -> None:
    app = make_app('{"hostile": true}')
    env = {**fresh_env, "INVOKE_SHATAG_CONTEXT": str(app.path)}
    tally = Tally()
    for label, value, codes in SHA_INPUTS:
        for task in ("build", "deploy"):
            extra = ["--branch=main"] if task == "build" else []
            result = rinv(ledger, [task, f"--sha={value}", *extra], env)
            _assert_clean_failure(ledger, f"{task} --sha {label}", result, codes, tally)
    for label, value, codes in SHA_INPUTS[::3]:
        result = rinv(ledger, ["rollback", f"--sha={value}"], env)
        _assert_clean_failure(ledger, f"rollback --sha {label}", result, codes, tally)
    for label, value, codes in ENV_INPUTS:
        for args in (["deploy", f"--sha={app.sha}"], ["rollback"], ["history"]):
            result = rinv(ledger, [*args, f"--env={value}"], env)
            _assert_clean_failure(ledger, f"{args[0]} --env {label}", result, codes, tally)
    for label, value, codes in BRANCH_INPUTS:
        result = rinv(ledger, ["build", f"--sha={app.sha}", f"--branch={value}"], env)
        _assert_clean_failure(ledger, f"build --branch {label}", result, codes, tally)
    problems = _nothing_changed(env, tmp_path)
    ledger.record(
        f"hostile --sha/--env/--branch ({tally.tried} CLI runs)",
        "each exits non-zero with error: CODE:, no traceback; nothing built/pushed/written",
        f"{tally.tried - len(tally.bad)}/{tally.tried} clean; side effects: {problems or 'none'}",
        not tally.bad and not problems,
    )
    assert not tally.bad, "\n".join(tally.bad)
    assert not problems, problems


def test_hostile_repository_config(
    ledger: Ledger, fresh_env: dict[str, str], make_app: Callable[..., App], tmp_path: Path
) -> None:
    app = make_app('{"hostile": "config"}')
    reg = fresh_env["INVOKE_SHATAG_CANONICAL_REPOSITORY"].split("/", 1)[0]
    tally = Tally()
    for label, var, raw, codes in CONFIG_INPUTS:
        value = raw.format(reg=reg, canonical=fresh_env["INVOKE_SHATAG_CANONICAL_REPOSITORY"])
        env = {
            **fresh_env,
            "INVOKE_SHATAG_CONTEXT": str(app.path),
            f"INVOKE_SHATAG_{var}": value,
        }
        for args in (
            ["build", f"--sha={app.sha}", "--branch=main"],
            ["deploy", f"--sha={app.sha}"],
            ["rollback", f"--sha={app.sha}"],
        ):
            result = rinv(ledger, args, env)
            _assert_clean_failure(ledger, f"{args[0]} {label}", result, codes, tally)
    problems = _nothing_changed(fresh_env, tmp_path)
    ledger.record(
        f"hostile repository/config via INVOKE_SHATAG_* ({tally.tried} CLI runs)",
        "CONFIG_ERROR / POLICY_VIOLATION, no traceback, nothing built/pushed/written",
        f"{tally.tried - len(tally.bad)}/{tally.tried} clean; side effects: {problems or 'none'}",
        not tally.bad and not problems,
    )
    assert not tally.bad, "\n".join(tally.bad)
    assert not problems, problems


def test_hostile_metadata_paths(
    ledger: Ledger, world: World, make_site: Callable[..., Site], tmp_path: Path
) -> None:
    """``deploy --metadata`` with unusable files; ``build --metadata-out`` with unusable paths."""
    site = make_site()
    a, b = world.images[0], world.images[1]
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"image_sha": b.sha, "image_digest": b.digest}))
    no_digest = tmp_path / "nodigest.json"
    no_digest.write_text(json.dumps({"image_sha": a.sha}))
    wrong_repo = tmp_path / "wrongrepo.json"
    wrong_repo.write_text(
        json.dumps({"image_sha": a.sha, "image_digest": a.digest, "repository": "ghcr.io/x/y"})
    )
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    cases: list[tuple[str, str, set[str]]] = [
        ("missing file", str(tmp_path / "nope.json"), {"INVALID_INPUT"}),
        ("traversal to /etc/passwd", "../../../../../../etc/passwd", {"INVALID_INPUT"}),
        ("a directory", str(tmp_path), {"INVALID_INPUT"}),
        ("JSON list", str(listing), {"INVALID_INPUT"}),
        ("another SHA's metadata", str(other), {"INVALID_INPUT"}),
        ("no image_digest", str(no_digest), {"INVALID_INPUT"}),
        ("another repository", str(wrong_repo), {"POLICY_VIOLATION"}),
        ("binary garbage", str(binary), {"INVALID_INPUT"}),
        ("command substitution", f"$(touch {PWNED})", {"INVALID_INPUT"}),
    ]
    tally = Tally()
    before = site.snapshot()
    for label, value, codes in cases:
        result = site.deploy(ledger, a, f"--metadata={value}")
        _assert_clean_failure(ledger, f"deploy --metadata {label}", result, codes, tally)
    after = site.snapshot()
    unchanged = after.sdl == before.sdl and after.tfvars == before.tfvars and not after.history
    # build --metadata-out: an unusable destination must fail before anything is built or
    # pushed (the SHA is new: a build would otherwise push it).
    app_sha = world.app.commit('{"release": "metadata-out"}', "metadata-out probe")
    env = {**world.env, "INVOKE_SHATAG_CONTEXT": str(world.app.path)}
    for label, value in (
        ("into /proc", "/proc/shatag/x.json"),
        ("under a file", str(listing / "x.json")),
        ("a directory", str(tmp_path)),
    ):
        result = rinv(
            ledger,
            ["build", f"--sha={app_sha}", "--branch=main", f"--metadata-out={value}"],
            env,
        )
        _assert_clean_failure(
            ledger, f"build --metadata-out {label}", result, {"INVALID_INPUT"}, tally
        )
    pushed = world.client().manifest_digest(app_sha)
    ledger.record(
        f"hostile metadata paths ({len(cases) + 3} CLI runs)",
        "INVALID_INPUT/POLICY_VIOLATION; targets and history untouched; nothing pushed",
        f"{tally.tried - len(tally.bad)}/{tally.tried} clean; targets unchanged={unchanged}; "
        f"pushed={pushed is not None}",
        not tally.bad and unchanged and pushed is None,
    )
    assert not tally.bad, "\n".join(tally.bad)
    assert unchanged
    assert pushed is None, "build pushed although its metadata destination is unusable"
