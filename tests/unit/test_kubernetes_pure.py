"""Kubernetes and GitOps targets (issue 16): the pure parts — rollout rules, pod reasons, and
the round-trip edits of kustomization.yaml and Helm values files."""

from __future__ import annotations

import difflib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from shatag.errors import ConfigError
from shatag.targets.helm_values import parse_key_path, set_values, values_for
from shatag.targets.kubernetes.kubectl import (
    deadline_condition_time,
    event_messages,
    image_patch,
    pod_problems,
    rollout_failure,
    rollout_status,
)
from shatag.targets.kustomize import image_fields, set_kustomize_image

REPO = "127.0.0.1:5000/api"
SHA = "a" * 40
DIGEST = "sha256:" + "b" * 64


def changed_lines(old: str, new: str) -> list[str]:
    return [
        line
        for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def _dep(generation: int = 2, observed: int = 2, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "api", "generation": generation},
        "spec": {"replicas": status.pop("replicas_wanted", 1)},
        "status": {"observedGeneration": observed, **status},
    }


# -- rollout status: kubectl's rules ------------------------------------------------------------


@pytest.mark.parametrize(
    ("deployment", "done", "fragment"),
    [
        (_dep(3, 2), False, "spec update to be observed"),
        (_dep(updatedReplicas=0, replicas=1), False, "0 out of 1 new replicas"),
        (_dep(updatedReplicas=1, replicas=2), False, "1 old replicas"),
        (_dep(updatedReplicas=1, replicas=1, availableReplicas=0), False, "0 of 1 updated"),
        (_dep(updatedReplicas=1, replicas=1, availableReplicas=1), True, "successfully"),
        (_dep(replicas_wanted=0), True, "successfully"),
    ],
)
def test_rollout_status_follows_kubectl_rollout_status(
    deployment: dict[str, Any], done: bool, fragment: str
) -> None:
    status = rollout_status(deployment)
    assert status.done is done
    assert fragment in status.message


def test_progress_deadline_exceeded_ends_the_rollout() -> None:
    dep = _dep(
        updatedReplicas=1,
        replicas=1,
        availableReplicas=0,
        conditions=[
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
        ],
    )
    status = rollout_status(dep)
    assert not status.done
    assert status.deadline_exceeded


def test_a_deadline_left_by_an_earlier_rollout_does_not_end_the_next_one() -> None:
    """The restore after a failed rollout starts with the old ProgressDeadlineExceeded
    condition in place (the controller keeps it until there is progress)."""
    cond = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
            "lastUpdateTime": "2026-01-01T00:00:00Z"}  # fmt: skip
    dep = _dep(updatedReplicas=0, replicas=1, conditions=[cond])
    assert deadline_condition_time(dep) == "2026-01-01T00:00:00Z"
    status = rollout_status(dep, stale_deadline="2026-01-01T00:00:00Z")
    assert not status.deadline_exceeded
    assert not status.done
    newer = {**cond, "lastUpdateTime": "2026-01-01T00:05:00Z"}
    assert rollout_status(
        _dep(conditions=[newer]), stale_deadline=cond["lastUpdateTime"]
    ).deadline_exceeded


@given(
    st.recursive(
        st.none() | st.integers() | st.text(max_size=5),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=20,
    )
)
@settings(max_examples=200, deadline=None)
def test_rollout_status_and_pod_problems_take_any_json_without_a_traceback(value: Any) -> None:
    rollout_status(value if isinstance(value, dict) else {"status": value})
    pod_problems([value] if isinstance(value, dict) else [], "web", "x")


def _pod(name: str, image: str, cs: dict[str, Any], **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "web", "image": image}]},
        "status": {"containerStatuses": [{"name": "web", **cs}], **status},
    }


def test_pod_problems_name_pull_errors_crash_loops_and_readiness() -> None:
    pods = [
        _pod("p1", "new", {"ready": False, "state": {"waiting": {"reason": "ErrImagePull",
                                                                 "message": "not found"}}}),
        _pod("p2", "new", {"ready": False, "restartCount": 4,
                           "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                           "lastState": {"terminated": {"exitCode": 3}}}),
        _pod("p3", "new", {"ready": False, "state": {"running": {}}}),
        _pod("p4", "new", {"ready": True, "state": {"running": {}}}),
        _pod("old", "old", {"ready": False, "state": {"waiting": {"reason": "ErrImagePull"}}}),
    ]  # fmt: skip
    problems = {p.pod: p for p in pod_problems(pods, "web", "new")}
    assert set(problems) == {"p1", "p2", "p3"}
    assert problems["p1"].fatal
    assert problems["p1"].reason == "ErrImagePull"
    assert problems["p2"].fatal
    assert "exit code 3, restarted 4 times" in problems["p2"].message
    once = _pod("p5", "new", {"ready": False, "restartCount": 1,
                              "state": {"waiting": {"reason": "CrashLoopBackOff"}}})  # fmt: skip
    assert not pod_problems([once], "web", "new")[0].fatal  # one crash is not yet a loop
    assert not problems["p3"].fatal
    assert problems["p3"].reason == "NotReady"
    events = [
        {"involvedObject": {"name": "p3"}, "type": "Warning", "reason": "Unhealthy",
         "message": "Readiness probe failed: HTTP probe failed with statuscode: 404",
         "lastTimestamp": "2026-01-01T00:00:02Z"},
        {"involvedObject": {"name": "p3"}, "type": "Warning", "reason": "Unhealthy",
         "message": "older", "lastTimestamp": "2026-01-01T00:00:01Z"},
    ]  # fmt: skip
    messages = event_messages(events, {"p3"})
    failure = rollout_failure("api", rollout_status(_dep()), [problems["p3"]], messages)
    assert failure.code == "DEPLOY_FAILED"
    assert "Readiness probe failed: HTTP probe failed with statuscode: 404" in failure.message


def test_one_patch_sets_the_image_and_the_annotations() -> None:
    patch = image_patch("web", "r/x@sha256:1", {"shatag.dev/image-sha": SHA, "gone": None})
    assert patch == {
        "metadata": {"annotations": {"shatag.dev/image-sha": SHA, "gone": None}},
        "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "r/x@sha256:1"}]}}},
    }


# -- kustomization.yaml --------------------------------------------------------------------------

KUSTOMIZATION = """\
# Production overlay (Argo CD applies what is committed here)
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../base   # the app
images:
  - name: api
    newName: ghcr.io/example/api   # written by shatag
    newTag: "1.0"
  - name: sidecar
    newTag: v9
namePrefix: prod-
"""


def test_kustomize_edits_only_the_entry_lines() -> None:
    new = set_kustomize_image(KUSTOMIZATION, "api", image_fields(REPO, SHA, DIGEST, "tag+digest"))
    assert changed_lines(KUSTOMIZATION, new) == [
        "-    newName: ghcr.io/example/api   # written by shatag",
        '-    newTag: "1.0"',
        f"+    newName: {REPO}   # written by shatag",
        f'+    newTag: "{SHA}"',
        f"+    digest: {DIGEST}",
    ]


def test_kustomize_digest_pin_drops_the_tag_and_tag_pin_drops_the_digest() -> None:
    digest_only = set_kustomize_image(
        KUSTOMIZATION, "api", image_fields(REPO, SHA, DIGEST, "digest")
    )
    assert "newTag" not in digest_only.split("- name: sidecar")[0]
    tag_only = set_kustomize_image(digest_only, "api", image_fields(REPO, SHA, DIGEST, "tag"))
    assert "digest:" not in tag_only
    assert f"newTag: {SHA}" in tag_only


def test_kustomize_missing_entry_and_missing_images_are_appended() -> None:
    new = set_kustomize_image(KUSTOMIZATION, "worker", image_fields(REPO, SHA, DIGEST, "tag"))
    assert changed_lines(KUSTOMIZATION, new) == [
        "+  - name: worker",
        f"+    newName: {REPO}",
        f"+    newTag: {SHA}",
    ]
    bare = "resources:\n- deployment.yaml\n"
    new = set_kustomize_image(bare, "api", image_fields(REPO, SHA, DIGEST, "digest"))
    assert new.startswith(bare)
    assert YAML(typ="safe").load(new)["images"] == [
        {"name": "api", "newName": REPO, "digest": DIGEST}
    ]


def test_kustomize_hostile_files_get_config_error() -> None:
    for text in ("images: {a: 1}\n", "- a\n- b\n", "images: [\n"):
        with pytest.raises(ConfigError):
            set_kustomize_image(text, "api", image_fields(REPO, SHA, DIGEST, "tag"))


@given(
    comment=st.text(alphabet="abc xyz-_.", max_size=20),
    indent=st.sampled_from(["", "  "]),
    pin=st.sampled_from(["tag+digest", "digest", "tag"]),
)
@settings(max_examples=100, deadline=None)  # ruamel.yaml parses: slow on a loaded machine
def test_kustomize_edit_keeps_the_other_lines(comment: str, indent: str, pin: str) -> None:
    text = (
        f"# {comment}\nresources:\n{indent}- base\nimages:\n{indent}- name: api\n"
        f"{indent}  newTag: x\nnamespace: prod\n"
    )
    new = set_kustomize_image(text, "api", image_fields(REPO, SHA, DIGEST, pin))
    entry = YAML(typ="safe").load(new)["images"][0]
    assert entry.get("newTag") == (None if pin == "digest" else SHA)
    assert entry.get("digest") == (None if pin == "tag" else DIGEST)
    kept = [ln for ln in text.splitlines() if "newTag" not in ln]
    assert all(ln in new.splitlines() for ln in kept)


# -- Helm values ---------------------------------------------------------------------------------

VALUES = """\
# values for production
replicaCount: 2
image:
  repository: ghcr.io/example/api  # CI writes this
  tag: "1.0"
  pullPolicy: IfNotPresent
service: {type: ClusterIP, port: 80}
"""


def test_helm_values_edit_keeps_every_other_byte() -> None:
    values = values_for(REPO, SHA, DIGEST, "tag+digest", repository_key="image.repository",
                        tag_key="image.tag", digest_key="image.digest")  # fmt: skip
    new = set_values(VALUES, values)
    assert changed_lines(VALUES, new) == [
        "-  repository: ghcr.io/example/api  # CI writes this",
        '-  tag: "1.0"',
        f"+  repository: {REPO}  # CI writes this",
        f'+  tag: "{SHA}"',
        f"+  digest: {DIGEST}",
    ]


def test_helm_values_without_digest_key_pin_the_tag() -> None:
    values = values_for(REPO, SHA, DIGEST, "tag+digest", repository_key="image.repository",
                        tag_key="image.tag", digest_key="")  # fmt: skip
    new = set_values(VALUES, values)
    assert YAML(typ="safe").load(new)["image"]["tag"] == f"{SHA}@{DIGEST}"


def test_helm_values_missing_parent_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="app is not a mapping"):
        set_values(VALUES, {"app.image.tag": SHA})
    with pytest.raises(ConfigError):
        parse_key_path("image..tag", what="tag_key")


def test_a_shared_journal_entry_must_name_the_configured_deployment_exactly() -> None:
    """With a shared (git) ledger, recovery acts only on entries about a configured target: for
    kubernetes that is namespace, deployment, container, kubeconfig and context together."""
    from shatag.app.deploy import _names_a_target
    from shatag.targets import parse_target

    spec = parse_target(
        "t",
        {"kind": "kubernetes", "deployment": "api", "container": "web", "namespace": "prod",
         "kubeconfig": "/etc/kube/prod", "context": "eu"},
    )  # fmt: skip
    entry = {**spec.as_journal(), "previous_image": "r/x:1", "new_image": "r/x:2"}  # type: ignore[attr-defined]
    assert _names_a_target(entry, (spec,))
    for key, forged in (
        ("deployment", "other"),
        ("namespace", "kube-system"),
        ("container", "sidecar"),
        ("kubeconfig", "/tmp/evil"),
        ("context", ""),
    ):
        assert not _names_a_target({**entry, key: forged}, (spec,)), key  # fmt: skip
