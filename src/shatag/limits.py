"""Bounds on what an operator (or an attacker with write access to a config file) can hand us.

Issue 14, item 8: every numeric configuration key is range-checked, YAML is parsed with a cap
on alias expansion, and long values are cut short in messages.

>>> number(30, "health_timeout_sec", "x.health_timeout_sec")
30.0
>>> number(float("nan"), "health_timeout_sec", "x.health_timeout_sec")
Traceback (most recent call last):
...
shatag.errors.ConfigError: x.health_timeout_sec must be a positive number up to 3600, not nan
>>> clip("a" * 500, 10)
"'aaaaaaaaaa…' (500 characters)"
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from shatag.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Range:
    """The accepted range of one numeric setting."""

    low: float
    high: float
    integer: bool = False
    low_inclusive: bool = False

    def describe(self) -> str:
        kind = "a whole number" if self.integer else "a number"
        if self.low == 0 and not self.low_inclusive:
            return f"a positive {kind.removeprefix('a ')} up to {self.high:g}"
        low = f"{self.low:g}" + ("" if self.low_inclusive else " (exclusive)")
        return f"{kind} from {low} to {self.high:g}"


#: The accepted range of every numeric key (top-level, environment and target keys alike).
RANGES: Final[dict[str, Range]] = {
    "registry_timeout_sec": Range(0, 600),
    "registry_retries": Range(1, 10, integer=True, low_inclusive=True),
    "build_timeout_sec": Range(0, 86_400),
    "tool_timeout_sec": Range(0, 3_600),
    "deploy_lock_timeout_sec": Range(0, 86_400, low_inclusive=True),
    "state_lock_ttl_sec": Range(0, 86_400),
    "apply_timeout_sec": Range(0, 86_400),
    "soak_sec": Range(0, 31_536_000, low_inclusive=True),
    "check_timeout_sec": Range(0, 86_400),
    "health_timeout_sec": Range(0, 3_600),
    "watch_sec": Range(0, 3_600, low_inclusive=True),  # 0: no watch after the switch
    "drain_timeout_sec": Range(0, 86_400),
    "rollout_timeout_sec": Range(0, 86_400),
    "port": Range(1, 65_535, integer=True, low_inclusive=True),
    "container_port": Range(1, 65_535, integer=True, low_inclusive=True),
}

#: The most YAML nodes a configuration or SDL document may expand to (aliases counted each
#: time they are used). A real SDL or invoke.yaml has a few hundred.
MAX_YAML_NODES: Final = 100_000
#: Longest value shown in a message, and longest message printed at all.
MAX_SHOWN: Final = 120
MAX_MESSAGE: Final = 2_000


def clip(value: object, limit: int = MAX_SHOWN) -> str:
    """``value`` as it may appear in a message: repr-quoted, cut to ``limit`` characters."""
    text = value if isinstance(value, str) else repr(value)
    shown = repr(text[: limit + 1]) if isinstance(value, str) else text
    if len(text) <= limit and len(shown) <= limit + 2:
        return shown
    return shown[: limit + 1] + f"…' ({len(text)} characters)"


def shown(value: object, limit: int = MAX_SHOWN) -> str:
    r""":func:`clip` with every non-ASCII character escaped, so a lookalike (a Cyrillic ``o``, a
    fullwidth digit) cannot look like the name it imitates (issue 24, item 6).

    >>> print(shown("p\u043ert"), shown("port"), shown("\uff18\uff10"))
    'p\u043ert' 'port' '\uff18\uff10'
    """
    text = clip(value, limit)
    return text if text.isascii() else text.encode("ascii", "backslashreplace").decode("ascii")


def names(keys: Iterable[object]) -> str:
    r"""Keys for a message, comma-separated: plain ASCII names as they are, any other key
    quoted with non-ASCII escaped -- the one helper every "unknown keys" message uses.

    >>> print(names(["port", "p\u043ert", "a b"]))
    port, 'p\u043ert', 'a b'
    """
    out = []
    for key in keys:
        text = str(key)
        plain = text.isascii() and text.isprintable() and " " not in text and len(text) <= 60
        out.append(text if plain else shown(text, 60))
    return ", ".join(out)


def flat(text: str, limit: int = 300) -> str:
    """``text`` (a parser's multi-line message) on one line, cut to ``limit`` characters.

    >>> flat("while parsing   a flow sequence", 20)
    'while parsing a flow…'
    """
    one = " ".join(text.split())
    return one if len(one) <= limit else one[:limit] + "…"


def clip_message(message: str, limit: int = MAX_MESSAGE) -> str:
    """A whole message cut to ``limit`` characters (the edge applies it to every error)."""
    if len(message) <= limit:
        return message
    return message[:limit] + f" … [{len(message) - limit} more characters cut]"


def number(value: Any, key: str, where: str) -> float:
    """``value`` as a number within ``RANGES[key]``; ``"3"`` (an environment variable) is fine.

    Booleans, NaN, infinities, out-of-range and (for whole-number keys) fractional values are
    refused with :class:`ConfigError`.
    """
    bounds = RANGES[key]
    if isinstance(value, bool) or (isinstance(value, str) and not value.isascii()):
        # float() and int() accept any Unicode digit (fullwidth 8080): ASCII only (issue 24).
        raise ConfigError(f"{where} must be {bounds.describe()}, not {shown(value)}")
    try:
        parsed = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{where} must be {bounds.describe()}, not {clip(value)}") from None
    too_low = parsed < bounds.low or (parsed == bounds.low and not bounds.low_inclusive)
    fractional = bounds.integer and math.isfinite(parsed) and parsed != int(parsed)
    if not math.isfinite(parsed) or too_low or parsed > bounds.high or fractional:
        text = clip(value) if isinstance(value, str) else f"{parsed:g}"
        raise ConfigError(f"{where} must be {bounds.describe()}, not {text}")
    return parsed


def whole(value: Any, key: str, where: str) -> int:
    """:func:`number` for a whole-number key, as an ``int``."""
    return int(number(value, key, where))


def check_yaml_expansion(node: Any, where: str, limit: int = MAX_YAML_NODES) -> None:
    """Refuse a composed YAML node graph (PyYAML or ruamel) that expands past ``limit`` nodes.

    A "billion laughs" document is a few hundred bytes of anchors and aliases that expand to
    billions of nodes when anything walks it; composing is linear in the document, so the
    expanded size is counted here (each node once, memoised) before anything is constructed.
    """
    sizes: dict[int, int] = {}
    visiting: set[int] = set()
    stack: list[tuple[Any, bool]] = [(node, False)]
    while stack:
        current, done = stack.pop()
        key = id(current)
        if key in sizes and not done:
            continue
        children = _children(current)
        if not done:
            if key in visiting:  # met again below itself: a recursive alias
                raise ConfigError(f"{where}: the YAML document refers to itself through an alias")
            visiting.add(key)
            stack.append((current, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
            continue
        total = 1 + sum(sizes.get(id(child), 1) for child in children)
        sizes[key] = total
        if total > limit:
            raise ConfigError(
                f"{where}: the YAML document expands to more than {limit} nodes through its "
                "anchors and aliases (a 'billion laughs' document?); refusing to load it"
            )


def _children(node: Any) -> list[Any]:
    value = getattr(node, "value", None)
    if not isinstance(value, list):
        return []
    out: list[Any] = []
    for item in value:
        if isinstance(item, tuple):
            out.extend(item)
        else:
            out.append(item)
    return out


#: Bounds on a configuration file (``invoke.yaml``, ``-f FILE``, ``shatag.yaml``), checked
#: before and while parsing so a hostile file is refused in well under a second with the
#: pure-Python parser (issue 24, item 6: a 15 MB list took 234 s and 6.1 GB). A real one is a
#: few KB and a few hundred nodes.
MAX_CONFIG_BYTES: Final = 256 * 1024
MAX_CONFIG_NODES: Final = 5_000
MAX_CONFIG_DEPTH: Final = 64


def _bounded_loader(yaml: Any) -> Any:
    """PyYAML's safe loader, counting the nodes it composes (aliases count once per use here;
    :func:`check_yaml_expansion` counts their expansion after) and their nesting."""

    class BoundedLoader(yaml.SafeLoader):  # type: ignore[misc] # vendored PyYAML is Any
        where = ""
        composed = 0
        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            self.composed += 1
            if self.composed > MAX_CONFIG_NODES:
                raise ConfigError(
                    f"{self.where} has more than {MAX_CONFIG_NODES} YAML nodes (a configuration "
                    "has a few hundred); refusing to load it"
                )
            self.depth += 1
            try:
                if self.depth > MAX_CONFIG_DEPTH:
                    raise ConfigError(
                        f"{self.where} nests deeper than {MAX_CONFIG_DEPTH} levels; refusing to "
                        "load it"
                    )
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    return BoundedLoader


def load_yaml(text: str, where: str) -> Any:
    """Parse a YAML configuration document (PyYAML's safe loader) with bounded expansion and
    string keys only (invoke turns every key into an ``INVOKE_*`` variable name).

    >>> load_yaml("shatag: {state_dir: s}", "x.yaml")
    {'shatag': {'state_dir': 's'}}
    >>> try:
    ...     load_yaml("shatag: {environments: {1: {}}}", "x.yaml")
    ... except ConfigError as exc:
    ...     print(exc.message[:51])
    x.yaml: key 1 under shatag.environments is a int; k
    """
    # The PyYAML that invoke itself loads its files with (vendored in invoke): shatag does not
    # depend on PyYAML, and a fresh `pip install shatag` has none.
    yaml: Any = importlib.import_module("invoke.vendor.yaml")

    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{where} is larger than {MAX_CONFIG_BYTES // 1024} KiB; refusing to load it"
        )
    try:
        loader = _bounded_loader(yaml)(text)
        loader.where = where
    except yaml.YAMLError as exc:  # the reader refuses control characters up front
        raise ConfigError(f"{where} is not valid YAML: {flat(str(exc))}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_yaml_expansion(node, where)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {flat(str(exc))}") from None
    finally:
        loader.dispose()
    check_string_keys(data, where)
    return data


def check_string_keys(data: Any, where: str, path: str = "") -> None:
    """Every mapping key in ``data`` is a string (bounded: call after the expansion check)."""
    if isinstance(data, dict):
        for key, value in data.items():
            if not isinstance(key, str):
                under = f" under {path}" if path else ""
                raise ConfigError(
                    f"{where}: key {clip(key, 40)}{under} is a {type(key).__name__}; keys must "
                    f"be strings (quote it: '{clip(key, 40)}')"
                )
            check_string_keys(value, where, f"{path}.{key}" if path else key)
    elif isinstance(data, list):
        for i, item in enumerate(data):
            check_string_keys(item, where, f"{path}[{i}]")
