"""Deployment targets: where a pinned image reference goes. The kinds are registered here, once.

A *kind* is one module of this package (:data:`KIND_MODULES`) that owns everything about it:
its frozen spec (the validated configuration of one target), ``parse(where, raw)`` (the checks
of its own keys), its :class:`Target` implementation, and its crash recovery (``recover`` and
``finish``). The module exposes all of it as one :class:`TargetKind` named ``KIND``; adding a
kind is one new module plus one line in :data:`KIND_MODULES`. A kind's module is imported the
first time a configuration or a journal names it (issue 17): ``inv --list`` imports none, a
deploy to file targets never imports the docker kind (nor python-on-whales).

Every target follows the same four-step life, so a deploy can be undone at any step:

1. ``prepare(image)`` -- everything that may fail *without a visible change*: read the current
   file, compute the new content, pull the image by digest;
2. ``apply()`` -- make the change (atomic file write, health-gated container switch);
3. ``restore()`` -- undo ``apply`` (a later step failed);
4. ``commit()`` -- the deploy is recorded: drop what ``restore`` would have needed.

``journal()`` returns what the kind's ``recover`` needs to undo ``apply`` after the process was
killed (``kill -9``) between ``apply`` and ``commit``; the deploy use case stores it durably
first. ``plan(image)`` describes the change without making it.

>>> sorted(KINDS)
['docker', 'helm_values', 'kubernetes', 'kustomize', 'sdl', 'tfvars']
>>> parse_target("t", {"kind": "tfvars", "path": "x.auto.tfvars.json"}).label
'tfvars:x.auto.tfvars.json'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Generic, Literal, Protocol, TypeVar

from shatag.core import ImageRef, PinFormat
from shatag.errors import ConfigError


@dataclass(frozen=True, slots=True)
class TargetContext:
    """What a target may know about the deploy that drives it."""

    #: The deploying process's environment (DOCKER_HOST, KUBECONFIG, credentials, ...).
    env: Mapping[str, str] = field(default_factory=dict)
    #: The shatag environment being deployed (``local``, ``production``, ...).
    env_name: str = ""
    #: This deploy attempt's id: labels what the attempt creates, names it in the journal.
    attempt: str = ""
    #: shatag's state directory (``state_dir``), in the checkout: history, lock, journal.
    state_dir: Path = Path(".shatag")
    #: The host's runtime directory (``runtime_dir``), outside any checkout: what a running
    #: service reads, e.g. the docker kind's proxy home ``<runtime_dir>/proxy/<env>/<name>/``.
    runtime_dir: Path = Path("/var/lib/shatag")


class TargetSpec(Protocol):
    """The validated configuration of one target: a frozen dataclass of its kind, derived from
    :class:`shatag.targets._spec.KindSpec`, which supplies ``kind`` and the defaults of the
    hooks a kind may leave out (``claims``, ``secrets``, ``matches_journal``)."""

    @property
    def kind(self) -> str: ...

    @property
    def label(self) -> str:
        """``<kind>:<name or path>``: how logs, errors and history name the target."""
        ...

    @property
    def pin(self) -> PinFormat: ...

    @property
    def edits(self) -> Path | None:
        """The file this target edits (``None``: it edits no file, e.g. a container)."""
        ...

    @property
    def claims(self) -> tuple[str, ...]:
        """Host-global resources this target owns (a docker container name), each of which
        may be configured once across all environments (default: none)."""
        ...

    @property
    def secrets(self) -> tuple[str, ...]:
        """Names of variables of the deploying process whose values the target passes on
        (the docker kind's ``secrets``): their values are masked in every log line (default:
        none)."""
        ...

    def matches_journal(self, entry: Mapping[str, Any]) -> bool:
        """Whether a :meth:`Target.journal` entry (possibly from a shared ledger) is about this
        target (default: same kind, and the same file or container name where the entry names
        one; kubernetes: the same namespace, deployment, container, kubeconfig and context)."""
        ...


class Target(Protocol):
    """One deployment target (see the module docstring for the life cycle)."""

    @property
    def label(self) -> str: ...

    @property
    def unchanged(self) -> bool:
        """After ``prepare``: the deploy leaves this target as it was (the docker kind's
        gated switch when the same image and settings already serve); history says so."""
        ...

    def plan(self, image: ImageRef) -> str:
        """What deploying ``image`` would change, for a person (nothing is changed)."""
        ...

    def prepare(self, image: ImageRef) -> None: ...

    def apply(self) -> None: ...

    def restore(self) -> None: ...

    def commit(self) -> None: ...

    def journal(self) -> dict[str, Any]: ...


#: How one target compares with the release the ledger says is current (``status``):
#: ``in_sync`` -- it runs that release; ``drift`` -- it runs (or pins) something else;
#: ``down`` -- nothing runs, or it does not answer; ``unobservable`` -- the kind cannot tell;
#: ``none`` -- the ledger records no release to compare with.
ObservedState = Literal["in_sync", "drift", "down", "unobservable", "none"]


@dataclass(frozen=True, slots=True)
class Observed:
    """What runs on one target, as read from the running system (``status``)."""

    state: ObservedState
    #: What runs, as precisely as the kind can say (pinned references or ``sha256:`` digests,
    #: comma-separated), ``""`` when nothing runs.
    running: str = ""
    #: Why, for a person: which check decided the state.
    detail: str = ""


def not_observable(spec: Any, ctx: TargetContext, image: ImageRef | None) -> Observed:
    """The default of a kind that declares no ``observe``."""
    del ctx, image
    return Observed("unobservable", detail=f"the {spec.kind} kind cannot report what runs")


S = TypeVar("S", bound=TargetSpec)


@dataclass(frozen=True, slots=True)
class TargetKind(Generic[S]):
    """Everything shatag needs to know about one kind of target."""

    name: str
    #: Configuration keys a target of this kind accepts (``kind`` included).
    keys: frozenset[str]
    #: ``parse(where, raw)``: validate the keys of one target; ConfigError naming ``where``.
    parse: Callable[[str, Mapping[str, Any]], S]
    make: Callable[[S, TargetContext], Target]
    #: Undo an interrupted ``apply`` from a journal entry; returns what was done.
    recover: Callable[[Mapping[str, Any], TargetContext], str]
    #: Complete an interrupted ``commit`` (the deploy was recorded as done).
    finish: Callable[[Mapping[str, Any], TargetContext], str]
    #: Keys whose values are file paths: relative ones resolve against the directory of the
    #: configuration file that names them (issue 13), before ``parse`` sees them.
    paths: frozenset[str] = frozenset()
    #: ``observe(spec, ctx, image)``: what runs, compared with ``image`` (the ledger's current
    #: release; ``None``: it records none) -- read from the running system, changing nothing.
    observe: Callable[[S, TargetContext, ImageRef | None], Observed] = not_observable


#: The registry: one line per kind, its name → the module that defines its ``KIND``.
KIND_MODULES: Final[Mapping[str, str]] = {
    "docker": "shatag.targets.docker",
    "sdl": "shatag.targets.sdl",
    "tfvars": "shatag.targets.tfvars",
    "kubernetes": "shatag.targets.kubernetes",
    "kustomize": "shatag.targets.kustomize",
    "helm_values": "shatag.targets.helm_values",
}


class _Kinds(Mapping[str, TargetKind[Any]]):
    """The registered kinds by name; a kind's module is imported when it is first looked up
    (listing the names imports nothing)."""

    def __getitem__(self, name: str) -> TargetKind[Any]:
        kind: TargetKind[Any] = importlib.import_module(KIND_MODULES[name]).KIND
        return kind

    def __iter__(self) -> Iterator[str]:
        return iter(KIND_MODULES)

    def __len__(self) -> int:
        return len(KIND_MODULES)


KINDS: Final[Mapping[str, TargetKind[Any]]] = _Kinds()


def _kind(name: object, what: str) -> TargetKind[Any]:
    found = KINDS.get(name) if isinstance(name, str) else None
    if found is None:
        raise ConfigError(f"{what} must be one of {', '.join(sorted(KINDS))}, not {name!r}")
    return found


def parse_target(where: str, raw: object, base_dir: Path | None = None) -> TargetSpec:
    """Validate one configured target (``where`` names it in errors) with its kind's parser.

    Relative values of the kind's path keys are resolved against ``base_dir`` (the directory
    of the configuration file) first; ``None`` keeps them as written (relative to the working
    directory when used).
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping with a 'kind'")
    kind = _kind(raw.get("kind"), f"{where}.kind")
    if base_dir is not None:
        raw = {
            key: str(base_dir / value)
            if key in kind.paths
            and isinstance(value, str)
            and value
            and not Path(value).is_absolute()
            else value
            for key, value in raw.items()
        }
    spec: TargetSpec = kind.parse(where, raw)
    return spec


def make_target(spec: TargetSpec, ctx: TargetContext) -> Target:
    """The adapter for one configured target."""
    return KINDS[spec.kind].make(spec, ctx)


def recover(entry: Mapping[str, Any], ctx: TargetContext) -> str:
    """Undo an interrupted ``apply`` described by a :meth:`Target.journal` entry.

    Returns a short description of what was done (for the log).
    """
    kind = KINDS.get(str(entry.get("kind")))
    if kind is None:
        raise ConfigError(
            f"journal names an unknown target kind {entry.get('kind')!r} "
            f"(known: {', '.join(sorted(KINDS))})"
        )
    return kind.recover(entry, ctx)


def observe(spec: TargetSpec, ctx: TargetContext, image: ImageRef | None) -> Observed:
    """What runs on one configured target, compared with ``image`` (:class:`Observed`)."""
    return KINDS[spec.kind].observe(spec, ctx, image)


def finish(entry: Mapping[str, Any], ctx: TargetContext) -> str:
    """Complete an interrupted ``commit`` (the deploy was already recorded as done)."""
    kind = KINDS.get(str(entry.get("kind")))
    return "nothing to do" if kind is None else kind.finish(entry, ctx)


__all__ = [
    "KINDS",
    "KIND_MODULES",
    "Observed",
    "ObservedState",
    "Target",
    "TargetContext",
    "TargetKind",
    "TargetSpec",
    "finish",
    "make_target",
    "not_observable",
    "observe",
    "parse_target",
    "recover",
]
