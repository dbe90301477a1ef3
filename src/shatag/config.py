"""Configuration resolved once into a frozen, typed object.

Layers (lowest first): the defaults below → ``invoke.yaml`` / ``inv -f FILE`` /
``shatag.yaml`` → ``INVOKE_SHATAG_*`` environment variables → command-line flags. Invoke merges
the first three; :func:`Settings.from_mapping` validates the result and rejects unknown keys.

Relative paths resolve against the directory of the file that set them (``base_dirs``, issue
13). Without ``environments`` in the configuration there is one built-in environment, ``local``
(the zero-configuration demo), and it is the default; once ``environments`` is configured only
those exist, and ``--env`` is required unless ``default_env`` names one.

>>> s = Settings.from_mapping({"canonical_repository": "127.0.0.1:5000/app"})
>>> (str(s.canonical), str(s.staging), s.main_branches)
('127.0.0.1:5000/app', 'localhost:5000/api-staging', ('main', 'master'))
>>> s.environment(None).targets[0].kind
'docker'
>>> s = Settings.from_mapping({"environments": {"prod": {"targets": [
...     {"kind": "tfvars", "path": "infra/image.auto.tfvars.json"}]}}}, base_dir=Path("/app"))
>>> sorted(s.environments), s.environment("prod").targets[0].label
(['prod'], 'tfvars:/app/infra/image.auto.tfvars.json')
"""

from __future__ import annotations

import copy
import re
import shlex
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from shatag import _defaults, limits
from shatag._sys.source import BUILD_SOURCES, BuildSource, check_input_paths
from shatag.core import (
    Repository,
    RepositoryType,
    parse_repository,
    validate_branch,
    validate_env_name,
)
from shatag.errors import ConfigError
from shatag.targets import TargetSpec, parse_target

#: The keys and their built-in defaults (plain data in :mod:`shatag._defaults`).
DEFAULTS: Final = _defaults.DEFAULTS

SignaturePolicy = Literal["soft", "enforce"]
StateBackend = Literal["local", "git"]

#: Keys holding a file-system path: relative values resolve against their file's directory.
PATH_KEYS: Final = frozenset(
    {"context", "metadata_dir", "state_dir", "runtime_dir", "sbom_dir", "metrics_textfile"}
)
#: Key files, unless they name a KMS/env/k8s reference (``scheme://…``).
KEY_PATH_KEYS: Final = frozenset({"cosign_key", "cosign_public_key"})
#: The keys of an environment's ``promotion`` block (issue 26; docs/promotion.md).
PROMOTION_KEYS: Final = frozenset({"from", "soak_sec", "checks", "check_timeout_sec"})
BUILD_ARG_PLACEHOLDERS: Final = ("sha", "short_sha", "branch", "repository")
_ARG_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ARG_HINT: Final = (
    "use {sha}, {short_sha}, {branch} or {repository} (write {{ and }} for literal braces)"
)
_ENV_KEYS: Final = frozenset(
    {
        "repository_type",
        "targets",
        "apply",
        "apply_timeout_sec",
        "verify",
        "attest_deployments",
        "promotion",
    }
)
#: The keys of an environment's ``verify:`` block (docs/configuration.md, issue 25).
VERIFY_KEYS: Final = frozenset({"signature", "sbom", "provenance", "signers", "source_repository"})
SIGNER_KEYS: Final = frozenset({"key", "identity", "issuer"})
SignatureRule = Literal["off", "soft", "required"]


@dataclass(frozen=True, slots=True)
class Signer:
    """One trusted signer: a public key (file or ``scheme://`` reference), or a keyless
    identity (a regular expression over the certificate's identity) and its OIDC issuer."""

    key: str = ""
    identity: str = ""
    issuer: str = ""

    @property
    def label(self) -> str:
        return f"key {self.key}" if self.key else f"identity {self.identity} ({self.issuer})"


@dataclass(frozen=True, slots=True)
class VerifyPolicy:
    """An environment's ``verify:`` block: what an image must prove before it is deployed or
    rolled back to (issue 25, docs/signatures.md). ``signers`` empty: the global trust
    (``cosign_public_key``, or ``keyless_identity`` + ``keyless_issuer``)."""

    signature: SignatureRule = "soft"
    sbom: bool = False
    provenance: bool = False
    signers: tuple[Signer, ...] = ()
    #: The source repository the provenance must name (implies ``provenance: required``).
    source_repository: str = ""

    @property
    def needs_provenance(self) -> bool:
        return self.provenance or bool(self.source_repository)


@dataclass(frozen=True, slots=True)
class PromotionConfig:
    """Where an environment takes its releases from (``promotion``, issue 26): the source
    environment, how long a release must have served there, and the checks that must pass."""

    source: str
    soak_sec: float = 0.0
    #: Each check as an argument list (never run through a shell).
    checks: tuple[tuple[str, ...], ...] = ()
    check_timeout_sec: float = 300.0


@dataclass(frozen=True, slots=True)
class EnvironmentConfig:
    """One configured environment: its repository policy, its targets and its apply step."""

    name: str
    repository_type: RepositoryType
    #: Each target's spec, parsed by its kind (:mod:`shatag.targets`).
    targets: tuple[TargetSpec, ...]
    #: The apply command as an argument list (never run through a shell); empty: none.
    apply: tuple[str, ...] = ()
    apply_timeout_sec: float = 600.0
    #: The environment's ``verify:`` policy; ``None``: the global ``signature_policy`` applies.
    verify: VerifyPolicy | None = None
    #: Attach a signed deployment attestation to the digest after each deploy/rollback.
    attest_deployments: bool = False
    #: ``None``: releases reach this environment by ``deploy`` only, never by ``promote``.
    promotion: PromotionConfig | None = None


# -- the small configurations the adapters take (built from Settings in one place each) ------


@dataclass(frozen=True, slots=True)
class SigningConfig:
    """What cosign needs (:mod:`shatag.supplychain.signing`): trust, keys, the policy and a
    timeout."""

    policy: SignaturePolicy = "soft"
    cosign_key: str = ""
    cosign_public_key: str = ""
    keyless_identity: str = ""
    keyless_issuer: str = ""
    tool_timeout_sec: float = 120.0


@dataclass(frozen=True, slots=True)
class SbomConfig:
    """What syft needs (:mod:`shatag.supplychain.sbom`)."""

    sbom_dir: Path = Path("build/sbom")
    tool_timeout_sec: float = 120.0


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Where counters go (:mod:`shatag.metrics`); both empty: nowhere."""

    textfile: str = ""
    pushgateway: str = ""


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    """How the registry client behaves (:func:`shatag.supplychain.registry.open_registry`)."""

    timeout_sec: float = 10.0
    retries: int = 3


@dataclass(frozen=True, slots=True)
class StateConfig:
    """Where history, deploy lock and crash journal live (:func:`shatag.ledger.open_ledger`):
    files under ``dir`` (``local``), or refs on the git remote ``remote`` of the repository at
    ``repo`` -- the current directory (``git``, docs/ledger.md)."""

    backend: StateBackend = "local"
    dir: Path = Path(".shatag")
    remote: str = "origin"
    lock_ttl_sec: float = 60.0
    timeout_sec: float = 120.0
    repo: Path = Path()


@dataclass(frozen=True, slots=True)
class Settings:
    """The validated ``shatag`` configuration of one run (:meth:`from_mapping`)."""

    canonical: Repository
    staging: Repository
    main_branches: tuple[str, ...] = ("main", "master")
    context: Path = Path()
    dockerfile: str = "Dockerfile"
    platform: str = "linux/amd64"
    metadata_dir: Path = Path("build/metadata")
    state_dir: Path = Path(".shatag")
    #: Host-side runtime state of running services (the docker proxy's home), off any checkout.
    runtime_dir: Path = Path("/var/lib/shatag")
    state_backend: StateBackend = "local"
    state_remote: str = "origin"
    state_lock_ttl_sec: float = 60.0
    signature_policy: SignaturePolicy = "soft"
    cosign_key: str = ""
    cosign_public_key: str = ""
    keyless_identity: str = ""
    keyless_issuer: str = ""
    sbom_dir: Path = Path("build/sbom")
    registry_timeout_sec: float = 10.0
    registry_retries: int = 3
    build_timeout_sec: float = 1800.0
    tool_timeout_sec: float = 120.0
    deploy_lock_timeout_sec: float = 75.0
    metrics_textfile: str = ""
    metrics_pushgateway: str = ""
    build_source: BuildSource = "commit"
    build_inputs: tuple[str, ...] = ()
    source_url: str = ""
    #: ``NAME -> template`` of ``{sha}``, ``{short_sha}``, ``{branch}``, ``{repository}``.
    build_args: Mapping[str, str] = field(default_factory=dict)
    default_env: str = ""
    environments: Mapping[str, EnvironmentConfig] = field(default_factory=dict)
    #: Whether ``environments`` is the built-in demo (no ``environments`` configured).
    builtin_environments: bool = True
    #: Where target paths and the apply command resolve: the configuration file's directory.
    base_dir: Path = Path()

    @property
    def signing(self) -> SigningConfig:
        return SigningConfig(
            policy=self.signature_policy,
            cosign_key=self.cosign_key,
            cosign_public_key=self.cosign_public_key,
            keyless_identity=self.keyless_identity,
            keyless_issuer=self.keyless_issuer,
            tool_timeout_sec=self.tool_timeout_sec,
        )

    @property
    def sbom(self) -> SbomConfig:
        return SbomConfig(sbom_dir=self.sbom_dir, tool_timeout_sec=self.tool_timeout_sec)

    @property
    def metrics(self) -> MetricsConfig:
        return MetricsConfig(textfile=self.metrics_textfile, pushgateway=self.metrics_pushgateway)

    @property
    def state(self) -> StateConfig:
        return StateConfig(
            backend=self.state_backend,
            dir=self.state_dir,
            remote=self.state_remote,
            lock_ttl_sec=self.state_lock_ttl_sec,
            timeout_sec=self.tool_timeout_sec,
        )

    @property
    def registry(self) -> RegistryConfig:
        return RegistryConfig(timeout_sec=self.registry_timeout_sec, retries=self.registry_retries)

    def repository(self, kind: RepositoryType) -> Repository:
        return self.canonical if kind is RepositoryType.CANONICAL else self.staging

    def environment(self, name: str | None) -> EnvironmentConfig:
        """The environment ``--env`` names; without ``--env``: ``default_env``, else the
        built-in ``local`` when no environment is configured, else CONFIG_ERROR."""
        known = ", ".join(sorted(self.environments)) or "none"
        if name is None:
            if self.default_env:
                name = self.default_env
            elif self.builtin_environments:
                name = "local"
            else:
                raise ConfigError(
                    f"name the environment: --env=NAME (configured: {known}); or set "
                    "shatag.default_env"
                )
        validate_env_name(name)
        try:
            return self.environments[name]
        except KeyError:
            raise ConfigError(
                f"environment {name!r} is not configured (known: {known}); add it under "
                "shatag.environments"
            ) from None

    @classmethod
    def from_mapping(
        cls,
        raw: Mapping[str, Any],
        *,
        base_dirs: Mapping[str, Path] | None = None,
        base_dir: Path | None = None,
    ) -> Settings:
        """Validate a merged ``shatag`` mapping (defaults filled in for missing keys).

        ``base_dirs`` maps a key to the directory its relative path resolves against (the
        directory of the file that set it); ``base_dir`` is the fallback and the directory of
        the environments' target paths and apply commands. Both absent: the working directory.
        """
        merged = copy.deepcopy(DEFAULTS)
        configured_envs = raw.get("environments") is not None
        merged.update({k: v for k, v in raw.items() if not (k == "environments" and v is None)})
        unknown = sorted(set(merged) - set(DEFAULTS))
        if unknown:
            raise ConfigError(f"unknown shatag configuration keys: {limits.names(unknown)}")
        policy, platform, backend = _choices(merged)
        canonical = parse_repository(_str(merged, "canonical_repository"))
        staging = parse_repository(_str(merged, "staging_repository"))
        if canonical == staging:
            raise ConfigError("canonical_repository and staging_repository must differ (FR-016)")
        dirs = dict(base_dirs or {})
        env_dir = dirs.get("environments", base_dir)
        path = _PathResolver(merged, dirs, base_dir)
        source = _str(merged, "build_source")
        if source not in BUILD_SOURCES:
            raise ConfigError(
                f"shatag.build_source must be commit, worktree or directory, not {source!r}"
            )
        environments = _environments(merged["environments"], env_dir)
        default_env = _str(merged, "default_env")
        if default_env and default_env not in environments:
            known = ", ".join(sorted(environments)) or "none"
            raise ConfigError(
                f"shatag.default_env names {default_env!r}, which is not configured "
                f"(known: {known})"
            )
        return cls(
            canonical=canonical,
            staging=staging,
            main_branches=_branches(merged["main_branches"]),
            context=path("context"),
            dockerfile=_str(merged, "dockerfile"),
            platform=platform,
            metadata_dir=path("metadata_dir"),
            state_dir=path("state_dir"),
            runtime_dir=path("runtime_dir"),
            state_backend="git" if backend == "git" else "local",
            state_remote=_remote(_str(merged, "state_remote")),
            state_lock_ttl_sec=_positive(merged, "state_lock_ttl_sec"),
            signature_policy="enforce" if policy == "enforce" else "soft",
            cosign_key=path.key_file("cosign_key"),
            cosign_public_key=path.key_file("cosign_public_key"),
            keyless_identity=_str(merged, "keyless_identity"),
            keyless_issuer=_str(merged, "keyless_issuer"),
            sbom_dir=path("sbom_dir"),
            registry_timeout_sec=_positive(merged, "registry_timeout_sec"),
            registry_retries=_whole(merged, "registry_retries"),
            build_timeout_sec=_positive(merged, "build_timeout_sec"),
            tool_timeout_sec=_positive(merged, "tool_timeout_sec"),
            deploy_lock_timeout_sec=_positive(merged, "deploy_lock_timeout_sec", allow_zero=True),
            metrics_textfile=str(path("metrics_textfile")) if merged["metrics_textfile"] else "",
            metrics_pushgateway=_str(merged, "metrics_pushgateway"),
            build_source=next(s for s in BUILD_SOURCES if s == source),
            build_inputs=check_input_paths(_list(merged, "build_inputs")),
            source_url=_str(merged, "source_url"),
            build_args=_build_args(merged["build_args"]),
            default_env=default_env,
            environments=environments,
            builtin_environments=not configured_envs,
            base_dir=env_dir if env_dir is not None else Path(),
        )


def _build_args(raw: object) -> dict[str, str]:
    """``build_args``: ``NAME -> template`` (issue 23, item 7); the placeholders are exactly
    ``{sha}``, ``{short_sha}``, ``{branch}`` and ``{repository}`` (``{{``/``}}``: braces)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError("shatag.build_args must be a mapping NAME: template")
    out: dict[str, str] = {}
    for name, text in raw.items():
        if not isinstance(name, str) or not _ARG_NAME.fullmatch(name):
            raise ConfigError(
                f"shatag.build_args: {name!r} is not a build argument name (ASCII letters, "
                "digits and _, not starting with a digit)"
            )
        where = f"shatag.build_args.{name}"
        if not isinstance(text, str):
            raise ConfigError(f"{where} must be a template string, not {type(text).__name__}")
        try:
            parts = list(string.Formatter().parse(text))
        except ValueError as exc:  # a lone "{" or "}"
            raise ConfigError(f"{where}: {exc} in {text!r}; {_ARG_HINT}") from None
        for _literal, field_name, spec, conversion in parts:
            if field_name is not None and (
                field_name not in BUILD_ARG_PLACEHOLDERS or spec or conversion
            ):
                raise ConfigError(
                    f"{where}: unknown placeholder {{{field_name}}} in {text!r}; {_ARG_HINT}"
                )
        out[name] = text
    return out


def _choices(merged: Mapping[str, Any]) -> tuple[str, str, str]:
    """``signature_policy``, ``platform`` and ``state_backend``, each one of its allowed values."""
    policy = _str(merged, "signature_policy")
    if policy not in ("soft", "enforce"):
        raise ConfigError(f"signature_policy must be 'soft' or 'enforce', not {policy!r}")
    platform = _str(merged, "platform")
    if platform != "linux/amd64":
        raise ConfigError(f"platform {platform!r} is not supported: only linux/amd64 (FR-015)")
    backend = _str(merged, "state_backend")
    if backend not in ("local", "git"):
        raise ConfigError(f"state_backend must be 'local' or 'git', not {backend!r}")
    return policy, platform, backend


class _PathResolver:
    """A path-like key's value, relative ones resolved against the directory of the file that
    set the key (``dirs``), else ``base_dir``; both absent: left relative (the working
    directory)."""

    def __init__(
        self, merged: Mapping[str, Any], dirs: Mapping[str, Path], base_dir: Path | None
    ) -> None:
        self._merged, self._dirs, self._base_dir = merged, dirs, base_dir

    def __call__(self, key: str) -> Path:
        value = Path(_str(self._merged, key))
        base = self._dirs.get(key, self._base_dir)
        return value if value.is_absolute() or base is None else base / value

    def key_file(self, key: str) -> str:
        """A key file's path, resolved; a ``scheme://`` reference (KMS, k8s) as it is."""
        value = _str(self._merged, key)
        return str(self(key)) if value and ":" not in value else value


def _str(raw: Mapping[str, Any], key: str) -> str:
    value = raw[key]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"shatag.{key} must be a string, not {type(value).__name__}")
    return value


def _positive(raw: Mapping[str, Any], key: str, *, allow_zero: bool = False) -> float:
    """A number within its range (:data:`shatag.limits.RANGES`; issue 14, item 8)."""
    del allow_zero  # the range says whether 0 is allowed
    return limits.number(raw[key], key, f"shatag.{key}")


def _whole(raw: Mapping[str, Any], key: str) -> int:
    """A count: a whole number within its range (``"3"`` from an environment variable is fine)."""
    return limits.whole(raw[key], key, f"shatag.{key}")


def _remote(value: str) -> str:
    """A git remote name or URL for ``state_remote``: it becomes one argument of ``git fetch``
    and ``git push``, so it may not look like an option or hold whitespace."""
    value = value.strip()
    if not value or value.startswith("-") or any(c.isspace() or ord(c) < 32 for c in value):
        raise ConfigError(
            f"shatag.state_remote must be a git remote name or URL (e.g. origin), not {value!r}"
        )
    return value


def _list(raw: Mapping[str, Any], key: str) -> list[Any]:
    """A list key: a list, or a comma-separated string (from an ``INVOKE_SHATAG_*`` variable)."""
    value = raw[key]
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple):
        raise ConfigError(f"shatag.{key} must be a list, not {type(value).__name__}")
    return list(value)


def _branches(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise ConfigError("shatag.main_branches must be a non-empty list of branch names")
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"shatag.main_branches holds a non-string {item!r}")
        out.append(validate_branch(item.strip()))
    return tuple(out)


def _environments(value: Any, base_dir: Path | None) -> dict[str, EnvironmentConfig]:
    if not isinstance(value, Mapping):
        raise ConfigError("shatag.environments must be a mapping of environment name → settings")
    envs: dict[str, EnvironmentConfig] = {}
    for name, spec in value.items():
        if not isinstance(name, str):
            raise ConfigError(
                f"shatag.environments: the key {limits.clip(name, 40)} is a "
                f"{type(name).__name__}; environment names are strings (quote it)"
            )
        validate_env_name(name)
        if not isinstance(spec, Mapping):
            raise ConfigError(f"shatag.environments.{name} must be a mapping")
        unknown = sorted(set(spec) - _ENV_KEYS)
        if unknown:
            raise ConfigError(f"shatag.environments.{name}: unknown keys {limits.names(unknown)}")
        rtype = spec.get("repository_type", "canonical")
        if rtype not in ("canonical", "staging"):
            raise ConfigError(
                f"shatag.environments.{name}.repository_type must be canonical or staging"
            )
        raw_targets = spec.get("targets") or []
        if not isinstance(raw_targets, list | tuple) or not raw_targets:
            raise ConfigError(f"shatag.environments.{name} needs at least one target")
        envs[str(name)] = EnvironmentConfig(
            name=str(name),
            repository_type=RepositoryType(rtype),
            targets=tuple(_target(str(name), i, t, base_dir) for i, t in enumerate(raw_targets)),
            apply=_apply(f"shatag.environments.{name}.apply", spec.get("apply")),
            apply_timeout_sec=limits.number(
                spec.get("apply_timeout_sec", 600.0),
                "apply_timeout_sec",
                f"shatag.environments.{name}.apply_timeout_sec",
            ),
            verify=_verify(f"shatag.environments.{name}.verify", spec.get("verify"), base_dir),
            attest_deployments=_flag(
                f"shatag.environments.{name}.attest_deployments", spec.get("attest_deployments")
            ),
            promotion=_promotion(str(name), spec.get("promotion")),
        )
    _check_claims(envs)
    _check_promotions(envs)
    return envs


def _promotion(env: str, raw: Any) -> PromotionConfig | None:
    """An environment's ``promotion`` block: ``from`` (required), ``soak_sec``, ``checks`` (a
    list of commands, each an argument list or a string split like ``apply``) and
    ``check_timeout_sec``."""
    if raw is None:
        return None
    where = f"shatag.environments.{env}.promotion"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping with from, soak_sec and checks")
    unknown = sorted(set(raw) - PROMOTION_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {limits.names(unknown)}")
    source = raw.get("from")
    if not isinstance(source, str) or not source:
        raise ConfigError(f"{where}.from must name the environment releases come from")
    validate_env_name(source)
    checks = raw.get("checks") or []
    if not isinstance(checks, list | tuple):
        raise ConfigError(f"{where}.checks must be a list of commands")
    return PromotionConfig(
        source=source,
        soak_sec=limits.number(raw.get("soak_sec", 0), "soak_sec", f"{where}.soak_sec"),
        checks=tuple(_check(f"{where}.checks[{i}]", c) for i, c in enumerate(checks)),
        check_timeout_sec=limits.number(
            raw.get("check_timeout_sec", 300.0), "check_timeout_sec", f"{where}.check_timeout_sec"
        ),
    )


def _check(where: str, value: Any) -> tuple[str, ...]:
    argv = _apply(where, value)
    if not argv:
        raise ConfigError(f"{where} names no program")
    return argv


def _check_promotions(envs: Mapping[str, EnvironmentConfig]) -> None:
    """Every ``promotion.from`` names another configured environment, and following them never
    comes back to where it started."""
    for env in envs.values():
        seen = [env.name]
        step = env.promotion
        while step is not None:
            if step.source not in envs:
                known = ", ".join(sorted(envs))
                raise ConfigError(
                    f"shatag.environments.{seen[-1]}.promotion.from names {step.source!r}, "
                    f"which is not configured (known: {known})"
                )
            if step.source in seen:
                loop = " -> ".join([*seen, step.source])
                raise ConfigError(f"promotion goes round in a circle: {loop}")
            seen.append(step.source)
            step = envs[step.source].promotion


def _check_claims(envs: Mapping[str, EnvironmentConfig]) -> None:
    """A resource one target owns on the host (a docker container name, say: a target's spec
    lists them as ``claims``) may be configured once across all environments, or one
    environment's deploy would replace the other's (issue 12)."""
    seen: dict[str, str] = {}
    for env in envs.values():
        for target in env.targets:
            for claim in target.claims:
                other = seen.setdefault(claim, env.name)
                if other != env.name or sum(claim in t.claims for t in env.targets) > 1:
                    raise ConfigError(
                        f"{claim} is configured twice (environments {other!r} and {env.name!r}): "
                        "each target needs its own, or one deploy would replace the other's"
                    )


def _target(env: str, index: int, raw: Any, base_dir: Path | None) -> TargetSpec:
    return parse_target(f"shatag.environments.{env}.targets[{index}]", raw, base_dir)


def _apply(where: str, value: Any) -> tuple[str, ...]:
    """The apply command as an argument list: a list of strings as given, or a string split into
    words like a shell would (quotes group words) — never run through a shell.

    >>> _apply("a", "tofu -chdir='infra/akash api' apply -auto-approve")
    ('tofu', '-chdir=infra/akash api', 'apply', '-auto-approve')
    >>> _apply("a", ["sh", "-c", "echo $SHATAG_IMAGE_REF"])
    ('sh', '-c', 'echo $SHATAG_IMAGE_REF')
    """
    if value is None or value in ("", []):
        return ()
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise ConfigError(f"{where} cannot be split into words: {exc}") from None
    elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        argv = [str(v) for v in value]
    else:
        raise ConfigError(f"{where} must be a command: an argument list or a string")
    if not argv or not argv[0].strip():
        raise ConfigError(f"{where} names no program")
    return tuple(argv)


def _verify(where: str, value: Any, base_dir: Path | None) -> VerifyPolicy | None:
    """An environment's ``verify:`` block (``None`` when absent: the global policy applies).

    >>> _verify("v", {"signature": "required", "sbom": "required", "signers": [
    ...     {"key": "k.pub"}]}, Path("/etc/app")).signers[0].key
    '/etc/app/k.pub'
    >>> _verify("v", {"provenance": True, "source_repository": "https://x/y"}, None).provenance
    True
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping (keys: {', '.join(sorted(VERIFY_KEYS))})")
    unknown = sorted(str(k) for k in set(value) - VERIFY_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {', '.join(unknown)}")
    signature = value.get("signature", "soft")
    if signature not in ("off", "soft", "required"):
        raise ConfigError(f"{where}.signature must be off, soft or required, not {signature!r}")
    source = value.get("source_repository") or ""
    if not isinstance(source, str):
        raise ConfigError(f"{where}.source_repository must be a URL string")
    policy = VerifyPolicy(
        signature="off"
        if signature == "off"
        else "required"
        if signature == "required"
        else "soft",
        sbom=_required(f"{where}.sbom", value.get("sbom")),
        provenance=_required(f"{where}.provenance", value.get("provenance")),
        signers=_signers(f"{where}.signers", value.get("signers"), base_dir),
        source_repository=source.strip().removesuffix("/"),
    )
    if policy.signature == "off" and (policy.sbom or policy.needs_provenance):
        raise ConfigError(
            f"{where}: an SBOM or provenance requirement needs a signature check; "
            "set signature to soft or required"
        )
    return policy


def _flag(where: str, value: Any) -> bool:
    """A yes/no key: a boolean (``"true"``/``"false"`` from an environment variable too)."""
    if value in (None, False, "false"):
        return False
    if value in (True, "true"):
        return True
    raise ConfigError(f"{where} must be true or false, not {limits.clip(value, 40)}")


def _required(where: str, value: Any) -> bool:
    """``required`` / ``optional`` (or true / false); absent: optional."""
    if value in (None, "optional", False):
        return False
    if value in ("required", True):
        return True
    raise ConfigError(f"{where} must be required or optional, not {limits.clip(value, 40)}")


def _signers(where: str, value: Any, base_dir: Path | None) -> tuple[Signer, ...]:
    """Trusted signers: ``{key: PATH}`` or ``{identity: REGEXP, issuer: URL}`` each."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{where} must be a list of signers ({{key: …}} or {{identity, issuer}})")
    out: list[Signer] = []
    for index, raw in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(raw, Mapping) or set(raw) - SIGNER_KEYS:
            raise ConfigError(f"{at} must be a mapping of {', '.join(sorted(SIGNER_KEYS))}")
        key, identity, issuer = (raw.get(k) or "" for k in ("key", "identity", "issuer"))
        if not all(isinstance(v, str) for v in (key, identity, issuer)):
            raise ConfigError(f"{at}: key, identity and issuer are strings")
        if key and (identity or issuer):
            raise ConfigError(f"{at}: a signer is a key or a keyless identity + issuer, not both")
        if not key and not (identity and issuer):
            raise ConfigError(f"{at}: name a public key, or a keyless identity and its issuer")
        if key and ":" not in key and not Path(key).is_absolute() and base_dir is not None:
            key = str(base_dir / key)
        out.append(Signer(key=key, identity=identity, issuer=issuer))
    return tuple(out)
