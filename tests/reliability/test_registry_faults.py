"""Registry faults (issue 6): stopped, HTTP 500, stalled, tag re-pointed.

The stopped registry is a real ``docker-registry`` process serving the session registry's
storage, stopped and started again. HTTP 500 and stalls come from :class:`FaultProxy` in front
of the real registry (``docker-registry`` cannot be made to produce them). Re-pointing a tag
uses the registry's own API. 401 is produced for real by the htpasswd registry in
``test_auth_tls.py``.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shatag._testing.localregistry import LocalRegistry
from tests.reliability._faults import FaultProxy, copy_image
from tests.reliability.conftest import (
    Ledger,
    Site,
    World,
    describe,
    docker_out,
    error_code,
    rinv,
)

RETRY_LINE = re.compile(r"registry retry (\d+)/(\d+) in ([0-9.]+)s")


def _retries(stderr: str) -> list[float]:
    return [float(m.group(3)) for m in RETRY_LINE.finditer(stderr)]


@pytest.fixture
def second_registry(registry: LocalRegistry, tmp_path: Path) -> Iterator[LocalRegistry]:
    """A second real registry process serving the same storage (so it holds the world's
    images), which a test may stop and start."""
    work = tmp_path / "reg2"
    work.mkdir()
    (work / "storage").symlink_to(registry.workdir / "storage")
    reg = LocalRegistry(work)
    reg.start()
    yield reg
    reg.stop()


def _site_via(make_site: Callable[..., Site], world: World, address: str) -> Site:
    site = make_site()
    name = world.canonical.split("/", 1)[1]
    site.extra_env = {
        "INVOKE_SHATAG_CANONICAL_REPOSITORY": f"{address}/{name}",
        "INVOKE_SHATAG_STAGING_REPOSITORY": f"{address}/{name}-staging",
        "SHATAG_DEBUG": "1",
    }
    return site


def _targets_unchanged(site: Site, before: object) -> bool:
    return site.snapshot() == before


def test_registry_stopped(
    ledger: Ledger,
    world: World,
    make_site: Callable[..., Site],
    second_registry: LocalRegistry,
) -> None:
    a, b = world.images[0], world.images[1]
    site = _site_via(make_site, world, second_registry.address)
    assert site.deploy(ledger, a).returncode == 0
    before = site.snapshot()
    second_registry.stop()
    ledger.count("faults_injected")
    outcomes = []
    try:
        started = time.monotonic()
        deploy = site.deploy(ledger, b)
        elapsed = time.monotonic() - started
        rollback = site.rollback(ledger, b)
        sha = world.app.commit('{"release": "registry-down"}', "registry down")
        build = rinv(
            ledger,
            ["build", f"--sha={sha}", "--branch=main"],
            {**site.env, "INVOKE_SHATAG_CONTEXT": str(world.app.path)},
        )
        outcomes = [("deploy", deploy), ("rollback", rollback), ("build", build)]
    finally:
        second_registry.start()
    unchanged = _targets_unchanged(site, before)
    built_locally = bool(docker_out("image", "ls", "-q", f"{world.canonical}:{sha}"))
    pushed = world.client().manifest_digest(sha) is not None
    retries = _retries(deploy.stderr)
    ok = (
        all(error_code(r) == "REGISTRY_UNAVAILABLE" for _, r in outcomes)
        and retries == [0.25, 0.5]
        and unchanged
        and not built_locally
        and not pushed
    )
    ledger.record(
        "registry stopped (connection refused)",
        "REGISTRY_UNAVAILABLE for deploy/rollback/build after 2 retries (0.25s, 0.5s backoff); "
        "targets, history unchanged; nothing built",
        f"{', '.join(f'{n}: {describe(r)}' for n, r in outcomes)}; retries {retries}; "
        f"deploy took {elapsed:.1f}s; unchanged={unchanged}; built={built_locally}",
        ok,
    )
    assert ok, [r.stderr[-400:] for _, r in outcomes]
    # the registry is back: the next deploy works
    again = site.deploy(ledger, b)
    ledger.record(
        "registry back after stop",
        "next deploy succeeds",
        describe(again),
        again.returncode == 0,
    )
    assert again.returncode == 0, again.stderr


@pytest.fixture
def proxy(registry: LocalRegistry) -> Iterator[FaultProxy]:
    p = FaultProxy(registry.address).start()
    yield p
    p.stop()


def test_registry_http_500_fault_proxy(
    ledger: Ledger, world: World, make_site: Callable[..., Site], proxy: FaultProxy
) -> None:
    a, b = world.images[0], world.images[1]
    site = _site_via(make_site, world, proxy.address)
    assert site.deploy(ledger, a).returncode == 0, "deploy through the pass-through proxy"
    before = site.snapshot()
    # persistent 500: bounded retries with growing backoff, then a defined code
    plan = proxy.inject(status=500)
    ledger.count("faults_injected")
    deploy = site.deploy(ledger, b)
    rollback = site.rollback(ledger, a)
    gaps = [round(t2 - t1, 2) for t1, t2 in zip(plan.seen, plan.seen[1:6], strict=False)]
    unchanged = _targets_unchanged(site, before)
    ok = (
        error_code(deploy) == "REGISTRY_UNAVAILABLE"
        and error_code(rollback) == "REGISTRY_UNAVAILABLE"
        and _retries(deploy.stderr) == [0.25, 0.5]
        and len(plan.seen) == 6  # 3 attempts each for deploy and rollback
        and gaps[0] >= 0.24
        and gaps[1] >= 0.49
        and unchanged
    )
    ledger.record(
        "registry answers HTTP 500 (fault proxy)",
        "REGISTRY_UNAVAILABLE after 3 attempts (backoff 0.25s, 0.5s); nothing changed",
        f"deploy {describe(deploy)}, rollback {describe(rollback)}; requests={len(plan.seen)}, "
        f"gaps={gaps[:2]}; unchanged={unchanged}",
        ok,
    )
    assert ok, (deploy.stderr[-500:], gaps, len(plan.seen))
    # a transient 500 (first answer only) is retried and the deploy succeeds
    proxy.inject(status=500, fail_first=1)
    ledger.count("faults_injected")
    transient = site.deploy(ledger, b)
    ok = transient.returncode == 0 and len(_retries(transient.stderr)) == 1
    ledger.record(
        "one transient HTTP 500 (fault proxy)",
        "retried once, deploy succeeds",
        f"{describe(transient)}, retries {_retries(transient.stderr)}",
        ok,
    )
    assert ok, transient.stderr[-500:]


def test_registry_slower_than_timeout_fault_proxy(
    ledger: Ledger, world: World, make_site: Callable[..., Site], proxy: FaultProxy
) -> None:
    a = world.images[0]
    site = _site_via(make_site, world, proxy.address)
    site.extra_env |= {
        "INVOKE_SHATAG_REGISTRY_TIMEOUT_SEC": "1",
        "INVOKE_SHATAG_REGISTRY_RETRIES": "2",
    }
    before = site.snapshot()
    plan = proxy.inject(delay=4.0)
    ledger.count("faults_injected")
    started = time.monotonic()
    deploy = site.deploy(ledger, a)
    elapsed = time.monotonic() - started
    unchanged = _targets_unchanged(site, before)
    # 2 attempts x 1 s timeout + 0.25 s backoff + process start-up: well under the 8 s the
    # two stalled answers would take.
    ok = (
        error_code(deploy) == "REGISTRY_UNAVAILABLE"
        and len(plan.seen) == 2
        and elapsed < 7.0
        and unchanged
    )
    ledger.record(
        "registry slower than the timeout (fault proxy, 4s stall, 1s timeout)",
        "REGISTRY_UNAVAILABLE after 2 bounded attempts, no hang; nothing changed",
        f"{describe(deploy)} after {elapsed:.1f}s, {len(plan.seen)} requests; "
        f"unchanged={unchanged}",
        ok,
    )
    assert ok, deploy.stderr[-500:]


def test_tag_repointed_between_build_and_deploy(
    ledger: Ledger,
    world: World,
    make_site: Callable[..., Site],
    registry: LocalRegistry,
    tmp_path: Path,
) -> None:
    """A private copy of images A and B; then A's SHA tag is re-pointed at B's manifest."""
    a, b = world.images[0], world.images[1]
    src = world.canonical.split("/", 1)[1]
    dst = f"rel-repoint-{uuid.uuid4().hex[:8]}"
    for img in (a, b):
        assert copy_image(registry.address, src, img.sha, dst, img.sha) == img.digest
    site = make_site()
    site.extra_env = {
        "INVOKE_SHATAG_CANONICAL_REPOSITORY": f"{registry.address}/{dst}",
        "INVOKE_SHATAG_STAGING_REPOSITORY": f"{registry.address}/{dst}-staging",
    }
    meta = tmp_path / "a.json"
    repository = f"{registry.address}/{dst}"
    meta.write_text(
        json.dumps({"image_sha": a.sha, "image_digest": a.digest, "repository": repository})
    )
    assert site.deploy(ledger, a, f"--metadata={meta}").returncode == 0
    assert site.deploy(ledger, b).returncode == 0
    before = site.snapshot()
    # the fault: someone pushes B's manifest under A's SHA tag
    copy_image(registry.address, dst, b.sha, dst, a.sha)
    ledger.count("faults_injected")
    results = {
        "deploy --metadata": site.deploy(ledger, a, f"--metadata={meta}"),
        "deploy (history guard)": site.deploy(ledger, a),
        "rollback": site.rollback(ledger, a),
        "rollback to previous": site.rollback(ledger),
    }
    unchanged = _targets_unchanged(site, before)
    ok = all(error_code(r) == "DIGEST_MISMATCH" for r in results.values()) and unchanged
    ledger.record(
        "SHA tag re-pointed to another digest between build and deploy",
        "DIGEST_MISMATCH from deploy (metadata and history guards) and rollback; "
        "targets and history unchanged",
        "; ".join(f"{k}: {describe(r)}" for k, r in results.items()) + f"; unchanged={unchanged}",
        ok,
    )
    assert ok, {k: r.stderr[-300:] for k, r in results.items()}
