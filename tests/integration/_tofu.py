"""A real OpenTofu run over the provider-less fixture (issue 13, item 4).

``tofu`` comes from ``${SHATAG_TOOLS_DIR:-~/.cache/shatag/tools}/bin/tofu`` (built once from
``github.com/opentofu/opentofu`` by ``ci/install-tools.sh tofu``, which the integration session
runs; ``go install`` refuses the module's replace directives, so ``./cmd/tofu`` is built inside
the downloaded module) or from PATH. A missing binary fails the test: it is never a skip
counted as coverage.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import required_tool

FIXTURE = Path(__file__).parent / "fixtures" / "akash-api"


def tofu_binary() -> str:
    """The real ``tofu`` (see :func:`tests.conftest.required_tool`)."""
    return required_tool("tofu")


def copy_fixture(dest: Path) -> Path:
    """The fixture configuration copied to ``dest`` (a directory of its own per test)."""
    shutil.copytree(FIXTURE, dest)
    return dest


def tofu(
    workdir: Path, command: str, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run ``tofu -chdir=workdir command -no-color args…`` offline (no checkpoint calls)."""
    home = workdir.parent / ".tofu-home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "CHECKPOINT_DISABLE": "1",
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
    }
    return subprocess.run(
        [tofu_binary(), f"-chdir={workdir}", command, "-no-color", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def apply(workdir: Path) -> str:
    """``tofu init`` (once) + ``tofu apply -auto-approve``; returns the ``image`` output."""
    if not (workdir / ".terraform.lock.hcl").exists() and not (workdir / ".terraform").exists():
        init = tofu(workdir, "init", "-input=false")
        assert init.returncode == 0, f"tofu init failed:\n{init.stdout}\n{init.stderr}"
    run = tofu(workdir, "apply", "-auto-approve", "-input=false")
    assert run.returncode == 0, f"tofu apply failed:\n{run.stdout}\n{run.stderr}"
    out = tofu(workdir, "output", "-raw", "image")
    assert out.returncode == 0, f"tofu output failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout.strip()
