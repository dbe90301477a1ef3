"""Issue 14, item 9: no raw traceback, anywhere.

Real faults, each through the real CLI: stdout closed by the reader (``inv history --json | head
-1``), a history path that is a directory, a read-only state directory and a full one (small
tmpfs mounts, unmounted after), a full file system under the target files, and two environments
racing on one docker container. Each must end in ``error: CODE: …`` (and the JSON line where
stdout is open), change nothing it cannot finish, and print no traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shatag.ledger.history import HistoryRecord, HistoryStore
from tests.conftest import InvResult, inv_argv
from tests.reliability._issue14 import bounded_inv, traceback_in
from tests.reliability.conftest import Ledger, Site, Snapshot, World, describe, error_code

LIMIT = 120.0


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small tmpfs mounted at ``path`` for the ``with`` block (we are root), unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        check=True,
        timeout=30,
    )
    try:
        yield path
    finally:
        done = subprocess.run(["umount", str(path)], check=False, timeout=30, capture_output=True)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False, timeout=30)


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True, timeout=30)


def fill(path: Path) -> None:
    """Fill the file system holding ``path`` to the last byte (unbuffered writes)."""
    fd = os.open(path / ".filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)


def _clean(result: InvResult, codes: set[str], *, json_line: bool = True) -> bool:
    has_json = any('"error_code"' in line for line in result.stdout.splitlines())
    return (
        result.returncode not in (0, -9)
        and error_code(result) in codes
        and not traceback_in(result)
        and (has_json or not json_line)
    )


def test_issue14_history_into_closed_pipe(
    ledger: Ledger, make_site: Callable[..., Site], world: World
) -> None:
    site = make_site()
    store = HistoryStore(site.state, "rel")
    a = world.images[0]
    for i in range(600):  # well past a 64 KiB pipe buffer
        store.append(
            HistoryRecord(
                action="deploy", env="rel", sha=a.sha, digest=a.digest, result="ok", attempt=f"n{i}"
            )
        )
    producer = subprocess.Popen(
        site.argv("history", "--env=rel", "--json", "--limit=0"),
        env=site.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert producer.stdout is not None
    head = subprocess.run(
        ["head", "-1"], stdin=producer.stdout, capture_output=True, timeout=60, check=False
    )
    producer.stdout.close()  # as the shell does: only `head` holds the read end
    _, err_bytes = producer.communicate(timeout=60)
    err = err_bytes.decode("utf-8", "replace")
    ledger.capture("inv history --json | head -1", err)
    result = InvResult(producer.returncode, "", err)
    first = json.loads(head.stdout.decode().splitlines()[0])
    ok = (
        first.get("env") == "rel"
        and not traceback_in(result)
        and error_code(result) == "OUTPUT_CLOSED"
    )
    ledger.count("faults_injected")
    ledger.record(
        "#14.9a `inv history --json | head -1` (reader closes the pipe)",
        "the first JSON line reaches head; the writer stops with error: OUTPUT_CLOSED, "
        "no traceback",
        f"first line ok={first.get('env') == 'rel'}; {describe(result)}; "
        f"traceback={traceback_in(result)}",
        ok,
    )
    assert ok, err[-800:]


def test_issue14_state_dir_faults(
    ledger: Ledger, world: World, make_site: Callable[..., Site]
) -> None:
    a, b = world.images[0], world.images[1]
    outcomes: dict[str, str] = {}
    bad: list[str] = []

    def check(
        label: str,
        result: InvResult,
        codes: set[str],
        site: Site,
        before: Snapshot,
        *,
        failed_record: bool = False,
    ) -> None:
        ledger.count("faults_injected")
        after = site.snapshot()
        unchanged = (after.sdl, after.tfvars) == (before.sdl, before.tfvars)
        if failed_record:  # the attempt is recorded as failed; nothing else in history changed
            added = after.history_records()[len(before.history_records()) :]
            unchanged = unchanged and [r.get("result") for r in added] == ["failed"]
        else:
            unchanged = unchanged and after.history == before.history
        outcomes[label] = describe(result) + ("" if unchanged else ", CHANGED")
        if not (_clean(result, codes) and unchanged):
            bad.append(
                f"{label}: {describe(result)} unchanged={unchanged}: {result.stderr[-300:]!r}"
            )

    # 1. history path is a directory
    site = make_site()
    (site.state / "rel" / "history.jsonl").mkdir(parents=True)
    before = (site.sdl.read_text(), site.tfvars.read_text())
    for label, args in (
        ("history: history.jsonl is a directory", ["history", "--env=rel"]),
        ("deploy: history.jsonl is a directory", ["deploy", f"--sha={a.sha}", "--env=rel"]),
        ("rollback: history.jsonl is a directory", ["rollback", f"--sha={a.sha}", "--env=rel"]),
    ):
        r = bounded_inv(ledger, site.argv(*args), site.env, LIMIT)
        ledger.count("faults_injected")
        same = (site.sdl.read_text(), site.tfvars.read_text()) == before
        outcomes[label] = describe(r) + ("" if same else ", CHANGED")
        if not (_clean(r, {"STATE_ERROR"}) and same):
            bad.append(f"{label}: {describe(r)}: {r.stderr[-300:]!r}")

    # 2. read-only state dir (a tmpfs remounted read-only: root cannot write it either)
    site = make_site()
    with tmpfs(site.state, "1m"):
        assert site.deploy(ledger, a).returncode == 0
        before_snap = site.snapshot()
        remount(site.state, "ro")
        check(
            "deploy: state dir read-only",
            site.deploy(ledger, b, timeout=LIMIT),
            {"STATE_ERROR"},
            site,
            before_snap,
        )
        check(
            "rollback: state dir read-only",
            site.rollback(ledger, b, timeout=LIMIT),
            {"STATE_ERROR"},
            site,
            before_snap,
        )
        listing = site.inv(ledger, "history", "--env=rel")
        outcomes["history: state dir read-only"] = describe(listing)
        if listing.returncode != 0 or traceback_in(listing):
            bad.append(f"history read-only: {describe(listing)}")
        remount(site.state, "rw")

    # 3. full state dir
    site = make_site()
    with tmpfs(site.state, "256k"):
        assert site.deploy(ledger, a).returncode == 0
        before_snap = site.snapshot()
        fill(site.state)
        check(
            "deploy: state dir full",
            site.deploy(ledger, b, timeout=LIMIT),
            {"STATE_ERROR"},
            site,
            before_snap,
        )
        (site.state / ".filler").unlink()

    # 4. full file system under the target files
    site = make_site()
    targets = site.dir / "targets"
    with tmpfs(targets, "256k"):
        for path in (site.sdl, site.tfvars):
            moved = targets / path.name
            moved.write_text(path.read_text())
            path.unlink()
            path.symlink_to(moved)
        spec = json.loads(site.config.read_text())
        for t in spec["shatag"]["environments"]["rel"]["targets"]:
            t["path"] = str(targets / Path(t["path"]).name)
        site.config.write_text(json.dumps(spec))
        assert site.deploy(ledger, a).returncode == 0
        before_snap = site.snapshot()
        fill(targets)
        check(
            "deploy: target file system full",
            site.deploy(ledger, b, timeout=LIMIT),
            {"DEPLOY_FAILED"},
            site,
            before_snap,
            failed_record=True,
        )
        (targets / ".filler").unlink()

    ledger.record(
        "#14.9b state dir unusable (history.jsonl a directory, read-only, full) and a full "
        "target file system (tmpfs mounts)",
        "STATE_ERROR before anything changes (DEPLOY_FAILED with targets restored for the full "
        "target fs); error line + JSON line, no traceback; history still readable read-only",
        "; ".join(f"{k}: {v}" for k, v in outcomes.items()),
        not bad,
    )
    assert not bad, "\n".join(bad)


@pytest.fixture
def container_name() -> Iterator[str]:
    name = f"rel14-race-{uuid.uuid4().hex[:6]}"
    yield name

    # Everything the switch made under this unique prefix: the app container of each attempt,
    # the proxy, the parked old one, then the proxy's network.
    def listed(*argv: str) -> list[str]:
        out = subprocess.run(
            ["docker", *argv, "--filter", f"name=^{name}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return out.stdout.split()

    containers = listed("ps", "-aq")
    if containers:
        subprocess.run(
            ["docker", "rm", "-f", *containers], capture_output=True, timeout=60, check=False
        )
    networks = listed("network", "ls", "-q")
    if networks:
        subprocess.run(
            ["docker", "network", "rm", *networks], capture_output=True, timeout=60, check=False
        )


def test_issue14_two_environments_race_on_one_container(
    ledger: Ledger, world: World, tmp_path: Path, container_name: str
) -> None:
    from shatag._testing.localregistry import free_port

    port = free_port()
    argvs = []
    for env_name in ("left", "right"):
        config = tmp_path / f"{env_name}.yaml"
        target = {
            "kind": "docker",
            "name": container_name,
            "port": port,
            "container_port": 8080,
            "health_path": "/healthz",
            "health_timeout_sec": 20,
            "watch_sec": 1,  # the post-switch watch (5 s by default) is not what this tests
        }
        config.write_text(
            json.dumps(
                {
                    "shatag": {
                        "state_dir": str(tmp_path / f"state-{env_name}"),
                        "environments": {env_name: {"targets": [target]}},
                    }
                }
            )
        )
        argvs.append((config, env_name))
    results: list[InvResult] = []
    images = world.images
    for round_ in range(4):
        procs = [
            subprocess.Popen(
                inv_argv(
                    "-f",
                    str(cfg),
                    "deploy",
                    f"--sha={images[(round_ + i) % 3].sha}",
                    f"--env={name}",
                ),
                env=world.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i, (cfg, name) in enumerate(argvs)
        ]
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            ledger.capture("racing deploy", out + err)
            results.append(InvResult(proc.returncode, out, err))
    ledger.count("faults_injected", len(results))
    tracebacks = sum(1 for r in results if traceback_in(r))
    uncoded = [r for r in results if r.returncode != 0 and not error_code(r)]
    codes = sorted({error_code(r) or "ok" for r in results})
    running = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Running}}", container_name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout.strip()
    ok = tracebacks == 0 and not uncoded
    ledger.record(
        f"#14.9c two environments racing on one docker container ({len(results)} deploys)",
        "every run exits 0 or with error: CODE (DEPLOY_FAILED), never a traceback "
        "(DockerException from the undo path)",
        f"tracebacks={tracebacks}; uncoded failures={len(uncoded)}; outcomes {codes}; "
        f"container running after: {running or 'absent'}",
        ok,
    )
    assert ok, [r.stderr[-600:] for r in results if traceback_in(r) or r in uncoded]
