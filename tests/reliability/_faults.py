"""Fault stand-ins for what a real component cannot do on demand, and registry helpers.

* :class:`FaultProxy` -- a small HTTP proxy in front of the *real* registry. It forwards every
  request unchanged unless told to answer HTTP 500 (a registry's internal error) or to stall
  longer than the client's timeout. ``docker-registry`` itself cannot be made to do either.
* :func:`copy_image` -- copies a manifest (and, by cross-repository blob mount, its blobs) into
  another repository of the same registry, or re-points a tag there, through the registry's own
  API: the way an operator's ``crane copy``/``docker push`` would move a tag.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import requests

from shatag.supplychain.registry import MANIFEST_ACCEPT


@dataclass
class FaultPlan:
    """What the proxy does: answer ``status`` to the first ``fail_first`` requests (every request
    when ``fail_first`` is None), or stall ``delay`` seconds before forwarding."""

    status: int | None = None
    fail_first: int | None = None
    delay: float = 0.0
    seen: list[float] = field(default_factory=list)


class LoopbackProxy:
    """A threaded HTTP server on 127.0.0.1 in front of the real registry at ``upstream``: the
    skeleton :class:`FaultProxy` and ``tests.reliability._issue14.TamperProxy`` share. Each
    request (any method) goes to :meth:`handle`; a client that hangs up is not an error."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream  # host:port of the real registry
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

            def do_GET(self) -> None:
                with contextlib.suppress(OSError):
                    proxy.handle(self)

            do_HEAD = do_GET
            do_PUT = do_GET
            do_POST = do_GET
            do_PATCH = do_GET
            do_DELETE = do_GET

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    def read_body(self, request: BaseHTTPRequestHandler) -> bytes | None:
        """The request's body (by Content-Length, or chunked); ``None`` when it has none."""
        length = int(request.headers.get("Content-Length") or 0)
        if length:
            return request.rfile.read(length)
        if "chunked" in (request.headers.get("Transfer-Encoding") or "").lower():
            return _read_chunked(request.rfile)
        return None

    def forward(
        self, request: BaseHTTPRequestHandler, body: bytes | None, *, timeout: float
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Send the request on to the registry: its status, headers and whole body."""
        conn = http.client.HTTPConnection(self.upstream, timeout=timeout)
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("host", "transfer-encoding", "content-length")
        }
        headers["Host"] = self.upstream
        if body is not None:
            headers["Content-Length"] = str(len(body))
        try:
            conn.request(request.command, request.path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()


def _read_chunked(stream: Any) -> bytes:
    out = b""
    while True:
        size = int(stream.readline().strip().split(b";")[0] or b"0", 16)
        if size == 0:
            stream.readline()
            return out
        out += stream.read(size)
        stream.readline()


class FaultProxy(LoopbackProxy):
    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.plan = FaultPlan()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        plan = self.plan
        plan.seen.append(time.monotonic())
        body = self.read_body(request)
        failing = plan.status is not None and (
            plan.fail_first is None or len(plan.seen) <= plan.fail_first
        )
        if failing:
            payload = b'{"errors":[{"code":"UNKNOWN","message":"injected fault"}]}'
            request.send_response(int(plan.status or 500))
            request.send_header("Content-Type", "application/json")
            request.send_header("Content-Length", str(len(payload)))
            request.end_headers()
            if request.command != "HEAD":
                request.wfile.write(payload)
            return
        if plan.delay:
            time.sleep(plan.delay)
        status, headers, data = self.forward(request, body, timeout=30)
        request.send_response(status)
        for key, value in headers:
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                request.send_header(key, value)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(data)

    def inject(self, **plan: Any) -> FaultPlan:
        self.plan = FaultPlan(**plan)
        return self.plan


def manifest(registry: str, repo: str, reference: str) -> tuple[bytes, str]:
    response = requests.get(
        f"http://{registry}/v2/{repo}/manifests/{reference}",
        headers={"Accept": MANIFEST_ACCEPT},
        timeout=30,
    )
    response.raise_for_status()
    return response.content, response.headers["Content-Type"].split(";")[0]


def copy_image(registry: str, src_repo: str, src_ref: str, dst_repo: str, dst_tag: str) -> str:
    """Point ``dst_repo:dst_tag`` at the manifest ``src_repo:src_ref``; return its digest."""
    import json

    body, media_type = manifest(registry, src_repo, src_ref)
    data = json.loads(body)
    blobs = [data["config"]["digest"], *(layer["digest"] for layer in data.get("layers", []))]
    for digest in blobs:
        mounted = requests.post(
            f"http://{registry}/v2/{dst_repo}/blobs/uploads/?mount={digest}&from={src_repo}",
            timeout=30,
        )
        if mounted.status_code != 201:
            raise RuntimeError(f"blob mount of {digest} failed: HTTP {mounted.status_code}")
    put = requests.put(
        f"http://{registry}/v2/{dst_repo}/manifests/{dst_tag}",
        data=body,
        headers={"Content-Type": media_type},
        timeout=30,
    )
    put.raise_for_status()
    return str(put.headers["Docker-Content-Digest"])
