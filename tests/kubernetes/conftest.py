"""A real single-node Kubernetes for the `kubernetes` session (issue 16, item 3).

* ``kube`` (session) — ``ci/kube_cluster.py up`` on loopback with the session's ``registry``
  as the pods' registry; ``down`` at the end of the session, which must leave nothing behind.
* ``push_image`` — factory: a FROM-scratch image (static busybox + files you choose) built with
  docker, pushed to ``registry`` and removed from the local engine again; returns its reference.

Needs root and the binaries of ``bash ci/install-kubernetes.sh`` (the nox session runs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shatag._testing.localregistry import LocalRegistry, free_port
from tests.conftest import ROOT, TOOLS_BIN

LAUNCHER = ROOT / "ci" / "kube_cluster.py"
STATIC_BUSYBOX = Path("/bin/busybox")


@dataclass(frozen=True)
class Kube:
    """The running cluster: its kubeconfig and the registry its pods pull from."""

    kubeconfig: Path
    run_dir: Path
    registry: LocalRegistry

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": os.pathsep.join([str(TOOLS_BIN), os.environ.get("PATH", os.defpath)]),
        }

    def kubectl(self, *args: str, timeout: float = 60, check: bool = True) -> str:
        proc = subprocess.run(
            [str(TOOLS_BIN / "kubectl"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return proc.stdout

    def get(self, *args: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.kubectl("get", *args, "-o", "json"))
        return data

    def apply(self, manifest: dict[str, Any]) -> None:
        proc = subprocess.run(
            [str(TOOLS_BIN / "kubectl"), "apply", "-f", "-"],
            input=json.dumps(manifest),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if proc.returncode != 0:
            pytest.fail(f"kubectl apply: {proc.stderr}")


def _launcher(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(LAUNCHER), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def kube(registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    if os.geteuid() != 0:
        pytest.fail("the kubernetes session needs root (the kubelet runs containers)")
    for name in ("kube-apiserver", "kubelet", "kubectl", "etcd"):
        if not (TOOLS_BIN / name).exists():
            pytest.fail(f"{TOOLS_BIN / name} is missing: run `bash ci/install-kubernetes.sh`")
    # A short path: containerd's socket lives under it (unix socket paths are limited to 108).
    run_dir = Path(tempfile.mkdtemp(prefix="shatag-kube-"))
    started = _launcher(
        "up", "--run-dir", str(run_dir), "--registry", registry.address, timeout=300
    )
    if started.returncode != 0:
        pytest.fail(f"kube_cluster.py up failed:\n{started.stderr}")
    kubeconfig = Path(started.stdout.strip().splitlines()[-1])
    try:
        yield Kube(kubeconfig, run_dir, registry)
    finally:
        stopped = _launcher("down", "--run-dir", str(run_dir), timeout=300)
        if stopped.returncode != 0:
            pytest.fail(f"kube_cluster.py down left something behind:\n{stopped.stderr}")
        shutil.rmtree(run_dir, ignore_errors=True)


def push_scratch_image(registry: LocalRegistry, repo: str, files: dict[str, str]) -> str:
    """Build ``FROM scratch`` + static busybox + ``files`` (path → text), push it to
    ``registry`` and remove the local copy; returns ``host:port/repo:tag``."""
    ref = f"{registry.address}/{repo}:{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="shatag-kube-img-") as tmp:
        ctx = Path(tmp)
        shutil.copy2(STATIC_BUSYBOX, ctx / "busybox")
        lines = ["FROM scratch", "COPY busybox /bin/busybox"]
        for index, (path, text) in enumerate(files.items()):
            (ctx / f"f{index}").write_text(text)
            lines.append(f"COPY f{index} {path}")
        (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
        env = {**os.environ, "DOCKER_BUILDKIT": "0"}
        for argv in (["docker", "build", "-q", "-t", ref, str(ctx)], ["docker", "push", ref]):
            subprocess.run(argv, env=env, check=True, capture_output=True, timeout=300)
        subprocess.run(["docker", "rmi", ref], check=False, capture_output=True, timeout=60)
    return ref


@pytest.fixture
def push_image(registry: LocalRegistry) -> Callable[..., str]:
    def factory(repo: str, files: dict[str, str]) -> str:
        return push_scratch_image(registry, repo, files)

    return factory


def httpd_deployment(
    name: str,
    image: str,
    port: int,
    *,
    container_name: str = "web",
    progress_deadline: int = 60,
    failure_threshold: int = 2,
) -> dict[str, Any]:
    """A Deployment of busybox httpd on 127.0.0.1:``port`` (host network: no pod IPs here),
    ``Recreate`` (on one node the new pod cannot bind the port the old pod holds), readiness
    probe on the same loopback port (not ready after ``failure_threshold`` failed probes)."""
    container: dict[str, Any] = {
        "name": container_name,
        "image": image,
        "command": ["/bin/busybox", "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", "/www"],
        "readinessProbe": {
            "httpGet": {"host": "127.0.0.1", "port": port, "path": "/healthz"},
            "periodSeconds": 1,
            "failureThreshold": failure_threshold,
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "shatag-tests"}},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "progressDeadlineSeconds": progress_deadline,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "hostNetwork": True,
                    "terminationGracePeriodSeconds": 1,
                    "containers": [container],
                },
            },
        },
    }


def http_get(port: int, path: str = "/", timeout: float = 20) -> str:
    """GET http://127.0.0.1:port/path, retried in a bounded loop until it answers."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
                body: bytes = resp.read()
                return body.decode()
        except OSError as exc:
            last = exc
            time.sleep(0.2)
    pytest.fail(f"nothing answered on 127.0.0.1:{port}{path} within {timeout} s: {last}")


__all__ = ["Kube", "free_port", "http_get", "httpd_deployment", "push_scratch_image"]
