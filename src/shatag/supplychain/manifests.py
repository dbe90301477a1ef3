"""FR-015 under a SHA tag: exactly one ``linux/amd64`` image, checked in the registry.

A SHA tag may hold

* an image manifest (OCI or Docker v2) whose config says ``linux/amd64`` -- ``kind="image"``;
* an index (OCI index or Docker manifest list) of exactly one ``linux/amd64`` image manifest plus
  attestation manifests (BuildKit's provenance/SBOM, annotated
  ``vnd.docker.reference.type: attestation-manifest``) -- ``kind="index"``, recorded as such
  with the image manifest's own digest.

Anything else -- an index with another platform, with two images, an empty one, an arm64 image
-- is :class:`~shatag.errors.PolicyViolation`, in build (reuse and after the push), deploy and
rollback (issue 14, item 7).

>>> summarize([{"platform": {"os": "linux", "architecture": "arm64"}}])
'linux/arm64'
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from shatag.errors import DigestMismatch, MissingTag, PolicyViolation
from shatag.supplychain.registry import (
    DOCKER_MANIFEST,
    INDEX_TYPES,
    OCI_MANIFEST,
    Manifest,
    RegistryClient,
)

ATTESTATION_TYPE: Final = "attestation-manifest"
IMAGE_TYPES: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
ManifestKind = Literal["image", "index"]


@dataclass(frozen=True, slots=True)
class CheckedImage:
    """What a SHA tag was found to hold."""

    digest: str  # the digest the tag names (the index's, for an index)
    kind: ManifestKind
    image_digest: str  # the linux/amd64 image manifest's digest (== digest for an image)
    attestations: int = 0

    def as_fields(self) -> dict[str, Any]:
        """Keys for the build/deploy records."""
        data: dict[str, Any] = {"manifest_kind": self.kind}
        if self.kind == "index":
            data["platform_manifest_digest"] = self.image_digest
            data["attestation_manifests"] = self.attestations
        return data


def _platform(entry: Mapping[str, Any]) -> str:
    plat = entry.get("platform") or {}
    if not isinstance(plat, Mapping):
        return "unknown"
    os_name, arch = plat.get("os") or "?", plat.get("architecture") or "?"
    variant = f"/{plat['variant']}" if plat.get("variant") else ""
    return f"{os_name}/{arch}{variant}"


def summarize(entries: list[Mapping[str, Any]]) -> str:
    return ", ".join(_platform(e) for e in entries) or "no entries"


def _is_attestation(entry: Mapping[str, Any]) -> bool:
    annotations = entry.get("annotations") or {}
    return (
        isinstance(annotations, Mapping)
        and annotations.get("vnd.docker.reference.type") == ATTESTATION_TYPE
    )


def check_single_platform(
    client: RegistryClient,
    reference: str,
    *,
    expected_digest: str | None = None,
    platform: str = "linux/amd64",
    manifest: Manifest | None = None,
) -> CheckedImage:
    """Read what ``reference`` (a SHA tag) holds and refuse all but one ``platform`` image."""
    where = f"{client.repository}:{reference}"
    manifest = manifest or client.manifest(reference)
    if manifest is None:
        raise MissingTag(f"{where} is not in the registry")
    if expected_digest is not None and manifest.digest != expected_digest:
        raise DigestMismatch(
            f"{where} changed while it was checked ({expected_digest} then {manifest.digest}); "
            "nothing was changed — investigate who is pushing this tag"
        )
    data = _parsed(manifest, where)
    media_type = manifest.media_type or str(data.get("mediaType", ""))
    if media_type in INDEX_TYPES or "manifests" in data:
        entries = [e for e in data.get("manifests") or [] if isinstance(e, Mapping)]
        images = [e for e in entries if not _is_attestation(e)]
        if len(images) != 1 or _platform(images[0]) != platform:
            raise PolicyViolation(
                f"{where} is a multi-platform index ({manifest.digest}) holding "
                f"{len(images)} image(s): {summarize(images)}. FR-015 allows exactly one "
                f"{platform} image (attestations aside); nothing was changed — rebuild it with "
                "`inv build` (single platform, attestations off)"
            )
        image_digest = str(images[0].get("digest", ""))
        sub = client.manifest(image_digest)
        if sub is None:
            raise MissingTag(f"{where}: its {platform} image {image_digest} is missing")
        _check_image(client, sub, f"{where} ({platform} entry {image_digest})", platform)
        return CheckedImage(manifest.digest, "index", image_digest, len(entries) - 1)
    _check_image(client, manifest, where, platform)
    return CheckedImage(manifest.digest, "image", manifest.digest)


def _check_image(client: RegistryClient, manifest: Manifest, where: str, platform: str) -> None:
    data = _parsed(manifest, where)
    media_type = manifest.media_type or str(data.get("mediaType", ""))
    config = data.get("config")
    if media_type not in IMAGE_TYPES or not isinstance(config, Mapping):
        raise PolicyViolation(
            f"{where} is not an image manifest ({media_type or 'no media type'}); FR-015 allows "
            f"one {platform} image; nothing was changed"
        )
    blob = client.blob(str(config.get("digest", "")))
    if blob is None:
        raise MissingTag(f"{where}: its image config {config.get('digest')} is missing")
    try:
        parsed = json.loads(blob)
    except ValueError:
        parsed = None
    found = (
        f"{parsed.get('os', '?')}/{parsed.get('architecture', '?')}"
        if isinstance(parsed, dict)
        else "unreadable"
    )
    if isinstance(parsed, dict) and parsed.get("variant"):
        found += f"/{parsed['variant']}"
    if found != platform:
        raise PolicyViolation(
            f"{where} is a {found} image; FR-015 allows {platform} only. Nothing was changed"
        )


def _parsed(manifest: Manifest, where: str) -> dict[str, Any]:
    try:
        data = json.loads(manifest.body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise PolicyViolation(f"{where} does not hold a JSON manifest; nothing was changed")
    return data
