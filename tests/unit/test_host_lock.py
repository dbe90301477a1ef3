"""The host-level switch lock of a docker proxy (issue 23, item 1): a real ``flock`` on a file
beside the proxy's home; two holders in one process conflict as two processes do (a flock
belongs to an open file description)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from shatag._sys.docker import DockerEngine
from shatag.errors import DeployLocked, StateError
from shatag.targets.docker.proxy import HostLock, Proxy, ProxySpec, proxy_home


def _proxy(runtime: Path) -> Proxy:
    spec = ProxySpec(
        "prod", "api", "shatag-proxy:caddy-1", 8000, proxy_home(runtime, "prod", "api")
    )
    return Proxy(spec, DockerEngine({}))  # these paths make no docker call


def test_the_home_is_in_the_runtime_dir_and_the_lock_beside_it(tmp_path: Path) -> None:
    proxy = _proxy(tmp_path)
    proxy.prepare_home()
    assert proxy.home == tmp_path.resolve() / "proxy" / "prod" / "api"
    assert proxy.home.stat().st_mode & 0o777 == 0o700
    assert proxy.lock(1).path == proxy.home.parent / "api.lock"


def test_a_second_switch_waits_then_fails_naming_the_holder(tmp_path: Path) -> None:
    proxy = _proxy(tmp_path)
    proxy.prepare_home()
    first = proxy.lock(5)
    first.acquire()
    second = HostLock(first.path, 0.3)
    started = time.monotonic()
    with pytest.raises(DeployLocked, match=r"pid \d+ in /"):
        second.acquire()
    assert time.monotonic() - started >= 0.3
    first.release()
    second.acquire()  # free once released
    second.release()


def test_a_runtime_dir_this_user_cannot_create_is_a_state_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory\n")
    with pytest.raises(StateError, match="set runtime_dir"):
        _proxy(blocker).prepare_home()
