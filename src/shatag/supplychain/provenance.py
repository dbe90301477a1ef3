"""SLSA v1 provenance of a pushed image: built from what the build recorded, attached with
``cosign attest --type slsaprovenance1`` to the digest, checked at deploy (issue 25).

The predicate (docs/signatures.md shows a real one):

* ``buildDefinition.buildType`` -- :data:`BUILD_TYPE`, shatag's own;
* ``externalParameters`` -- the source repository URL, the ref, the 40-hex SHA, the Dockerfile
  path, ``build_source`` and the build args: what an operator chose;
* ``internalParameters`` -- the image repository and its type;
* ``resolvedDependencies`` -- the commit (``git+<url>@<sha>``, digest ``gitCommit``), every
  declared build input with its sha256, and each base image the Dockerfile names with its
  digest where the registry answered (``FROM scratch`` names none);
* ``runDetails`` -- the builder (the GitHub Actions run URL, else ``host/user``) and the start
  and finish times.

:func:`check_statement` is the deploy-side check: the statement is about the image's digest,
names the SHA being deployed and, when the policy says so, the source repository.

>>> p = predicate(ProvenanceInputs(sha="a" * 40, source_url="https://git.example/app",
...     ref="main", dockerfile="Dockerfile", build_source="commit", image_repository="r/app",
...     builder_id="ci/me", started_on="2026-01-01T00:00:00Z",
...     finished_on="2026-01-01T00:01:00Z"))
>>> p["buildDefinition"]["resolvedDependencies"][0]["uri"]
'git+https://git.example/app@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'
>>> check_statement({"predicateType": PREDICATE_TYPE_URI, "subject": [{"digest": {
...     "sha256": "b" * 64}}], "predicate": p}, digest="sha256:" + "b" * 64, sha="c" * 40)
['its provenance names SHA aaaaaaaaaaaa…, not cccccccccccc…']
"""

from __future__ import annotations

import json
import logging
import re
import socket
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from shatag._sys import subproc
from shatag.config import RegistryConfig, Settings, SigningConfig
from shatag.core import parse_repository
from shatag.errors import ShatagError, ToolFailure
from shatag.supplychain.signing import (
    SignatureResult,
    attest_predicate,
    verify_attestation_statements,
)

log = logging.getLogger("shatag.provenance")

#: cosign's name for the SLSA v1 predicate type, and the URI it stands for.
PREDICATE_TYPE: Final = "slsaprovenance1"
PREDICATE_TYPE_URI: Final = "https://slsa.dev/provenance/v1"
#: shatag's build type: a docker build of one git commit's tree, pushed under its SHA tag.
BUILD_TYPE: Final = "https://shatag.dev/provenance/docker-build/v1"

_FROM_RE: Final = re.compile(r"^\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", re.I | re.M)
_DIGEST_RE: Final = re.compile(r"@(sha256:[0-9a-f]{64})$")


@dataclass(frozen=True, slots=True)
class BaseImage:
    """A ``FROM`` image and its digest (``""`` where the registry did not answer)."""

    name: str
    digest: str = ""


@dataclass(frozen=True, slots=True)
class ProvenanceInputs:
    """Everything the predicate says, gathered from what the build recorded."""

    sha: str
    source_url: str
    ref: str
    dockerfile: str
    build_source: str
    image_repository: str
    builder_id: str
    started_on: str
    finished_on: str
    repository_type: str = ""
    build_args: Mapping[str, str] = field(default_factory=dict)
    #: ``{path, sha256, size}`` of each declared build input (the build record's list).
    build_inputs: Sequence[Mapping[str, object]] = ()
    base_images: Sequence[BaseImage] = ()
    invocation_id: str = ""


def predicate(inputs: ProvenanceInputs) -> dict[str, Any]:
    """The SLSA v1 provenance predicate (``https://slsa.dev/provenance/v1``)."""
    url = inputs.source_url or "unknown"
    deps: list[dict[str, Any]] = [
        {"uri": f"git+{url}@{inputs.sha}", "digest": {"gitCommit": inputs.sha}}
    ]
    for item in inputs.build_inputs:
        deps.append(
            {
                "uri": f"file:{item.get('path', '')}",
                "name": str(item.get("path", "")),
                "digest": {"sha256": str(item.get("sha256", ""))},
            }
        )
    for base in inputs.base_images:
        dep: dict[str, Any] = {"uri": f"docker://{base.name}", "name": base.name}
        if base.digest:
            dep["digest"] = {"sha256": base.digest.removeprefix("sha256:")}
        deps.append(dep)
    metadata = {"startedOn": inputs.started_on, "finishedOn": inputs.finished_on}
    if inputs.invocation_id:
        metadata["invocationId"] = inputs.invocation_id
    return {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "source": {"repository": inputs.source_url, "ref": inputs.ref, "sha": inputs.sha},
                "dockerfile": inputs.dockerfile,
                "build_source": inputs.build_source,
                "build_args": dict(inputs.build_args),
            },
            "internalParameters": {
                "image_repository": inputs.image_repository,
                "repository_type": inputs.repository_type,
            },
            "resolvedDependencies": deps,
        },
        "runDetails": {"builder": {"id": inputs.builder_id}, "metadata": metadata},
    }


# -- gathering the inputs (build side) --------------------------------------------------------


def builder_id(env: Mapping[str, str]) -> tuple[str, str]:
    """``(builder id, invocation id)``: the GitHub Actions run URL, else ``host/user``."""
    server, repo, run_id = (
        env.get("GITHUB_SERVER_URL", ""),
        env.get("GITHUB_REPOSITORY", ""),
        env.get("GITHUB_RUN_ID", ""),
    )
    if server and repo and run_id:
        run_url = f"{server.rstrip('/')}/{repo}/actions/runs/{run_id}"
        attempt = env.get("GITHUB_RUN_ATTEMPT", "")
        return run_url, f"{run_url}/attempts/{attempt}" if attempt else run_url
    user = next((env[k] for k in ("USER", "LOGNAME", "USERNAME") if env.get(k)), "unknown")
    return f"{socket.gethostname()}/{user}", ""


def base_image_names(dockerfile: str) -> list[str]:
    """The images the Dockerfile's ``FROM`` lines name: not ``scratch``, not an earlier stage.

    >>> base_image_names("FROM golang:1.22 AS build\\nFROM build AS x\\nFROM scratch\\n")
    ['golang:1.22']
    """
    stages: set[str] = set()
    names: list[str] = []
    for match in _FROM_RE.finditer(dockerfile):
        name, alias = match[1], match[2]
        if name.lower() != "scratch" and name.lower() not in stages and name not in names:
            names.append(name)
        if alias:
            stages.add(alias.lower())
    return names


def resolve_base(name: str, config: RegistryConfig, env: Mapping[str, str]) -> BaseImage:
    """``name`` with its digest: from the name itself (``…@sha256:``), else a HEAD to its
    registry; ``""`` when it does not answer (offline, unknown, a ``${ARG}`` name)."""
    pinned = _DIGEST_RE.search(name)
    if pinned:
        return BaseImage(name, pinned[1])
    if "$" in name:
        return BaseImage(name)
    from shatag.supplychain.registry import open_registry

    path, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "latest")
    host, sep, rest = path.partition("/")
    if not sep or not ("." in host or ":" in host or host == "localhost"):
        path = f"registry-1.docker.io/{path if sep else 'library/' + path}"
    elif host == "docker.io":
        path = f"registry-1.docker.io/{rest}"
    try:
        repository = parse_repository(path)
        client = open_registry(RegistryConfig(config.timeout_sec, retries=0), repository, env=env)
        digest = client.manifest_digest(tag) or ""
    except (ShatagError, OSError, ValueError) as exc:
        log.info("base image %s: no digest from its registry (%s)", name, exc)
        digest = ""
    return BaseImage(name, digest)


def dockerfile_text(settings: Settings, sha: str, env: Mapping[str, str]) -> str:
    """The Dockerfile of commit ``sha`` (``git show``), else the one in the context directory."""
    try:
        return subproc.run(
            ["git", "show", f"{sha}:./{settings.dockerfile}"],
            timeout=settings.tool_timeout_sec,
            env=env,
            cwd=str(settings.context),
        ).stdout
    except ToolFailure:
        pass
    try:
        return (settings.context / settings.dockerfile).read_text(errors="replace")
    except OSError:
        return ""


def gather(
    settings: Settings, record: Any, *, env: Mapping[str, str], source_url: str = ""
) -> ProvenanceInputs:
    """The provenance inputs of one build from its :class:`~shatag.app.build.BuildRecord`
    (``image_sha``, ``branch``, ``build_source``, ``build_inputs``, ``repository``, times)."""
    from datetime import datetime, timedelta

    from shatag._sys import source as source_mod

    finished = datetime.fromisoformat(record.created_at)
    started = finished - timedelta(seconds=float(record.build_duration_sec))
    if not source_url:
        git = source_mod.probe(settings.context, env)
        source_url = source_mod.source_url(
            settings.source_url, env=env, context=settings.context, git=git
        )
    builder, invocation = builder_id(env)
    text = dockerfile_text(settings, record.image_sha, env)
    return ProvenanceInputs(
        sha=record.image_sha,
        source_url=source_url,
        ref=f"refs/heads/{record.branch}" if record.branch else "",
        dockerfile=settings.dockerfile,
        build_source=record.build_source or settings.build_source,
        image_repository=record.repository,
        repository_type=record.repository_type,
        builder_id=builder,
        invocation_id=invocation,
        started_on=_z(started),
        finished_on=_z(finished),
        build_args=dict(record.build_args),
        build_inputs=list(record.build_inputs),
        base_images=[resolve_base(n, settings.registry, env) for n in base_image_names(text)],
    )


def _z(moment: Any) -> str:
    return str(moment.isoformat(timespec="seconds")).replace("+00:00", "Z")


# -- attach and check ---------------------------------------------------------------------


def attest_provenance(
    signing: SigningConfig,
    image_by_digest: str,
    inputs: ProvenanceInputs,
    *,
    env: Mapping[str, str],
) -> dict[str, Any]:
    """Attach the provenance of ``inputs`` as a signed ``slsaprovenance1`` attestation; return
    the predicate. Raises like :func:`shatag.supplychain.signing.attest_predicate`."""
    body = predicate(inputs)
    with tempfile.TemporaryDirectory(prefix="shatag-provenance-") as tmp:
        path = Path(tmp) / "provenance.json"
        path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
        attest_predicate(signing, image_by_digest, path, env=env, predicate_type=PREDICATE_TYPE)
    return body


def verify_provenance(
    signing: SigningConfig, image_by_digest: str, *, env: Mapping[str, str]
) -> tuple[SignatureResult, list[dict[str, object]]]:
    """The ``slsaprovenance1`` attestations of the image that verify, and the verdict."""
    return verify_attestation_statements(
        signing, image_by_digest, env=env, predicate_type=PREDICATE_TYPE
    )


def provenance_sha(statement: Mapping[str, Any]) -> str:
    """The source SHA a statement's predicate names (``""``: none)."""
    external = _get(statement, "predicate", "buildDefinition", "externalParameters")
    source = external.get("source") if isinstance(external, Mapping) else None
    return str(source.get("sha", "")) if isinstance(source, Mapping) else ""


def provenance_repository(statement: Mapping[str, Any]) -> str:
    """The source repository URL a statement's predicate names (``""``: none)."""
    external = _get(statement, "predicate", "buildDefinition", "externalParameters")
    source = external.get("source") if isinstance(external, Mapping) else None
    return str(source.get("repository", "")) if isinstance(source, Mapping) else ""


def check_statement(statement: Mapping[str, Any], *, digest: str, sha: str) -> list[str]:
    """What is wrong with one verified provenance statement for deploying ``sha`` as
    ``digest`` (empty: nothing)."""
    problems: list[str] = []
    if statement.get("predicateType") != PREDICATE_TYPE_URI:
        problems.append(f"its predicate type is {statement.get('predicateType')!r}")
    subjects = statement.get("subject")
    hexdigest = digest.removeprefix("sha256:")
    if not isinstance(subjects, list) or not any(
        isinstance(s, Mapping) and _get(s, "digest", "sha256") == hexdigest for s in subjects
    ):
        problems.append(f"its subject is not the image {digest}")
    named = provenance_sha(statement)
    if named != sha:
        problems.append(f"its provenance names SHA {named[:12] or 'none'}…, not {sha[:12]}…")
    return problems


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data
