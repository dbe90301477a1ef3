"""The gated switch inspects what it needs in one docker call per kind (issue 17), on the real
engine: what :meth:`DockerEngine.remember` saw answers exactly like one inspection per object,
needs no further docker call, and is forgotten by the next command that may change something."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import uuid
from collections.abc import Iterator

import pytest

from shatag._sys.docker import DockerEngine
from shatag.errors import DeployFailed


def _docker(*args: str, stdin: bytes | None = None) -> str:
    out = subprocess.run(
        ["docker", *args], input=stdin, capture_output=True, check=True, timeout=120
    )
    return out.stdout.decode().strip()


def _one_file_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    return buf.getvalue()


@pytest.fixture
def objects() -> Iterator[tuple[str, str, str]]:
    """An image, a container and a network, all ours (name prefix), removed afterwards."""
    prefix = f"shatag-itinsp-{uuid.uuid4().hex[:8]}"
    image, container, network = f"{prefix}:1", f"{prefix}-c", f"{prefix}-net"
    _docker("import", "-", image, stdin=_one_file_tar())
    try:
        _docker("network", "create", "--label", "shatag.test=inspect", network)
        _docker("create", "--name", container, "--label", "shatag.test=inspect", image, "/x")
        yield image, container, network
    finally:
        for argv in (["rm", "-f", container], ["network", "rm", network], ["rmi", "-f", image]):
            subprocess.run(["docker", *argv], capture_output=True, check=False, timeout=60)


def test_one_look_answers_like_one_inspection_per_object(objects: tuple[str, str, str]) -> None:
    image, container, network = objects
    absent = f"shatag-itinsp-absent-{uuid.uuid4().hex[:8]}"
    pinned_absent = f"127.0.0.1:1/absent:{'a' * 40}@sha256:{'0' * 64}"
    asked = {
        "container": [container, absent, container],
        "network": [absent, network],
        "image": [pinned_absent, image],
    }
    fresh = DockerEngine(os.environ)
    expected = {(k, n): fresh.inspect(k, n) for k, names in asked.items() for n in names}
    assert expected[("container", container)] is not None
    assert expected[("network", absent)] is None
    assert expected[("image", pinned_absent)] is None

    docker = DockerEngine(os.environ)
    docker.remember(asked)
    docker.cmd = ["/nonexistent/docker"]  # from here on, any docker call would fail
    for (kind, name), data in expected.items():
        seen = docker.inspect(kind, name)
        assert (seen or {}).get("Id") == (data or {}).get("Id"), (kind, name)
        assert (seen is None) == (data is None), (kind, name)

    docker.forget()
    with pytest.raises(DeployFailed):
        docker.inspect("container", container)  # forgotten: it asks docker again


def test_a_command_that_may_change_something_forgets_what_was_seen(
    objects: tuple[str, str, str],
) -> None:
    _image, container, _network = objects
    docker = DockerEngine(os.environ)
    docker.remember({"container": [container]})
    assert (docker.inspect("container", container) or {}).get("State", {}).get("Status") == (
        "created"
    )
    docker.run("rm", "-f", container)
    assert docker.inspect("container", container) is None  # seen again, not remembered
