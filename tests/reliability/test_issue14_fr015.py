"""Issue 14, item 7 (FR-015): only one linux/amd64 image may stand under a SHA tag.

Real OCI artefacts are uploaded to the real registry with its own API (as ``docker buildx`` or
``crane`` would publish them): an index whose only entry is linux/arm64, a single arm64 image,
an index of amd64 + arm64, and an index of one amd64 image plus a BuildKit attestation
manifest. ``build`` (reuse), ``deploy`` and ``rollback`` must refuse the first three with
POLICY_VIOLATION and accept the last, recording it as an index.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from shatag._testing.localregistry import LocalRegistry
from tests.reliability._faults import copy_image, manifest
from tests.reliability._issue14 import (
    OCI_INDEX,
    OCI_MANIFEST,
    attestation_manifest,
    image_manifest,
    index_entry,
    index_manifest,
    push_manifest,
)
from tests.reliability.conftest import Ledger, Site, World, describe, error_code


def test_issue14_fr015_single_amd64_image(
    ledger: Ledger, world: World, registry: LocalRegistry, make_site: Callable[..., Site]
) -> None:
    reg = registry.address
    repo = f"rel14-fr015-{uuid.uuid4().hex[:8]}"
    a = world.images[0]
    # linux/amd64: the world's image A, copied in by blob mount
    amd64_digest = copy_image(reg, world.canonical.split("/", 1)[1], a.sha, repo, "amd64-a")
    amd64_body, _ = manifest(reg, repo, amd64_digest)
    arm_body, arm_digest = image_manifest(reg, repo, arch="arm64", payload=b"arm64 layer")
    push_manifest(reg, repo, arm_digest, arm_body, OCI_MANIFEST)
    att_body, att_digest = attestation_manifest(reg, repo, amd64_digest)
    # Each tag names a real commit on main of the world's app (issue 24: a build, a reuse
    # included, is of a commit of the context's repository); its image is uploaded by hand.
    app = world.app
    context = {"INVOKE_SHATAG_CONTEXT": str(app.path)}

    def _sha() -> str:
        return app.commit(f"fr015 {uuid.uuid4().hex}", "fr015 artefact")

    artefacts: dict[str, tuple[str, bytes, str]] = {
        "index of one linux/arm64 image": (
            _sha(),
            index_manifest([index_entry(arm_digest, len(arm_body), arch="arm64")]),
            OCI_INDEX,
        ),
        "single linux/arm64 image": (_sha(), arm_body, OCI_MANIFEST),
        "index of linux/amd64 + linux/arm64": (
            _sha(),
            index_manifest(
                [
                    index_entry(amd64_digest, len(amd64_body), arch="amd64"),
                    index_entry(arm_digest, len(arm_body), arch="arm64"),
                ]
            ),
            OCI_INDEX,
        ),
    }
    accepted_sha = _sha()
    accepted_index = index_manifest(
        [
            index_entry(amd64_digest, len(amd64_body), arch="amd64"),
            index_entry(
                att_digest,
                len(att_body),
                arch="unknown",
                **{
                    "vnd.docker.reference.type": "attestation-manifest",
                    "vnd.docker.reference.digest": amd64_digest,
                },
            ),
        ]
    )
    for sha, body, media_type in artefacts.values():
        push_manifest(reg, repo, sha, body, media_type)
    push_manifest(reg, repo, accepted_sha, accepted_index, OCI_INDEX)

    site = make_site()
    site.extra_env = {
        "INVOKE_SHATAG_CANONICAL_REPOSITORY": f"{reg}/{repo}",
        "INVOKE_SHATAG_STAGING_REPOSITORY": f"{reg}/{repo}-staging",
    }
    before = site.snapshot()
    refused: list[str] = []
    bad: list[str] = []
    for label, (sha, _, _) in artefacts.items():
        runs = {
            "build": site.inv(ledger, "build", f"--sha={sha}", "--branch=main", env=context),
            "deploy": site.inv(ledger, "deploy", f"--sha={sha}", "--env=rel"),
            "rollback": site.inv(ledger, "rollback", f"--sha={sha}", "--env=rel"),
        }
        for task, result in runs.items():
            ledger.count("inputs_tried")
            if error_code(result) == "POLICY_VIOLATION":
                refused.append(f"{task}/{label}")
            else:
                bad.append(f"{task} of {label}: {describe(result)} {result.stdout[-200:]!r}")
    unchanged = site.snapshot() == before
    build_ok = site.inv(ledger, "build", f"--sha={accepted_sha}", "--branch=main", env=context)
    deploy_ok = site.inv(ledger, "deploy", f"--sha={accepted_sha}", "--env=rel")
    build_kind = build_ok.records[-1].get("manifest_kind") if build_ok.records else None
    deploy_kind = deploy_ok.records[-1].get("manifest_kind") if deploy_ok.records else None
    platform_digest = (
        build_ok.records[-1].get("platform_manifest_digest") if build_ok.records else None
    )
    accepted = (
        build_ok.returncode == 0
        and deploy_ok.returncode == 0
        and build_kind == "index"
        and deploy_kind == "index"
        and platform_digest == amd64_digest
    )
    if not accepted:
        bad.append(f"accepted index: build {describe(build_ok)}, deploy {describe(deploy_ok)}")
    ok = not bad and unchanged and accepted
    ledger.record(
        "#14.7 FR-015: OCI index / non-amd64 image under a SHA tag (real artefacts uploaded)",
        "build (reuse), deploy and rollback refuse each with POLICY_VIOLATION, targets "
        "unchanged; an index of one amd64 image + attestation is accepted and recorded as "
        "manifest_kind=index",
        f"refused {len(refused)}/9; targets unchanged={unchanged}; amd64+attestation index: "
        f"build {describe(build_ok)} kind={build_kind}, deploy {describe(deploy_ok)} "
        f"kind={deploy_kind}" + (f"; problems: {'; '.join(bad)[:800]}" if bad else ""),
        ok,
    )
    assert ok, bad
