"""Issue 24, items 3 and 4: hostile input never corrupts what shatag records.

Real registry, real docker engine, real git (the images are built by the real ``inv build``
in :mod:`tests.integration.test_deploy_rollback`'s module world).

* 3 -- a "secret" whose value is also the SHA, the target's container name or the environment's
  name (``PIPELINE_KEY=<sha>`` is a real CI habit) must not be masked in history, the JSON
  lines, or the tool output shatag reads back (docker labels): the deploy, the next deploy and
  the rollback go through with every recorded field intact; a real secret in free text is
  still masked.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from shatag.ledger.git import RECORD_FILE, GitLedger
from shatag.ledger.history import HistoryRecord
from tests._gitremote import GitRemote
from tests.integration.test_deploy_rollback import TFVARS_TEXT, Site, World, make_site, world

__all__ = ["make_site", "world"]  # fixtures used by the tests below


def _history_lines(site: Site) -> list[dict[str, object]]:
    path = site.dir / "state" / "production" / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_secret_equal_to_the_sha_target_or_env_never_corrupts_records(
    world: World, make_site: Callable[..., Site]
) -> None:
    site = make_site()
    a, b = world.a, world.b
    hostile = {
        "PIPELINE_KEY": a.sha,  # the SHA being deployed, then rolled back to
        "CONTAINER_SECRET": site.container,  # the docker target's name
        "ENV_PASSWORD": "production",  # the environment's name
        "REAL_TOKEN": "tok-issue24-canary",  # a real secret: still masked in free text
    }
    first = site.inv("deploy", f"--sha={a.sha}", "--env=production", env=hostile)
    assert first.returncode == 0, first.stderr
    assert first.record["image_sha"] == a.sha
    second = site.inv("deploy", f"--sha={b.sha}", "--env=production", env=hostile)
    assert second.returncode == 0, second.stderr
    assert second.record["previous_sha"] == a.sha
    assert second.record["targets"] == [
        f"sdl:{site.sdl}",
        f"tfvars:{site.tfvars}",
        f"docker:{site.container}",
    ]
    back = site.inv("rollback", "--env=production", env=hostile)
    assert back.returncode == 0, back.stderr
    assert back.record["image_sha"] == a.sha
    assert back.record["image_digest"] == a.digest
    site.assert_runs(a)
    lines = _history_lines(site)
    assert [(r["action"], r["sha"], r["env"]) for r in lines] == [
        ("deploy", a.sha, "production"),
        ("deploy", b.sha, "production"),
        ("rollback", a.sha, "production"),
    ]
    assert all(f"docker:{site.container}" in r["targets"] for r in lines)  # type: ignore[operator]
    assert "***" not in json.dumps(lines)
    # The human line names what ran, in clear.
    assert f"deployed: production {a.pinned(world.canonical)}" in first.stderr


def test_a_real_secret_in_free_text_is_still_masked(
    world: World, make_site: Callable[..., Site], tmp_path: Path
) -> None:
    canary = "tok-issue24-free-text-canary"
    script = tmp_path / "apply.sh"
    script.write_text("#!/bin/sh\necho failing with $DEPLOY_TOKEN >&2\nexit 3\n")
    script.chmod(0o755)
    site = make_site(apply=str(script))
    result = site.inv(
        "deploy", f"--sha={world.a.sha}", "--env=production", env={"DEPLOY_TOKEN": canary}
    )
    assert result.returncode != 0
    assert "error: DEPLOY_FAILED" in result.stderr
    assert canary not in result.stderr + result.stdout
    assert "***" in result.stderr
    lines = _history_lines(site)
    assert lines[-1]["result"] == "failed"
    assert lines[-1]["sha"] == world.a.sha
    assert canary not in json.dumps(lines)
    assert "***" in str(lines[-1]["error"])


# -- item 4: ledger records are data, not instructions ------------------------------------------


def _forge(site: Site, env: str, **fields: object) -> dict[str, object]:
    """Append a hand-made record (what anyone who can write the ledger can do)."""
    record: dict[str, object] = {
        "action": "deploy",
        "env": env,
        "result": "ok",
        "repository": site.world.canonical,
        "attempt": "forged-" + env,
        "finished_at": "2026-01-02T03:04:05.000Z",
        **fields,
    }
    path = site.dir / "state" / env / "history.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    return record


def test_the_walk_back_skips_a_record_of_a_sha_the_registry_does_not_hold(
    world: World, make_site: Callable[..., Site]
) -> None:
    site = make_site()
    a, b = world.a, world.b
    assert site.deploy(a).returncode == 0
    never_built = "f00d" * 10
    _forge(site, "production", sha=never_built, digest="sha256:" + "0" * 64)
    assert site.deploy(b).returncode == 0
    back = site.rollback()
    assert back.returncode == 0, back.stderr
    assert back.record["image_sha"] == a.sha
    site.assert_runs(a)
    warning = next(line for line in back.stderr.splitlines() if never_built in line)
    assert warning.startswith("shatag: skipped the deploy record of attempt forged-production")
    assert "is not in the registry" in warning


def test_a_forged_digest_elsewhere_blocks_only_what_it_must(
    world: World, make_site: Callable[..., Site]
) -> None:
    site = make_site()
    a, b = world.a, world.b
    assert site.deploy(a).returncode == 0
    assert site.deploy(b).returncode == 0
    forged = "sha256:" + "e" * 64
    # Written after production's history, so read first (newest history first).
    _forge(site, "evil", sha=a.sha, digest=forged)
    _forge(site, "evil", sha=b.sha, digest=forged)
    # production ran A and B with the registry's digests: its own records decide.
    again = site.deploy(b)
    assert again.returncode == 0, again.stderr
    back = site.rollback(f"--sha={a.sha}")
    assert back.returncode == 0, back.stderr
    site.assert_runs(a)
    # a third environment that never ran A: production ran the registry's digest, so the
    # forged record is a warning naming it, not a block.
    spec = json.loads(site.config.read_text())
    qa_file = site.dir / "qa.auto.tfvars.json"
    qa_file.write_text(TFVARS_TEXT)
    spec["shatag"]["environments"]["qa"] = {
        "repository_type": "canonical",
        "targets": [{"kind": "tfvars", "path": str(qa_file)}],
    }
    site.config.write_text(json.dumps(spec))
    _forge(site, "evil", sha=a.sha, digest=forged)  # the newest history again
    qa = site.inv("deploy", f"--sha={a.sha}", "--env=qa")
    assert qa.returncode == 0, qa.stderr
    assert json.loads(qa_file.read_text())["image_digest"] == a.digest
    ignored = next(x for x in qa.stderr.splitlines() if "forged-evil" in x)
    assert ignored.startswith("shatag: ignored the deploy record of attempt forged-evil")
    assert forged in ignored
    assert a.digest in ignored
    # an environment that never ran B: the conflict blocks it, and names the record.
    other = make_site()
    _forge(other, "evil", sha=b.sha, digest=forged)
    blocked = other.deploy(b)
    assert blocked.returncode != 0
    line = next(x for x in blocked.stderr.splitlines() if x.startswith("error: "))
    assert line.startswith("error: DIGEST_MISMATCH: ")
    for part in ("'evil'", "forged-evil", forged, b.digest, "2026-01-02T03:04:05.000Z"):
        assert part in line, (part, line)
    assert "now points at" not in line  # the registry is not blamed for a record


def test_an_unreadable_record_on_the_git_ledger_is_reported_with_its_commit_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    remote = GitRemote(tmp_path)
    writer = GitLedger(remote.clone(), "origin", env=dict(os.environ))
    good = HistoryRecord(
        action="deploy", env="production", sha="1" * 40, digest="sha256:" + "1" * 64, result="ok"
    )
    writer.store("production").append(good)
    # A commit whose record.json is not JSON, pushed on top with plain git.
    refs = writer.refs
    ref = GitLedger.history_ref("production")
    old = writer.head(ref)
    bad = refs.commit("{not json\n", RECORD_FILE, old, "hand-made\n")
    assert refs.push([(bad, ref, old)])
    reader = GitLedger(remote.clone(), "origin", env=dict(os.environ))
    with caplog.at_level(logging.WARNING, logger="shatag.ledger"):
        assert reader.store("production").newest() == [good]
        assert reader.store("production").current() == good  # reported once, not per query
    reports = [r.getMessage() for r in caplog.records if bad in r.getMessage()]
    assert len(reports) == 1, caplog.text
    assert "refs/shatag/production" in reports[0]
    assert "skipped" in reports[0]
