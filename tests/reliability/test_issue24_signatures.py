"""Issue 24, item 7 (messages): a deploy of an image signed by a key that is not the trusted one,
with the real cosign through the real CLI.

The image is built and signed by ``inv build --sign`` with key A (its password is the session's
canary); the site trusts only key B. Under ``soft`` the deploy proceeds and says on stderr that
the signature is by an untrusted key (before: no warning at all); under ``enforce`` it is
refused with a message saying exactly that (before: "sign it", about a signed image).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import TOOLS_BIN
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
NOT_TRUSTED = "signed by a key that is not trusted"


def _key_pair(directory: Path, password: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(COSIGN), "generate-key-pair"],
        cwd=directory,
        env={**os.environ, "COSIGN_PASSWORD": password},
        check=True,
        capture_output=True,
        timeout=60,
    )
    return directory / "cosign.key", directory / "cosign.pub"


def test_issue24_image_signed_by_an_untrusted_key(
    ledger: Ledger,
    world: World,
    make_site: Callable[..., Site],
    tmp_path: Path,
) -> None:
    if not COSIGN.exists():
        pytest.skip("cosign is not installed (bash ci/setup.sh)")
    key_a, pub_a = _key_pair(tmp_path / "key-a", CANARY_COSIGN)
    ledger.exclude(tmp_path / "key-a")
    _, pub_b = _key_pair(tmp_path / "key-b", "not-the-canary")
    env = {
        **world.env,
        "INVOKE_SHATAG_CONTEXT": str(world.app.path),
        "INVOKE_SHATAG_COSIGN_KEY": str(key_a),
        "INVOKE_SHATAG_COSIGN_PUBLIC_KEY": str(pub_a),
        "COSIGN_PASSWORD": CANARY_COSIGN,
    }
    sha = world.app.commit('{"release": "signed by A"}', "signed by key A")
    signed = rinv(ledger, ["build", f"--sha={sha}", "--branch=main", "--sign"], env)
    assert signed.returncode == 0, signed.stderr[-800:]
    built = Built(sha, signed.record["image_digest"], world.root / "metadata" / f"{sha}.json")

    soft_site = make_site(cosign_public_key=str(pub_b))
    soft = soft_site.deploy(ledger, built)
    warned = [ln for ln in soft.stderr.splitlines() if NOT_TRUSTED in ln]
    record = soft.records[-1] if soft.records else {}
    soft_ok = (
        soft.returncode == 0
        and (record.get("signature_status"), record.get("signature_reason"))
        == ("unverified", "invalid")
        and soft_site.sdl_is(soft_site.snapshot(), built)
        and len(warned) == 1
        and warned[0].startswith("shatag: warning: ")
        and str(pub_b) in warned[0]
    )
    ledger.record(
        "#24.7 soft policy, image signed by a key that is not trusted (inv build --sign with "
        "key A, site trusts key B)",
        "deploys (signature unverified/invalid in the record) and warns once on stderr that "
        "it is signed by a key that is not trusted, naming the trusted key",
        f"{describe(soft)}; {record.get('signature_status')}/{record.get('signature_reason')}; "
        f"warning: {(warned[0] if warned else 'none')[:220]!r}",
        soft_ok,
    )

    enforce_site = make_site(cosign_public_key=str(pub_b), signature_policy="enforce")
    before = enforce_site.snapshot()
    enforce = enforce_site.deploy(ledger, built)
    line = next((ln for ln in enforce.stderr.splitlines() if ln.startswith("error: ")), "")
    enforce_ok = (
        enforce.returncode != 0
        and error_code(enforce) == "SIGNATURE_REQUIRED"
        and NOT_TRUSTED in line
        and "inv build --sign" not in line
        and enforce_site.snapshot() == before
    )
    ledger.record(
        "#24.7 enforce policy, image signed by a key that is not trusted",
        "SIGNATURE_REQUIRED saying the image is signed by a key that is not trusted (not "
        "'sign it'); nothing changed",
        f"{describe(enforce)}; {line[:240]!r}",
        enforce_ok,
    )
    assert soft_ok, soft.stderr[-1200:]
    assert enforce_ok, enforce.stderr[-1200:]
