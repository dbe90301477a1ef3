"""The post-switch watch and the drain's bound of the docker target (issue 23, item 4).

Real engine, registry and Caddy, traffic from :class:`tests.reliability._traffic.Load`:

* a release that exits a few seconds after passing its health gate, and one that restart-loops,
  are switched back within ``watch_sec``: ``DEPLOY_FAILED`` with the reason, history records the
  failure, traffic is back on the old release, 0 requests failed; a rollback afterwards works;
* a streaming response still running on the old release at ``drain_timeout_sec`` is cut, and
  the client sees an error (curl exits non-zero), never a clean end.
"""

from __future__ import annotations

import json
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, App, new_app
from tests.reliability._traffic import DockerSite, Load, docker, docker_site, make_docker_site
from tests.reliability.conftest import Built, Ledger, World, error_code, rinv

_ORIGINAL = (EXAMPLE / "Dockerfile").read_text()
_HTTPD = '["/bin/busybox", "httpd", "-f", "-v", "-p", "8080", "-h", "/www"]'
# Two streams, one line a second for 40 s. The CGIs write their own status line, so busybox
# httpd passes the bytes through as they are. "chunked": what HTTP/1.1 streaming servers send.
# "close-delimited": neither a length nor chunks, the body ends where the server closes the
# connection (HTTP/1.0 style, CGI) -- a plain kill of the old release reads as a clean end there.
_STREAMS = {
    "chunked": r"""#!/bin/busybox sh
printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n'
i=0
while [ "$i" -lt 40 ]; do
  printf '8\r\nline %02d\n\r\n' "$i"
  /bin/busybox sleep 1
  i=$((i + 1))
done
printf '0\r\n\r\n'
""",
    "close-delimited": r"""#!/bin/busybox sh
printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n'
i=0
while [ "$i" -lt 40 ]; do
  printf 'line %02d\n' "$i"
  /bin/busybox sleep 1
  i=$((i + 1))
done
""",
}


def _crashing(after_sec: float) -> str:
    """The example's Dockerfile, its server exiting ``after_sec`` after it started."""
    script = f"/bin/busybox httpd -f -p 8080 -h /www & /bin/busybox sleep {after_sec:g}; exit 3"
    entry = json.dumps(["/bin/busybox", "sh", "-c", script])
    return _ORIGINAL.replace(f"ENTRYPOINT {_HTTPD}", f"ENTRYPOINT {entry}")


@pytest.fixture(scope="module")
def releases(
    world: World, ledger: Ledger, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Built]:
    assert f"ENTRYPOINT {_HTTPD}" in _ORIGINAL  # what _crashing() rewrites
    app = new_app(tmp_path_factory.mktemp("watch-releases") / "app")
    (app.path / "www" / "healthz").write_text("ok\n")
    (app.path / "www" / "cgi-bin").mkdir()
    for framing, script in _STREAMS.items():
        cgi = app.path / "www" / "cgi-bin" / framing
        cgi.write_text(script)
        cgi.chmod(0o755)
    return {
        "A": _build(world, ledger, app, "A", _ORIGINAL),
        "B": _build(world, ledger, app, "B", _ORIGINAL),
        # the app: it exits 3 s after it started, well after passing its gate
        "crash": _build(world, ledger, app, "crash", _crashing(3)),
        # serves ~1.5 s, exits, is restarted by the engine, exits again...
        "loop": _build(world, ledger, app, "loop", _crashing(1.5)),
    }


def _build(world: World, ledger: Ledger, app: App, release: str, dockerfile: str) -> Built:
    (app.path / "Dockerfile").write_text(dockerfile)
    sha = app.commit(json.dumps({"release": release}), release)
    env = {**world.env, "INVOKE_SHATAG_CONTEXT": str(app.path)}
    result = rinv(ledger, ["build", f"--sha={sha}", "--branch=main"], env)
    assert result.returncode == 0, result.stderr
    return Built(sha, result.record["image_digest"], world.root / "metadata" / f"{sha}.json")


@pytest.fixture
def site(world: World, ledger: Ledger, tmp_path: Path) -> Iterator[DockerSite]:
    with docker_site(world, tmp_path, ledger, watch_sec=6, drain_timeout_sec=4) as s:
        yield s


@pytest.mark.parametrize("bad", ["crash", "loop"])
def test_a_release_that_fails_after_its_gate_is_switched_back(
    ledger: Ledger, site: DockerSite, releases: dict[str, Built], bad: str
) -> None:
    assert site.deploy(ledger, releases["A"]).returncode == 0
    old = site.serving_container()
    with Load(site.port) as load:
        time.sleep(0.3)
        result = site.deploy(ledger, releases[bad])
        time.sleep(1.0)
    last = site.history()[-1]
    observed = (
        f"{result.returncode} {error_code(result)}; history {last.get('result')} "
        f"{last.get('error_code')}; {load.sent} requests at {load.achieved_rate:.0f} req/s, "
        f"{load.failed} failed {dict(load.errors())}; served by {dict(load.releases)}"
    )
    passed = (
        result.returncode != 0
        and error_code(result) == "DEPLOY_FAILED"
        and load.failed == 0
        and site.serving_container() == old
    )
    ledger.record(
        f"post-switch watch: a release that {'exits 3 s' if bad == 'crash' else 'restart-loops'}"
        " after passing its gate, under 60 req/s",
        "DEPLOY_FAILED with the reason, history failed, traffic back on A, 0 failed requests",
        observed,
        passed,
    )
    assert result.returncode != 0, result.stderr
    assert error_code(result) == "DEPLOY_FAILED", result.stderr
    assert "within 6s of taking traffic (watch_sec)" in result.stderr, result.stderr
    assert "moved back to " + old in result.stderr
    assert last["result"] == "failed", last
    assert last["error_code"] == "DEPLOY_FAILED", last
    assert last["sha"] == releases[bad].sha
    assert "watch_sec" in last["error"]
    assert site.current_sha() == releases["A"].sha
    assert site.serving_container() == old
    assert site.app_containers() == [old]
    assert load.failed == 0, load.errors()
    answered = [release for _, ok, release in load.results if ok]
    assert answered[-1] == "A", load.releases  # the bad one served until it failed, then A
    assert load.achieved_rate >= 50
    # the rollback path works as before: to B, then back to A
    assert site.deploy(ledger, releases["B"]).returncode == 0
    back = site.rollback(ledger, releases["A"])
    assert back.returncode == 0, back.stderr
    assert site.current_sha() == releases["A"].sha
    assert [r["result"] for r in site.history()][-2:] == ["ok", "ok"]


@pytest.mark.parametrize("framing", sorted(_STREAMS))
def test_a_stream_cut_by_the_drain_bound_ends_in_an_error(
    ledger: Ledger, site: DockerSite, releases: dict[str, Built], framing: str
) -> None:
    assert site.deploy(ledger, releases["A"]).returncode == 0
    url = f"http://127.0.0.1:{site.port}/cgi-bin/{framing}"
    with subprocess.Popen(
        ["curl", "-sS", "--no-buffer", "--max-time", "120", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,  # unbuffered: what readline() does not take is left for communicate()
    ) as curl:
        assert curl.stdout is not None
        # The event: the stream's first line reached the client, so it is running on A.
        ready, _, _ = select.select([curl.stdout], [], [], 30.0)
        first = curl.stdout.readline().decode() if ready else ""
        assert first.startswith("line 00"), (first, curl.poll())
        started = time.monotonic()
        result = site.deploy(ledger, releases["B"])
        took = time.monotonic() - started
        raw_out, raw_err = curl.communicate(timeout=120)
    out, err = raw_out.decode(errors="replace"), raw_err.decode(errors="replace")
    lines = [first, *out.splitlines()]
    ledger.record(
        f"drain bound: a 40 s {framing} stream on the old release, drain_timeout_sec 4",
        "the deploy waits about watch + drain bound, then the client sees an error",
        f"deploy rc {result.returncode} in {took:.1f}s; curl rc {curl.returncode} after "
        f"{len(lines)} of 40 lines ({err.strip()[-80:]})",
        result.returncode == 0 and curl.returncode != 0 and len(lines) < 40,
    )
    assert result.returncode == 0, result.stderr
    assert "draining" in result.stderr, result.stderr
    assert "(drain_timeout_sec): cut (1 reset)" in result.stderr, result.stderr
    assert curl.returncode != 0, (curl.returncode, err, len(lines))
    assert 0 < len(lines) < 40, lines
    assert took < 6 + 4 + 15, took  # the watch, the bound, and the rest of a deploy


def test_proxy_false_watches_too_and_restarts_the_old_release(
    ledger: Ledger, world: World, releases: dict[str, Built], tmp_path: Path
) -> None:
    """``proxy: false``: the old container was stopped to free the port, so a failed watch
    removes the new one and starts the old one again (a second short gap, not a crash loop)."""
    site = make_docker_site(world, tmp_path, ledger, proxy=False, watch_sec=6)
    try:
        assert site.deploy(ledger, releases["A"]).returncode == 0
        with Load(site.port) as load:
            time.sleep(0.3)
            result = site.deploy(ledger, releases["crash"])
            time.sleep(1.0)
        ledger.record(
            "post-switch watch, proxy: false: a release that exits 3 s after passing its gate",
            "DEPLOY_FAILED, the old container started again (gaps are proxy: false's, measured)",
            f"{result.returncode} {error_code(result)}; {load.sent} requests, {load.failed} "
            f"failed {dict(load.errors())}; served by {dict(load.releases)}",
            error_code(result) == "DEPLOY_FAILED",
        )
        assert error_code(result) == "DEPLOY_FAILED", result.stderr
        assert "within 6s (watch_sec)" in result.stderr, result.stderr
        assert "the previous container restored" in result.stderr
        last = site.history()[-1]
        assert last["result"] == "failed", last
        assert last["sha"] == releases["crash"].sha
        assert site.label(site.name, "shatag.sha") == releases["A"].sha
        assert docker_state(site.name) == "running"
        answered = [release for _, ok, release in load.results if ok]
        assert answered[-1] == "A", load.releases
        back = site.deploy(ledger, releases["B"])
        assert back.returncode == 0, back.stderr
        assert site.rollback(ledger, releases["A"]).returncode == 0
        assert site.label(site.name, "shatag.sha") == releases["A"].sha
    finally:
        site.cleanup()


def docker_state(name: str) -> str:
    return docker("inspect", "--format", "{{.State.Status}}", name)
