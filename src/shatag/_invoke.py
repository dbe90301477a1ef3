"""Glue between Invoke's configuration system and shatag's (issue 13, items 1 and 6).

* :func:`find_config_file` — the ``shatag`` console script's file: ``shatag.yaml`` in the current
  directory, else at the git top-level (``-f FILE`` overrides; ``inv`` keeps Invoke's own files).
* :func:`layer_dirs` — which directory each configured key's relative paths resolve against: the
  directory of the file that set it (the working directory for ``INVOKE_SHATAG_*`` variables).
* :func:`check_env_names` — a misspelled ``INVOKE_SHATAG_*`` variable is a CONFIG_ERROR naming
  the closest key, instead of being silently ignored.
* :func:`variables_win` — ``INVOKE_SHATAG_*`` variables override every file, the runtime file
  (``-f``, the ``shatag`` script's ``shatag.yaml``) included, as documented (issue 23, item 7):
  Invoke's own order puts the runtime file above variables.
* :func:`install_env_cast` — an ``INVOKE_SHATAG_*`` value that Invoke cannot cast to the type of
  the value it overrides (a comma-separated list over a list from a file, ``abc`` over a number)
  reaches shatag's validation instead of ending in a raw ``UncastableEnvVar`` traceback.

>>> sorted(env_var_names({"context": ".", "environments": {"prod": {"apply": ""}}}))
['INVOKE_SHATAG_CONTEXT', 'INVOKE_SHATAG_ENVIRONMENTS', 'INVOKE_SHATAG_ENVIRONMENTS_PROD', \
'INVOKE_SHATAG_ENVIRONMENTS_PROD_APPLY']
"""

from __future__ import annotations

import difflib
import os
import stat
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Final

from shatag.errors import ConfigError

CONFIG_FILE: Final = "shatag.yaml"
ENV_PREFIX: Final = "INVOKE_SHATAG_"


def find_config_file(cwd: Path) -> Path | None:
    """``shatag.yaml`` in ``cwd``, else at the top-level of the git work tree holding ``cwd``.

    Anything at that name counts -- a directory, a FIFO, a dangling symlink too -- so that
    loading it refuses it with CONFIG_ERROR instead of silently using the built-in defaults
    (issue 24, item 6).

    >>> find_config_file(Path("/nonexistent-dir")) is None
    True
    """
    here = cwd / CONFIG_FILE
    if os.path.lexists(here):
        return here
    from shatag._sys.source import git_toplevel  # lazy: only the `shatag` script looks for it

    top = git_toplevel(cwd)
    if top is not None and os.path.lexists(top / CONFIG_FILE):
        return top / CONFIG_FILE
    return None


def _kind(mode: int) -> str:
    kinds = [
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ]
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def read_config_file(path: str | os.PathLike[str]) -> str:
    """The text of a configuration file, read only if it is a regular, readable file of at
    most :data:`~shatag.limits.MAX_CONFIG_BYTES` (issue 24, item 6): a FIFO is opened
    without blocking and refused (it used to hang), a directory or device is refused, a
    dangling symlink is named as one. :class:`FileNotFoundError` when nothing is there at all
    (Invoke then tries its next suffix)."""
    from shatag.limits import MAX_CONFIG_BYTES, shown

    where = shown(os.fspath(path), 300)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise ConfigError(
                f"configuration file {where} is a symlink to {shown(os.readlink(path), 300)}, "
                "which does not exist"
            ) from None
        raise
    except OSError as exc:
        raise ConfigError(
            f"cannot read configuration file {where}: {exc.strerror or exc}"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(
                f"configuration file {where} is {_kind(info.st_mode)}, not a regular file"
            )
        if info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"configuration file {where} is {info.st_size} bytes, more than the "
                f"{MAX_CONFIG_BYTES // 1024} KiB a configuration may have; refusing to load it"
            )
        data = os.read(fd, MAX_CONFIG_BYTES + 1)  # a file that grew meanwhile is cut here
    except OSError as exc:
        raise ConfigError(
            f"cannot read configuration file {where}: {exc.strerror or exc}"
        ) from None
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"configuration file {where} is larger than {MAX_CONFIG_BYTES // 1024} KiB; "
            "refusing to load it"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"configuration file {where} is not UTF-8: {exc.reason}") from None


def env_var_names(shatag: Mapping[str, Any], prefix: str = ENV_PREFIX) -> set[str]:
    """Every ``INVOKE_SHATAG_*`` name Invoke maps onto the given ``shatag`` mapping."""
    names: set[str] = set()
    for key, value in shatag.items():
        name = f"{prefix}{str(key).upper()}"
        names.add(name)
        if isinstance(value, Mapping):
            names |= env_var_names(value, f"{name}_")
    return names


def check_env_names(
    environ: Mapping[str, str], known: Collection[str], *, file_only: Collection[str] = ()
) -> None:
    """Every ``INVOKE_SHATAG_*`` variable must name a configuration key.

    >>> check_env_names({"INVOKE_SHATAG_CONTEXT": "."}, {"INVOKE_SHATAG_CONTEXT"})
    >>> check_env_names({"INVOKE_SHATAG_CONTEX": "."}, {"INVOKE_SHATAG_CONTEXT"})
    Traceback (most recent call last):
    ...
    shatag.errors.ConfigError: INVOKE_SHATAG_CONTEX is not a shatag setting; did you mean \
INVOKE_SHATAG_CONTEXT?
    """
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in known:
            continue
        key = name.removeprefix(ENV_PREFIX).lower()
        if key in file_only:
            raise ConfigError(
                f"{name} cannot be set from an environment variable: shatag.{key} is a mapping; "
                "set it in shatag.yaml (or the file given with -f)"
            )
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(sorted(known))}"
        raise ConfigError(f"{name} is not a shatag setting; {hint}")


def layer_dirs(config: Any, cwd: Path) -> tuple[Path | None, dict[str, Path]]:
    """The configuration file the run loaded (``-f``/``shatag.yaml``, else the project's
    ``invoke.yaml``) and, per top-level ``shatag`` key, the directory its relative paths resolve
    against: the directory of the file that set it, the working directory for a variable, and
    the loaded file's directory (else the working directory) for a default."""
    runtime = _layer(config, "runtime")
    project = _layer(config, "project")
    main = runtime[0] or project[0]
    default_dir = main.parent if main is not None else cwd
    dirs: dict[str, Path] = {}
    ordered = [
        (None, _shatag(getattr(config, "_env", {}))),  # variables win (:func:`variables_win`)
        runtime,
        project,
        _layer(config, "user"),
        _layer(config, "system"),
    ]
    for key in _shatag(getattr(config, "_config", {})):
        dirs[key] = default_dir
        for path, data in ordered:
            if key in data:
                dirs[key] = path.parent if path is not None else cwd
                break
    return main, dirs


def variables_win(merged: Mapping[str, Any], config: Any) -> dict[str, Any]:
    """The ``shatag`` mapping with the ``INVOKE_SHATAG_*`` variables applied over every file.

    Invoke merges its runtime file (``-f``, the ``shatag`` script's ``shatag.yaml``) *after* the
    variables, so ``INVOKE_SHATAG_STATE_BACKEND=git`` stayed ``local`` when the file set it;
    shatag's documented order is defaults → file → variables → flags (issue 23, item 7).

    >>> class C:
    ...     _env = {"shatag": {"state_backend": "git", "environments": {"p": {"apply": "x"}}}}
    >>> variables_win({"state_backend": "local", "environments": {"p": {"a": 1}}}, C())
    {'state_backend': 'git', 'environments': {'p': {'a': 1, 'apply': 'x'}}}
    """
    return _over(dict(merged), _shatag(getattr(config, "_env", {})))


def _over(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in top.items():
        below = base.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            base[key] = _over(dict(below), value)
        else:
            base[key] = value
    return base


def _layer(config: Any, name: str) -> tuple[Path | None, Mapping[str, Any]]:
    if not getattr(config, f"_{name}_found", None):
        return None, {}
    path = getattr(config, f"_{name}_path", None)
    resolved = Path(str(path)).expanduser().absolute() if path else None
    return resolved, _shatag(getattr(config, f"_{name}", {}))


def _shatag(data: Any) -> Mapping[str, Any]:
    section = data.get("shatag") if isinstance(data, Mapping) else None
    return section if isinstance(section, Mapping) else {}


def install_env_cast() -> None:
    """Let ``INVOKE_SHATAG_*`` values Invoke cannot cast through to shatag's own validation.

    Invoke casts a variable to the type of the value it overrides, outside any task: over a list
    from a file it raises ``UncastableEnvVar``, over a number ``int("abc")`` raises ValueError —
    both as raw tracebacks before shatag can say CONFIG_ERROR. Lists become comma-separated
    lists (``trunk,release`` → ``["trunk", "release"]``); a value that does not cast stays the
    string it was, which :class:`shatag.config.Settings` then rejects with a clear message.
    """
    from invoke.env import Environment

    original = Environment._cast
    if getattr(original, "_shatag", False):
        return

    def cast(self: Environment, old: Any, new: Any) -> Any:
        if isinstance(old, list | tuple) and isinstance(new, str):
            return [part.strip() for part in new.split(",") if part.strip()]
        try:
            return original(self, old, new)
        except (TypeError, ValueError):
            return new

    cast._shatag = True  # type: ignore[attr-defined]
    Environment._cast = cast  # type: ignore[method-assign]
