"""What runs on a kubernetes target (``status``, issue 23 item 5).

In sync means all three: the Deployment's pod template runs the ledger's release in the
configured container (as the target's ``pin`` writes it), its rollout is complete (kubectl's
rules: :func:`~shatag.targets.kubernetes.kubectl.rollout_status`), and every *ready* pod of the
Deployment runs that digest in the container -- read from the pod's ``imageID``
(``repo@sha256:…``), the digest the kubelet actually pulled, not from the spec. An ``imageID``
without a registry digest (an image loaded into the node by hand) cannot be checked and is
named as such. No ready pod is ``down``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from shatag.core import ImageRef
from shatag.errors import ShatagError
from shatag.targets import Observed, TargetContext
from shatag.targets.kubernetes.kubectl import container_image, rollout_status, selector

if TYPE_CHECKING:
    from shatag.targets.kubernetes import KubernetesSpec


def observe(spec: KubernetesSpec, ctx: TargetContext, image: ImageRef | None) -> Observed:
    """The kubernetes kind's ``observe`` hook: two reads (the Deployment, its pods)."""
    kubectl = spec.kubectl(ctx.env)
    try:
        deployment = kubectl.deployment(spec.deployment)
        pods = kubectl.pods(selector(deployment))
    except ShatagError as exc:
        return Observed("down", detail=f"cannot read deployment {spec.deployment!r}: {exc.message}")
    wanted = image.reference(spec.pin) if image is not None else None
    return observed(deployment, pods, spec.container, wanted, image.digest if image else None)


def observed(
    deployment: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    container: str,
    wanted: str | None,
    digest: str | None,
) -> Observed:
    """The comparison itself, from the Deployment and pod objects as kubectl returns them.

    >>> d = {"metadata": {"name": "api", "generation": 1},
    ...      "spec": {"replicas": 1, "template": {"spec": {"containers": [
    ...          {"name": "web", "image": "r/api:1@sha256:" + "a" * 64}]}}},
    ...      "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
    ...                 "availableReplicas": 1}}
    >>> pod = {"metadata": {"name": "api-1"}, "status": {
    ...     "conditions": [{"type": "Ready", "status": "True"}],
    ...     "containerStatuses": [{"name": "web", "imageID": "r/api@sha256:" + "a" * 64}]}}
    >>> observed(d, [pod], "web", "r/api:1@sha256:" + "a" * 64, "sha256:" + "a" * 64).state
    'in_sync'
    >>> observed(d, [pod], "web", "r/api:2@sha256:" + "b" * 64, "sha256:" + "b" * 64).state
    'drift'
    >>> observed(d, [], "web", "r/api:1@sha256:" + "a" * 64, "sha256:" + "a" * 64).state
    'down'
    """
    spec_image = container_image(deployment, container)
    if spec_image is None:
        return Observed("drift", detail=f"the deployment has no container {container!r}")
    ready = [p for p in pods if _ready(p) and not _map(p.get("metadata")).get("deletionTimestamp")]
    ids = {_name(p): _image_id(p, container) for p in ready}
    digests = sorted({i.rpartition("@")[2] for i in ids.values() if "@sha256:" in i})
    running = ", ".join(digests) or spec_image
    if not ready:
        return Observed("down", spec_image, f"no ready pod runs container {container!r}")
    if wanted is None or digest is None:
        return Observed("none", running, f"{len(ready)} ready pod(s); template: {spec_image}")
    drift = _drift(deployment, ids, spec_image, wanted, digest)
    if drift:
        return Observed("drift", running, drift)
    unchecked = sorted(n for n, i in ids.items() if "@sha256:" not in i)
    note = f"; pod(s) {', '.join(unchecked)} report no registry digest" if unchecked else ""
    return Observed(
        "in_sync", running, f"{len(ready)} ready pod(s) run {digest}, rollout complete{note}"
    )


def _drift(
    deployment: Mapping[str, Any], ids: Mapping[str, str], spec_image: str, wanted: str, digest: str
) -> str | None:
    """Why the Deployment does not run ``wanted`` (template, rollout, pods), else ``None``."""
    if spec_image != wanted:
        return f"the pod template runs {spec_image}, not {wanted}"
    rollout = rollout_status(deployment)
    if not rollout.done:
        return f"rollout not complete: {rollout.message}"
    others = sorted(n for n, i in ids.items() if "@sha256:" in i and not i.endswith("@" + digest))
    if others:
        return f"ready pod(s) {', '.join(others)} run another digest"
    return None


def _ready(pod: Mapping[str, Any]) -> bool:
    conditions = _map(pod.get("status")).get("conditions") or []
    return any(
        _map(c).get("type") == "Ready" and _map(c).get("status") == "True" for c in conditions
    )


def _name(pod: Mapping[str, Any]) -> str:
    return str(_map(pod.get("metadata")).get("name", "?"))


def _image_id(pod: Mapping[str, Any], container: str) -> str:
    for status in _map(pod.get("status")).get("containerStatuses") or []:
        if _map(status).get("name") == container:
            return str(_map(status).get("imageID") or "")
    return ""


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
