"""Copy one image by digest from one repository to another, without a rebuild (issue 26).

``promote`` uses it when the two environments pull from different repositories (staging →
canonical, FR-016). What is copied, all by digest, so the digest stays identical:

* the manifest (an index: each of its manifests too) and every blob it names -- a
  cross-repository *mount* (``POST …/blobs/uploads/?mount=<digest>&from=<repo>``) when both
  repositories are on one registry and it allows it, else a streamed copy (``GET`` the blob,
  one monolithic ``PUT``); blobs the target already holds are left as they are;
* cosign's signature and attestations (``sha256-<hex>.sig`` / ``.att``) and the referrers
  tag of the tag-schema fallback (``sha256-<hex>``), with their own blobs;
* the full and the short SHA tag.

An existing SHA tag naming another digest is never overwritten (FR-009): DIGEST_MISMATCH,
before anything is copied. A signature tag the target already holds for another manifest is
kept (cosign there signed it itself) and reported.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from shatag.core import short_sha
from shatag.errors import DigestMismatch, RegistryUnavailable
from shatag.supplychain.registry import INDEX_TYPES, Manifest, RegistryClient

log = logging.getLogger("shatag.copy")

#: Blobs up to this size are spooled in memory, larger ones on disk.
_SPOOL_BYTES = 8 * 1024 * 1024


@dataclass(slots=True)
class CopyReport:
    """What one copy did, for the promote record and the closing figures."""

    source: str
    target: str
    digest: str
    mounted: int = 0
    copied: int = 0
    present: int = 0
    bytes_copied: int = 0
    manifests: int = 0
    tags: list[str] = field(default_factory=list)
    #: cosign tags copied (``sha256-<hex>.sig`` …) and notes on those kept as they were.
    signatures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "copied_from": self.source,
            "copied_to": self.target,
            "blobs_mounted": self.mounted,
            "blobs_copied": self.copied,
            "blobs_present": self.present,
            "bytes_copied": self.bytes_copied,
            "manifests_copied": self.manifests,
            "tags_written": list(self.tags),
            "signature_tags": list(self.signatures),
            "copy_sec": round(self.seconds, 3),
        }

    def human_line(self) -> str:
        return (
            f"copied {self.digest[:19]}… {self.source} -> {self.target}: "
            f"{self.mounted} blobs mounted, {self.copied} copied ({self.bytes_copied} bytes), "
            f"{self.present} already there; tags {', '.join(self.tags) or 'unchanged'}; "
            f"signatures {', '.join(self.signatures) or 'none'} in {self.seconds:.2f}s"
        )


def cosign_tags(digest: str) -> tuple[str, ...]:
    """The tags cosign (old format) and the referrers tag schema keep beside ``digest``.

    >>> cosign_tags("sha256:ab")
    ('sha256-ab.sig', 'sha256-ab.att', 'sha256-ab')
    """
    base = digest.replace(":", "-", 1)
    return (f"{base}.sig", f"{base}.att", base)


def check_tags_free(target: RegistryClient, sha: str, digest: str) -> None:
    """FR-009: the target's full and short SHA tags are absent or already name ``digest``."""
    for tag in (sha, short_sha(sha)):
        there = target.manifest_digest(tag)
        if there is not None and there != digest:
            raise DigestMismatch(
                f"{target.repository}:{tag} already names {there}, not {digest} that is being "
                "promoted; an existing tag is never overwritten (FR-009). Nothing was copied: "
                "investigate that repository"
            )


def copy_image(source: RegistryClient, target: RegistryClient, sha: str, digest: str) -> CopyReport:
    """Copy ``source@digest`` into ``target`` and tag it ``sha`` and its short form."""
    started = time.monotonic()
    report = CopyReport(str(source.repository), str(target.repository), digest)
    check_tags_free(target, sha, digest)
    manifest = _copy_manifest(source, target, digest, report)
    for tag in (sha, short_sha(sha)):
        if target.manifest_digest(tag) != digest:
            _put(target, tag, manifest)
            report.tags.append(tag)
    for tag in cosign_tags(digest):
        found = source.manifest(tag)
        if found is None:
            continue
        there = target.manifest_digest(tag)
        if there == found.digest:
            continue
        if there is not None:
            report.notes.append(f"{target.repository}:{tag} kept as it was (another manifest)")
            continue
        _copy_manifest(source, target, found.digest, report)
        _put(target, tag, found)
        report.signatures.append(tag)
    report.seconds = time.monotonic() - started
    return report


def _put(target: RegistryClient, reference: str, manifest: Manifest) -> None:
    answered = target.put_manifest(reference, manifest)
    if answered and answered != manifest.digest:
        raise RegistryUnavailable(
            f"registry {target.repository.registry} stored {reference} as {answered}, not "
            f"{manifest.digest}: it rewrote the manifest"
        )


def _copy_manifest(
    source: RegistryClient, target: RegistryClient, digest: str, report: CopyReport
) -> Manifest:
    """The manifest ``digest``, its blobs (an index: its manifests, recursively) in ``target``,
    stored there by digest."""
    manifest = source.manifest(digest)
    if manifest is None or manifest.digest != digest:
        raise RegistryUnavailable(f"{source.repository}@{digest} could not be read back")
    data = manifest.parsed()
    if manifest.media_type in INDEX_TYPES or "manifests" in data:
        for entry in data.get("manifests") or []:
            _copy_manifest(source, target, str(entry["digest"]), report)
    else:
        blobs = [data.get("config") or {}, *(data.get("layers") or [])]
        for blob in blobs:
            if blob.get("digest"):
                _copy_blob(source, target, str(blob["digest"]), report)
    if target.manifest_digest(digest) != digest:
        _put(target, digest, manifest)
        report.manifests += 1
    return manifest


def _copy_blob(
    source: RegistryClient, target: RegistryClient, digest: str, report: CopyReport
) -> None:
    if target.has_blob(digest):
        report.present += 1
        return
    same_registry = source.repository.registry == target.repository.registry
    mount_from = source.repository.name if same_registry else ""
    location = target.start_upload(digest, mount_from=mount_from)
    if location is None:
        report.mounted += 1
        return
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
        size = source.download_blob(digest, spool)
        target.upload_blob(location, digest, spool, size)
    report.copied += 1
    report.bytes_copied += size
    log.info("copied blob %s (%d bytes) to %s", digest, size, target.repository)
