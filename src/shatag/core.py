"""The pure core: SHA and reference parsing, repository routing, tag policy.

No I/O happens here; everything is unit- and property-tested.

>>> sha = validate_sha("0123456789abcdef0123456789abcdef01234567")
>>> short_sha(sha)
'0123456789ab'
>>> repo = parse_repository("localhost:5000/api")
>>> (repo.registry, repo.name, repo.plain_http)
('localhost:5000', 'api', True)
>>> pinned_reference(repo, sha, "sha256:" + "a" * 64).split("@")[0]
'localhost:5000/api:0123456789abcdef0123456789abcdef01234567'
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Literal

from shatag.errors import ConfigError, InvalidInput, MissingSha, PolicyViolation

SHA_LENGTH: Final = 40
SHORT_SHA_LENGTH: Final = 12
_SHA_RE: Final = re.compile(r"[0-9a-f]{40}")
_DIGEST_RE: Final = re.compile(r"sha256:[0-9a-f]{64}")
# A tag as the OCI distribution spec allows it: what a "floating" reference would look like.
_TAG_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_HEXISH_RE: Final = re.compile(r"[0-9a-fA-F]+")
# Repository path components, as the OCI distribution spec defines them.
_PATH_COMPONENT: Final = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME_RE: Final = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_HOST_RE: Final = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
    r"(?::[0-9]{1,5})?"
)
_ENV_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# git check-ref-format, simplified to what matters for a branch name we log and route on.
_BRANCH_FORBIDDEN: Final = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")
MAX_BRANCH_LENGTH: Final = 255
MAX_REPOSITORY_LENGTH: Final = 255


PinFormat = Literal["tag+digest", "digest", "tag"]
PIN_FORMATS: Final[tuple[PinFormat, ...]] = ("tag+digest", "digest", "tag")


class RepositoryType(StrEnum):
    CANONICAL = "canonical"
    STAGING = "staging"


def _show(value: str, limit: int = 60) -> str:
    """A value as it may appear in an error message: repr-quoted and cut short."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def validate_sha(value: str) -> str:
    """Return ``value`` if it is a full 40-character lowercase hex git SHA.

    A string shaped like a floating tag (``latest``, ``main``, ``v1.2``) raises
    :class:`PolicyViolation` (FR-005); anything else invalid raises :class:`MissingSha`.

    >>> validate_sha("latest")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    shatag.errors.PolicyViolation: 'latest' is a floating tag; ...
    """
    if _SHA_RE.fullmatch(value):
        return value
    if not value:
        raise MissingSha("no SHA given; pass --sha=<40 lowercase hex> (e.g. $(git rev-parse HEAD))")
    if _TAG_RE.fullmatch(value) and not _HEXISH_RE.fullmatch(value):
        raise PolicyViolation(
            f"{_show(value)} is a floating tag; only a full 40-hex git SHA may be built or "
            "deployed (FR-005)"
        )
    raise MissingSha(
        f"{_show(value)} is not a git SHA: expected exactly 40 lowercase hex characters "
        f"(got {len(value)} characters)"
    )


def short_sha(sha: str) -> str:
    """The 12-character convenience tag (FR-002). Never a deploy reference."""
    return validate_sha(sha)[:SHORT_SHA_LENGTH]


def is_sha(value: str) -> bool:
    return _SHA_RE.fullmatch(value) is not None


def validate_digest(value: str) -> str:
    if _DIGEST_RE.fullmatch(value):
        return value
    raise InvalidInput(f"{_show(value)} is not a manifest digest (sha256: + 64 lowercase hex)")


def ensure_immutable_tag(tag: str) -> str:
    """The floating-tag guard (FR-005): only a 40-hex SHA may be deployed."""
    if is_sha(tag):
        return tag
    raise PolicyViolation(
        f"refusing to deploy tag {_show(tag)}: only immutable 40-hex SHA tags are deployable "
        "(FR-005)"
    )


def validate_branch(value: str) -> str:
    """A git branch name safe to route on and to log. Raises :class:`InvalidInput`."""
    if (
        not value
        or len(value) > MAX_BRANCH_LENGTH
        or _BRANCH_FORBIDDEN.search(value)
        or value.startswith(("-", "/", "."))
        or value.endswith(("/", ".", ".lock"))
        or not value.isascii()
    ):
        raise InvalidInput(f"{_show(value)} is not a valid git branch name")
    return value


def validate_env_name(value: str) -> str:
    if _ENV_RE.fullmatch(value):
        return value
    raise InvalidInput(
        f"{_show(value)} is not a valid environment name (lowercase letters, digits, - and _)"
    )


@dataclass(frozen=True, slots=True)
class Repository:
    """An OCI repository: registry host (with port) and path, never a tag."""

    registry: str
    name: str

    def __str__(self) -> str:
        return f"{self.registry}/{self.name}"

    @property
    def plain_http(self) -> bool:
        """Registries on loopback are spoken to over plain HTTP; others over HTTPS."""
        return is_loopback_host(self.registry)

    def tag(self, tag: str) -> str:
        return f"{self}:{tag}"


def is_loopback_host(registry: str) -> bool:
    if registry.startswith("["):
        host = registry[1:].partition("]")[0]
    else:
        host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_repository(value: str) -> Repository:
    """Parse ``host[:port]/path``. A tag or digest in it is a policy violation (FR-005)."""
    if not value or len(value) > MAX_REPOSITORY_LENGTH or not value.isascii():
        raise ConfigError(f"repository {_show(value)} is empty, too long or not ASCII")
    if "@" in value:
        raise PolicyViolation(f"repository {_show(value)} must not carry a digest")
    host, sep, path = value.partition("/")
    if not sep or not ("." in host or ":" in host or host == "localhost"):
        raise ConfigError(
            f"repository {_show(value)} must start with its registry host, e.g. "
            "localhost:5000/api or ghcr.io/owner/api"
        )
    if ":" in path:
        raise PolicyViolation(
            f"repository {_show(value)} carries a tag; configure the repository only, shatag "
            "adds the SHA tag (FR-005)"
        )
    if not _HOST_RE.fullmatch(host):
        raise ConfigError(f"registry host {_show(host)} is not a valid host[:port]")
    if not _NAME_RE.fullmatch(path):
        raise ConfigError(
            f"repository path {_show(path)} is not valid (lowercase, digits, separators . _ - /)"
        )
    return Repository(registry=host, name=path)


def route_repository(branch: str, main_branches: tuple[str, ...]) -> RepositoryType:
    """FR-016: main branches publish to the canonical repository, all others to staging."""
    validate_branch(branch)
    return RepositoryType.CANONICAL if branch in main_branches else RepositoryType.STAGING


def pinned_reference(repository: Repository, sha: str, digest: str) -> str:
    """``registry/name:<sha>@sha256:<digest>``: the one reference every target receives."""
    return f"{repository.tag(validate_sha(sha))}@{validate_digest(digest)}"


def split_pinned_reference(reference: str) -> tuple[Repository, str, str]:
    """Inverse of :func:`pinned_reference`."""
    name_tag, sep, digest = reference.rpartition("@")
    repo, colon, tag = name_tag.rpartition(":")
    if not sep or not colon:
        raise InvalidInput(f"{_show(reference)} is not a pinned reference repo:<sha>@sha256:<hex>")
    return parse_repository(repo), ensure_immutable_tag(tag), validate_digest(digest)


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A validated image: the SHA tag and the digest it resolved to when it was checked.

    >>> img = ImageRef(parse_repository("127.0.0.1:5000/api"), "a" * 40, "sha256:" + "b" * 64)
    >>> img.reference("digest") == "127.0.0.1:5000/api@sha256:" + "b" * 64
    True
    """

    repository: Repository
    sha: str
    digest: str
    #: What the digest names (FR-015): one image, or an index of one amd64 image plus
    #: attestation manifests (:mod:`shatag.supplychain.manifests`).
    kind: str = "image"

    def __post_init__(self) -> None:
        validate_sha(self.sha)
        validate_digest(self.digest)

    @property
    def pinned(self) -> str:
        """``repo:<sha>@sha256:<hex>``: the copy/paste reference (FR-006)."""
        return pinned_reference(self.repository, self.sha, self.digest)

    @property
    def by_digest(self) -> str:
        return f"{self.repository}@{self.digest}"

    def reference(self, pin: PinFormat) -> str:
        """The form a target writes. ``tag`` alone trusts the registry not to move the tag; the
        digest is still recorded beside it (tfvars, history)."""
        if pin == "digest":
            return self.by_digest
        if pin == "tag":
            return self.repository.tag(self.sha)
        return self.pinned


def json_object(text: str | bytes) -> dict[str, Any] | None:
    """``text`` as one JSON object; ``None`` for anything else (not JSON, a list, a number).

    >>> json_object('{"a": 1}'), json_object("[1]"), json_object("{torn")
    ({'a': 1}, None, None)
    """
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
