"""The docker target through the proxy under traffic (issue 12).

A loopback request loop runs at 60 req/s (:mod:`tests.reliability._traffic`) while the real CLI
deploys and rolls back; every figure below comes from counting its answers:

* item 2 -- 5 rounds each of: deploy B, rollback to A, deploy of a release whose HEALTHCHECK
  fails, deploy of one without HEALTHCHECK whose ``health_path`` is 404, re-deploy of the serving
  SHA: 0 failed requests, 0 answered by a release that failed its gate, the re-deploy a no-op;
* ``proxy: false``: the stop-then-start switch, its measured gap (documented, not gated);
* item 3 -- signals and kills: ``test_proxy_switch_signals.py``;
* item 4 -- names taken by containers and networks shatag did not create;
* item 5 -- env, secrets and volumes reach the container, secret values nowhere else.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests._gitremote import GitRemote
from tests.conftest import EXAMPLE, App, InvResult, inv_argv, new_app
from tests.reliability._traffic import (
    DockerSite,
    Load,
    docker,
    docker_site,
    make_docker_site,
)
from tests.reliability.conftest import Built, Ledger, World, error_code, rinv

ROUNDS = 5
BAD_HC = "bad-hc"
BAD_404 = "bad-404"


@pytest.fixture(scope="module")
def releases(
    world: World, ledger: Ledger, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Built]:
    """A and B (the world's), plus two releases that must never pass the gate."""
    root = tmp_path_factory.mktemp("px-releases")
    app = new_app(root / "app")
    out = {"A": world.images[0], "B": world.images[1]}
    original = (EXAMPLE / "Dockerfile").read_text()
    # HEALTHCHECK fails (it asks for a page that is not there); health_path /healthz answers.
    out[BAD_HC] = _build(
        world, ledger, app, BAD_HC, original.replace("/healthz", "/no-such-page"), healthz=True
    )
    # No HEALTHCHECK at all, and /healthz is 404.
    plain = "\n".join(
        ln for ln in original.splitlines() if not ln.startswith(("HEALTHCHECK", "  CMD"))
    )
    out[BAD_404] = _build(world, ledger, app, BAD_404, plain + "\n", healthz=False)
    return out


def _build(
    world: World, ledger: Ledger, app: App, release: str, dockerfile: str, *, healthz: bool
) -> Built:
    (app.path / "Dockerfile").write_text(dockerfile)
    health = app.path / "www" / "healthz"
    if healthz:
        health.write_text("ok\n")
    else:
        health.unlink(missing_ok=True)
    sha = app.commit(json.dumps({"release": release}), release)
    env = {**world.env, "INVOKE_SHATAG_CONTEXT": str(app.path)}
    result = rinv(ledger, ["build", f"--sha={sha}", "--branch=main"], env)
    assert result.returncode == 0, result.stderr
    return Built(sha, result.record["image_digest"], world.root / "metadata" / f"{sha}.json")


@pytest.fixture
def site(world: World, ledger: Ledger, tmp_path: Path) -> Iterator[DockerSite]:
    with docker_site(world, tmp_path, ledger) as s:
        yield s


# -- item 2: figures under traffic ----------------------------------------------------------


def test_switch_under_traffic_never_fails_a_request(
    ledger: Ledger, site: DockerSite, releases: dict[str, Built]
) -> None:
    a, b = releases["A"], releases["B"]
    first = site.deploy(ledger, a)
    assert first.returncode == 0, first.stderr
    scenarios: dict[str, tuple[Callable[[], InvResult], str, bool]] = {
        "deploy B": (lambda: site.deploy(ledger, b), "B", True),
        "rollback to A": (lambda: site.rollback(ledger, a), "A", True),
        "deploy of a release whose HEALTHCHECK fails": (
            lambda: site.deploy(ledger, releases[BAD_HC]),
            "A",
            False,
        ),
        "deploy of a release without HEALTHCHECK whose health_path is 404": (
            lambda: site.deploy(ledger, releases[BAD_404]),
            "A",
            False,
        ),
        "re-deploy of the serving SHA": (lambda: site.deploy(ledger, a), "A", True),
    }
    figures: dict[str, list[Load]] = {k: [] for k in scenarios}
    problems: list[str] = []
    noop_same: list[bool] = []
    for rnd in range(ROUNDS):
        for scenario, (action, serves, succeeds) in scenarios.items():
            before = site.serving_container()
            with Load(site.port) as load:
                time.sleep(0.3)
                result = action()
                time.sleep(0.5)
            figures[scenario].append(load)
            if (result.returncode == 0) != succeeds:
                problems.append(
                    f"round {rnd} {scenario}: {result.returncode} {result.stderr[-300:]}"
                )
            if not succeeds and error_code(result) != "DEPLOY_FAILED":
                problems.append(f"round {rnd} {scenario}: code {error_code(result)!r}")
            if load.releases and list(load.releases)[-1] != serves:
                problems.append(f"round {rnd} {scenario}: ends served by {load.releases}")
            if scenario.startswith("re-deploy"):
                record = result.record
                noop_same.append(
                    site.serving_container() == before
                    and record.get("unchanged") == [f"docker:{site.name}"]
                )
    stray = site.app_containers()
    if stray != [site.serving_container()]:
        problems.append(f"containers left: {stray} (serving {site.serving_container()})")
    for scenario, loads in figures.items():
        sent = sum(x.sent for x in loads)
        failed = sum(x.failed for x in loads)
        bad = sum(x.answered_by(BAD_HC) + x.answered_by(BAD_404) for x in loads)
        rate = min(x.achieved_rate for x in loads)
        gap = max(x.longest_gap for x in loads)
        extra = ""
        ok = failed == 0 and bad == 0 and rate >= 50
        if scenario.startswith("re-deploy"):
            extra = f"; same container and recorded unchanged in {sum(noop_same)}/{ROUNDS}"
            ok = ok and all(noop_same) and len(noop_same) == ROUNDS
        errors = sum((x.errors() for x in loads), start=type(loads[0].errors())())
        ledger.record(
            f"proxy switch under traffic: {scenario} ({ROUNDS} rounds)",
            "0 failed requests at >= 50 req/s; 0 answered by a release that failed its gate",
            f"{sent} requests at >= {rate:.0f} req/s: {failed} failed"
            + (f" {dict(errors)}" if failed else "")
            + f", {bad} answered by a failed release, longest gap between answers "
            f"{gap * 1000:.0f} ms{extra}",
            ok and not problems,
        )
    assert not problems, problems
    for scenario, loads in figures.items():
        assert sum(x.failed for x in loads) == 0, (scenario, [x.errors() for x in loads])
        assert min(x.achieved_rate for x in loads) >= 50, scenario
        assert sum(x.answered_by(BAD_HC) + x.answered_by(BAD_404) for x in loads) == 0
    assert all(noop_same)
    assert len(noop_same) == ROUNDS


def test_proxy_false_keeps_the_stop_then_start_switch_and_its_gap(
    ledger: Ledger, world: World, releases: dict[str, Built], tmp_path: Path
) -> None:
    site = make_docker_site(world, tmp_path, ledger, proxy=False)
    try:
        assert site.deploy(ledger, releases["A"]).returncode == 0
        assert docker("inspect", "--format", "{{.Name}}", site.name) == f"/{site.name}"
        loads = []
        for _ in range(3):
            actions: tuple[Callable[[], InvResult], ...] = (
                lambda: site.deploy(ledger, releases["B"]),
                lambda: site.rollback(ledger, releases["A"]),
            )
            for action in actions:
                with Load(site.port) as load:
                    time.sleep(0.3)
                    result = action()
                    time.sleep(0.5)
                assert result.returncode == 0, result.stderr
                loads.append(load)
        failed = [x.failed for x in loads]
        gaps = [x.longest_gap for x in loads]
        ledger.record(
            "proxy: false (stop, then start on the same port): 3 rounds of deploy B + rollback A",
            "works as before issue 12; its gap is measured and documented, not gated",
            f"{sum(x.sent for x in loads)} requests at 60 req/s: failed per switch {failed}; "
            f"longest gap per switch {min(gaps) * 1000:.0f}-{max(gaps) * 1000:.0f} ms",
            True,
        )
    finally:
        site.cleanup()


# -- item 4: ownership ----------------------------------------------------------------------


def test_names_shatag_would_use_but_did_not_create_are_refused_and_left_alone(
    ledger: Ledger, site: DockerSite, releases: dict[str, Built], world: World
) -> None:
    image = f"{world.canonical}:{releases['A'].sha}"
    seen: list[str] = []
    ok = True
    for name, kind in (
        (site.name, "container"),
        (site.name + "-proxy", "container"),
        (site.name + "-shatag-prev", "container"),
        (site.name + "-shatag-net", "network"),
    ):
        if kind == "container":
            docker("pull", "--quiet", releases["A"].pinned(world.canonical))
            docker("create", "--name", name, "--label", "owner=someone-else", image)
            before = docker("inspect", "--format", "{{.Id}}", name)
        else:
            before = docker("network", "create", "--label", "owner=someone-else", name)
        result = site.deploy(ledger, releases["A"])
        after = docker(kind, "inspect", "--format", "{{.Id}}", name, check=False)
        code = error_code(result)
        fine = result.returncode != 0 and code == "NOT_OWNED" and after == before.strip()
        fine = fine and name in result.stderr and not site.app_containers()
        kept = "untouched" if after == before.strip() else "CHANGED"
        shown = name.replace(site.name, "<name>")
        seen.append(f"{shown}: {code or 'exit ' + str(result.returncode)}, {kept}")
        ok = ok and fine
        docker(kind, "rm", name, check=False)
    # two environments with one container name: refused when the config is read
    cfg = json.loads(site.config.read_text())
    envs = cfg["shatag"]["environments"]
    envs["other"] = json.loads(json.dumps(envs[site.env_name]))
    twice = site.config.with_name("twice.yaml")
    twice.write_text(json.dumps(cfg))
    result = rinv(
        ledger, ["-f", str(twice), "deploy", f"--sha={releases['A'].sha}", "--env=px"], site.env
    )
    config_ok = error_code(result) == "CONFIG_ERROR" and "configured twice" in result.stderr
    ledger.record(
        "names shatag would use, taken by objects it did not create",
        "NOT_OWNED, the object untouched; two environments with one container name: "
        "CONFIG_ERROR before anything runs",
        "; ".join(seen) + f"; same name in two environments: {error_code(result)}",
        ok and config_ok,
    )
    assert ok, seen
    assert config_ok, result.stderr


# -- item 5: env, secrets, volumes ----------------------------------------------------------


def test_env_secrets_and_volumes_reach_the_app_and_secrets_nothing_else(
    ledger: Ledger, world: World, releases: dict[str, Built], tmp_path: Path
) -> None:
    secret = f"canaryAppSecret-{uuid.uuid4().hex}"
    volume = f"shatag-rel-vol-{uuid.uuid4().hex[:8]}"
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "app.conf").write_text("from-the-host\n")
    conf.chmod(0o755)
    (conf / "app.conf").chmod(0o644)
    site = make_docker_site(
        world,
        tmp_path,
        ledger,
        env={"APP_MODE": "production", "WORKERS": 3},
        secrets=["APP_TOKEN"],
        volumes=[f"{volume}:/data", f"{conf}:/conf:ro"],
    )
    site.extra_env["APP_TOKEN"] = secret
    try:
        missing = rinv(
            ledger,
            ["-f", str(site.config), "deploy", f"--sha={releases['A'].sha}", "--env=px"],
            world.env,
        )
        result = site.deploy(ledger, releases["A"])
        assert result.returncode == 0, result.stderr
        container = site.serving_container()
        env_seen = docker("exec", container, "/bin/busybox", "env")
        mounted = docker("exec", container, "/bin/busybox", "cat", "/conf/app.conf")
        mounts = docker("inspect", "--format", "{{json .Mounts}}", container)
        labels = docker("inspect", "--format", "{{json .Config.Labels}}", container)
        argv_seen = result.stdout + result.stderr + json.dumps(site.history())
        files = [*site.state.rglob("*"), *site.runtime.rglob("*")]
        state_files = b"".join(p.read_bytes() for p in files if p.is_file())
        ok = (
            "APP_MODE=production" in env_seen
            and "WORKERS=3" in env_seen
            and f"APP_TOKEN={secret}" in env_seen
            and mounted == "from-the-host"
            and volume in mounts
            and secret not in labels
            and secret not in argv_seen
            and secret.encode() not in state_files
            and error_code(missing) == "CONFIG_ERROR"
            and "APP_TOKEN" in missing.stderr
        )
        ledger.record(
            "docker target env, secrets and volumes",
            "env and secret reach the app; named volume and read-only bind mount mounted; the "
            "secret's value in no output, history, state file or label; a missing secret is "
            "CONFIG_ERROR naming the variable",
            f"env {'ok' if 'APP_MODE=production' in env_seen else 'MISSING'}, secret in app "
            f"{'yes' if secret in env_seen else 'NO'}, bind mount {mounted!r}, volume "
            f"{'mounted' if volume in mounts else 'MISSING'}, secret in labels/output/history/"
            f"state: {secret in labels}/{secret in argv_seen}/{secret.encode() in state_files}; "
            f"missing secret: {error_code(missing)}",
            ok,
        )
        assert ok
    finally:
        site.cleanup()
        docker("volume", "rm", volume, check=False)


# -- issue 23, item 6: a runner killed after its switch, finished from another clone --------


def test_a_switch_killed_before_its_record_is_finished_from_another_clone_under_load(
    ledger: Ledger, site: DockerSite, releases: dict[str, Built], tmp_path: Path
) -> None:
    """The git ledger, two clones of one app repo with a bare remote, the proxy-gated switch
    under 60 req/s. Runner 1 is SIGKILLed while it pushes its record of B (the remote's hook
    holds that push and creates a file): the proxy already forwards to B. Runner 2 (the other
    clone) finds B running and healthy, records it ``ok`` with a note naming the attempt, and
    retires A's container; no request fails throughout."""
    a, b = releases["A"], releases["B"]
    cfg = json.loads(site.config.read_text())
    cfg["shatag"] |= {"state_backend": "git", "state_remote": "origin"}
    site.config.write_text(json.dumps(cfg))
    (tmp_path / "app").mkdir()
    remote = GitRemote(tmp_path / "app", "app.git")
    one, two = remote.clone(), remote.clone()
    args = ["-f", str(site.config), "deploy", f"--env={site.env_name}"]
    assert rinv(ledger, [*args, f"--sha={a.sha}"], site.env, cwd=one).returncode == 0
    pushed, release = tmp_path / "record-pushed", tmp_path / "release"
    remote.hook(
        f'while read old new ref; do [ "$ref" = refs/shatag/{site.env_name} ] || continue\n'
        f"  touch {pushed}\n"
        f"  while [ ! -f {release} ]; do sleep 0.05; done; exit 1\n"
        "done; exit 0\n"
    )
    with Load(site.port) as load:
        proc = subprocess.Popen(
            inv_argv(*args, f"--sha={b.sha}"),
            cwd=one,
            env=site.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while not pushed.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        killed = pushed.exists()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        (remote.bare / "hooks" / "pre-receive").unlink()
        release.touch()  # the held push is refused: B's record never lands
        left = sorted(site.app_containers())
        started = time.monotonic()
        nxt = rinv(ledger, [*args, f"--sha={b.sha}"], site.env, cwd=two)
        took = time.monotonic() - started
    rows = rinv(
        ledger,
        ["-f", str(site.config), "history", f"--env={site.env_name}", "--json", "--limit=0"],
        site.env,
        cwd=two,
    ).records
    recovered = [str(n) for n in nxt.record.get("recovered") or []] if nxt.returncode == 0 else []
    serving = site.serving_container()
    ok = (
        killed
        and len(left) == 2  # A (draining) and B (serving): runner 1 never retired A
        and nxt.returncode == 0
        and bool(recovered)
        and recovered[0].startswith("finished attempt ")
        and [(r["sha"], r["result"], r["error_code"]) for r in rows[1:3]]
        == [(b.sha, "ok", ""), (a.sha, "ok", "")]
        and "interrupted after its apply" in rows[1].get("note", "")
        and site.app_containers() == [serving]
        and site.label(serving, "shatag.sha") == b.sha
        and load.failed == 0
        and set(remote.refs()) == {f"refs/shatag/{site.env_name}"}
    )
    ledger.record(
        "git ledger, proxy under 60 req/s: runner 1 SIGKILLed while pushing its record of B "
        "(held by the remote's hook), runner 2 (another clone) deploys next",
        "B found running and healthy: recorded ok with a note naming the killed attempt, A's "
        "container retired, 0 failed requests, no journal left",
        f"containers after the kill: {len(left)}; next: rc={nxt.returncode} in {took:.1f}s, "
        f"recovered={recovered[:1]}; history: "
        + ", ".join(f"{r['sha'][:7]} {r['result']} {r['error_code']}".strip() for r in rows[:3])
        + f"; {load.failed} failed of {len(load.results)} requests",
        ok,
    )
    assert ok, (nxt.stderr[-600:], rows[:3], left, dict(load.errors()))
