"""Issue 14, items 6 and 10: half-published SHAs and the truth about a lost build race.

* A real build is SIGKILLed right after its full SHA tag was pushed, while it stores the short
  tag (the proxy holds that one request until the kill). The re-run must repair the short tag or
  say what is missing -- not report ``reused: true`` over a 404.
* A SHA built and recorded, whose tag is then deleted from the registry's storage (what a
  cleanup job does): building it again must not publish a different image under that SHA and
  silently overwrite the recorded digest.
* Two builds of one SHA on two "machines" (two state directories, so no shared build lock): B
  publishes while A's manifest upload is held in the proxy; then A's push lands over the tag.
  A must say what it did (and put the tag back), not "nothing was changed".
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shatag._testing.localregistry import LocalRegistry
from shatag.core import parse_repository, short_sha
from shatag.supplychain.registry import RegistryClient
from tests.conftest import InvResult, inv_argv
from tests.reliability._issue14 import TamperProxy, bounded_inv, delete_tag_in_storage
from tests.reliability.conftest import Ledger, World, describe, error_code, rinv


def _digest(registry: str, repo: str, ref: str) -> str | None:
    return RegistryClient(
        parse_repository(f"{registry}/{repo}"), env={}, retries=1
    ).manifest_digest(ref)


@pytest.fixture
def proxy(registry: LocalRegistry) -> Iterator[TamperProxy]:
    p = TamperProxy(registry.address).start()
    yield p
    p.stop()


def _build_env(world: World, address: str, repo: str, root: Path) -> dict[str, str]:
    return {
        **world.env,
        "INVOKE_SHATAG_CANONICAL_REPOSITORY": f"{address}/{repo}",
        "INVOKE_SHATAG_STAGING_REPOSITORY": f"{address}/{repo}-staging",
        "INVOKE_SHATAG_CONTEXT": str(world.app.path),
        "INVOKE_SHATAG_STATE_DIR": str(root / "state"),
        "INVOKE_SHATAG_METADATA_DIR": str(root / "metadata"),
    }


def test_issue14_interrupted_build_short_tag(
    ledger: Ledger, world: World, registry: LocalRegistry, proxy: TamperProxy, tmp_path: Path
) -> None:
    repo = f"rel14-int-{uuid.uuid4().hex[:8]}"
    sha = world.app.commit(f'{{"release": "interrupted {repo}"}}', "interrupted")
    env = _build_env(world, proxy.address, repo, tmp_path)
    release = threading.Event()
    held = proxy.add(rf"^PUT /v2/{repo}/manifests/{short_sha(sha)}$", hold=release, status=503)
    build = subprocess.Popen(
        inv_argv("build", f"--sha={sha}", "--branch=main"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    killed = held.seen.wait(300)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(build.pid, signal.SIGKILL)
    out, err = build.communicate(timeout=60)
    ledger.capture("killed build", out + err)
    release.set()
    proxy.rules.remove(held)
    ledger.count("kills_attempted")
    full = _digest(registry.address, repo, sha)
    short_before = _digest(registry.address, repo, short_sha(sha))
    # The re-run talks to the registry directly (the proxy only served to stop the first run
    # at the right request).
    direct = _build_env(world, registry.address, repo, tmp_path)
    again = rinv(ledger, ["build", f"--sha={sha}", "--branch=main"], direct)
    record = again.records[-1] if again.records else {}
    short_after = _digest(registry.address, repo, short_sha(sha))
    ok = (
        killed
        and full is not None
        and short_before is None
        and again.returncode == 0
        and record.get("reused") is True
        and record.get("short_tag_repaired") is True
        and short_after == full
    )
    if ok:
        ledger.count("kills_survived")
    ledger.record(
        "#14.6a build SIGKILLed after the full tag, before the short tag (proxy holds that PUT)",
        "state after the kill: full tag, no short tag; the re-run reuses the image and restores "
        "the short tag to the same digest (short_tag_repaired: true)",
        f"killed at the short-tag PUT={killed}; full tag={bool(full)}, short before="
        f"{short_before or '404'}; re-run {describe(again)}, reused={record.get('reused')}, "
        f"repaired={record.get('short_tag_repaired')}; short tag after == full: "
        f"{short_after == full}",
        ok,
    )
    assert ok, again.stderr[-600:]


def test_issue14_rebuild_after_tag_deleted(
    ledger: Ledger, world: World, registry: LocalRegistry, tmp_path: Path
) -> None:
    repo = f"rel14-del-{uuid.uuid4().hex[:8]}"
    sha = world.app.commit(f'{{"release": "deleted {repo}"}}', "deleted")
    env = _build_env(world, registry.address, repo, tmp_path)
    first = rinv(ledger, ["build", f"--sha={sha}", "--branch=main"], env)
    assert first.returncode == 0, first.stderr
    recorded = first.record["image_digest"]
    meta = tmp_path / "metadata" / f"{sha}.json"
    storage = registry.workdir / "storage"
    gone = delete_tag_in_storage(storage, repo, sha) and delete_tag_in_storage(
        storage, repo, short_sha(sha)
    )
    assert gone
    assert _digest(registry.address, repo, sha) is None
    ledger.count("faults_injected")
    time.sleep(1.1)  # a rebuild in another second gets another image timestamp, i.e. digest
    again = rinv(ledger, ["build", f"--sha={sha}", "--branch=main"], env)
    kept = json.loads(meta.read_text()).get("image_digest")
    after = _digest(registry.address, repo, sha)
    ok = error_code(again) == "MISSING_TAG" and kept == recorded and after is None
    ledger.record(
        "#14.6b build again after the SHA tag was deleted from the registry",
        "refused (MISSING_TAG naming the recorded digest and how to restore it); the metadata "
        "file keeps the recorded digest; nothing pushed",
        f"{describe(again)}; metadata digest kept={kept == recorded}; tag after: "
        f"{(after or 'absent')[:19]}",
        ok,
    )
    assert ok, again.stderr[-600:]


def test_issue14_cross_machine_build_race_message(
    ledger: Ledger, world: World, registry: LocalRegistry, proxy: TamperProxy, tmp_path: Path
) -> None:
    repo = f"rel14-race-{uuid.uuid4().hex[:8]}"
    sha = world.app.commit(f'{{"release": "race {repo}"}}', "race")
    env_a = _build_env(world, proxy.address, repo, tmp_path / "machine-a")
    env_b = _build_env(world, registry.address, repo, tmp_path / "machine-b")
    release = threading.Event()
    held = proxy.add(rf"^PUT /v2/{repo}/manifests/{sha}$", hold=release)
    a = subprocess.Popen(
        inv_argv("build", f"--sha={sha}", "--branch=main"),
        env=env_a,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert held.seen.wait(300), "machine A never pushed its manifest"
        time.sleep(1.1)  # B's image gets another timestamp, hence another digest
        b = bounded_inv(ledger, inv_argv("build", f"--sha={sha}", "--branch=main"), env_b, 300)
    finally:
        release.set()
    out, err = a.communicate(timeout=300)
    ledger.capture("race build A", out + err)
    result_a = InvResult(a.returncode, out, err)
    ledger.count("faults_injected")
    b_digest = b.records[-1].get("image_digest") if b.records else None
    full = _digest(registry.address, repo, sha)
    short = _digest(registry.address, repo, short_sha(sha))
    message = next((ln for ln in result_a.stderr.splitlines() if ln.startswith("error: ")), "")
    truthful = "nothing was changed" not in message and "re-pointed" in message
    ok = (
        b.returncode == 0
        and error_code(result_a) == "DIGEST_MISMATCH"
        and truthful
        and full == short == b_digest
    )
    ledger.record(
        "#14.10a the losing build of a cross-machine race (A's manifest upload held until B "
        "published)",
        "B succeeds; A fails DIGEST_MISMATCH saying it re-pointed the full tag and put it back; "
        "both tags then name B's digest (B's success claim holds)",
        f"B {describe(b)}; A {describe(result_a)}: {message[:260]!r}; full == short == B: "
        f"{full == short == b_digest}",
        ok,
    )
    assert ok, (message, result_a.stderr[-800:], b.stderr[-400:])


def test_issue14_readme_lists_every_code(ledger: Ledger) -> None:
    from shatag.errors import ALL_CODES
    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    missing = [code for code in ALL_CODES if f"`{code}`" not in readme]
    ledger.record(
        "#14.10b README lists every error code (shatag.errors.ALL_CODES)",
        "no code missing (TOOL_FAILURE, TOOL_TIMEOUT, TOOL_MISSING were)",
        f"{len(ALL_CODES) - len(missing)}/{len(ALL_CODES)} listed; missing: {missing or 'none'}",
        not missing,
    )
    assert not missing, missing
