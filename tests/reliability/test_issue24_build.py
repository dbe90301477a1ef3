"""Issue 24, items 1, 2 and 7 (build): hostile sources never yield a wrong image or a red race.

Each case is a real CLI run on a real git repository (hostile ``GIT_CONFIG_GLOBAL``,
``.gitattributes``, a symlinked build input, a tree object as ``--sha``, a feature commit with
``main`` checked out, no git at all) and a real registry; each records its row.
"""

from __future__ import annotations

import subprocess
import threading
import uuid
from pathlib import Path

from shatag._testing.localregistry import LocalRegistry
from shatag.core import parse_repository
from shatag.supplychain.registry import RegistryClient
from tests.conftest import App, InvResult, _git, run_inv
from tests.reliability.conftest import Ledger, describe, new_app, rinv, world_env


def _world(registry: LocalRegistry, root: Path) -> tuple[App, dict[str, str], RegistryClient]:
    name = f"rel24-{uuid.uuid4().hex[:8]}"
    env = world_env(registry, root, name)
    app = new_app(root)
    app.commit('{"release": "24"}', "initial")
    env["INVOKE_SHATAG_CONTEXT"] = str(app.path)
    env["INVOKE_SHATAG_STATE_DIR"] = str(root / "state")
    client = RegistryClient(parse_repository(f"{registry.address}/{name}"), env={}, retries=1)
    return app, env, client


def test_issue24_hostile_sources_are_refused_before_any_push(
    ledger: Ledger, registry: LocalRegistry, tmp_path: Path
) -> None:
    app, env, canonical = _world(registry, tmp_path)
    secret = tmp_path / "host-secret"
    secret.write_text("issue24 host secret\n")
    (app.path / ".gitignore").write_text("leak\n")
    app.commit('{"release": "24"}', "ignore the input")
    (app.path / "leak").symlink_to(secret)
    cases: list[tuple[str, list[str], dict[str, str], str]] = []
    cases.append(
        (
            "build input that is a symlink to a host file",
            [f"--sha={app.sha}", "--branch=main"],
            {"INVOKE_SHATAG_BUILD_INPUTS": "leak"},
            "CONFIG_ERROR",
        )
    )
    tree = _git(app.path, "rev-parse", "HEAD^{tree}")
    cases.append(("--sha naming a tree object", [f"--sha={tree}", "--branch=main"], {}, ""))
    _git(app.path, "checkout", "-q", "-b", "feature/rel24")
    feature = app.commit('{"release": "feature"}', "feature")
    _git(app.path, "checkout", "-q", "main")
    cases.append(
        ("feature commit built with main checked out", [f"--sha={feature}"], {}, "INVALID_INPUT")
    )
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "Dockerfile").write_text("FROM scratch\n")
    cases.append(
        (
            "a directory outside git, no build_source: directory",
            ["--sha=" + "cd" * 20, "--branch=main"],
            {"INVOKE_SHATAG_CONTEXT": str(plain)},
            "SOURCE_MISMATCH",
        )
    )
    for scenario, args, extra, code in cases:
        result = rinv(ledger, ["build", *args], {**env, **extra})
        expected = code or "SOURCE_MISMATCH"
        ok = (
            result.returncode != 0
            and f"error: {expected}:" in result.stderr
            and "Step 1/" not in result.stderr
            and canonical.tags() == []
        )
        ledger.record(
            f"issue 24: {scenario}", f"{expected} before any build or push", describe(result), ok
        )
        assert ok, result.stderr


def test_issue24_hostile_git_config_and_a_race_of_two_builds(
    ledger: Ledger, registry: LocalRegistry, tmp_path: Path
) -> None:
    app, env, canonical = _world(registry, tmp_path)
    (app.path / ".gitattributes").write_text("www/api.json export-ignore\n")
    sha = app.commit('{"release": "bytes"}', "export-ignore on the served file")
    config = tmp_path / "hostile.gitconfig"
    config.write_text("[core]\n\tautocrlf = true\n\teol = crlf\n")
    results: list[InvResult] = []

    def one(index: int) -> None:
        run_env = {
            **env,
            "GIT_CONFIG_GLOBAL": str(config),
            "INVOKE_SHATAG_METADATA_DIR": str(tmp_path / f"meta{index}"),
        }
        results.append(run_inv(["build", f"--sha={sha}", "--branch=main"], run_env))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        ledger.capture("inv build (race)", result.stdout + "\n" + result.stderr)
    green = [r.returncode for r in results] == [0, 0]
    reused = sorted(r.record.get("reused", False) for r in results) if green else []
    ok = green and reused == [False, True]
    ledger.record(
        "issue 24: two builds of one SHA at once",
        "both exit 0, one reports reused, one image",
        ", ".join(describe(r) for r in results) + f", reused {reused}",
        ok,
    )
    assert ok, [r.stderr[-1500:] for r in results]
    image = results[0].record["image_ref"]
    run = ["docker", "run", "--rm", "--network=none", "--entrypoint", "/bin/busybox", image]
    served = subprocess.run(
        [*run, "cat", "/www/api.json"],
        capture_output=True,
        timeout=120,
        check=False,
    ).stdout
    exact = served == b'{"release": "bytes"}\n'
    ledger.record(
        "issue 24: export-ignore + core.autocrlf=true in the builder's git config",
        "the file is in the image, LF line endings (the commit's bytes)",
        repr(served[:40]),
        exact,
    )
    assert exact
    assert canonical.manifest_digest(sha) == results[0].record["image_digest"]
