"""Real inputs for the signing/SBOM tests: tiny FROM-scratch images, cosign keys, fake tools.

The registry is the shared session fixture (``tests/conftest.py``). Images are built straight
with the docker CLI (classic builder, ``--no-cache``) so these tests do not depend on
``inv build``; everything is real except :func:`fake_tool`, used only for faults a real cosign
cannot produce on demand (crash, hang).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

from shatag._testing.localregistry import LocalRegistry

TOOLS_BIN = (
    Path(os.environ.get("SHATAG_TOOLS_DIR", str(Path.home() / ".cache/shatag/tools"))) / "bin"
)


def tool_path(name: str) -> str:
    """The real tool, from PATH or the shatag tools dir. Missing → the test fails, not skips."""
    found = shutil.which(name) or shutil.which(name, path=str(TOOLS_BIN))
    if found is None:
        msg = f"{name} is required for this test; install it with ci/install-tools.sh"
        raise AssertionError(msg)
    return found


def env_with_tools(*names: str) -> dict[str, str]:
    """An environment whose PATH finds the real tools (and the usual system dirs)."""
    dirs = [str(Path(tool_path(n)).parent) for n in names]
    path = os.pathsep.join([*dict.fromkeys(dirs), os.environ.get("PATH", os.defpath)])
    return {"PATH": path, "HOME": os.environ.get("HOME", "/root")}


def build_and_push(context_root: Path, reference: str, label: str) -> str:
    """Build a FROM scratch busybox image (classic builder, no cache), push, return digest."""
    ctx = context_root / f"ctx-{label}"
    ctx.mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", ctx / "busybox")
    (ctx / "Dockerfile").write_text(
        f'FROM scratch\nCOPY busybox /bin/busybox\nLABEL shatag.test="{label}"\n'
        'CMD ["/bin/busybox", "true"]\n'
    )
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    subprocess.run(
        ["docker", "build", "-q", "--no-cache", "-t", reference, str(ctx)],
        check=True,
        env=env,
        capture_output=True,
    )
    push = subprocess.run(["docker", "push", reference], check=True, capture_output=True, text=True)
    for line in push.stdout.splitlines():
        if "digest: sha256:" in line:
            return "sha256:" + line.split("digest: sha256:", 1)[1].split()[0]
    raise AssertionError(f"no digest in push output: {push.stdout}")


def tag_digest(registry: LocalRegistry, name: str, tag: str) -> str:
    req = urllib.request.Request(  # noqa: S310
        f"{registry.url}/v2/{name}/manifests/{tag}",
        method="HEAD",
        headers={
            "Accept": ", ".join(
                [
                    "application/vnd.oci.image.index.v1+json",
                    "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json",
                    "application/vnd.docker.distribution.manifest.v2+json",
                ]
            )
        },
    )
    with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
        return str(resp.headers["Docker-Content-Digest"])


def generate_key_pair(directory: Path, password: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [tool_path("cosign"), "generate-key-pair"],
        cwd=directory,
        env={**os.environ, "COSIGN_PASSWORD": password},
        check=True,
        capture_output=True,
    )
    return directory / "cosign.key", directory / "cosign.pub"


def fake_tool(directory: Path, name: str, body: str) -> Path:
    """A real executable script named ``name`` (used only for faults cosign cannot produce)."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / name
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return directory
