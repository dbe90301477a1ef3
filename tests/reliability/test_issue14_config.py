"""Issue 14, item 8: hostile configuration through the real CLI (``inv -f FILE``).

A YAML alias bomb (in the invoke config file and in an SDL target file), a 5 MB value, NaN,
infinite, negative, zero and huge numbers, an integer environment key and a docker target named
``--help``. Each must end in ``error: CONFIG_ERROR`` (or INVALID_INPUT) quickly, without a
traceback, with short output, and change nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import inv_argv
from tests.reliability._issue14 import bounded_inv, traceback_in
from tests.reliability.conftest import Ledger, Site, World, describe, error_code

LIMIT = 40.0
MAX_OUTPUT = 10_000  # bytes of stdout + stderr a refused configuration may print


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The classic 'billion laughs': ``width ** levels`` strings from a few hundred bytes."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def _docker(**over: Any) -> dict[str, Any]:
    return {"kind": "docker", "name": "rel14-h", "port": 18099, "container_port": 8080, **over}


def _env(tmp: Path, *targets: dict[str, Any], **over: Any) -> dict[str, Any]:
    return {"repository_type": "canonical", "targets": list(targets or [_docker()]), **over}


def _config(tmp: Path, **shatag: Any) -> str:
    spec = {"state_dir": str(tmp / "state"), "environments": {"h": _env(tmp)}, **shatag}
    return json.dumps({"shatag": spec})


def hostile_configs(tmp: Path) -> list[tuple[str, str]]:
    """(label, YAML text) pairs; every one must be refused."""
    bomb = alias_bomb()
    out: list[tuple[str, str]] = [
        (
            f"alias bomb in the config file ({len(bomb) + 40} bytes)",
            bomb + f"shatag:\n  state_dir: {tmp / 'state'}\n  lol: *l8\n",
        ),
        ("5 MB signature_policy", _config(tmp, signature_policy="x" * 5_000_000)),
        ("5 MB canonical_repository", _config(tmp, canonical_repository="a" * 5_000_000)),
        ("integer environment key", "shatag:\n  environments:\n    1:\n      targets: []\n"),
        (
            "integer key inside a target",
            "shatag:\n  environments:\n    h:\n      targets:\n        - {kind: sdl, 7: x}\n",
        ),
        (
            "docker target named --help",
            json.dumps({"shatag": {"environments": {"h": _env(tmp, _docker(name="--help"))}}}),
        ),
        (
            "docker target named ../x",
            json.dumps({"shatag": {"environments": {"h": _env(tmp, _docker(name="../x"))}}}),
        ),
    ]
    numbers: list[tuple[str, Any]] = [
        ("registry_retries", 1_000_000),
        ("registry_retries", 0),
        ("registry_retries", 2.5),
        ("registry_retries", True),
        ("registry_timeout_sec", ".nan"),
        ("registry_timeout_sec", ".inf"),
        ("registry_timeout_sec", -5),
        ("registry_timeout_sec", 0),
        ("registry_timeout_sec", 1e9),
        ("deploy_lock_timeout_sec", ".inf"),
        ("deploy_lock_timeout_sec", -1),
        ("tool_timeout_sec", ".nan"),
        ("build_timeout_sec", ".inf"),
    ]
    for key, value in numbers:
        out.append((f"{key}: {value}", f"shatag:\n  {key}: {value}\n"))
    for key, value in [
        ("apply_timeout_sec", ".nan"),
        ("apply_timeout_sec", -5),
        ("apply_timeout_sec", ".inf"),
    ]:
        text = (
            "shatag:\n  environments:\n    h:\n"
            f"      {key}: {value}\n      targets:\n"
            "        - {kind: tfvars, path: x.json}\n"
        )
        out.append((f"environment {key}: {value}", text))
    for key, value in [
        ("health_timeout_sec", ".nan"),
        ("health_timeout_sec", ".inf"),
        ("health_timeout_sec", -5),
        ("health_timeout_sec", 0),
        ("port", 0),
        ("port", 70000),
        ("port", 8080.5),
        ("port", "true"),
        ("container_port", -1),
    ]:
        text = (
            "shatag:\n  environments:\n    h:\n      targets:\n"
            f"        - {{kind: docker, name: rel14-h, port: 18099, container_port: 8080, "
            f"{key}: {value}}}\n"
        )
        out.append((f"docker target {key}: {value}", text))
    return out


def test_issue14_hostile_configuration(
    ledger: Ledger, world: World, make_site: Callable[..., Site], tmp_path: Path
) -> None:
    env = {**world.env, "INVOKE_SHATAG_STATE_DIR": str(tmp_path / "state")}
    bad: list[str] = []
    slowest = 0.0
    largest = 0
    cases = hostile_configs(tmp_path)
    for i, (label, text) in enumerate(cases):
        config = tmp_path / f"hostile-{i}.yaml"
        config.write_text(text)
        ledger.count("inputs_tried")
        started = time.monotonic()
        result = bounded_inv(ledger, inv_argv("-f", str(config), "history", "--env=h"), env, LIMIT)
        took = time.monotonic() - started
        slowest = max(slowest, took)
        size = len(result.stdout) + len(result.stderr)
        largest = max(largest, size)
        ok = (
            result.returncode not in (0, -9)
            and error_code(result) in ("CONFIG_ERROR", "INVALID_INPUT")
            and not traceback_in(result)
            and size < MAX_OUTPUT
        )
        if not ok:
            tail = result.stderr[-200:] if size < MAX_OUTPUT else result.stderr[:120]
            bad.append(f"{label}: {describe(result)} in {took:.1f}s, {size} bytes out; {tail!r}")
    # The alias bomb in an SDL target file: the deploy refuses it and changes nothing.
    site = make_site()
    site.sdl.write_text(alias_bomb() + "services:\n  api:\n    image: x:1\n    more: *l8\n")
    before = site.snapshot()
    ledger.count("inputs_tried")
    started = time.monotonic()
    sdl = bounded_inv(
        ledger, site.argv("deploy", f"--sha={world.images[0].sha}", "--env=rel"), site.env, LIMIT
    )
    sdl_sec = time.monotonic() - started
    sdl_ok = (
        error_code(sdl) == "CONFIG_ERROR" and not traceback_in(sdl) and site.snapshot() == before
    )
    if not sdl_ok:
        bad.append(f"SDL alias bomb: {describe(sdl)} in {sdl_sec:.1f}s; {sdl.stderr[-200:]!r}")
    total = len(cases) + 1
    ledger.record(
        f"#14.8 hostile configuration ({total} inputs: alias bombs, 5 MB values, NaN/inf/"
        "out-of-range numbers, integer keys, docker name --help)",
        "each refused with CONFIG_ERROR/INVALID_INPUT, no traceback, < 10 KB of output, "
        "< 40 s; the SDL bomb changes nothing",
        f"{total - len(bad)}/{total} clean; slowest {max(slowest, sdl_sec):.1f}s; largest "
        f"output {largest} bytes" + (f"; failures: {'; '.join(bad)[:1500]}" if bad else ""),
        not bad,
    )
    assert not bad, "\n".join(bad)
