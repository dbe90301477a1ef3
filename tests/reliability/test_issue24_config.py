"""Issue 24, item 6: configuration input bounded and exact, through both real entry points
(``inv -f FILE`` and the ``shatag`` script, with ``-f`` and with its ``shatag.yaml`` lookup).

* size and node limits before the expensive part: a 15 MB anchor-free list (234 s and 6.1 GB
  before, then a wrong "billion laughs" error), a list just under the size limit with more nodes
  than a configuration has, a deeply nested document -- each refused in well under a second more
  than a run with a valid configuration takes;
* a configuration path that is not a regular readable file (FIFO, directory, dangling symlink,
  device, missing ``-f`` file, unknown suffix): CONFIG_ERROR, never silently the built-in
  defaults, never a hang (``-f FIFO`` used to block forever) or a traceback (``-f x.bak``);
* lookalike Unicode keys shown escaped (``'p\\u043ert'``), numbers in ASCII digits only
  (a port in fullwidth digits used to be accepted).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, InvResult, inv_argv
from tests.reliability._issue14 import traceback_in
from tests.reliability.conftest import Ledger, describe, error_code

HANG_LIMIT = 20.0  # a run still going after this long is killed and counted as hung
MAX_OUTPUT = 10_000
SHATAG = [sys.executable, "-c", "from shatag.cli import main; main()"]


def _env(tmp: Path) -> dict[str, str]:
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "INVOKE_SHATAG_STATE_DIR": str(tmp / "state"),
    }


def run(ledger: Ledger, argv: list[str], env: dict[str, str], cwd: Path) -> tuple[InvResult, float]:
    """One CLI run in ``cwd``, killed (process group) after HANG_LIMIT; memory capped."""
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    resource.prlimit(proc.pid, resource.RLIMIT_AS, (2 << 30, 2 << 30))
    try:
        out, err = proc.communicate(timeout=HANG_LIMIT)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        code = -9
        err += f"\n[hung: killed after {HANG_LIMIT:g}s]".encode()
    took = time.monotonic() - started
    result = InvResult(code, out.decode(errors="replace"), err.decode(errors="replace"))
    ledger.capture(f"issue24 {' '.join(argv[-4:])[:80]}", result.stdout + "\n" + result.stderr)
    ledger.count("inputs_tried")
    return result, took


def refused(result: InvResult) -> bool:
    size = len(result.stdout) + len(result.stderr)
    return (
        result.returncode not in (0, -9)
        and error_code(result) == "CONFIG_ERROR"
        and not traceback_in(result)
        and size < MAX_OUTPUT
    )


def entry_points(config: str) -> list[tuple[str, list[str]]]:
    return [
        ("inv -f", inv_argv("-f", config, "history")),
        ("shatag -f", [*SHATAG, "-f", config, "history"]),
    ]


def test_issue24_config_paths_that_are_not_regular_files(ledger: Ledger, tmp_path: Path) -> None:
    env = _env(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    os.mkfifo(work / "fifo.yaml")
    os.mkfifo(work / "fifo.json")
    (work / "dir.yaml").mkdir()
    (work / "dangling.yaml").symlink_to(work / "nowhere.yaml")
    (work / "x.bak").write_text("shatag: {}\n")
    (work / "nosuffix").write_text("shatag: {}\n")
    cases: list[tuple[str, list[str], Path, str]] = []
    for label, value, wanted in [
        ("FIFO", "fifo.yaml", "is a FIFO"),
        ("FIFO (.json)", "fifo.json", "is a FIFO"),
        ("directory", "dir.yaml", "is a directory"),
        ("dangling symlink", "dangling.yaml", "which does not exist"),
        ("missing file", "missing.yaml", "does not exist"),
        ("x.bak", "x.bak", "'.bak' file is not configuration"),
        ("file without a suffix", "nosuffix", "without a suffix"),
        ("/dev/zero", "/dev/zero", "is a character device"),
        ("empty value", "", "does not exist"),
        ("non-UTF-8 name", os.fsdecode(b"\xff.yaml"), "\\udcff.yaml"),
    ]:
        for entry, argv in entry_points(value):
            cases.append((f"{entry} {label}", argv, work, wanted))
    # The `shatag` script's own lookup: a shatag.yaml that is not a regular file.
    for label in ("FIFO", "directory", "dangling symlink"):
        here = tmp_path / f"lookup-{label.replace(' ', '-')}"
        here.mkdir()
        if label == "FIFO":
            os.mkfifo(here / "shatag.yaml")
        elif label == "directory":
            (here / "shatag.yaml").mkdir()
        else:
            (here / "shatag.yaml").symlink_to(here / "gone.yaml")
        cases.append((f"shatag.yaml is a {label}", [*SHATAG, "history"], here, "shatag.yaml"))
    bad: list[str] = []
    slowest = 0.0
    for label, argv, cwd, wanted in cases:
        result, took = run(ledger, argv, env, cwd)
        slowest = max(slowest, took)
        if not (refused(result) and wanted in result.stderr):
            bad.append(f"{label}: {describe(result)} in {took:.1f}s; {result.stderr[-300:]!r}")
    ledger.record(
        f"#24.6 configuration path that is not a regular readable file ({len(cases)} runs: "
        "FIFO, directory, dangling symlink, /dev/zero, missing, x.bak, no suffix, empty; "
        "inv -f, shatag -f and the shatag.yaml lookup)",
        "CONFIG_ERROR naming what the path is; never the built-in defaults, a hang or a traceback",
        f"{len(cases) - len(bad)}/{len(cases)} refused; slowest {slowest:.1f}s"
        + (f"; failures: {'; '.join(bad)[:1500]}" if bad else ""),
        not bad,
    )
    assert not bad, "\n".join(bad)


def _flow_list(count: int) -> str:
    return "shatag:\n  lol: [" + ", ".join(["a"] * count) + "]\n"


def test_issue24_large_configs_are_refused_in_well_under_a_second(
    ledger: Ledger, tmp_path: Path
) -> None:
    env = _env(tmp_path)
    good = tmp_path / "good.yaml"
    good.write_text(f"shatag:\n  state_dir: {tmp_path / 'state'}\n")
    big = tmp_path / "big.yaml"
    with big.open("w") as out:  # 15 MB, no anchors (234 s and 6.1 GB before)
        out.write("shatag:\n  lol:\n")
        out.write("    - item\n" * 1_500_000)
    under = tmp_path / "under-size.yaml"
    under.write_text(_flow_list(80_000))  # ~240 KB: within the size limit, 80,000 nodes
    deep = tmp_path / "deep.yaml"
    deep.write_text("shatag:\n  lol: " + "[" * 5_000 + "]" * 5_000 + "\n")
    # The baseline: the same command with a valid configuration (interpreter start included).
    baseline = min(run(ledger, argv, env, tmp_path)[1] for _, argv in entry_points(str(good)))
    bad: list[str] = []
    extra = 0.0
    cases = [
        (f"15 MB list ({big.stat().st_size} bytes)", big, "more than the 256 KiB"),
        (f"{under.stat().st_size}-byte list of 80,000 nodes", under, "more than 5000 YAML nodes"),
        ("5,000 nested flow lists", deep, "nests deeper than 64 levels"),
    ]
    for label, path, wanted in cases:
        for entry, argv in entry_points(str(path)):
            result, took = run(ledger, argv, env, tmp_path)
            extra = max(extra, took - baseline)
            if not (refused(result) and wanted in result.stderr and took - baseline < 1.0):
                bad.append(
                    f"{entry} {label}: {describe(result)} in {took:.2f}s (baseline "
                    f"{baseline:.2f}s); {result.stderr[-300:]!r}"
                )
    ledger.record(
        "#24.6 oversized configuration (15 MB anchor-free list, 80,000-node list under the "
        "size limit, 5,000 nested lists; inv -f and shatag -f)",
        "CONFIG_ERROR saying which limit (size, nodes, nesting), not 'billion laughs'; under "
        "1 s more than a run with a valid configuration",
        f"{2 * len(cases) - len(bad)}/{2 * len(cases)} refused; at most {extra:.2f}s over the "
        f"{baseline:.2f}s baseline" + (f"; failures: {'; '.join(bad)[:1500]}" if bad else ""),
        not bad,
    )
    assert not bad, "\n".join(bad)


def _docker_target(**over: Any) -> dict[str, Any]:
    return {"kind": "docker", "name": "rel24", "port": 18124, "container_port": 8080, **over}


def _config(targets: list[dict[str, Any]] | None = None, **over: Any) -> dict[str, Any]:
    env = {"repository_type": "canonical", "targets": targets or [_docker_target()]}
    return {"shatag": {"environments": {"h": env}, **over}}


LOOKALIKE = "p\u043ert"  # Cyrillic o
FULLWIDTH = "\uff18\uff10\uff18\uff10"  # 8080 in fullwidth digits


@pytest.mark.parametrize("entry", ["inv", "shatag"])
def test_issue24_lookalike_keys_escaped_and_ascii_numbers(
    ledger: Ledger, tmp_path: Path, entry: str
) -> None:
    env = _env(tmp_path)
    target_key = _config([{**_docker_target(), LOOKALIKE: 8080}])
    env_key = _config()
    env_key["shatag"]["environments"]["h"]["t\u0430rgets"] = []  # Cyrillic a
    fullwidth_port = _config([_docker_target(port=FULLWIDTH)])
    top_key = _config()
    top_key["shatag"]["st\u0430te_dir"] = "x"  # Cyrillic a
    cases: list[tuple[str, dict[str, Any], dict[str, str], str]] = [
        ("lookalike target key", target_key, {}, "'p\\u043ert'"),
        ("lookalike top-level key", top_key, {}, "'st\\u0430te_dir'"),
        ("lookalike environment key", env_key, {}, "'t\\u0430rgets'"),
        ("fullwidth-digit port", fullwidth_port, {}, "'\\uff18\\uff10\\uff18\\uff10'"),
        (
            "Arabic-Indic digits in registry_timeout_sec",
            _config(registry_timeout_sec="\u0663\u0660"),
            {},
            "'\\u0663\\u0660'",
        ),
        (
            "fullwidth INVOKE_SHATAG_REGISTRY_RETRIES",
            _config(),
            {"INVOKE_SHATAG_REGISTRY_RETRIES": "\uff13"},
            "'\\uff13'",
        ),
    ]
    bad: list[str] = []
    for i, (label, data, extra_env, wanted) in enumerate(cases):
        path = tmp_path / f"case-{i}.yaml"
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        argv = [*dict(entry_points(str(path)))[f"{entry} -f"][:-1], "history", "--env=h"]
        result, took = run(ledger, argv, {**env, **extra_env}, ROOT)
        line = next((ln for ln in result.stderr.splitlines() if ln.startswith("error: ")), "")
        if not (refused(result) and wanted in line and line.isascii()):
            bad.append(f"{label}: {describe(result)} in {took:.1f}s; {result.stderr[-300:]!r}")
    ledger.record(
        f"#24.6 lookalike Unicode keys and non-ASCII digits ({entry}; {len(cases)} inputs)",
        "CONFIG_ERROR; the key or value shown escaped (e.g. 'p\\u043ert'), the error line "
        "pure ASCII; fullwidth/Arabic-Indic digits refused as numbers",
        f"{len(cases) - len(bad)}/{len(cases)} as expected"
        + (f"; failures: {'; '.join(bad)[:1500]}" if bad else ""),
        not bad,
    )
    assert not bad, "\n".join(bad)
