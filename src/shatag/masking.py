"""Secret values never reach anything shatag writes (issue 14, item 4).

The values of the deploying environment's secret-looking variables (names ending in ``_TOKEN``,
``_PASSWORD``, ``_SECRET``, ``_KEY``, or exactly one of those words) and of the docker target's
``secrets`` are registered once at the task edge; :func:`mask` replaces them by ``***`` in every
line shatag prints (JSON, human lines, errors, GitHub outputs), logs (``SHATAG_DEBUG=1``, the
``apply`` command line and its streamed output) and stores (history records).

>>> register(secret_values({"DEPLOY_TOKEN": "t0ps3cret", "HOME": "/root", "X_KEY": "123456"}))
>>> mask("apply failed: t0ps3cret rejected")
'apply failed: *** rejected'
>>> reset()
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Final, Protocol

MASK: Final = "***"
#: Names whose values are secrets. ``*_KEY`` covers ``AWS_SECRET_ACCESS_KEY``, ``API_KEY``;
#: the path-like ``COSIGN_KEY``/``SSH_KEY``... are masked too -- a path is no loss in a log.
SECRET_NAME: Final = re.compile(r"(?:^|_)(TOKEN|PASSWORD|PASSWD|SECRET|KEY)$", re.IGNORECASE)
#: Values shorter than this are not masked (``KEY=1`` would turn every 1 into ***), nor are
#: pure numbers: masking them would corrupt the durations and counts of the JSON lines.
MIN_LENGTH: Final = 6

_lock = threading.Lock()
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
    global _secrets  # noqa: PLW0603 -- one process-wide set, written at the task edge
    with _lock:
        merged = set(_secrets) | {v for v in values if _maskable(v)}
        _secrets = tuple(sorted(merged, key=len, reverse=True))


def reset() -> None:
    global _secrets  # noqa: PLW0603
    with _lock:
        _secrets = ()


def registered() -> tuple[str, ...]:
    return _secrets


def mask(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


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
