"""Secret values never reach anything shatag writes (issue 14, item 4).

The values of the deploying environment's secret-looking variables (names ending in ``_TOKEN``,
``_PASSWORD``, ``_SECRET``, ``_KEY``, or exactly one of those words) and of the docker target's
``secrets`` are registered once at the task edge; :func:`mask` replaces them by ``***`` in every
line shatag prints (human lines, errors, GitHub outputs), logs (``SHATAG_DEBUG=1``, the
``apply`` command line and its streamed output) and in the free text of what it stores.

Masking never touches recorded data (issue 24, item 3): a structured record (a JSON line, a
history record) is masked field by field by :func:`mask_record`, and the fields that identify
(:data:`RECORD_FIELDS`: SHAs, digests, references, environment and target names, codes) are kept
as they are. A value that is also a public name of this run -- the SHA, the digest, a target
or the environment (:func:`register_public`) -- is not a secret at all: it is printed and
recorded in clear anyway, and masking it would turn ``app:<sha>`` into ``app:***`` and a
container's ``shatag.target`` label into ``***`` in the tool output shatag reads back.

>>> register(secret_values({"DEPLOY_TOKEN": "t0ps3cret", "HOME": "/root", "X_KEY": "123456"}))
>>> mask("apply failed: t0ps3cret rejected")
'apply failed: *** rejected'
>>> mask_record({"sha": "t0ps3cret", "message": "t0ps3cret rejected"})
{'sha': 't0ps3cret', 'message': '*** rejected'}
>>> register_public(["build-t0ps3cret-1"]); mask("t0ps3cret")
't0ps3cret'
>>> reset()
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Final, Protocol

MASK: Final = "***"
#: Names whose values are secrets. ``*_KEY`` covers ``AWS_SECRET_ACCESS_KEY``, ``API_KEY``;
#: the path-like ``COSIGN_KEY``/``SSH_KEY``... are masked too -- a path is no loss in a log.
SECRET_NAME: Final = re.compile(r"(?:^|_)(TOKEN|PASSWORD|PASSWD|SECRET|KEY)$", re.IGNORECASE)
#: Values shorter than this are not masked (``KEY=1`` would turn every 1 into ***), nor are
#: pure numbers: masking them would corrupt the durations and counts of the JSON lines.
MIN_LENGTH: Final = 6

#: The fields of a structured record (JSON line, history record, journal) that identify
#: something: never masked (issue 24, item 3). Every other string field is free text.
RECORD_FIELDS: Final = frozenset(
    {
        "action",
        "attempt",
        "digest",
        "env",
        "environment",
        "error_code",
        "finished_at",
        "image_digest",
        "image_ref",
        "image_sha",
        "initiated_by",
        "manifest_kind",
        "phase",
        "pinned",
        "previous_sha",
        "ref",
        "repository",
        "repository_type",
        "result",
        "sha",
        "signature_reason",
        "signature_status",
        "started_at",
        "target",
        "targets",
        "unchanged",
    }
)

_lock = threading.Lock()
_registered: set[str] = set()
_public: set[str] = set()
_secrets: tuple[str, ...] = ()


def secret_values(env: Mapping[str, str], extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The values to mask: secret-looking variables of ``env`` plus ``extra``."""
    found = {v for k, v in env.items() if SECRET_NAME.search(k) and v}
    found.update(v for v in extra if v)
    return tuple(sorted((v for v in found if _maskable(v)), key=len, reverse=True))


def _maskable(value: str) -> bool:
    return len(value) >= MIN_LENGTH and not value.replace(".", "").isdigit()


def register(values: Iterable[str]) -> None:
    """Add ``values`` to what :func:`mask` hides (for the rest of the process)."""
    with _lock:
        _registered.update(v for v in values if _maskable(v))
        _refresh()


def register_public(values: Iterable[str]) -> None:
    """Names this run prints and records in clear (the SHA, the digest and pinned reference,
    the environment and its targets): a registered value equal to one, or found inside one,
    is no secret and is never masked (issue 24, item 3)."""
    with _lock:
        _public.update(v for v in values if v)
        _refresh()


def _refresh() -> None:
    global _secrets  # noqa: PLW0603 -- one process-wide set, written at the task edge
    kept = {s for s in _registered if not any(s in name for name in _public)}
    _secrets = tuple(sorted(kept, key=len, reverse=True))


def reset() -> None:
    with _lock:
        _registered.clear()
        _public.clear()
        _refresh()


def registered() -> tuple[str, ...]:
    return _secrets


def mask(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def mask_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` with its free text masked and its identifying fields
    (:data:`RECORD_FIELDS`) as they are; nested values are masked field by field too, and a
    value JSON cannot hold is masked as its ``str``."""
    return {str(k): v if k in RECORD_FIELDS else _mask_value(v) for k, v in record.items()}


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return mask_record(value)
    if isinstance(value, list | tuple):
        return [_mask_value(v) for v in value]
    return mask(str(value))


class MaskingFilter(logging.Filter):
    """Masks log records (``SHATAG_DEBUG=1`` logs command lines and tool output)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            record.msg = mask(record.getMessage())
            record.args = None
        return True


class _NamesSecrets(Protocol):
    """What masking needs of a target spec (:class:`shatag.targets.TargetSpec` declares it)."""

    @property
    def secrets(self) -> tuple[str, ...]: ...


def register_target_secrets(targets: Iterable[_NamesSecrets], env: Mapping[str, str]) -> None:
    """Mask the values of the variables a target names in its ``secrets`` (the docker kind's
    key: names of variables passed to the container, never their values)."""
    for target in targets:
        register(env[name] for name in target.secrets if name in env)
