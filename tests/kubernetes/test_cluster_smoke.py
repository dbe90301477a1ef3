"""The cluster of ``ci/kube_cluster.py`` runs real pods (issue 16, item 3)."""

from __future__ import annotations

from collections.abc import Callable

from tests.kubernetes.conftest import Kube, free_port, http_get, httpd_deployment


def test_recreate_hostnetwork_deployment_of_scratch_httpd_becomes_available_on_loopback(
    kube: Kube, push_image: Callable[..., str]
) -> None:
    image = push_image(
        "kube-smoke", {"/www/index.html": "hello from kubernetes\n", "/www/healthz": "ok\n"}
    )
    port = free_port()
    kube.apply(httpd_deployment("smoke", image, port))
    try:
        kube.kubectl("rollout", "status", "deployment/smoke", "--timeout=120s", timeout=130)
        status = kube.get("deployment", "smoke")["status"]
        assert status["availableReplicas"] == 1
        assert http_get(port, "/index.html") == "hello from kubernetes\n"
        pod = kube.get("pods", "-l", "app=smoke")["items"][0]
        assert pod["spec"]["nodeName"] == "localhost"
        assert pod["status"]["containerStatuses"][0]["imageID"].startswith(
            f"{kube.registry.address}/kube-smoke@sha256:"
        )
    finally:
        kube.kubectl("delete", "deployment", "smoke", "--wait=true", "--timeout=60s", timeout=70)
