"""Deployment targets: where a pinned image reference goes.

Every target follows the same four-step life, so a deploy can be undone at any step:

1. ``prepare(image)`` -- everything that may fail *without a visible change*: read the current
   file, compute the new content, pull the image by digest;
2. ``apply()`` -- make the change (atomic file write, health-gated container switch);
3. ``restore()`` -- undo ``apply`` (a later step failed);
4. ``commit()`` -- the deploy is recorded: drop what ``restore`` would have needed.

``journal()`` returns what :func:`recover` needs to undo ``apply`` after the process was killed
(``kill -9``) between ``apply`` and ``commit``; the deploy use case stores it durably first.

>>> from shatag.core import parse_repository
>>> img = ImageRef(parse_repository("127.0.0.1:5000/api"), "a" * 40, "sha256:" + "b" * 64)
>>> img.reference("digest") == "127.0.0.1:5000/api@sha256:" + "b" * 64
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from shatag.config import PinFormat, TargetConfig
from shatag.core import Repository, pinned_reference, validate_digest, validate_sha
from shatag.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A validated image: the SHA tag and the digest it resolved to when it was checked."""

    repository: Repository
    sha: str
    digest: str

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


class Target(Protocol):
    """One deployment target (see the module docstring for the life cycle)."""

    @property
    def label(self) -> str: ...

    def prepare(self, image: ImageRef) -> None: ...

    def apply(self) -> None: ...

    def restore(self) -> None: ...

    def commit(self) -> None: ...

    def journal(self) -> dict[str, Any]: ...


def make_target(
    config: TargetConfig, *, env: Mapping[str, str], env_name: str = "", attempt: str = ""
) -> Target:
    """The adapter for one configured target. ``attempt`` labels what this deploy creates."""
    if config.kind == "sdl":
        from shatag.targets.sdl import SdlTarget

        return SdlTarget(config)
    if config.kind == "tfvars":
        from shatag.targets.tfvars import TfvarsTarget

        return TfvarsTarget(config)
    if config.kind == "docker":
        from shatag.targets.docker import DockerTarget

        return DockerTarget(config, env=env, env_name=env_name, attempt=attempt)
    raise ConfigError(f"unknown target kind {config.kind!r}")


def recover(entry: Mapping[str, Any], *, env: Mapping[str, str]) -> str:
    """Undo an interrupted ``apply`` described by a :meth:`Target.journal` entry.

    Returns a short description of what was done (for the log).
    """
    kind = entry.get("kind")
    if kind in ("sdl", "tfvars"):
        from shatag.targets._files import restore_file

        return restore_file(entry)
    if kind == "docker":
        from shatag.targets.docker import recover_container

        return recover_container(entry, env=env)
    raise ConfigError(f"journal names an unknown target kind {kind!r}")


def finish(entry: Mapping[str, Any], *, env: Mapping[str, str]) -> str:
    """Complete an interrupted ``commit`` (the deploy was already recorded as done)."""
    if entry.get("kind") == "docker":
        from shatag.targets.docker import finish_container

        return finish_container(entry, env=env)
    return "nothing to do"
