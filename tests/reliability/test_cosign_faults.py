"""cosign missing, crashing, hanging -- and answering for real (FR-014, issue 6).

FR-014: a missing or invalid signature makes the deploy proceed with
``signature_status=unverified`` and a reason; only a verification tool that errors without a
pass/fail answer fails the job (SOFT_VERIFY_TOOL_ERROR), and then nothing is deployed.

The crashing and hanging cosigns are stand-ins (``fault_cosign_*`` scripts first on PATH): a real
cosign cannot be made to segfault or stall on demand. "Missing" and the real answers use the
real cosign (signing with a key whose password is the session's canary).
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import TOOLS_BIN, InvResult
from tests.reliability.conftest import (
    CANARY_COSIGN,
    Built,
    Ledger,
    Site,
    World,
    describe,
    error_code,
    rinv,
)

COSIGN = TOOLS_BIN / "cosign"
VERSION_TEXT = "GitVersion:    v2.6.5\\nGitCommit:     fault-stand-in\\n"
FAULTS = {
    # cosign itself dies with a signal before answering anything
    "crash on start (SIGSEGV)": "#!/bin/sh\nkill -SEGV $$\n",
    # `cosign version` works; `cosign verify` panics like a Go program does (exit 2)
    "crash in verify (Go panic, exit 2)": (
        "#!/bin/sh\n"
        f'if [ "$1" = version ]; then printf "{VERSION_TEXT}"; exit 0; fi\n'
        'echo "panic: runtime error: invalid memory address or nil pointer dereference" >&2\n'
        'echo "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x0]" >&2\n'
        "exit 2\n"
    ),
    # cosign verify exits 0 with garbage instead of its JSON: not a pass
    "exit 0 with garbage output": (
        "#!/bin/sh\n"
        f'if [ "$1" = version ]; then printf "{VERSION_TEXT}"; exit 0; fi\n'
        'echo "Verification for ... -- all good, trust me"\n'
        "exit 0\n"
    ),
    # `cosign verify` never answers
    "hang in verify": (
        "#!/bin/sh\n"
        f'if [ "$1" = version ]; then printf "{VERSION_TEXT}"; exit 0; fi\n'
        "exec sleep 120\n"
    ),
}


@pytest.fixture(scope="module")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if not COSIGN.exists():
        pytest.skip("cosign is not installed (bash ci/setup.sh)")
    d = tmp_path_factory.mktemp("cosign-keys")
    subprocess.run(
        [str(COSIGN), "generate-key-pair"],
        cwd=d,
        env={**os.environ, "COSIGN_PASSWORD": CANARY_COSIGN},
        check=True,
        capture_output=True,
        timeout=60,
    )
    return d / "cosign.key", d / "cosign.pub"


def _fake(tmp_path: Path, name: str, script: str) -> Path:
    d = tmp_path / f"fault_cosign_{abs(hash(name))}"
    d.mkdir()
    path = d / "cosign"
    path.write_text(script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return d


def test_cosign_missing(
    ledger: Ledger, world: World, make_site: Callable[..., Site], tmp_path: Path
) -> None:
    a = world.images[0]
    empty = tmp_path / "no-tools"
    (empty / "bin").mkdir(parents=True)
    site = make_site()
    site.extra_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "SHATAG_TOOLS_DIR": str(empty)}
    assert not any(Path(p, "cosign").exists() for p in site.extra_env["PATH"].split(":"))
    ledger.count("faults_injected")
    result = site.deploy(ledger, a)
    record = result.records[-1] if result.records else {}
    ok = (
        result.returncode == 0
        and record.get("signature_status") == "unverified"
        and record.get("signature_reason") == "tool_missing"
        and site.sdl_is(site.snapshot(), a)
    )
    ledger.record(
        "cosign missing",
        "deploy proceeds, signature_status=unverified, signature_reason=tool_missing",
        f"{describe(result)}, {record.get('signature_status')}/{record.get('signature_reason')}",
        ok,
    )
    assert ok, result.stderr[-500:]


@pytest.mark.parametrize("fault", list(FAULTS))
def test_cosign_broken_fault_stand_in(  # noqa: PLR0917 -- pytest passes fixtures by name
    ledger: Ledger,
    world: World,
    make_site: Callable[..., Site],
    tmp_path: Path,
    keypair: tuple[Path, Path],
    fault: str,
) -> None:
    a, b = world.images[0], world.images[1]
    site = make_site(cosign_public_key=str(keypair[1]), tool_timeout_sec=3)
    assert site.deploy(ledger, a).returncode == 0
    before = site.snapshot()
    fake = _fake(tmp_path, fault, FAULTS[fault])
    site.extra_env = {"PATH": f"{fake}:{site.world.env['PATH']}"}
    ledger.count("faults_injected")
    started = time.monotonic()
    result = site.deploy(ledger, b)
    elapsed = time.monotonic() - started
    unchanged = site.snapshot() == before
    ok = (
        error_code(result) == "SOFT_VERIFY_TOOL_ERROR"
        and "Traceback" not in result.stderr
        and unchanged
        and elapsed < 20
    )
    ledger.record(
        f"cosign {fault} (fault stand-in)",
        "SOFT_VERIFY_TOOL_ERROR (no pass/fail answer), bounded time, nothing deployed",
        f"{describe(result)} after {elapsed:.1f}s; targets/history unchanged={unchanged}",
        ok,
    )
    assert ok, result.stderr[-500:]


def test_cosign_real_answers(
    ledger: Ledger,
    world: World,
    make_site: Callable[..., Site],
    keypair: tuple[Path, Path],
) -> None:
    """Unsigned → unverified/no_signature (deploy proceeds); signed by ``inv build --sign``
    with the canary-protected key → verified; wrong key → unverified/invalid."""
    key, pub = keypair
    env = {
        **world.env,
        "INVOKE_SHATAG_CONTEXT": str(world.app.path),
        "INVOKE_SHATAG_COSIGN_KEY": str(key),
        "INVOKE_SHATAG_COSIGN_PUBLIC_KEY": str(pub),
        "COSIGN_PASSWORD": CANARY_COSIGN,
        "SHATAG_DEBUG": "1",
    }
    sha = world.app.commit('{"release": "signed"}', "signed release")
    signed = rinv(ledger, ["build", f"--sha={sha}", "--branch=main", "--sign"], env)
    assert signed.returncode == 0, signed.stderr[-800:]
    site = make_site(cosign_public_key=str(pub))
    unsigned = site.deploy(ledger, world.images[0])
    built = Built(sha, signed.record["image_digest"], world.root / "metadata" / f"{sha}.json")
    verified = site.deploy(ledger, built, env={"SHATAG_DEBUG": "1"})
    # a public key of another pair: the signature does not match
    wrong_dir = key.parent / "other"
    wrong_dir.mkdir(exist_ok=True)
    if not (wrong_dir / "cosign.pub").exists():
        subprocess.run(
            [str(COSIGN), "generate-key-pair"],
            cwd=wrong_dir,
            env={**os.environ, "COSIGN_PASSWORD": "not-the-canary"},
            check=True,
            capture_output=True,
            timeout=60,
        )
    other = make_site(cosign_public_key=str(wrong_dir / "cosign.pub"))
    wrong = other.deploy(ledger, built)

    def status(r: InvResult) -> str:
        rec = r.records[-1] if r.records else {}
        return f"{rec.get('signature_status')}/{rec.get('signature_reason')}"

    ok = (
        unsigned.returncode == 0
        and status(unsigned) == "unverified/no_signature"
        and verified.returncode == 0
        and status(verified) == "verified/n/a"
        and wrong.returncode == 0
        and status(wrong) == "unverified/invalid"
    )
    ledger.record(
        "cosign real answers (unsigned, signed with canary key, wrong key)",
        "unverified/no_signature and deploy proceeds; verified/n/a; unverified/invalid",
        f"{status(unsigned)} ({describe(unsigned)}); {status(verified)} ({describe(verified)}); "
        f"{status(wrong)} ({describe(wrong)})",
        ok,
    )
    assert ok, (unsigned.stderr[-300:], verified.stderr[-300:], wrong.stderr[-300:])
