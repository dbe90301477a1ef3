"""syft adapter: an SPDX-JSON SBOM of the pushed image (FR-008).

The SBOM file is named after the full git SHA (``<sbom_dir>/<sha>.spdx.json``); its own
``sha256`` is recorded beside the image digest. Two ways to scan, one result:

* A fresh build: :func:`scan_local_image` scans the image just built, by its image ID, from the
  docker engine that built it, **while** it is being pushed (the two together take about as long
  as the push alone). The SBOM names the image ID (its config digest) as its version. It counts
  only once the push is proven: the registry's manifest for the SHA tag must carry that same
  config digest, which fixes every layer (the config lists the layers' content digests). A local
  scan that fails falls back to the registry scan below.
* Otherwise (a reused tag, a ``--rebuild`` comparison, a fallback): syft reads the pushed digest
  straight from the registry (``registry:`` source); reading changes nothing there.

With signing configured the SBOM is attached as a signed in-toto attestation
(``cosign attest --type spdxjson``) to the manifest digest.

>>> sbom_path(SbomConfig(), "a" * 40).name
'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.spdx.json'
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from shatag._sys.fs import atomic_write_bytes
from shatag._sys.subproc import run
from shatag.config import SbomConfig, SigningConfig
from shatag.core import Repository, validate_digest, validate_sha
from shatag.errors import ToolFailure, ToolMissing, ToolTimeout
from shatag.supplychain.signing import SignatureResult, attest_predicate, verify_attestation

log = logging.getLogger("shatag.sbom")

SbomStatus = Literal["generated", "tool_missing"]
SYFT: Final = "syft"
PREDICATE_TYPE: Final = "spdxjson"


@dataclass(frozen=True, slots=True)
class SbomResult:
    """``sbom_ref`` is the SBOM file; ``sbom_digest`` its ``sha256:`` (empty unless generated)."""

    status: SbomStatus
    path: str = ""
    sbom_ref: str = ""
    sbom_digest: str = ""
    detail: str = ""
    packages: tuple[str, ...] = ()


def sbom_path(config: SbomConfig, sha: str) -> Path:
    return config.sbom_dir / f"{validate_sha(sha)}.spdx.json"


def _syft_env(repository: Repository, env: Mapping[str, str]) -> dict[str, str]:
    out = dict(env)
    out.setdefault("SYFT_CHECK_FOR_APP_UPDATE", "false")
    from shatag.supplychain.registry import registry_ca

    ca = registry_ca(repository.registry)
    if ca is not None:
        # A registry with a CA in certs.d speaks TLS, loopback or not (as for the daemon).
        out.setdefault("SYFT_REGISTRY_CA_CERT", str(ca))
    elif repository.plain_http:
        # Loopback registries speak plain HTTP (core.Repository.plain_http); tell syft.
        out.setdefault("SYFT_REGISTRY_INSECURE_USE_HTTP", "true")
    return out


def parse_spdx(data: bytes, *digests: str) -> tuple[str, ...]:
    """Check ``data`` is an SPDX-JSON document of the image (one of ``digests``: its manifest
    digest, or its config digest for a local scan); return the package names.

    Raises ``ValueError`` when it is not.
    """
    doc = json.loads(data)
    if not isinstance(doc, dict) or not str(doc.get("spdxVersion", "")).startswith("SPDX-"):
        raise ValueError("not an SPDX document (no spdxVersion)")
    packages = doc.get("packages")
    if not isinstance(packages, list):
        raise ValueError("the SPDX document lists no packages")  # noqa: TRY004 -- one error type for any malformed document
    names = tuple(str(p.get("name", "")) for p in packages if isinstance(p, dict))
    wanted = {d for d in digests if d}
    if not any(isinstance(p, dict) and p.get("versionInfo") in wanted for p in packages):
        raise ValueError(f"the SPDX document does not describe the image {' or '.join(digests)}")
    return names


def _syft_scan(
    config: SbomConfig,
    repository: Repository,
    sha: str,
    source: list[str],
    *,
    env: Mapping[str, str],
) -> bytes:
    """Run ``syft scan <source…>`` into a private file beside the SBOM and return its bytes (two
    builds of one SHA never share that file). Raises like :func:`subproc.run`."""
    path = sbom_path(config, sha)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.syft")
    try:
        run(
            [SYFT, "scan", *source, "-o", f"spdx-json={tmp}", "-q"],
            timeout=config.tool_timeout_sec,
            env=_syft_env(repository, env),
        )
        return tmp.read_bytes()
    finally:
        tmp.unlink(missing_ok=True)


def _timed_out(config: SbomConfig, image: str, exc: ToolTimeout) -> ToolFailure:
    return ToolFailure(
        f"syft did not finish within {config.tool_timeout_sec:g}s (shatag.tool_timeout_sec) "
        f"scanning {image}; the image is pushed and unchanged",
        command=exc.command,
    )


def scan_local_image(
    config: SbomConfig, repository: Repository, sha: str, image_id: str, *, env: Mapping[str, str]
) -> bytes:
    """Scan the freshly built image ``image_id`` from the docker engine; return the SPDX bytes.

    Started alongside ``docker push``; see the module docstring for why the result may stand for
    the pushed digest. Raises like :func:`subproc.run` (ToolMissing/ToolTimeout/ToolFailure).
    """
    validate_digest(image_id)
    source = [f"docker:{image_id}", "--source-name", f"{repository}:{sha}"]
    return _syft_scan(config, repository, sha, [*source, "--source-version", image_id], env=env)


def generate_sbom(
    config: SbomConfig,
    repository: Repository,
    sha: str,
    digest: str,
    *,
    env: Mapping[str, str],
    local: Callable[[], bytes] | None = None,
    config_digest: str = "",
) -> SbomResult:
    """The SBOM of ``repository@digest`` into ``<sbom_dir>/<sha>.spdx.json``.

    ``local`` waits for a :func:`scan_local_image` of the image whose ID is ``config_digest``
    (verified by the caller to be the pushed manifest's config); without it, or when that scan
    failed, syft scans ``repository@digest`` from the registry.

    A missing syft is ``tool_missing`` (the product never requires it); a syft that runs and
    fails raises :class:`ToolFailure` (TOOL_FAILURE, the sbom-linkage contract in
    specs/003-tag-api-container/contracts/).
    """
    validate_digest(digest)
    scanned = None
    if local is not None and config_digest:
        scanned = _local_result(config, local, config_digest, f"{repository}@{digest}")
    if scanned is None:
        scanned = _scan_registry(config, repository, sha, digest, env=env)
    if scanned is None:
        return SbomResult("tool_missing", detail="syft is not installed or not on PATH")
    data, packages = scanned
    path = sbom_path(config, sha)
    atomic_write_bytes(path, data)
    sbom_digest = "sha256:" + hashlib.sha256(data).hexdigest()
    log.info(
        "SBOM of %s@%s: %s (%s, %d packages)", repository, digest, path, sbom_digest, len(packages)
    )
    return SbomResult(
        "generated",
        path=str(path),
        sbom_ref=str(path),
        sbom_digest=sbom_digest,
        packages=packages,
    )


def _local_result(
    config: SbomConfig, local: Callable[[], bytes], config_digest: str, image: str
) -> tuple[bytes, tuple[str, ...]] | None:
    """The local scan's document and packages, or ``None`` to scan the registry instead."""
    try:
        data = local()
        packages = parse_spdx(data, config_digest)
    except ToolMissing:
        return None  # the registry scan reports tool_missing the same way
    except ToolTimeout as exc:  # a hung syft would hang again on the registry: no fallback
        raise _timed_out(config, image, exc) from None
    except (ToolFailure, OSError, ValueError) as exc:
        log.warning("local SBOM scan of %s failed (%s); scanning the registry instead", image, exc)
        return None
    return data, packages


def _scan_registry(
    config: SbomConfig, repository: Repository, sha: str, digest: str, *, env: Mapping[str, str]
) -> tuple[bytes, tuple[str, ...]] | None:
    """syft reads ``repository@digest`` from the registry; ``None`` when syft is missing."""
    image = f"{repository}@{digest}"
    try:
        data = _syft_scan(config, repository, sha, [f"registry:{image}"], env=env)
        packages = parse_spdx(data, digest)
    except ToolMissing:
        return None
    except ToolTimeout as exc:
        raise _timed_out(config, image, exc) from None
    except ToolFailure as exc:
        raise ToolFailure(
            f"syft failed to scan {image}; the image is pushed and unchanged: {exc}",
            command=exc.command,
            returncode=exc.returncode,
            output=exc.output,
        ) from None
    except (OSError, ValueError) as exc:
        raise ToolFailure(
            f"syft produced no usable SPDX-JSON for {image}: {exc}", command=SYFT
        ) from None
    return data, packages


def attest_sbom(
    signing: SigningConfig, image_by_digest: str, sbom: SbomResult, *, env: Mapping[str, str]
) -> None:
    """Attach the SBOM as a signed ``spdxjson`` attestation to the same digest (cosign attest).

    Raises :class:`ToolFailure` / :class:`ConfigError` like
    :func:`shatag.supplychain.signing.sign_image`.
    """
    if sbom.status != "generated":
        raise ValueError("only a generated SBOM can be attested")
    attest_predicate(
        signing, image_by_digest, Path(sbom.path), env=env, predicate_type=PREDICATE_TYPE
    )


def verify_sbom_attestation(
    signing: SigningConfig, image_by_digest: str, *, env: Mapping[str, str]
) -> SignatureResult:
    """Verify the ``spdxjson`` attestation of the image: same vocabulary as signatures
    (``verified``/``n/a``, ``unverified`` + ``no_signature``/``invalid``/…). Raises
    :class:`shatag.errors.SoftVerifyToolError` when cosign gives no answer."""
    return verify_attestation(signing, image_by_digest, env=env, predicate_type=PREDICATE_TYPE)
