"""Issue 24, items 3, 4 and 7 (deploy part): hostile input never corrupts what shatag records.

Rows of docs/reliability.md; the finer assertions are in tests/integration/test_issue24_*.py.

* 3 -- "secrets" whose values are also the SHA and a target's name (``PIPELINE_KEY=<sha>``):
  deploy, deploy, rollback keep history and the JSON lines intact.
* 4 -- hand-made ledger records: a record of a never-built SHA in the middle of history (the
  default rollback skips it with a warning), a forged digest for a real SHA in another
  environment's history (blocks only an environment that never ran the SHA, naming the record).
* 7 -- the state disk (the docker proxy's directory, a tmpfs) full in the middle of the switch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.integration.test_proxy_deploy import Px
from tests.reliability.conftest import Ledger, Site, World, describe, error_code
from tests.reliability.test_issue14_tracebacks import fill, tmpfs


def _forge(site: Site, env: str, **fields: object) -> None:
    record: dict[str, object] = {"action": "deploy", "env": env, "result": "ok"}
    record["attempt"] = f"forged-{env}"
    record.update(repository=site.world.canonical, finished_at="2026-01-02T03:04:05.000Z")
    record.update(fields)
    path = site.state / env / "history.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(record) + "\n")


def test_issue24_secret_equal_to_sha_and_target(
    ledger: Ledger, world: World, make_site: Callable[..., Site]
) -> None:
    a, b, _ = world.images
    site = make_site()
    site.extra_env.update(PIPELINE_KEY=a.sha, TARGET_SECRET=str(site.sdl))
    runs = [site.deploy(ledger, a), site.deploy(ledger, b), site.rollback(ledger)]
    records = site.snapshot().history_records()
    shas = [r.get("sha") for r in records]
    labels = [t for r in records for t in r.get("targets", [])]
    intact = (
        shas == [a.sha, b.sha, a.sha]
        and all(t in (f"sdl:{site.sdl}", f"tfvars:{site.tfvars}") for t in labels)
        and runs[2].record.get("image_sha") == a.sha
        and site.sdl_is(site.snapshot(), a)
    )
    ok = all(r.returncode == 0 for r in runs) and intact
    ledger.count("inputs_tried", 3)
    ledger.record(
        "#24.3 PIPELINE_KEY=<sha A> and a secret equal to the SDL target's path; deploy A, "
        "deploy B, rollback",
        "all exit 0; history and JSON lines keep the SHA and target names (no ***); the "
        "rollback runs A",
        f"{', '.join(describe(r) for r in runs)}; history intact={intact}",
        ok,
    )
    assert ok, [r.stderr[-400:] for r in runs]


def test_issue24_ledger_records_are_data(
    ledger: Ledger, world: World, make_site: Callable[..., Site]
) -> None:
    a, b, _ = world.images
    site = make_site()
    first = site.deploy(ledger, a)
    never_built = "f00d" * 10
    _forge(site, "rel", sha=never_built, digest="sha256:" + "0" * 64)
    second = site.deploy(ledger, b)
    back = site.rollback(ledger)
    warned = any(
        line.startswith("shatag: skipped") and never_built in line
        for line in back.stderr.splitlines()
    )
    walk_ok = (
        first.returncode == 0
        and second.returncode == 0
        and back.returncode == 0
        and back.record.get("image_sha") == a.sha
        and warned
    )
    ledger.count("inputs_tried", 1)
    ledger.record(
        "#24.4a a record naming a never-built SHA between A and B; rollback without --sha",
        "the walk-back skips it with a warning naming the record, and rolls back to A",
        f"rollback {describe(back)}, to A={back.record.get('image_sha') == a.sha}, "
        f"warning={warned}",
        walk_ok,
    )
    forged = "sha256:" + "e" * 64
    _forge(site, "evil", sha=b.sha, digest=forged)
    again = site.deploy(ledger, b)  # rel ran B with the registry's digest: its record decides
    other = make_site()
    _forge(other, "evil", sha=b.sha, digest=forged)
    blocked = other.deploy(ledger, b)
    line = next((x for x in blocked.stderr.splitlines() if x.startswith("error: ")), "")
    named = all(p in line for p in ("'evil'", "forged-evil", forged, b.digest))
    forged_ok = again.returncode == 0 and error_code(blocked) == "DIGEST_MISMATCH" and named
    ledger.count("inputs_tried", 1)
    ledger.record(
        "#24.4b another environment's record forges a digest for a real SHA",
        "an environment that ran the SHA deploys it (its own record decides); one that never "
        "did is refused DIGEST_MISMATCH naming the environment, the record and both digests",
        f"own env: {describe(again)}; fresh env: {describe(blocked)}, record named={named}",
        forged_ok,
    )
    assert walk_ok, back.stderr[-600:]
    assert forged_ok, (again.stderr[-400:], line)


def test_issue24_full_state_disk_mid_docker_switch(
    ledger: Ledger, world: World, tmp_path: Path
) -> None:
    a, b, _ = world.images
    site = Px(tmp_path, world.env)
    home = site.runtime / "proxy" / "prod" / site.name  # the host's runtime state (issue 23)
    try:
        with tmpfs(home, "1m"):
            try:
                first = site.deploy(a.sha)
                apps = site.apps()
                fill(home)
                ledger.count("faults_injected")
                second = site.deploy(b.sha)
                left = site.apps()
                serves = json.loads(site.serves()) if first.returncode == 0 else {}
                records = (site.state / "prod" / "history.jsonl").read_text().splitlines()
                code = json.loads(records[-1]).get("error_code")
            finally:
                site.cleanup()
    finally:
        site.cleanup()
    ok = (
        first.returncode == 0
        and error_code(second) == "STATE_ERROR"
        and left == apps
        and serves == {"release": "A"}
        and code == "STATE_ERROR"
    )
    ledger.record(
        "#24.7 the state disk (the docker proxy's directory, a tmpfs) is full when the "
        "proxy-gated switch moves traffic",
        "STATE_ERROR in the error line and in history; the new container removed (no orphan); "
        "the old release still serves",
        f"{describe(second)}; history code {code}; containers after = before: {left == apps}; "
        f"serves {serves}",
        ok,
    )
    assert ok, second.stderr[-600:]
