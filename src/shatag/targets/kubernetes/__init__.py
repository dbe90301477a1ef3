"""``kind: kubernetes``: set one container's image in a Deployment and wait for the rollout.

Deploy (``apply``) sends one strategic-merge patch: the container's image (the target's ``pin``,
default ``repo:sha@digest``) and the Deployment annotations ``shatag.dev/image-sha``,
``shatag.dev/image-digest`` and ``shatag.dev/image-ref``. Then it waits as
``kubectl rollout status`` does (observed generation, updated / ready / available replicas,
``progressDeadlineSeconds``), bounded by ``rollout_timeout_sec``, watching the new pods: an image
that cannot be pulled ends the wait at once, a crash loop at the container's second restart. A
failed or timed-out
rollout raises DEPLOY_FAILED naming each failing pod's reason; the deploy use case then calls
``restore``, which patches the previous image and annotations back and waits for *that* rollout
(Helm's ``--atomic``). Rollback is a deploy of an earlier SHA from shatag's history, never
``kubectl rollout undo`` (the Deployment's revision history is not shatag's).

After a ``kill -9`` between the patch and the recorded result, :func:`recover` puts the previous
image back if the Deployment still runs the interrupted one.

The kubeconfig needs, in the namespace: ``get`` and ``patch`` on deployments, ``list`` on pods
and events (the rollout's pods are found by the Deployment's selector and the image).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final

from shatag.core import ImageRef, PinFormat
from shatag.errors import ConfigError, DeployFailed, ToolFailure
from shatag.limits import number
from shatag.targets import Observed, TargetContext, TargetKind
from shatag.targets._spec import KindSpec, converted, parse_prelude

if TYPE_CHECKING:
    from shatag.targets.kubernetes.kubectl import Kubectl, PodProblem

NAME: Final = "kubernetes"
KEYS: Final = frozenset(
    {"kind", "namespace", "deployment", "container", "kubeconfig", "context",
     "rollout_timeout_sec", "pin"}
)  # fmt: skip
ANNOTATION_SHA: Final = "shatag.dev/image-sha"
ANNOTATION_DIGEST: Final = "shatag.dev/image-digest"
ANNOTATION_REF: Final = "shatag.dev/image-ref"
ANNOTATIONS: Final = (ANNOTATION_SHA, ANNOTATION_DIGEST, ANNOTATION_REF)
#: The journal keys that say which Deployment container an entry is about.
JOURNAL_IDENTITY: Final = ("kind", "namespace", "deployment", "container", "kubeconfig", "context")
POLL_SEC: Final = 0.2
PODS_EVERY_SEC: Final = 1.0
REQUEST_TIMEOUT_SEC: Final = 30.0
DNS_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN: Final = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class KubernetesSpec(KindSpec):
    """The keys of one ``kind: kubernetes`` target."""

    KIND_NAME: ClassVar[str] = NAME
    deployment: str
    container: str
    namespace: str = "default"
    kubeconfig: str = ""
    context: str = ""
    rollout_timeout_sec: float = 300.0
    pin: PinFormat = "tag+digest"

    @property
    def label(self) -> str:
        return f"{NAME}:{self.namespace}/{self.deployment}/{self.container}"

    @property
    def edits(self) -> Path | None:
        return None

    def kubectl(self, env: Mapping[str, str] | None = None) -> Kubectl:
        from shatag.targets.kubernetes.kubectl import Kubectl

        return Kubectl(
            namespace=self.namespace,
            kubeconfig=str(Path(self.kubeconfig).absolute()) if self.kubeconfig else "",
            context=self.context,
            timeout=REQUEST_TIMEOUT_SEC,
            env=env,
        )

    def as_journal(self) -> dict[str, Any]:
        return {
            "kind": NAME,
            "deployment": self.deployment,
            "container": self.container,
            "namespace": self.namespace,
            "kubeconfig": str(Path(self.kubeconfig).absolute()) if self.kubeconfig else "",
            "context": self.context,
            "rollout_timeout_sec": self.rollout_timeout_sec,
        }

    def matches_journal(self, entry: Mapping[str, Any]) -> bool:
        """Whether a journal entry (possibly from a shared ledger) is about this target."""
        mine = self.as_journal()
        return all(str(entry.get(k, "")) == str(mine[k]) for k in JOURNAL_IDENTITY)

    @classmethod
    def from_journal(cls, entry: Mapping[str, Any]) -> KubernetesSpec:
        return converted(
            "the deploy journal",
            lambda: cls(
                deployment=str(entry["deployment"]),
                container=str(entry["container"]),
                namespace=str(entry.get("namespace", "default")),
                kubeconfig=str(entry.get("kubeconfig", "")),
                context=str(entry.get("context", "")),
                rollout_timeout_sec=float(entry.get("rollout_timeout_sec", 300.0)),
            ),
        )


def parse(where: str, raw: Mapping[str, Any]) -> KubernetesSpec:
    pin = parse_prelude(where, raw, KEYS, NAME)
    # NaN, infinities, booleans, 0 and negatives refused like every other number (issue 14).
    timeout = number(
        raw.get("rollout_timeout_sec", 300.0),
        "rollout_timeout_sec",
        f"{where}.rollout_timeout_sec",
    )
    spec = converted(
        where,
        lambda: KubernetesSpec(
            deployment=str(raw.get("deployment", "")),
            container=str(raw.get("container", "")),
            namespace=str(raw.get("namespace", "default")),
            kubeconfig=str(raw.get("kubeconfig", "") or ""),
            context=str(raw.get("context", "") or ""),
            rollout_timeout_sec=timeout,
            pin=pin,
        ),
    )
    if not DNS_SUBDOMAIN.match(spec.deployment):
        raise ConfigError(f"{where}: a kubernetes target needs deployment: <name of a Deployment>")
    if not DNS_LABEL.match(spec.container):
        raise ConfigError(f"{where}: a kubernetes target needs container: <container name>")
    if not DNS_LABEL.match(spec.namespace):
        raise ConfigError(f"{where}.namespace {spec.namespace!r} is not a namespace name")
    if spec.context.startswith("-") or spec.kubeconfig.startswith("-"):
        raise ConfigError(f"{where}: context and kubeconfig cannot start with '-'")
    return spec


class KubernetesTarget:
    """The life cycle (prepare → apply → restore | commit) for one Deployment container."""

    #: The patch is always sent: never reported as left as it was.
    unchanged: bool = False

    def __init__(self, spec: KubernetesSpec, ctx: TargetContext) -> None:
        self.spec = spec
        self.kubectl = spec.kubectl(ctx.env)
        self._previous_image: str | None = None
        self._previous_annotations: dict[str, str | None] = {}
        self._new_image: str | None = None
        self._new_annotations: dict[str, str | None] = {}
        self._applied = False

    @property
    def label(self) -> str:
        return self.spec.label

    def _read(self) -> tuple[dict[str, Any], str]:
        """The Deployment and the container's current image; it must have the container."""
        from shatag.targets.kubernetes.kubectl import container_image, container_names

        current = self._get()
        found = container_image(current, self.spec.container)
        if found is None:
            names = ", ".join(container_names(current)) or "none"
            raise ConfigError(
                f"{self.label}: deployment {self.spec.deployment!r} has no container "
                f"{self.spec.container!r} (found: {names})"
            )
        return current, found

    def plan(self, image: ImageRef) -> str:
        _current, found = self._read()
        new = image.reference(self.spec.pin)
        if found == new:
            return ""
        return f"{self.label}: image {found} -> {new}\n"

    def prepare(self, image: ImageRef) -> None:
        """Read the Deployment (it must exist and have the container); nothing changes."""
        current, found = self._read()
        meta = current.get("metadata")
        annotations = (meta.get("annotations") if isinstance(meta, dict) else None) or {}
        self._previous_image = found
        self._previous_annotations = {k: annotations.get(k) for k in ANNOTATIONS}
        self._new_image = image.reference(self.spec.pin)
        self._new_annotations = {
            ANNOTATION_SHA: image.sha,
            ANNOTATION_DIGEST: image.digest,
            ANNOTATION_REF: image.pinned,
        }

    def apply(self) -> None:
        if self._new_image is None:
            raise RuntimeError("apply() before prepare()")
        self._applied = True
        self._switch(self._new_image, self._new_annotations)

    def restore(self) -> None:
        if not self._applied or self._previous_image is None:
            return
        self._switch(self._previous_image, self._previous_annotations, restoring=True)
        self._applied = False

    def commit(self) -> None:
        self._applied = False

    def journal(self) -> dict[str, Any]:
        return {
            **self.spec.as_journal(),
            "previous_image": self._previous_image,
            "previous_annotations": self._previous_annotations,
            "new_image": self._new_image,
        }

    # -- plumbing ----------------------------------------------------------------------------

    def _get(self) -> dict[str, Any]:
        try:
            return self.kubectl.deployment(self.spec.deployment)
        except ToolFailure as exc:
            raise DeployFailed(
                f"{self.label}: cannot read deployment {self.spec.deployment!r} in namespace "
                f"{self.spec.namespace!r}: {exc.message}"
            ) from None

    def _switch(
        self, image: str, annotations: Mapping[str, str | None], *, restoring: bool = False
    ) -> None:
        switch_image(self.kubectl, self.spec, image, annotations, restoring=restoring)


def switch_image(
    kubectl: Kubectl,
    spec: KubernetesSpec,
    image: str,
    annotations: Mapping[str, str | None],
    *,
    restoring: bool = False,
) -> None:
    """One patch (image + annotations), then wait for its rollout."""
    from shatag.targets.kubernetes.kubectl import deadline_condition_time, image_patch

    try:
        patched = kubectl.patch_deployment(
            spec.deployment, image_patch(spec.container, image, annotations)
        )
    except ToolFailure as exc:
        what = "restoring the previous image" if restoring else "patching the deployment"
        raise DeployFailed(f"{spec.label}: {what} failed: {exc.message}") from None
    meta = patched.get("metadata")
    generation = meta.get("generation") if isinstance(meta, dict) else None
    # The patch changes no status: a deadline condition in the answer is an earlier rollout's.
    stale = deadline_condition_time(patched)
    wait_rollout(kubectl, spec, image, generation, restoring=restoring, stale_deadline=stale)


def wait_rollout(
    kubectl: Kubectl,
    spec: KubernetesSpec,
    image: str,
    generation: object,
    *,
    restoring: bool = False,
    stale_deadline: str | None = None,
) -> None:
    """Wait until the rollout to ``image`` is complete; raise DEPLOY_FAILED with the pods'
    reasons when it cannot complete (fatal pod state, progress deadline, our timeout)."""
    from shatag.targets.kubernetes.kubectl import (
        event_messages,
        pod_problems,
        rollout_failure,
        rollout_status,
        selector,
    )

    deadline = time.monotonic() + spec.rollout_timeout_sec
    # deploy.py names the target of a failed restore itself.
    what = "restoring the previous image: " if restoring else f"{spec.label}: "
    next_pods = time.monotonic() + PODS_EVERY_SEC  # the pods can only fail after they exist
    while True:
        try:
            deployment = kubectl.deployment(spec.deployment)
            status = rollout_status(deployment, stale_deadline=stale_deadline)
            observed = deployment.get("status", {}).get("observedGeneration", 0)
            if status.done and (not isinstance(generation, int) or observed >= generation):
                return
            timed_out = time.monotonic() >= deadline
            problems: list[PodProblem] = []
            # Every kubectl call costs ~0.1-0.3 s of start-up: the deployment's status is read
            # every poll, its pods (for the fast failures) about once a second.
            if timed_out or status.deadline_exceeded or time.monotonic() >= next_pods:
                next_pods = time.monotonic() + PODS_EVERY_SEC
                labels = selector(deployment)
                pods = kubectl.pods(labels) if labels else []
                problems = pod_problems(pods, spec.container, image)
            fatal = [p for p in problems if p.fatal]
            if not (fatal or status.deadline_exceeded or timed_out):
                time.sleep(POLL_SEC)
                continue
            events = event_messages(kubectl.pod_events(), {p.pod for p in problems})
        except ToolFailure as exc:
            raise DeployFailed(f"{what}kubectl failed: {exc.message}") from None
        failure = rollout_failure(spec.deployment, status, fatal or problems, events)
        message = failure.message
        if timed_out and not fatal and not status.deadline_exceeded:
            message += (
                f" (not complete within rollout_timeout_sec={spec.rollout_timeout_sec:g}; "
                f"last status: {status.message})"
            )
        raise DeployFailed(f"{what}{message}")


def recover(entry: Mapping[str, Any], ctx: TargetContext) -> str:
    """Undo an interrupted switch: the previous image back if the interrupted one is set."""
    from shatag.targets.kubernetes.kubectl import container_image

    spec = KubernetesSpec.from_journal(entry)
    previous, new = entry.get("previous_image"), entry.get("new_image")
    if not isinstance(previous, str) or not isinstance(new, str):
        return f"{spec.label}: nothing recorded to restore"
    kubectl = spec.kubectl(ctx.env)
    try:
        current = container_image(kubectl.deployment(spec.deployment), spec.container)
    except ToolFailure as exc:
        raise DeployFailed(f"{spec.label}: cannot read the deployment: {exc.message}") from None
    if current != new:
        return f"{spec.label}: runs {current}, not the interrupted {new}; left as is"
    recorded = entry.get("previous_annotations")
    annotations = recorded if isinstance(recorded, dict) else {}
    try:
        switch_image(
            kubectl, spec, previous, {k: annotations.get(k) for k in ANNOTATIONS}, restoring=True
        )
    except DeployFailed as exc:
        raise DeployFailed(f"{spec.label}: {exc.message}") from None
    return f"{spec.label}: restored {previous}"


def finish(entry: Mapping[str, Any], ctx: TargetContext) -> str:
    """The deploy was recorded as done: the Deployment already runs it; nothing to complete."""
    del entry, ctx
    return "nothing to do"


def make(spec: KubernetesSpec, ctx: TargetContext) -> KubernetesTarget:
    return KubernetesTarget(spec, ctx)


def _observe(spec: KubernetesSpec, ctx: TargetContext, image: ImageRef | None) -> Observed:
    """What runs (``status``): :mod:`shatag.targets.kubernetes.observe`."""
    from shatag.targets.kubernetes.observe import observe

    return observe(spec, ctx, image)


#: ``kubeconfig`` is a path key: a relative one resolves against the configuration file's directory.
KIND: Final = TargetKind(
    NAME, KEYS, parse, make, recover, finish, paths=frozenset({"kubeconfig"}), observe=_observe
)
