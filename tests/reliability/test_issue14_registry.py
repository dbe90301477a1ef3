"""Issue 14, item 5: a registry that trickles its answers cannot hold a deploy or a build.

The registry is the real ``docker-registry``; in front of it a loopback proxy
(:class:`TamperProxy`) trickles every manifest body one byte per 0.5 s and leaves the digest
header out of HEAD answers (as some registries do), so the client has to read the body. Each
socket read then returns well within ``registry_timeout_sec``; only a deadline on the whole
request stops it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from shatag._testing.localregistry import LocalRegistry
from tests.reliability._issue14 import TamperProxy, bounded_inv
from tests.reliability.conftest import Ledger, Site, World, describe, error_code

HANG_LIMIT = 45.0  # seconds a run may take before the test calls it hung and kills it


@pytest.fixture
def trickle(registry: LocalRegistry) -> Iterator[TamperProxy]:
    proxy = TamperProxy(registry.address).start()
    proxy.add(r"^HEAD /v2/.*/manifests/", strip_digest=True)
    proxy.add(r"^GET /v2/.*/manifests/", trickle_sec=0.5)
    yield proxy
    proxy.stop()


def _via(site: Site, world: World, address: str, **settings: str) -> Site:
    name = world.canonical.split("/", 1)[1]
    site.extra_env = {
        "INVOKE_SHATAG_CANONICAL_REPOSITORY": f"{address}/{name}",
        "INVOKE_SHATAG_STAGING_REPOSITORY": f"{address}/{name}-staging",
        **{f"INVOKE_SHATAG_{k.upper()}": v for k, v in settings.items()},
    }
    return site


def test_issue14_registry_trickle_deadline_fault_proxy(
    ledger: Ledger, world: World, make_site: Callable[..., Site], trickle: TamperProxy
) -> None:
    a = world.images[0]
    site = _via(make_site(), world, trickle.address, registry_timeout_sec="2", registry_retries="1")
    before = site.snapshot()
    ledger.count("faults_injected")
    started = time.monotonic()
    deploy = bounded_inv(
        ledger, site.argv("deploy", f"--sha={a.sha}", "--env=rel"), site.env, HANG_LIMIT
    )
    deploy_sec = time.monotonic() - started
    sha = world.app.commit('{"release": "trickle"}', "trickle")
    started = time.monotonic()
    build = bounded_inv(
        ledger,
        site.argv("build", f"--sha={sha}", "--branch=main"),
        {**site.env, "INVOKE_SHATAG_CONTEXT": str(world.app.path)},
        HANG_LIMIT,
    )
    build_sec = time.monotonic() - started
    # Retries bounded in count and in total time: 3 attempts of 1 s each plus 0.75 s backoff.
    site3 = _via(
        make_site(), world, trickle.address, registry_timeout_sec="1", registry_retries="3"
    )
    gets_before = sum(1 for _, m, p in trickle.requests if m == "GET" and "/manifests/" in p)
    started = time.monotonic()
    retried = bounded_inv(
        ledger, site3.argv("deploy", f"--sha={a.sha}", "--env=rel"), site3.env, HANG_LIMIT
    )
    retried_sec = time.monotonic() - started
    gets = sum(1 for _, m, p in trickle.requests if m == "GET" and "/manifests/" in p) - gets_before
    unchanged = site.snapshot() == before
    ok = (
        error_code(deploy) == "REGISTRY_UNAVAILABLE"
        and error_code(build) == "REGISTRY_UNAVAILABLE"
        and error_code(retried) == "REGISTRY_UNAVAILABLE"
        and deploy_sec < 15
        and build_sec < 15
        and retried_sec < 15
        and gets == 3
        and unchanged
    )
    ledger.record(
        "#14.5 registry trickles the manifest body, 0.5 s/byte (fault proxy)",
        "REGISTRY_UNAVAILABLE within the request deadline: deploy and build with timeout 2 s, "
        "1 attempt, each < 15 s with start-up; 3 attempts of 1 s < 15 s; nothing changed",
        f"deploy {describe(deploy)} after {deploy_sec:.1f}s; build {describe(build)} after "
        f"{build_sec:.1f}s; 3 attempts x 1 s: {describe(retried)} after {retried_sec:.1f}s, "
        f"{gets} GETs; unchanged={unchanged}",
        ok,
    )
    assert ok, (deploy.stderr[-400:], build.stderr[-400:], retried.stderr[-400:])
