"""syft adapter: an SPDX-JSON SBOM of the pushed image, read from the registry by digest (FR-008).

The SBOM file is named after the full git SHA (``<sbom_dir>/<sha>.spdx.json``); its own
``sha256`` is recorded beside the image digest. syft reads the image straight from the registry
(``registry:`` source), never from the local docker daemon, so the SBOM describes exactly the
pushed manifest; reading changes nothing in the registry (the image digest stays the same).
With signing configured the SBOM is attached as a signed in-toto attestation
(``cosign attest --type spdxjson``) to the same digest.

>>> sbom_path(Settings.from_mapping({}), "a" * 40).name
'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.spdx.json'
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, Literal

from shatag._fs import atomic_write_bytes
from shatag._run import run
from shatag.config import Settings
from shatag.core import Repository, validate_digest, validate_sha
from shatag.errors import ToolFailure, ToolMissing, ToolTimeout
from shatag.signing import SignatureResult, attest_predicate, verify_attestation

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

    def as_record(self) -> dict[str, Any]:
        data = asdict(self)
        return {
            "sbom_status": data["status"],
            "sbom_ref": data["sbom_ref"],
            "sbom_digest": data["sbom_digest"],
        }


def sbom_path(settings: Settings, sha: str) -> Path:
    return settings.sbom_dir / f"{validate_sha(sha)}.spdx.json"


def _syft_env(repository: Repository, env: Mapping[str, str]) -> dict[str, str]:
    out = dict(env)
    out.setdefault("SYFT_CHECK_FOR_APP_UPDATE", "false")
    from shatag.registry import registry_ca

    ca = registry_ca(repository.registry)
    if ca is not None:
        # A registry with a CA in certs.d speaks TLS, loopback or not (as for the daemon).
        out.setdefault("SYFT_REGISTRY_CA_CERT", str(ca))
    elif repository.plain_http:
        # Loopback registries speak plain HTTP (DESIGN.md); syft needs to be told.
        out.setdefault("SYFT_REGISTRY_INSECURE_USE_HTTP", "true")
    return out


def parse_spdx(data: bytes, digest: str) -> tuple[str, ...]:
    """Check ``data`` is an SPDX-JSON document of the image ``digest``; return package names.

    Raises ``ValueError`` when it is not.
    """
    doc = json.loads(data)
    if not isinstance(doc, dict) or not str(doc.get("spdxVersion", "")).startswith("SPDX-"):
        raise ValueError("not an SPDX document (no spdxVersion)")
    packages = doc.get("packages")
    if not isinstance(packages, list):
        raise ValueError("the SPDX document lists no packages")  # noqa: TRY004 -- one error type for any malformed document
    names = tuple(str(p.get("name", "")) for p in packages if isinstance(p, dict))
    if not any(isinstance(p, dict) and p.get("versionInfo") == digest for p in packages):
        raise ValueError(f"the SPDX document does not describe the image {digest}")
    return names


def generate_sbom(
    settings: Settings,
    repository: Repository,
    sha: str,
    digest: str,
    *,
    env: Mapping[str, str],
) -> SbomResult:
    """Scan ``repository@digest`` from the registry with syft into ``<sbom_dir>/<sha>.spdx.json``.

    A missing syft is ``tool_missing`` (the product never requires it); a syft that runs and
    fails raises :class:`ToolFailure` (TOOL_FAILURE, contracts/sbom-linkage.yaml).
    """
    validate_digest(digest)
    path = sbom_path(settings, sha)
    image = f"{repository}@{digest}"
    tmp = path.with_name(f".{path.name}.syft")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        run(
            [SYFT, "scan", f"registry:{image}", "-o", f"spdx-json={tmp}", "-q"],
            timeout=settings.tool_timeout_sec,
            env=_syft_env(repository, env),
        )
        data = tmp.read_bytes()
        packages = parse_spdx(data, digest)
    except ToolMissing:
        return SbomResult("tool_missing", detail="syft is not installed or not on PATH")
    except ToolTimeout as exc:
        raise ToolFailure(
            f"syft did not finish within {settings.tool_timeout_sec:g}s "
            "(shatag.tool_timeout_sec); the image is pushed and unchanged",
            command=exc.command,
        ) from None
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
    finally:
        tmp.unlink(missing_ok=True)
    atomic_write_bytes(path, data)
    sbom_digest = "sha256:" + hashlib.sha256(data).hexdigest()
    log.info("SBOM of %s: %s (%s, %d packages)", image, path, sbom_digest, len(packages))
    return SbomResult(
        "generated",
        path=str(path),
        sbom_ref=str(path),
        sbom_digest=sbom_digest,
        packages=packages,
    )


def attest_sbom(
    settings: Settings, image_by_digest: str, sbom: SbomResult, *, env: Mapping[str, str]
) -> None:
    """Attach the SBOM as a signed ``spdxjson`` attestation to the same digest (cosign attest).

    Raises :class:`ToolFailure` / :class:`ConfigError` like :func:`shatag.signing.sign_image`.
    """
    if sbom.status != "generated":
        raise ValueError("only a generated SBOM can be attested")
    attest_predicate(
        settings, image_by_digest, Path(sbom.path), env=env, predicate_type=PREDICATE_TYPE
    )


def verify_sbom_attestation(
    settings: Settings, image_by_digest: str, *, env: Mapping[str, str]
) -> SignatureResult:
    """Verify the ``spdxjson`` attestation of the image: same vocabulary as signatures
    (``verified``/``n/a``, ``unverified`` + ``no_signature``/``invalid``/…). Raises
    :class:`shatag.errors.SoftVerifyToolError` when cosign gives no answer."""
    return verify_attestation(settings, image_by_digest, env=env, predicate_type=PREDICATE_TYPE)
