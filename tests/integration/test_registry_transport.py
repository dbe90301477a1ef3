"""The registry adapter's two transports against the real registry (issue 17, goal 2).

Anonymous plain-HTTP (loopback) exchanges go over ``http.client`` so that a deploy does not
import ``requests``; ``requests`` still carries HTTPS, redirects and token requests. These tests
put an image into the session's real ``docker-registry`` through its own API and check that the
``http.client`` transport answers exactly what the ``requests`` transport answers, that the
deploy's registry calls never import ``requests``, and that a closed port fails the same way
(REGISTRY_UNAVAILABLE after the bounded retries) on both.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import subprocess
import sys
import threading
import urllib.parse
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from shatag._testing.localregistry import LocalRegistry, free_port
from shatag.core import parse_repository
from shatag.errors import RegistryUnavailable
from shatag.supplychain.registry import OCI_MANIFEST, Manifest, RegistryClient


def _upload_blob(registry: str, repo: str, data: bytes) -> str:
    """A monolithic blob upload through the registry's own API (POST, then PUT ?digest=)."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    conn = http.client.HTTPConnection(registry, timeout=30)
    try:
        conn.request("POST", f"/v2/{repo}/blobs/uploads/", body=b"")
        started = conn.getresponse()
        started.read()
        location = urllib.parse.urlsplit(started.headers["Location"])
        query = f"{location.query}&digest={digest}" if location.query else f"digest={digest}"
        conn.request(
            "PUT",
            f"{location.path}?{query}",
            body=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        put = conn.getresponse()
        put.read()
        assert put.status == 201, put.status
    finally:
        conn.close()
    return digest


@pytest.fixture
def image(registry: LocalRegistry) -> tuple[str, Manifest, str, list[str]]:
    """``(repository, manifest, config digest, tags)``: one tiny image under three tags."""
    repo = f"transport-{uuid.uuid4().hex[:8]}"
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {}}).encode()
    layer = uuid.uuid4().bytes * 64
    config_digest = _upload_blob(registry.address, repo, config)
    layer_digest = _upload_blob(registry.address, repo, layer)
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    manifest = Manifest("sha256:" + hashlib.sha256(body).hexdigest(), OCI_MANIFEST, body)
    client = RegistryClient(parse_repository(f"{registry.address}/{repo}"), env={})
    tags = ["t1", "t2", "t3"]
    for tag in tags:  # PUT over the plain-HTTP transport
        assert client.put_manifest(tag, manifest) == manifest.digest
    return repo, manifest, config_digest, tags


def _through_requests(client: RegistryClient) -> RegistryClient:
    """The same client with every exchange on the ``requests`` transport (what HTTPS uses)."""

    def none(*_args: Any) -> None:
        return None

    client._fetch_plain = none  # type: ignore[method-assign,assignment]
    return client


def _answers(client: RegistryClient, manifest: Manifest, config_digest: str) -> list[object]:
    got = client.manifest("t2")
    missing_blob = "sha256:" + "0" * 64
    return [
        client.manifest_digest("t1"),
        client.manifest_digest(manifest.digest),
        client.manifest_digest("absent"),
        None if got is None else (got.digest, got.media_type, got.body),
        client.manifest("absent"),
        client.config_digest("t3"),
        client.blob(config_digest),
        client.blob(missing_blob),
        sorted(client.tags(page_size=1)),  # one tag a page: the Link header is followed
    ]


def test_plain_http_transport_answers_what_requests_answers(
    registry: LocalRegistry, image: tuple[str, Manifest, str, list[str]]
) -> None:
    repo, manifest, config_digest, tags = image
    repository = parse_repository(f"{registry.address}/{repo}")
    plain = RegistryClient(repository, env={})
    assert plain.plain_http
    via_requests = _through_requests(RegistryClient(repository, env={}))
    answers = _answers(plain, manifest, config_digest)
    assert answers == _answers(via_requests, manifest, config_digest)
    assert answers[0] == manifest.digest
    assert answers[2] is None
    assert answers[3] == (manifest.digest, OCI_MANIFEST, manifest.body)
    assert answers[5] == config_digest
    assert answers[7] is None
    assert answers[8] == tags


def test_deploy_registry_calls_never_import_requests(
    registry: LocalRegistry, image: tuple[str, Manifest, str, list[str]]
) -> None:
    repo, manifest, config_digest, _tags = image
    script = (
        "import sys\n"
        "from shatag.core import parse_repository\n"
        "from shatag.supplychain.registry import RegistryClient\n"
        f"c = RegistryClient(parse_repository({registry.address + '/' + repo!r}), env={{}})\n"
        "config = c.config_digest('t1')\n"
        "print(c.manifest_digest('t1'), config, len(c.blob(config) or b''))\n"
        "print('requests' in sys.modules, 'urllib3' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split("\n")
    assert out[0].split()[:2] == [manifest.digest, config_digest]
    assert out[1] == "False False", out


@pytest.mark.parametrize("transport", ["http.client", "requests"])
def test_closed_port_is_unavailable_after_bounded_retries(transport: str) -> None:
    port = free_port()  # nothing listens there: connection refused, for real
    waits: list[float] = []
    client = RegistryClient(
        parse_repository(f"127.0.0.1:{port}/api"), env={}, retries=3, sleep=waits.append
    )
    make: Callable[[RegistryClient], RegistryClient] = (
        _through_requests if transport == "requests" else (lambda c: c)
    )
    with pytest.raises(RegistryUnavailable) as excinfo:
        make(client).manifest_digest("t1")
    assert waits == [0.25, 0.5]
    assert excinfo.value.code == "REGISTRY_UNAVAILABLE"
    assert "after 3 attempts" in excinfo.value.message


def test_fake_redirecting_registry_is_followed_through_requests(
    registry: LocalRegistry, image: tuple[str, Manifest, str, list[str]]
) -> None:
    """A registry that redirects blob reads to its storage (S3, GCS backends) cannot be made
    from the filesystem-backed ``docker-registry``: a loopback stand-in answers 307 to the real
    registry for every request. The plain-HTTP transport hands each redirect to ``requests``,
    which follows it as it always did."""
    repo, manifest, config_digest, _tags = image
    seen: list[str] = []

    class Redirect(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            del format, args

        def do_GET(self) -> None:
            seen.append(f"{self.command} {self.path}")
            self.send_response(307)
            self.send_header("Location", f"http://{registry.address}{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        stand_in = f"127.0.0.1:{server.server_address[1]}"
        client = RegistryClient(parse_repository(f"{stand_in}/{repo}"), env={})
        assert client.manifest_digest("t1") == manifest.digest
        assert client.config_digest("t1") == config_digest
        blob = client.blob(config_digest)
    finally:
        server.shutdown()
        server.server_close()
    assert blob is not None
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == config_digest
    # each exchange reached the stand-in twice: once over http.client, once over requests
    assert len(seen) == 2 * 3, seen  # HEAD manifest, GET manifest, GET blob
