"""The copy figures of issue 26: a 50 MB image moved from one repository to another.

    python -m tests.perf.bench_promote [--runs N]

Three ways, each run on a fresh target repository, the median of ``--runs`` (default 3):

* ``mount``: :func:`shatag.supplychain.copy.copy_image` within one registry (what ``promote``
  does staging → canonical on one registry: every blob mounted, nothing moves);
* ``stream``: the same between two registries (every blob streamed across, no mount possible);
* ``by hand``: ``docker pull`` (the image removed from the daemon first), ``docker tag``,
  ``docker push`` -- what an operator would type.

Real registries (Debian's ``docker-registry`` on loopback) and the real docker daemon; nothing
in the daemon is touched but the images this script builds (``shatag-bench-promote*``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

from shatag._testing.localregistry import LocalRegistry
from shatag.core import parse_repository
from shatag.supplychain.copy import copy_image
from shatag.supplychain.registry import RegistryClient

SHA = "b" * 40


def _client(repository: str) -> RegistryClient:
    return RegistryClient(parse_repository(repository), env={"HOME": str(Path.home())})


def _docker(*args: str) -> str:
    out = subprocess.run(["docker", *args], check=True, capture_output=True, text=True)
    return out.stdout


def build_50mb(root: Path, reference: str) -> str:
    """A FROM-scratch image with one 50 MB layer of random bytes, pushed; its digest."""
    ctx = root / "ctx"
    ctx.mkdir()
    (ctx / "blob").write_bytes(os.urandom(50 * 1024 * 1024))
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY blob /blob\n")
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    subprocess.run(
        ["docker", "build", "-q", "-t", reference, str(ctx)],
        check=True,
        env=env,
        capture_output=True,
    )
    push = _docker("push", reference)
    return "sha256:" + push.split("digest: sha256:", 1)[1].split()[0]


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def by_hand(source: str, target: str) -> None:
    _docker("pull", "-q", source)
    _docker("tag", source, target)
    _docker("push", "-q", target)


def one_run(root: Path, one: LocalRegistry, source: str, digest: str) -> dict[str, float]:
    """One of each, every target a fresh repository on a registry that never saw the blobs
    (``docker push`` mounts from another repository of its registry by itself)."""
    name = f"shatag-bench-promote-{uuid.uuid4().hex[:6]}"
    out: dict[str, float] = {}
    out["mount"] = timed(
        partial(copy_image, _client(source), _client(f"{one.address}/{name}"), SHA, digest)
    )
    with LocalRegistry(root / f"{name}-stream") as two:
        target = _client(f"{two.address}/{name}")
        out["stream"] = timed(partial(copy_image, _client(source), target, SHA, digest))
    with LocalRegistry(root / f"{name}-hand") as three:
        target_ref = f"{three.address}/{name}:{SHA}"
        out["by hand"] = timed(partial(by_hand, f"{source}:{SHA}", target_ref))
        _docker("rmi", f"{source}:{SHA}", target_ref)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    figures: dict[str, list[float]] = {"mount": [], "stream": [], "by hand": []}
    with tempfile.TemporaryDirectory() as tmp, LocalRegistry(Path(tmp) / "a") as one:
        source = f"{one.address}/shatag-bench-promote-staging"
        digest = build_50mb(Path(tmp), f"{source}:{SHA}")
        _docker("rmi", f"{source}:{SHA}")
        for _ in range(runs):
            for key, value in one_run(Path(tmp), one, source, digest).items():
                figures[key].append(round(value, 3))
    result = {k: round(statistics.median(v), 3) for k, v in figures.items()}
    print(json.dumps({"image_mb": 50, "runs": runs, "median_sec": result, "all": figures}))


if __name__ == "__main__":
    main()
