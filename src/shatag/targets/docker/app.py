"""Application settings of a docker target (issue 12, item 5): ``env``, ``secrets``, ``volumes``.

Pure validation, shared by both switches (through the proxy, and ``proxy: false``):

* ``env``: a mapping of variable name to a plain value (string, number or boolean), passed as
  ``--env NAME=value``;
* ``secrets``: names of variables passed through from the deploying process's environment. The
  docker CLI gets ``--env NAME`` (no value on any command line) and reads the value from its own
  environment; shatag never prints, logs, records or labels a value (docker itself shows it in
  ``docker inspect``'s ``Config.Env``, as for any environment variable);
* ``volumes``: ``SOURCE:DEST[:ro|rw]``, where SOURCE is a named volume (``data``) or an absolute
  host path (a bind mount) and DEST an absolute path in the container.

>>> parse_env({"LOG_LEVEL": "info", "WORKERS": 4, "DEBUG": False}, "t")
(('LOG_LEVEL', 'info'), ('WORKERS', '4'), ('DEBUG', 'false'))
>>> parse_volumes(["data:/var/lib/app", "/srv/conf:/etc/app:ro"], "t")
('data:/var/lib/app', '/srv/conf:/etc/app:ro')
>>> validate_container_name("api-prod", "t")
'api-prod'
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from shatag.errors import ConfigError
from shatag.limits import clip

_VAR_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_NAME_RE: Final = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")
_VOLUME_NAME_RE: Final = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")
_PATH_RE: Final = re.compile(r"/[^:\x00-\x1f,]*")
# Names docker or the process model give a meaning: never set by a target.
_RESERVED: Final = frozenset({"PATH", "HOSTNAME", "HOME"})


def validate_container_name(value: Any, where: str) -> str:
    """A docker container name shatag can derive ``-proxy``/``-shatag-net``/release names from."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise ConfigError(
            f"{where}.name must be 1-63 characters of letters, digits, '_', '.', '-' (starting "
            f"with a letter or digit), not {clip(value, 60)}"
        )
    return value


def parse_env(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}.env must be a mapping of variable name to value")
    out: list[tuple[str, str]] = []
    for key, raw in value.items():
        name = _var_name(key, f"{where}.env")
        if isinstance(raw, bool):
            text = "true" if raw else "false"
        elif isinstance(raw, str | int | float):
            text = str(raw)
        else:
            raise ConfigError(
                f"{where}.env.{name} must be a string, number or boolean, not {type(raw).__name__}"
            )
        if "\x00" in text or "\n" in text:
            raise ConfigError(f"{where}.env.{name} must be one line without NUL characters")
        out.append((name, text))
    return tuple(out)


def parse_secrets(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, Sequence):
        raise ConfigError(f"{where}.secrets must be a list of environment variable names")
    names = tuple(
        _var_name(v.strip() if isinstance(v, str) else v, f"{where}.secrets") for v in value
    )
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}.secrets lists a name twice")
    return names


def parse_volumes(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ConfigError(f"{where}.volumes must be a list of 'SOURCE:DEST[:ro]' strings")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise ConfigError(f"{where}.volumes holds a non-string {item!r}")
        parts = item.split(":")
        if len(parts) not in (2, 3):
            raise ConfigError(f"{where}.volumes: {item!r} is not SOURCE:DEST or SOURCE:DEST:MODE")
        source, dest = parts[0], parts[1]
        mode = parts[2] if len(parts) == 3 else ""
        if not (_VOLUME_NAME_RE.fullmatch(source) or _PATH_RE.fullmatch(source)):
            raise ConfigError(
                f"{where}.volumes: source {source!r} must be a volume name or an absolute host "
                "path (a relative path is refused: it would depend on the working directory)"
            )
        if not _PATH_RE.fullmatch(dest) or dest == "/":
            raise ConfigError(f"{where}.volumes: destination {dest!r} must be an absolute path")
        if mode not in ("", "ro", "rw"):
            raise ConfigError(f"{where}.volumes: mode {mode!r} must be ro or rw")
        out.append(item)
    return tuple(out)


def check_names(env: tuple[tuple[str, str], ...], secrets: tuple[str, ...], where: str) -> None:
    clash = sorted({k for k, _ in env} & set(secrets))
    if clash:
        raise ConfigError(f"{where}: {', '.join(clash)} is both in env and in secrets")


def app_fingerprint(
    env: tuple[tuple[str, str], ...],
    secrets: tuple[str, ...],
    volumes: tuple[str, ...],
    container_port: int,
    health_path: str,
) -> str:
    """A digest of the settings a running container was started with (a label). Secret
    *names* are in it, their values are not: rotating only a secret's value needs a new release
    or a changed setting to take effect (the re-deploy of the serving digest is a no-op).

    >>> len(app_fingerprint((), ("TOKEN",), (), 8080, "/healthz"))
    16
    """
    data = json.dumps(
        {
            "env": list(env),
            "secrets": list(secrets),
            "volumes": list(volumes),
            "container_port": container_port,
            "health_path": health_path,
        },
        sort_keys=True,
    )
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def _var_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _VAR_RE.fullmatch(value):
        raise ConfigError(f"{where}: {value!r} is not a valid environment variable name")
    if value in _RESERVED:
        raise ConfigError(f"{where}: {value} is reserved and cannot be set by a target")
    return value
