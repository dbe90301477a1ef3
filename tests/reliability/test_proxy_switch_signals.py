"""The docker target through the proxy under signals and kills (issue 12, item 3).

A loopback request loop runs at 60 req/s (:mod:`tests.reliability._traffic`) while the real CLI
deploys and rolls back between the world's releases A and B, and a signal reaches it once it has
started its k-th docker call (a logging PATH shim, issue 27): SIGTERM, SIGINT and SIGHUP at
spread calls, and >= 25 SIGKILLs at random calls, each followed by the next deploy. Split from
``test_proxy_switch.py`` so the two files run on two pytest-xdist workers at once.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability._shim import PathShim
from tests.reliability._traffic import DockerSite, Load, docker_site, release_of
from tests.reliability.conftest import Built, Ledger, World, start_inv


@pytest.fixture
def releases(world: World) -> dict[str, Built]:
    return {"A": world.images[0], "B": world.images[1]}


@pytest.fixture
def site(world: World, ledger: Ledger, tmp_path: Path) -> Iterator[DockerSite]:
    with docker_site(world, tmp_path, ledger) as s:
        yield s


# -- item 3: signals and kills --------------------------------------------------------------


def _consistent(site: DockerSite, releases: dict[str, Built]) -> tuple[bool, str]:
    """History's current SHA, the container the proxy forwards to, and what answers agree."""
    serving = site.serving_container()
    sha = site.label(serving, "shatag.sha") if serving else ""
    with Load(site.port) as load:
        time.sleep(0.3)
    answers = list(load.releases)
    current = site.current_sha()
    running = site.app_containers(running_only=True)
    agree = (
        bool(serving)
        and sha == current
        and answers == [release_of(releases, current)]
        and running == [serving]
    )
    return agree, (
        f"history={release_of(releases, current)} proxy->{release_of(releases, sha)} "
        f"answers={answers} running={len(running)}"
    )


def _shimmed(site: DockerSite) -> PathShim:
    """Every docker call of the site's runs goes through a logging shim (issue 27): a fault
    is sent once the run has started its k-th docker call, never after a delay."""
    shim = PathShim(site.dir / "shim")
    site.extra_env = {"PATH": shim.env(site.env)["PATH"]}
    return shim


def _span(site: DockerSite, ledger: Ledger, releases: dict[str, Built], shim: PathShim) -> int:
    """The docker calls of a normal switch (deploy B then back to A: the larger), over which
    the signals are spread."""
    counts = []
    for built in (releases["B"], releases["A"]):
        shim.reset()
        assert site.deploy(ledger, built).returncode == 0
        counts.append(len(shim.calls()))
    return max(counts)


def _at_call(shim: PathShim, proc: subprocess.Popen[bytes], k: int) -> tuple[bool, str]:
    """Wait until the run has started its ``k``-th docker call (k = 0: it has started).
    Returns whether it is still running, and that call (``#k <words>``) for the report."""
    reached = shim.wait_calls(k, 120, lambda: proc.poll() is None)
    calls = shim.calls()
    if not k:
        where = "#0 (started)"
    elif len(calls) >= k:
        where = f"#{k} {calls[k - 1].split()[0]}"
    else:
        where = f"#{k} (the run made {len(calls)})"
    return reached and proc.poll() is None, where


def test_sigterm_sigint_sighup_complete_or_undo_the_switch(
    ledger: Ledger, site: DockerSite, releases: dict[str, Built]
) -> None:
    rng = random.Random(12)  # noqa: S311 -- reproducible points, not cryptography
    shim = _shimmed(site)
    assert site.deploy(ledger, releases["A"]).returncode == 0
    span = _span(site, ledger, releases, shim)
    current = releases["A"]
    rows: dict[str, list[str]] = {}
    problems: list[str] = []
    run = 0
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        for i in range(5):
            target = releases["B"] if current is releases["A"] else releases["A"]
            action = "deploy" if run % 2 == 0 else "rollback"
            # at the k-th docker call, spread up to past a normal switch's last call
            k = int(span * 1.3 * (i + rng.random()) / 5)
            with Load(site.port) as load:
                time.sleep(0.2)  # traffic before the run starts (a window, not a trigger)
                shim.reset()
                proc = start_inv(site, action, f"--sha={target.sha}", f"--env={site.env_name}")
                alive, where = _at_call(shim, proc, k)
                sent_at = time.monotonic()
                if alive:
                    # to the whole group on odd runs (as a CI runner does), else the process
                    if run % 2:
                        os.killpg(proc.pid, sig)
                    else:
                        os.kill(proc.pid, sig)
                out, err = proc.communicate(timeout=120)
                took = time.monotonic() - sent_at
                time.sleep(0.3)  # traffic after the run ends (a window, not a trigger)
            ledger.capture(
                f"{sig.name} {action}", out.decode(errors="replace") + err.decode(errors="replace")
            )
            ledger.count("faults_injected")
            run += 1
            agree, state = _consistent(site, releases)
            outcome = "done" if site.current_sha() == target.sha else "undone"
            interrupted = b"error: INTERRUPTED:" in err
            rows.setdefault(sig.name, []).append(
                f"{where}:{outcome if alive else 'finished first'}"
                f"{'(INTERRUPTED)' if interrupted else ''}/{load.failed} failed/{took:.1f}s"
            )
            if load.failed or not agree or took > 60 or site.journal_pending():
                problems.append(
                    f"{sig.name} {action} at call {where}: failed={load.failed} "
                    f"{dict(load.errors())} took {took:.1f}s {state} "
                    f"journal={site.journal_pending()} rc={proc.returncode} {err[-300:]!r}"
                )
            current = target if outcome == "done" else current
            if site.current_sha() != current.sha:
                current = (
                    releases["A"] if site.current_sha() == releases["A"].sha else releases["B"]
                )
    for name, items in rows.items():
        ledger.record(
            f"{name} at 5 spread points of deploy/rollback under 60 req/s",
            "switch completed or undone within 60 s; 0 failed requests; history, proxy and "
            "answers agree; no journal left",
            "docker call:outcome/failed requests/time to exit: " + ", ".join(items),
            not [p for p in problems if p.startswith(name)],
        )
    assert not problems, "\n".join(problems)


def test_sigkill_anywhere_keeps_the_service_answering(
    ledger: Ledger, site: DockerSite, releases: dict[str, Built]
) -> None:
    rng = random.Random(1212)  # noqa: S311
    shim = _shimmed(site)
    assert site.deploy(ledger, releases["A"]).returncode == 0
    span = _span(site, ledger, releases, shim)
    current = releases["A"]
    per_kill: list[int] = []
    problems: list[str] = []
    kills = 0
    runs = 0
    while kills < 27 and runs < 45:
        runs += 1
        target = releases["B"] if current is releases["A"] else releases["A"]
        action = "deploy" if runs % 2 else "rollback"
        k = rng.randint(0, span)  # killed once the run started its k-th docker call
        with Load(site.port) as load:
            time.sleep(0.2)  # traffic before the run starts (a window, not a trigger)
            shim.reset()
            proc = start_inv(site, action, f"--sha={target.sha}", f"--env={site.env_name}")
            alive, where = _at_call(shim, proc, k)
            if alive:
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate(timeout=60)
            ledger.capture(
                f"SIGKILL {action}", out.decode(errors="replace") + err.decode(errors="replace")
            )
            time.sleep(0.5)  # the service keeps answering with nobody in charge
            follow = releases["A"] if rng.random() < 0.5 else releases["B"]
            result = site.deploy(ledger, follow)  # the next command recovers
            time.sleep(0.3)
        ledger.count("kills_attempted")
        agree, state = _consistent(site, releases)
        if alive:
            kills += 1
            per_kill.append(load.failed)
            if load.failed == 0 and result.returncode == 0 and agree:
                ledger.count("kills_survived")
        if load.failed or result.returncode != 0 or not agree:
            problems.append(
                f"run {runs} {action} killed at call {where} (alive={alive}): failed={load.failed} "
                f"{dict(load.errors())}; next deploy rc={result.returncode} {state} "
                f"{result.stderr[-300:]}"
            )
        current = follow
    ledger.record(
        f"SIGKILL at {kills} random docker calls of deploy/rollback under 60 req/s, then the next "
        "deploy",
        ">= 25 kills of a live process; 0 failed requests through kill and recovery; the next "
        "deploy recovers (history, proxy and answers agree, one container running)",
        f"failed requests per kill: {per_kill}"
        + (f"; problems: {problems[:2]}" if problems else ""),
        not problems and kills >= 25,
    )
    assert not problems, "\n".join(problems)
    assert kills >= 25
