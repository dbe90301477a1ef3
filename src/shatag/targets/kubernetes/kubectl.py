"""kubectl, wrapped: JSON in, small parsed models out (the `kubernetes` target's adapter).

Why kubectl through the chokepoint (:func:`shatag._sys.subproc.run`)
rather than a client library: it
authenticates exactly as the operator's own kubectl does (exec credential plugins, OIDC, cloud
auth helpers, proxies from the kubeconfig) with no extra dependency, and every call is an
argument list with a timeout that the log shows. ``-o json`` makes each answer a parsed
object; the waiting logic is ours (:func:`rollout_status`), the same rules as
``kubectl rollout status``.

>>> dep = {"metadata": {"name": "api", "generation": 2},
...        "spec": {"replicas": 1},
...        "status": {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1,
...                   "availableReplicas": 1}}
>>> rollout_status(dep).done
True
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shatag._sys import subproc
from shatag.errors import DeployFailed, ToolFailure

#: Container states that end a rollout at once: they will not fix themselves within a deploy
#: (a missing image or tag, a bad reference, a container that keeps crashing, a broken spec).
FATAL_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


#: A crash loop ends the wait once the container has been restarted this often.
CRASH_LOOP_RESTARTS = 2


@dataclass(frozen=True, slots=True)
class RolloutStatus:
    """Where a Deployment's rollout stands, by ``kubectl rollout status``'s rules."""

    done: bool
    message: str
    deadline_exceeded: bool = False


def rollout_status(
    deployment: Mapping[str, Any], *, stale_deadline: str | None = None
) -> RolloutStatus:
    """kubectl's ``DeploymentStatusViewer``: the spec change observed, then every replica
    updated, no old replica left, every updated replica available; a ``Progressing`` condition
    with reason ``ProgressDeadlineExceeded`` (``progressDeadlineSeconds``) ends it as failed.

    Unlike kubectl, a deadline condition left over from an *earlier* rollout (its
    ``lastUpdateTime`` is ``stale_deadline``, read when the patch was sent) does not end this
    one: the controller keeps that condition until the new rollout makes progress, and the
    restore after a failed rollout starts in exactly that state.

    >>> rollout_status({"metadata": {"name": "a", "generation": 3},
    ...                 "status": {"observedGeneration": 2}}).message
    "waiting for deployment 'a' spec update to be observed"
    """
    meta = _map(deployment.get("metadata"))
    spec = _map(deployment.get("spec"))
    status = _map(deployment.get("status"))
    name = str(meta.get("name", "?"))
    if _int(meta.get("generation")) > _int(status.get("observedGeneration")):
        return RolloutStatus(False, f"waiting for deployment {name!r} spec update to be observed")
    for raw in _list(status.get("conditions")):
        cond = _map(raw)
        if (
            cond.get("type") == "Progressing"
            and cond.get("reason") == "ProgressDeadlineExceeded"
            and (stale_deadline is None or cond.get("lastUpdateTime") != stale_deadline)
        ):
            return RolloutStatus(
                False, f"deployment {name!r} exceeded its progress deadline", deadline_exceeded=True
            )
    wanted = _int(spec.get("replicas"), 1)
    updated = _int(status.get("updatedReplicas"))
    total = _int(status.get("replicas"))
    available = _int(status.get("availableReplicas"))
    if updated < wanted:
        return RolloutStatus(
            False, f"{updated} out of {wanted} new replicas of {name!r} have been updated"
        )
    if total > updated:
        return RolloutStatus(
            False, f"{total - updated} old replicas of {name!r} pending termination"
        )
    if available < updated:
        return RolloutStatus(
            False, f"{available} of {updated} updated replicas of {name!r} are available"
        )
    return RolloutStatus(True, f"deployment {name!r} successfully rolled out")


@dataclass(frozen=True, slots=True)
class PodProblem:
    """Why one pod of the rollout is not (yet) ready; ``fatal`` ends the wait at once."""

    pod: str
    reason: str
    message: str
    fatal: bool

    def describe(self) -> str:
        text = f"pod {self.pod}: {self.reason}"
        return f"{text} ({self.message})" if self.message else text


def pod_problems(pods: Sequence[Mapping[str, Any]], container: str, image: str) -> list[PodProblem]:
    """The problems of the pods running ``image`` in ``container`` (the rollout's new pods).

    >>> pod = {"metadata": {"name": "p"},
    ...        "spec": {"containers": [{"name": "web", "image": "r/x:1"}]},
    ...        "status": {"containerStatuses": [{"name": "web", "ready": False,
    ...            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}]}}
    >>> [p.describe() for p in pod_problems([pod], "web", "r/x:1")]
    ['pod p: ImagePullBackOff (not found)']
    """
    problems: list[PodProblem] = []
    for pod in pods:
        meta, spec, status = (_map(pod.get(k)) for k in ("metadata", "spec", "status"))
        name = str(meta.get("name", "?"))
        images = {_map(c).get("name"): _map(c).get("image") for c in _list(spec.get("containers"))}
        if images.get(container) != image or meta.get("deletionTimestamp"):
            continue
        for raw in _list(status.get("conditions")):
            cond = _map(raw)
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                problems.append(
                    PodProblem(name, str(cond.get("reason", "Unschedulable")),
                               str(cond.get("message", "")), fatal=False)
                )  # fmt: skip
        for raw in _list(status.get("containerStatuses")):
            cs = _map(raw)
            if cs.get("name") != container or cs.get("ready") is True:
                continue
            state = _map(cs.get("state"))
            waiting = _map(state.get("waiting"))
            last = _map(_map(cs.get("lastState")).get("terminated"))
            reason = str(waiting.get("reason", ""))
            if reason:
                message = str(waiting.get("message", ""))
                fatal = reason in FATAL_REASONS
                if reason == "CrashLoopBackOff":
                    restarts = _int(cs.get("restartCount"))
                    if last:
                        message = f"exit code {last.get('exitCode')}, restarted {restarts} times"
                    # One crash can be the old pod still holding a host port (Recreate on one
                    # node); a second one, ~30 s in with the kubelet's back-off, is a loop.
                    fatal = restarts >= CRASH_LOOP_RESTARTS
                problems.append(PodProblem(name, reason, message, fatal))
            elif "running" in state:
                problems.append(
                    PodProblem(name, "NotReady", "running, readiness probe not passing", False)
                )
            elif "terminated" in state:
                term = _map(state.get("terminated"))
                problems.append(
                    PodProblem(name, str(term.get("reason", "Terminated")),
                               f"exit code {term.get('exitCode')}", fatal=False)
                )  # fmt: skip
    return problems


def event_messages(events: Sequence[Mapping[str, Any]], pods: set[str]) -> dict[str, str]:
    """The newest warning per pod (e.g. ``Readiness probe failed: ...``), pod name → text."""
    newest: dict[str, tuple[str, str]] = {}
    for event in events:
        obj = _map(event.get("involvedObject"))
        pod = str(obj.get("name", ""))
        if pod not in pods or event.get("type") != "Warning":
            continue
        when = str(event.get("lastTimestamp") or event.get("eventTime") or "")
        text = f"{event.get('reason', '')}: {str(event.get('message', '')).strip()}"
        if pod not in newest or when >= newest[pod][0]:
            newest[pod] = (when, text)
    return {pod: text[:300] for pod, (_when, text) in newest.items()}


def deadline_condition_time(deployment: Mapping[str, Any]) -> str | None:
    """``lastUpdateTime`` of a ``ProgressDeadlineExceeded`` condition, if the Deployment has one.

    >>> deadline_condition_time({"status": {"conditions": [{"type": "Progressing",
    ...     "reason": "ProgressDeadlineExceeded", "lastUpdateTime": "t1"}]}})
    't1'
    """
    for raw in _list(_map(deployment.get("status")).get("conditions")):
        cond = _map(raw)
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return str(cond.get("lastUpdateTime", ""))
    return None


def selector(deployment: Mapping[str, Any]) -> str:
    """``spec.selector.matchLabels`` as a ``-l`` argument (``a=b,c=d``).

    >>> selector({"spec": {"selector": {"matchLabels": {"app": "api"}}}})
    'app=api'
    """
    labels = _map(_map(_map(deployment.get("spec")).get("selector")).get("matchLabels"))
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def container_image(deployment: Mapping[str, Any], container: str) -> str | None:
    """The image of ``container`` in the Deployment's pod template (``None``: no such one)."""
    template = _map(_map(_map(deployment.get("spec")).get("template")).get("spec"))
    for c in _list(template.get("containers")):
        if _map(c).get("name") == container:
            image = _map(c).get("image")
            return str(image) if image is not None else None
    return None


def container_names(deployment: Mapping[str, Any]) -> list[str]:
    template = _map(_map(_map(deployment.get("spec")).get("template")).get("spec"))
    return [str(_map(c).get("name")) for c in _list(template.get("containers"))]


@dataclass(frozen=True, slots=True)
class Kubectl:
    """kubectl bound to one kubeconfig/context/namespace. Every call: ``-o json``, a timeout."""

    namespace: str
    kubeconfig: str = ""
    context: str = ""
    timeout: float = 30.0
    env: Mapping[str, str] | None = None

    def _argv(self, *args: str) -> list[str]:
        argv = ["kubectl"]
        if self.kubeconfig:
            argv += ["--kubeconfig", self.kubeconfig]
        if self.context:
            argv += ["--context", self.context]
        return [
            *argv,
            "--namespace",
            self.namespace,
            f"--request-timeout={max(1, int(self.timeout))}s",
            *args,
        ]

    def _json(self, *args: str) -> dict[str, Any]:
        result = subproc.run(self._argv(*args), timeout=self.timeout + 5, env=self.env)
        try:
            data = json.loads(result.stdout)
        except ValueError:
            raise ToolFailure(
                f"kubectl {args[0]} did not answer with JSON", command=result.command
            ) from None
        if not isinstance(data, dict):
            raise ToolFailure(f"kubectl {args[0]} answered {type(data).__name__}, not an object")
        return data

    def deployment(self, name: str) -> dict[str, Any]:
        return self._json("get", "deployment", name, "-o", "json")

    def patch_deployment(self, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """A strategic merge patch (containers merge by name); returns the patched object."""
        return self._json(
            "patch", "deployment", name, "--type", "strategic", "-p", json.dumps(patch),
            "-o", "json",
        )  # fmt: skip

    def pods(self, label_selector: str) -> list[dict[str, Any]]:
        return [_map(p) for p in _list(self._json("get", "pods", "-l", label_selector,
                                                  "-o", "json").get("items"))]  # fmt: skip

    def pod_events(self) -> list[dict[str, Any]]:
        data = self._json(
            "get", "events", "--field-selector", "involvedObject.kind=Pod", "-o", "json"
        )
        return [_map(e) for e in _list(data.get("items"))]


def image_patch(
    container: str, image: str, annotations: Mapping[str, str | None]
) -> dict[str, Any]:
    """The one patch a deploy sends: the container's image and the Deployment's annotations
    (``None`` removes one). One patch, one new generation, one rollout.

    >>> image_patch("web", "r/x:1", {"a": "b"})["spec"]["template"]["spec"]["containers"]
    [{'name': 'web', 'image': 'r/x:1'}]
    """
    return {
        "metadata": {"annotations": dict(annotations)},
        "spec": {"template": {"spec": {"containers": [{"name": container, "image": image}]}}},
    }


def rollout_failure(
    name: str, status: RolloutStatus, problems: Sequence[PodProblem], events: Mapping[str, str]
) -> DeployFailed:
    """DEPLOY_FAILED naming why: each problem pod's reason, with its newest warning event."""
    reasons = []
    for problem in problems:
        text = problem.describe()
        if problem.pod in events and problem.reason in ("NotReady", "Unschedulable"):
            text += f" — {events[problem.pod]}"
        reasons.append(text)
    detail = "; ".join(reasons) if reasons else status.message
    return DeployFailed(f"the rollout of deployment {name!r} failed: {detail}")


def _map(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
