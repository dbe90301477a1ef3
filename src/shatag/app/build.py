"""The build use case (FR-001/002/003/006/009/015/016/017).

Route the SHA to its repository, ask the registry first (an existing SHA tag is reused, never
rebuilt over), clean-build ``linux/amd64``, tag full and short SHA, push, and prove what was
pushed: the registry's manifest digest equals what ``docker push`` reported, the manifest's
config digest equals the local image ID, and the short tag resolves to the same digest.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from shatag._sys import gittree, subproc
from shatag._sys import source as source_mod
from shatag._sys.docker import BuiltImage, DockerEngine
from shatag.config import Settings
from shatag.core import (
    Repository,
    RepositoryType,
    pinned_reference,
    route_repository,
    short_sha,
    validate_branch,
    validate_sha,
)
from shatag.errors import (
    BuildFailure,
    DigestMismatch,
    InvalidInput,
    MissingTag,
    PushFailure,
    RegistryAuthError,
    RegistryUnavailable,
    SourceMismatch,
    ToolFailure,
)
from shatag.ledger.lock import build_lock
from shatag.supplychain.metadata import BuildMetadata, load_metadata
from shatag.supplychain.registry import Manifest, RegistryClient, open_registry
from shatag.supplychain.sbom import scan_local_image

PUSH_TIMEOUT_SEC = 900.0


class BuildEngine(Protocol):
    """What the build needs of a container engine (:class:`shatag._sys.docker.DockerEngine`)."""

    def build(
        self,
        *,
        context: Path,
        dockerfile: Path,
        platform: str,
        tags: Sequence[str],
        labels: Mapping[str, str],
        timeout: float,
        on_line: Callable[[str], None],
        build_args: Mapping[str, str] | None = None,
    ) -> BuiltImage:
        """Clean build; the local image ID (config digest) and the builder used."""
        ...

    def builder(self) -> str:
        """Which builder :meth:`build` will use (probed once; safe to ask from another thread
        while nothing else uses the engine)."""
        ...

    def tag(self, source: str, target: str) -> None: ...

    def untag(self, tags: Sequence[str]) -> None: ...

    def push(self, tag: str, *, timeout: float, on_line: Callable[[str], None]) -> str:
        """Push one tag; the digest the engine reported."""
        ...


@dataclass(frozen=True, slots=True)
class BuildRequest:
    """What ``inv build`` asks for: the commit, its branch and the flags."""

    sha: str
    branch: str
    rebuild: bool = False
    sign: bool = False
    metadata_out: Path | None = None


@dataclass(slots=True)
class BuildRecord:
    """The ImageArtifact record: the build log line and the metadata file (FR-006)."""

    image_sha: str
    short_sha: str
    repository: str
    repository_type: str
    image_digest: str
    image_ref: str
    arch: str
    signature_status: str = "unverified"
    signature_reason: str = "tool_missing"
    sbom_status: str = "skipped"  # generated | tool_missing | error (FR-008)
    sbom_ref: str = ""
    sbom_digest: str = ""
    build_duration_sec: float = 0.0
    pre_push_digest: str = ""
    post_push_digest: str = ""
    config_digest: str = ""
    push_reported_digest: str = ""
    digest_verification: str = "ok"
    reused: bool = False
    builder: str = ""
    branch: str = ""
    created_at: str = ""
    #: What the context was: ``commit`` (the commit's tree), ``worktree`` or ``directory``.
    build_source: str = ""
    #: Declared untracked inputs that went into the image: ``{path, sha256, size}`` each.
    build_inputs: list[dict[str, object]] = field(default_factory=list)
    #: The submodules the context held, at the SHAs the commit records: ``{path, sha}`` each.
    submodules: list[dict[str, str]] = field(default_factory=list)
    #: ``NAME -> value``: the ``--build-arg`` values the image was built with.
    build_args: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        return {"phase": "build", **data, **extra}


def default_sha(env: Mapping[str, str], context: Path) -> str:
    """``GITHUB_SHA`` under Actions, else ``git rev-parse HEAD`` of the build context."""
    if env.get("GITHUB_SHA"):
        return env["GITHUB_SHA"]
    return _from_git(source_mod.head_sha, context, env, "--sha")


def default_branch(env: Mapping[str, str], context: Path) -> str:
    """The PR head branch or ``GITHUB_REF_NAME`` under Actions, else the checked-out branch."""
    for key in ("GITHUB_HEAD_REF", "GITHUB_REF_NAME"):
        if env.get(key):
            return env[key]
    branch = _from_git(source_mod.head_branch, context, env, "--branch")
    if branch == "HEAD":
        raise InvalidInput("HEAD is detached, so the branch is unknown; pass --branch=NAME")
    return branch


def _from_git(
    ask: Callable[[Path, Mapping[str, str]], str | None],
    context: Path,
    env: Mapping[str, str],
    flag: str,
) -> str:
    """What ``ask`` (a :mod:`shatag._sys.source` lookup) answers; INVALID_INPUT naming the
    flag to pass instead when git cannot tell."""
    try:
        answer = ask(context, env)
    except ToolFailure:
        answer = None
    if answer is None:
        raise InvalidInput(f"{context} is not in a git checkout; pass {flag} explicitly")
    return answer


@dataclass(frozen=True, slots=True)
class _Job:
    """What every step of one build shares."""

    settings: Settings
    repo: Repository
    repo_type: RepositoryType
    sha: str
    registry: RegistryClient
    meta_path: Path
    build_args: Mapping[str, str] = field(default_factory=dict)

    def record(self, digest: str, **fields: Any) -> BuildRecord:
        return BuildRecord(
            image_sha=self.sha,
            short_sha=short_sha(self.sha),
            repository=str(self.repo),
            repository_type=self.repo_type.value,
            image_digest=digest,
            image_ref=pinned_reference(self.repo, self.sha, digest),
            arch=self.settings.platform,
            post_push_digest=digest,
            **fields,
        )


def ensure_writable(path: Path) -> None:
    """Fail INVALID_INPUT now if the metadata file cannot be written there, rather than after
    an image was built and pushed."""
    import tempfile

    if path.is_dir():
        raise InvalidInput(f"metadata destination {path} is a directory; name a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".shatag-probe-"):
            pass
    except OSError as exc:
        raise InvalidInput(
            f"metadata destination {path} is not writable ({exc.strerror or exc}); pass a "
            "writable --metadata-out or shatag.metadata_dir"
        ) from None


def metadata_path(settings: Settings, request: BuildRequest) -> Path:
    return request.metadata_out or settings.metadata_dir / f"{request.sha}.json"


def build(
    settings: Settings,
    request: BuildRequest,
    *,
    env: Mapping[str, str],
    on_line: Callable[[str], None] = lambda _line: None,
    docker: BuildEngine | None = None,
) -> BuildRecord:
    """Build (or reuse) the image for ``request.sha`` and return its record."""
    started = time.monotonic()
    sha = validate_sha(request.sha)
    branch = validate_branch(request.branch)
    if request.sign:
        _check_signing(settings, env)
    git = _source_checks(settings, sha, env)
    repo_type = route_repository(branch, settings.main_branches)
    if repo_type is RepositoryType.CANONICAL:
        source_mod.check_route(git, sha, branch, settings.main_branches, env)
    repo = settings.repository(repo_type)
    registry = open_registry(settings.registry, repo, env=env)
    meta_path = metadata_path(settings, request)
    ensure_writable(meta_path)

    build_args = {
        name: text.format_map(
            {"sha": sha, "short_sha": short_sha(sha), "branch": branch, "repository": str(repo)}
        )
        for name, text in settings.build_args.items()
    }
    job = _Job(settings, repo, repo_type, sha, registry, meta_path, build_args)
    existing = registry.manifest_digest(sha)
    if existing is None:
        _refuse_silent_republish(job, meta_path)
    local_sbom: Callable[[], bytes] | None = None
    # One helper: the SBOM scan alongside the push.
    with ThreadPoolExecutor(max_workers=2) as pool:
        if existing is not None and not request.rebuild:
            record = _reuse(job, existing, meta_path)
        else:
            record, local_sbom = _build_new(
                job, existing, git, env=env, on_line=on_line, docker=docker, pool=pool
            )
        record.branch = branch
        record.build_duration_sec = round(time.monotonic() - started, 3)
        record.created_at = datetime.now(UTC).isoformat(timespec="seconds")
        # signing/SBOM hook: sign, SBOM, attest, soft-verify, all by digest (FR-008/010/014).
        from shatag.supplychain.evidence import after_push
        from shatag.supplychain.provenance import gather as provenance_inputs

        chain = after_push(
            settings.signing,
            settings.sbom,
            repo,
            sha,
            record.image_digest,
            sign=request.sign,
            reused=record.reused,
            env=env,
            config_digest=record.config_digest,
            local_sbom=local_sbom,
            provenance=functools.partial(provenance_inputs, settings, record, env=env),
        )
    record.signature_status = chain.signature.status
    record.signature_reason = chain.signature.reason
    record.sbom_status = chain.sbom.status
    record.sbom_ref = chain.sbom.sbom_ref
    record.sbom_digest = chain.sbom.sbom_digest
    return record


def _check_signing(settings: Settings, env: Mapping[str, str]) -> None:
    """``--sign``: cosign and the key (or a keyless OIDC token) are checked before anything is
    built or pushed, so a missing key never leaves an unsigned image behind (issue 24, item 7)."""
    from shatag.supplychain.signing import cosign_version, signing_flags

    signing_flags(settings.signing, cosign_version(settings.signing, env), env)


def _source_checks(
    settings: Settings, sha: str, env: Mapping[str, str]
) -> source_mod.GitContext | None:
    """Before the registry is asked: the context exists; it is a git checkout holding ``sha``
    as a commit object, or ``build_source: directory`` says it is not one (issue 24, items
    1-2). The context's git repository, ``None`` for a directory build."""
    context = settings.context
    if not context.is_dir():
        raise BuildFailure(f"build context {context} does not exist or is not a directory")
    if settings.build_source == "directory":
        return None
    git = source_mod.probe(context, env)
    if git is None:
        raise SourceMismatch(
            f"the build context {context} is not in a git checkout, so nothing proves which "
            f"commit {sha} it holds; build from a git checkout, or set build_source: directory "
            "explicitly (such an image goes to the staging repository only)"
        )
    source_mod.require_commit(git, sha, env)
    return git


def _build_new(
    job: _Job,
    existing: str | None,
    git: source_mod.GitContext | None,
    *,
    env: Mapping[str, str],
    on_line: Callable[[str], None],
    docker: BuildEngine | None,
    pool: ThreadPoolExecutor,
) -> tuple[BuildRecord, Callable[[], bytes] | None]:
    """Build the image from its prepared context and push it (``existing``: the digest the
    SHA tag held, for ``--rebuild``); the record and the pending local SBOM scan."""
    settings, repo, sha = job.settings, job.repo, job.sha
    engine: BuildEngine = docker or DockerEngine(env)

    def start_scan(image_id: str) -> Callable[[], bytes]:
        scanning = pool.submit(scan_local_image, settings.sbom, repo, sha, image_id, env=env)
        return scanning.result

    with tempfile.TemporaryDirectory(prefix="shatag-context-") as scratch:
        # Which builder to use (a docker call) is asked while git exports the context;
        # a context that fails its checks drops the answer (issue 17).
        probing = pool.submit(engine.builder)
        prepared = _prepare_context(settings, sha, git, Path(scratch), env=env, submit=pool.submit)
        probing.result()
        record, local_sbom = _build_and_push(
            job,
            engine,
            existing=existing,
            on_line=on_line,
            context=prepared.path,
            dockerfile=prepared.dockerfile,
            labels=prepared.labels,
            scan=start_scan if subproc.which("syft", env) else None,
        )
    record.build_source = prepared.source
    record.build_inputs = [i.as_dict() for i in prepared.inputs]
    record.submodules = [s.as_dict() for s in prepared.submodules]
    record.build_args = dict(job.build_args)
    return record, local_sbom


@dataclass(frozen=True, slots=True)
class _Context:
    """The directory the builder reads, and what the record says about it."""

    path: Path
    dockerfile: Path
    source: str
    inputs: tuple[source_mod.BuildInput, ...]
    labels: Mapping[str, str]
    submodules: tuple[gittree.Submodule, ...] = ()


def _prepare_context(
    settings: Settings,
    sha: str,
    git: source_mod.GitContext | None,
    scratch: Path,
    *,
    env: Mapping[str, str],
    submit: Callable[..., Future[str]] | None = None,
) -> _Context:
    """The build context of ``sha`` (issue 13, item 3), every check done before the build.

    ``commit`` (default): the commit's tree of the context, from git, plus the declared build
    inputs, unpacked under ``scratch``. ``worktree``: the context directory itself, when HEAD is
    ``sha`` and no tracked file is modified. ``directory`` (``git`` is ``None``): the directory
    as given (the operator vouches for it with ``--sha``; staging only).

    ``submit`` (an executor's): the source URL (a ``git config`` call) is looked up alongside
    the export instead of after it.
    """
    context = settings.context
    url_of = functools.partial(
        source_mod.source_url, settings.source_url, env=env, context=context, git=git
    )
    looking_up = submit(url_of) if submit is not None else None
    inputs = source_mod.hash_inputs(context, settings.build_inputs)
    submodules: tuple[gittree.Submodule, ...] = ()
    if git is not None and settings.build_source == "commit":
        path = scratch / "context"
        submodules = source_mod.export_commit(
            git, sha, path, inputs=settings.build_inputs, context=context, env=env
        )
        kind, where = "commit", f"commit {sha} ({context})"
    else:
        if git is not None:
            source_mod.check_head(context, sha, env)
            source_mod.check_clean(context, sha, env)
        path, kind, where = context, "worktree" if git is not None else "directory", str(context)
    dockerfile = path / settings.dockerfile
    if not dockerfile.is_file():
        raise BuildFailure(f"Dockerfile {settings.dockerfile} does not exist in {where}")
    labels = {"org.opencontainers.image.revision": sha}
    url = looking_up.result() if looking_up is not None else url_of()
    if url:
        labels["org.opencontainers.image.source"] = url
    return _Context(path, dockerfile, kind, inputs, labels, submodules)


def _reuse(job: _Job, digest: str, meta_path: Path) -> BuildRecord:
    """FR-009: the SHA tag exists. Verify it against what we recorded; never rebuild over it.

    FR-015: it must hold one linux/amd64 image (or an index of one plus attestations). A short
    tag missing because an earlier build was interrupted between the two tags is restored from
    the same manifest bytes (issue 14, item 6).
    """
    from shatag.supplychain.manifests import check_single_platform

    repo, sha = job.repo, job.sha
    recorded = load_metadata(meta_path) or BuildMetadata()
    if recorded.get("image_digest") not in (None, digest):
        raise DigestMismatch(
            f"{repo.tag(sha)} now points at {digest} but {meta_path} recorded "
            f"{recorded.get('image_digest')}; the tag was re-pointed — investigate before any "
            "deploy (nothing was changed)"
        )
    manifest = job.registry.manifest(sha)
    checked = check_single_platform(
        job.registry, sha, expected_digest=digest, platform=job.settings.platform, manifest=manifest
    )
    config_digest = job.registry.config_digest(sha, job.settings.platform) or ""
    repaired = _ensure_short_tag(job, digest, repair_from=manifest)
    extra = checked.as_fields()
    if repaired:
        extra["short_tag_repaired"] = True
    return job.record(
        digest,
        pre_push_digest=recorded.get("pre_push_digest") or config_digest,
        config_digest=config_digest,
        digest_verification="ok",
        reused=True,
        builder=recorded.get("builder", ""),
        # What went into the image is known from its build's record only.
        build_source=recorded.get("build_source", ""),
        build_inputs=[dict(i) for i in recorded.get("build_inputs", []) if isinstance(i, dict)],
        submodules=[dict(i) for i in recorded.get("submodules", []) if isinstance(i, dict)],
        build_args={str(k): str(v) for k, v in recorded.get("build_args", {}).items()},
        extra=extra,
    )


def _refuse_silent_republish(job: _Job, meta_path: Path) -> None:
    """The SHA tag is missing, but the metadata file says this SHA was published into this
    repository before: a new build would publish a different image under the same SHA and
    overwrite that record. Refuse (issue 14, item 6); the operator decides."""
    recorded = load_metadata(meta_path)
    if not recorded or recorded.get("image_sha") != job.sha:
        return
    digest = recorded.get("image_digest")
    if digest is None or recorded.get("repository") != str(job.repo):
        return
    held = job.registry.manifest_digest(digest) if digest.startswith("sha256:") else None
    still = (
        f"the registry still holds it by digest ({job.repo}@{digest}): re-tag that"
        if held
        else "the registry no longer holds it by digest either"
    )
    raise MissingTag(
        f"{job.repo.tag(job.sha)} is gone from the registry, but {meta_path} records it was "
        f"published as {digest}; {still}. Building again would publish a different image under "
        f"the same SHA and overwrite that record, so nothing was built or pushed. To publish a "
        f"new image for this SHA deliberately, move {meta_path} away and build again"
    )


def _ensure_short_tag(job: _Job, digest: str, *, repair_from: Manifest | None = None) -> bool:
    """The short tag names ``digest``. Missing and ``repair_from`` (the full tag's manifest)
    given: restore it from those bytes and return True."""
    repo, sha = job.repo, job.sha
    short = short_sha(sha)
    short_digest = job.registry.manifest_digest(short)
    if short_digest is not None and short_digest != digest:
        raise DigestMismatch(
            f"short tag {repo.tag(short)} resolves to {short_digest}, not to {digest} like "
            f"{repo.tag(sha)} (FR-002); it was re-pointed — investigate, nothing was changed"
        )
    if short_digest is None and repair_from is not None:
        try:
            job.registry.put_manifest(short, repair_from)
        except (RegistryUnavailable, RegistryAuthError) as exc:
            raise PushFailure(
                f"{repo.tag(sha)} exists ({digest}) but the short tag {repo.tag(short)} is "
                f"missing (an interrupted build?) and could not be restored: {exc.message}"
            ) from None
        if job.registry.manifest_digest(short) != digest:
            raise PushFailure(
                f"the short tag {repo.tag(short)} was missing and does not resolve to {digest} "
                "after restoring it; check the registry"
            )
        return True
    return False


def _build_and_push(
    job: _Job,
    engine: BuildEngine,
    *,
    existing: str | None,
    on_line: Callable[[str], None],
    context: Path,
    dockerfile: Path,
    labels: Mapping[str, str],
    scan: Callable[[str], Callable[[], bytes]] | None,
) -> tuple[BuildRecord, Callable[[], bytes] | None]:
    """Build, push, prove. Returns the record and, for a pushed image, the pending local SBOM
    scan (``scan(image_id)`` starts it alongside the push; see :mod:`shatag.supplychain.sbom`)."""
    settings, repo, sha, registry = job.settings, job.repo, job.sha, job.registry
    full_tag, short_tag = repo.tag(sha), repo.tag(short_sha(sha))
    # Built under a tag of its own: another build of this SHA on this engine cannot move it.
    # The SHA tags are set only under the build lock, right before the push.
    private_tag = f"{repo}:shatag-build-{short_sha(sha)}-{os.urandom(4).hex()}"
    built = engine.build(
        context=context,
        dockerfile=dockerfile,
        platform=settings.platform,
        tags=[private_tag],
        labels=labels,
        timeout=settings.build_timeout_sec,
        on_line=on_line,
        build_args=job.build_args,
    )
    # The SBOM scan starts as soon as the image exists (issue 17): it reads the local image by
    # ID, so it overlaps the source check, the lock, the tagging and the push. Its result is
    # used only if this image is the one pushed.
    local_sbom = scan(built.image_id) if scan is not None else None
    try:
        with build_lock(
            settings.state_dir,
            str(repo),
            sha,
            timeout=PUSH_TIMEOUT_SEC,
            holder=f"pid {os.getpid()}",
        ):
            # Re-ask the registry right before pushing: another build of this SHA may have won.
            current = registry.manifest_digest(sha)
            if current is not None and existing is None:
                # Another build of this SHA pushed while this one built: its image is the
                # published one (FR-009: never pushed over); this run reuses it (issue 24).
                return _reuse(job, current, job.meta_path), None
            if current is not None:
                return _compare_rebuild(job, current, built), None
            if existing is not None:
                raise DigestMismatch(
                    f"{full_tag} vanished from the registry during --rebuild; refusing to push"
                )
            for tag in (full_tag, short_tag):
                engine.tag(built.image_id, tag)
            reported = engine.push(full_tag, timeout=PUSH_TIMEOUT_SEC, on_line=on_line)
            return _prove(job, built, reported), local_sbom
    finally:
        engine.untag([private_tag])


def _prove(job: _Job, built: BuiltImage, reported: str) -> BuildRecord:
    """After the push: the registry serves what we built, and the short tag names it too."""
    settings, repo, sha, registry = job.settings, job.repo, job.sha, job.registry
    full_tag, short_tag = repo.tag(sha), repo.tag(short_sha(sha))
    try:
        manifest = registry.manifest(sha)
    except RegistryUnavailable as exc:  # say that the push itself went through (issue 14)
        raise RegistryUnavailable(
            f"{exc.message}. docker push of {full_tag} had finished ({reported}), but the "
            "registry could not be asked what it holds: run the same `inv build` again to "
            "verify and reuse it (it will not build or push again)"
        ) from None
    if manifest is None:
        raise PushFailure(f"{full_tag} is not in the registry after the push (FR-003)")
    served = manifest.digest
    config_digest = registry.config_digest_of(manifest, settings.platform) or ""
    verification = "ok" if built.image_id in (config_digest, served) else "mismatch"
    record = job.record(
        served,
        pre_push_digest=built.image_id,
        config_digest=config_digest,
        push_reported_digest=reported,
        digest_verification=verification,
        builder=built.builder,
    )
    if verification != "ok":
        raise DigestMismatch(
            f"the registry's image config {config_digest} is not the image we built "
            f"({built.image_id}); another build of this SHA pushed in between — do not deploy "
            "this SHA until resolved (the short tag was not touched)"
        )
    if reported != served:
        raise DigestMismatch(
            f"docker push reported {reported} but the registry serves {served} for {full_tag} "
            "— do not deploy this SHA until resolved"
        )
    from shatag.supplychain.manifests import check_single_platform

    checked = check_single_platform(
        registry, sha, expected_digest=served, platform=settings.platform, manifest=manifest
    )
    record.extra.update(checked.as_fields())
    # The short tag: the same manifest bytes stored under the 12-hex tag, registry-side (the
    # blobs are there already), so it cannot name anything but this digest (FR-002).
    short_digest = registry.manifest_digest(short_sha(sha))
    if short_digest is None:
        try:
            registry.put_manifest(short_sha(sha), manifest)
        except (RegistryUnavailable, RegistryAuthError) as exc:
            raise PushFailure(f"could not push the short tag {short_tag}: {exc.message}") from None
    elif short_digest != served:
        _lost_race(job, served, short_digest)
    _ensure_short_tag(job, served)
    return record


def _lost_race(job: _Job, ours: str, theirs: str) -> None:
    """Another build of this SHA (another machine: the build lock is per machine) published
    ``theirs`` under both tags first; our push then re-pointed the full tag to ``ours``. Put the
    full tag back to ``theirs`` -- what the short tag names and the other build reported -- and
    say exactly what happened (issue 14, item 10)."""
    registry, repo, sha = job.registry, job.repo, job.sha
    full_tag, short_tag = repo.tag(sha), repo.tag(short_sha(sha))
    what = (
        f"another build of {sha} (on another machine) published {theirs} under {short_tag} and "
        f"{full_tag} first; this build's push then re-pointed {full_tag} to {ours}"
    )
    restored = False
    try:
        first = registry.manifest(short_sha(sha))
        if first is not None and first.digest == theirs:
            registry.put_manifest(sha, first)
            restored = registry.manifest_digest(sha) == theirs
    except (RegistryUnavailable, RegistryAuthError):
        restored = False
    if restored:
        raise DigestMismatch(
            f"{what}. {full_tag} was put back to {theirs}, which both tags now name and the other "
            "build recorded; this build's image is not published. Run `inv build` again to reuse "
            "the published image"
        )
    raise DigestMismatch(
        f"{what}, and putting it back failed: {full_tag} ({ours}) and {short_tag} ({theirs}) "
        f"now disagree. Re-point {full_tag} to {theirs} before any deploy of this SHA"
    )


def _compare_rebuild(job: _Job, current: str, built: BuiltImage) -> BuildRecord:
    """The tag exists: compare the fresh build with it; never push over it (FR-009)."""
    repo, sha = job.repo, job.sha
    config_digest = job.registry.config_digest(sha, job.settings.platform) or ""
    if built.image_id not in (config_digest, current):
        raise DigestMismatch(
            f"rebuilt image {built.image_id} differs from the image {repo.tag(sha)} holds "
            f"(config {config_digest}, manifest {current}); the existing tag was left untouched "
            "and nothing was pushed. A changed build context or a non-reproducible build "
            "(timestamps) causes this."
        )
    _ensure_short_tag(job, current)
    return job.record(
        current,
        pre_push_digest=built.image_id,
        config_digest=config_digest,
        digest_verification="ok",
        reused=True,
        builder=built.builder,
    )
