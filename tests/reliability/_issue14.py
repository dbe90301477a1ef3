"""Helpers for the issue 14 scenarios: a tampering proxy and a small OCI upload client.

* :class:`TamperProxy` -- a loopback HTTP proxy in front of the *real* registry. Every request is
  forwarded; a rule may change how the answer comes back: the body trickled a byte at a time (a
  registry behind a congested link does exactly this; ``docker-registry`` cannot be told to),
  the ``Docker-Content-Digest`` header left out of HEAD answers (as some registries do), or the
  request held until the test releases it (to order two real builds deterministically).
* :func:`push_blob`, :func:`push_manifest`, :func:`image_manifest`, :func:`index_manifest` --
  the registry's own upload API, to publish real OCI artefacts (an arm64 image, an index) under
  a SHA tag the way another tool (``docker buildx``, ``crane``) would.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import resource
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import requests

from tests.conftest import ROOT, InvResult
from tests.reliability._faults import LoopbackProxy

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
IN_TOTO = "application/vnd.in-toto+json"


@dataclass
class Rule:
    """What the proxy does to requests whose ``METHOD path`` matches ``pattern``."""

    pattern: str
    trickle_sec: float = 0.0  # send the body one byte per this many seconds
    strip_digest: bool = False  # drop Docker-Content-Digest from the answer
    hold: threading.Event | None = None  # wait for this event (bounded) before forwarding
    status: int | None = None  # answer this status instead of forwarding (after any hold)
    seen: threading.Event = field(default_factory=threading.Event)
    count: int = 0

    def matches(self, method: str, path: str) -> bool:
        return re.search(self.pattern, f"{method} {path}") is not None


class TamperProxy(LoopbackProxy):
    def __init__(self, upstream: str, *, hold_limit: float = 120.0) -> None:
        super().__init__(upstream)
        self.hold_limit = hold_limit
        self.rules: list[Rule] = []
        self.requests: list[tuple[float, str, str]] = []

    def handle(self, request: BaseHTTPRequestHandler) -> None:  # noqa: PLR0912 -- kept together
        """One request's whole life: matched, held, refused or forwarded, then tampered."""
        self.requests.append((time.monotonic(), request.command, request.path))
        rules = [r for r in self.rules if r.matches(request.command, request.path)]
        for rule in rules:
            rule.count += 1
            rule.seen.set()
        body = self.read_body(request)
        for rule in rules:
            if rule.hold is not None:
                rule.hold.wait(self.hold_limit)
        refuse = next((r.status for r in rules if r.status is not None), None)
        if refuse is not None:
            request.send_response(refuse)
            request.send_header("Content-Length", "0")
            request.end_headers()
            return
        status, headers, data = self.forward(request, body, timeout=60)
        strip = any(r.strip_digest for r in rules)
        trickle = max([r.trickle_sec for r in rules] or [0.0])
        request.send_response(status)
        upstream_length = "0"
        for key, raw_value in headers:
            low = key.lower()
            if low == "content-length":
                upstream_length = raw_value
            if low in ("transfer-encoding", "connection", "content-length"):
                continue
            if strip and low == "docker-content-digest":
                continue
            value = raw_value
            if low == "location":
                value = raw_value.replace(self.upstream, self.address)
            request.send_header(key, value)
        # A HEAD answer keeps the registry's Content-Length: docker takes blob sizes
        # for the manifest from it.
        request.send_header(
            "Content-Length", upstream_length if request.command == "HEAD" else str(len(data))
        )
        request.end_headers()
        if request.command == "HEAD":
            return
        if trickle:
            for i in range(len(data)):
                request.wfile.write(data[i : i + 1])
                request.wfile.flush()
                time.sleep(trickle)
        else:
            request.wfile.write(data)

    def stop(self) -> None:
        for rule in self.rules:
            if rule.hold is not None:
                rule.hold.set()
        super().stop()

    def add(self, pattern: str, **kw: Any) -> Rule:
        rule = Rule(pattern, **kw)
        self.rules.append(rule)
        return rule


# -- publishing real OCI artefacts ------------------------------------------------------------


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(registry: str, repo: str, data: bytes) -> str:
    digest = sha256(data)
    start = requests.post(f"http://{registry}/v2/{repo}/blobs/uploads/", timeout=30)
    start.raise_for_status()
    location = start.headers["Location"]
    if location.startswith("/"):
        location = f"http://{registry}{location}"
    sep = "&" if "?" in location else "?"
    put = requests.put(
        f"{location}{sep}digest={digest}",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=30,
    )
    put.raise_for_status()
    return digest


def push_manifest(registry: str, repo: str, ref: str, body: bytes, media_type: str) -> str:
    put = requests.put(
        f"http://{registry}/v2/{repo}/manifests/{ref}",
        data=body,
        headers={"Content-Type": media_type},
        timeout=30,
    )
    put.raise_for_status()
    return str(put.headers["Docker-Content-Digest"])


def _one_layer_manifest(
    registry: str, repo: str, config: bytes, layer: dict[str, Any], payload: bytes
) -> bytes:
    """Upload ``config`` and ``payload``; the OCI manifest of the two (``layer``: the layer
    descriptor's media type and any annotations)."""
    config_digest = push_blob(registry, repo, config)
    layer_digest = push_blob(registry, repo, payload)
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [
                {
                    "mediaType": layer["mediaType"],
                    "digest": layer_digest,
                    "size": len(payload),
                    **{k: v for k, v in layer.items() if k != "mediaType"},
                }
            ],
        }
    ).encode()


def image_manifest(registry: str, repo: str, *, arch: str, payload: bytes) -> tuple[bytes, str]:
    """Upload a one-layer image whose config says ``linux/<arch>``; return (manifest, digest)."""
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [sha256(payload)]},
        }
    ).encode()
    manifest = _one_layer_manifest(registry, repo, config, {"mediaType": OCI_LAYER}, payload)
    return manifest, sha256(manifest)


def attestation_manifest(registry: str, repo: str, subject: str) -> tuple[bytes, str]:
    """A BuildKit-style attestation manifest (in-toto layer) for ``subject``."""
    statement = json.dumps({"_type": "https://in-toto.io/Statement/v0.1", "subject": []}).encode()
    layer = {
        "mediaType": IN_TOTO,
        "annotations": {"in-toto.io/predicate-type": "https://spdx.dev/Document"},
    }
    manifest = _one_layer_manifest(registry, repo, b"{}", layer, statement)
    digest = push_manifest(registry, repo, sha256(manifest), manifest, OCI_MANIFEST)
    del subject
    return manifest, digest


def index_manifest(entries: list[dict[str, Any]]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()


def index_entry(
    digest: str, size: int, *, arch: str | None, media_type: str = OCI_MANIFEST, **annotations: str
) -> dict[str, Any]:
    entry: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": size}
    if arch is not None:
        entry["platform"] = {
            "architecture": arch,
            "os": "linux" if arch != "unknown" else "unknown",
        }
    if annotations:
        entry["annotations"] = dict(annotations)
    return entry


def delete_tag_in_storage(storage: Path, repo: str, tag: str) -> bool:
    """Remove ``repo:tag`` from a ``docker-registry`` filesystem storage (what its garbage
    collector or an operator's cleanup does; the registry's API delete is off in the fixture).
    The manifest and its blobs stay, so ``repo@digest`` still resolves."""
    import shutil

    path = (
        storage / "docker" / "registry" / "v2" / "repositories" / repo / "_manifests" / "tags" / tag
    )
    if not path.exists():
        return False
    shutil.rmtree(path)
    return True


def bounded_inv(
    ledger: Any,
    argv: list[str],
    env: dict[str, str],
    limit: float,
    *,
    memory_bytes: int = 2 << 30,
) -> InvResult:
    """Run a CLI command line; a run still going after ``limit`` seconds is killed (with its
    process group) and reported as ``returncode -9`` plus a ``[hung …]`` note on stderr. The
    address space is capped so a hostile input cannot take the shared machine's memory."""

    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    # Set right after the start (the interpreter takes far longer to reach the config).
    resource.prlimit(proc.pid, resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    try:
        out, err = proc.communicate(timeout=limit)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        code = -9
        err += f"\n[hung: killed after {limit:g}s]"
    ledger.capture(f"inv {' '.join(argv[5:])[:80]}", out + "\n" + err)
    return InvResult(code, out, err)


def traceback_in(result: InvResult) -> bool:
    return "Traceback (most recent call last)" in result.stderr + result.stdout
