"""The registry adapter: OCI distribution API over HTTP(S), no image pulls.

Auth comes from the docker config (``$DOCKER_CONFIG/config.json`` or ``~/.docker``), including
credential helpers, through oras-py's auth backend; bearer tokens are fetched with oras-py from
the realm the registry names. Loopback registries are spoken to over plain HTTP, others over
HTTPS, trusting ``/etc/docker/certs.d/<host>/ca.crt`` the way the docker daemon does.

Transient faults (connection refused, timeouts, HTTP 5xx/429) are retried a bounded number of
times with exponential backoff, then raise :class:`RegistryUnavailable`; 401/403 after
authenticating raise :class:`RegistryAuthError`.

Transport (issue 17): plain-HTTP (loopback) exchanges go over the standard library's
``http.client`` -- one connection per exchange, no proxies, the same per-read timeout -- so a
deploy does not import ``requests`` (~50 ms of CPU) for one HEAD. ``requests`` still carries every
HTTPS exchange, every redirect, and the token requests of a ``Bearer`` challenge (oras-py; the
answered request itself goes back over ``http.client``), and both transports' faults land in
the same retry/deadline logic below.

Deadlines (issue 14, item 5): ``timeout`` bounds each *attempt as a whole* -- connect, headers
and body -- not just each socket read, so a registry that trickles a manifest a byte at a time
cannot hold a deploy (and its environment lock) past it. A request's attempts share one total
budget of ``retries x timeout`` plus the backoff between them; bodies are capped at
:data:`MAX_BODY_BYTES` (the distribution spec's manifest limit).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import re
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from shatag.config import RegistryConfig
from shatag.core import Repository
from shatag.errors import RegistryAuthError, RegistryUnavailable

if TYPE_CHECKING:
    import requests

log = logging.getLogger("shatag.registry")

OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
# All four, so the registry never converts a manifest and answers a different digest.
MANIFEST_ACCEPT: Final = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
INDEX_TYPES: Final = frozenset({OCI_INDEX, DOCKER_LIST})
DEFAULT_CERTS_DIR: Final = Path("/etc/docker/certs.d")
#: The largest body we read (manifests, tag lists): 4 MiB, the distribution spec's manifest cap.
MAX_BODY_BYTES: Final = 4 * 1024 * 1024
_BACKOFF_START_SEC: Final = 0.25
_BACKOFF_MAX_SEC: Final = 2.0


class _Deadline(Exception):
    """One attempt did not complete (headers and body) within its deadline."""


class _Transient(Exception):
    """One attempt failed in transport (refused, reset, timed out, malformed): worth a retry."""


class _TLSFailure(Exception):
    """The TLS handshake or certificate check failed: not worth a retry."""


#: Redirect statuses: the plain-HTTP transport hands these exchanges to ``requests``, which
#: follows them exactly as it always did.
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_CHUNK: Final = 64 * 1024


def backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): 0.25, 0.5, 1, 2, 2, ...

    >>> [backoff(n) for n in (1, 2, 3, 4, 5)]
    [0.25, 0.5, 1.0, 2.0, 2.0]
    """
    return float(min(_BACKOFF_START_SEC * 2 ** (attempt - 1), _BACKOFF_MAX_SEC))


def registry_ca(registry: str, certs_dir: Path = DEFAULT_CERTS_DIR) -> Path | None:
    """The CA the docker daemon trusts for ``registry`` (``certs.d/<host:port>/ca.crt``)."""
    ca = certs_dir / registry / "ca.crt"
    return ca if ca.is_file() else None


@dataclass(frozen=True, slots=True)
class Manifest:
    """A manifest as the registry served it: digest (of the body), media type, body."""

    digest: str
    media_type: str
    body: bytes

    def parsed(self) -> dict[str, Any]:
        data = json.loads(self.body)
        if not isinstance(data, dict):
            raise RegistryUnavailable(f"manifest {self.digest} is not a JSON object")
        return data


@dataclass(slots=True)
class _Response:
    """One HTTP answer, its body read in full, whichever transport carried it."""

    status_code: int
    #: Header name (lower case) -> values, in the order received.
    header_values: dict[str, list[str]] = field(default_factory=dict)
    content: bytes = b""

    def header(self, name: str) -> str | None:
        """The header ``name`` (any case); repeated headers joined by ``", "`` as requests
        does."""
        values = self.header_values.get(name.lower())
        return ", ".join(values) if values else None

    def json(self) -> Any:
        return json.loads(self.content)

    def next_link(self) -> str | None:
        """The ``rel="next"`` target of the ``Link`` header (tag list pagination)."""
        return next_link(self.header("Link") or "")


#: One link of a ``Link`` header (RFC 8288): ``<target>`` and its ``;``-separated parameters,
#: up to the next link (a ``,`` that precedes ``<``).
_LINK: Final = re.compile(r"<(?P<target>[^<>]*)>(?P<params>[^<]*)")
_REL: Final = re.compile(
    r"""(?:^|;)\s*rel\s*=\s*(?:"(?P<quoted>[^"]*)"|(?P<token>[^\s;,"]+))""", re.I
)


def next_link(value: str) -> str | None:
    """The target of the first link whose ``rel`` names ``next`` in a ``Link`` header value
    (RFC 8288: ``rel`` may hold several space-separated relation types), as the distribution
    registry paginates its tag list; ``None`` when there is none. Hostile values give ``None``,
    never an error.

    >>> next_link('</v2/api/tags/list?n=2&last=b>; rel="next"')
    '/v2/api/tags/list?n=2&last=b'
    >>> next_link('<a>; rel="prev", <b>; title="x"; REL=next')
    'b'
    >>> next_link('<a>; rel="prev"') is None
    True
    """
    for link in _LINK.finditer(value):
        rel = _REL.search(link["params"])
        if rel is None:
            continue
        relations = (rel["quoted"] if rel["quoted"] is not None else rel["token"]).split()
        if "next" in (r.lower() for r in relations):
            return link["target"].strip()
    return None


def _timeout_session(timeout: float) -> requests.Session:
    """A session that never waits forever: oras-py's token requests pass no timeout."""
    import requests  # lazy: only HTTPS, redirects and token requests need it

    class _TimeoutSession(requests.Session):
        def request(
            self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
        ) -> requests.Response:
            kwargs.setdefault("timeout", timeout)
            return super().request(method, url, *args, **kwargs)

    return _TimeoutSession()


def _as_fault(exc: BaseException) -> BaseException:
    """A ``requests`` transport exception as :class:`_TLSFailure` / :class:`_Transient`;
    anything else unchanged. (``requests`` is looked up, not imported: if it was never
    imported, nothing raised one of its exceptions.)"""
    requests = sys.modules.get("requests")
    if requests is not None:
        if isinstance(exc, requests.exceptions.SSLError):
            return _TLSFailure(_short(exc))
        if isinstance(exc, requests.exceptions.RequestException):
            return _Transient(_short(exc))
    return exc


class RegistryClient:
    """Talks to one repository of one registry.

    >>> from shatag.core import parse_repository
    >>> RegistryClient(parse_repository("127.0.0.1:5000/api"), env={}).base_url
    'http://127.0.0.1:5000/v2/api'
    """

    def __init__(
        self,
        repository: Repository,
        *,
        env: Mapping[str, str],
        timeout: float = 10.0,
        retries: int = 3,
        certs_dir: Path = DEFAULT_CERTS_DIR,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.repository = repository
        self.timeout = timeout
        self.retries = max(1, retries)
        #: The total time one request may take, every attempt and backoff included.
        self.budget = self.timeout * self.retries + sum(backoff(n) for n in range(1, self.retries))
        self._sleep = sleep
        ca = certs_dir / repository.registry / "ca.crt"
        # Like the docker daemon: a loopback registry with a CA in certs.d speaks TLS.
        self.plain_http = repository.plain_http and not ca.is_file()
        scheme = "http" if self.plain_http else "https"
        self.origin = f"{scheme}://{repository.registry}"
        self.base_url = f"{self.origin}/v2/{repository.name}"
        self._verify: str | bool = str(ca) if ca.is_file() else True
        self._requests_session: requests.Session | None = None
        self._env = dict(env)
        self._authorization: str | None = None
        self._auth_backend: Any = None

    @property
    def _session(self) -> requests.Session:
        """The ``requests`` session, made on first use (HTTPS, redirects, token requests)."""
        if self._requests_session is None:
            session = _timeout_session(self.timeout)
            session.trust_env = False  # no proxies from the environment for loopback/CI
            session.verify = self._verify
            self._requests_session = session
        return self._requests_session

    # -- public API -------------------------------------------------------------------------

    def manifest_digest(self, reference: str) -> str | None:
        """Digest of the manifest ``reference`` (tag or digest) names; ``None`` if absent.

        HEAD first (no body); registries that do not answer HEAD get a GET whose body is hashed.
        """
        url = f"{self.base_url}/manifests/{reference}"
        response = self._request("HEAD", url, headers={"Accept": MANIFEST_ACCEPT})
        if response.status_code == 404:
            return None
        digest = response.header("Docker-Content-Digest") or ""
        if response.status_code == 200 and digest.startswith("sha256:"):
            return digest
        manifest = self.manifest(reference)
        return None if manifest is None else manifest.digest

    def manifest(self, reference: str) -> Manifest | None:
        url = f"{self.base_url}/manifests/{reference}"
        response = self._request("GET", url, headers={"Accept": MANIFEST_ACCEPT})
        if response.status_code == 404:
            return None
        self._expect_ok(response, f"GET manifest {reference}")
        body = response.content
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        served = response.header("Docker-Content-Digest")
        if served and served != digest:
            log.warning("registry served digest %s for a body hashing to %s", served, digest)
        media_type = (response.header("Content-Type") or "").split(";")[0].strip()
        return Manifest(digest=digest, media_type=media_type, body=body)

    def config_digest(self, reference: str, platform: str = "linux/amd64") -> str | None:
        """The image config digest (what ``docker image inspect`` calls the image ID)."""
        manifest = self.manifest(reference)
        return None if manifest is None else self.config_digest_of(manifest, platform)

    def config_digest_of(self, manifest: Manifest, platform: str = "linux/amd64") -> str | None:
        """:meth:`config_digest` of a manifest already fetched (an index costs one more GET)."""
        data = manifest.parsed()
        media_type = manifest.media_type or str(data.get("mediaType", ""))
        if media_type in INDEX_TYPES or "manifests" in data:
            os_name, _, arch = platform.partition("/")
            for entry in data.get("manifests", []):
                plat = entry.get("platform") or {}
                if plat.get("os") == os_name and plat.get("architecture") == arch:
                    return self.config_digest(str(entry["digest"]), platform)
            return None
        config = data.get("config") or {}
        digest = config.get("digest")
        return str(digest) if digest else None

    def blob(self, digest: str) -> bytes | None:
        """The blob ``digest`` (an image config: small), checked against its digest."""
        response = self._request("GET", f"{self.base_url}/blobs/{digest}")
        if response.status_code == 404:
            return None
        self._expect_ok(response, f"GET blob {digest}")
        body = response.content
        if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise RegistryUnavailable(
                f"registry {self.repository.registry} served a blob that does not hash to {digest}"
            )
        return body

    def put_manifest(self, tag: str, manifest: Manifest) -> str:
        """Store ``manifest`` (exact bytes, so the same digest) under ``tag``; return the digest
        the registry answers. The registry-side equivalent of ``docker tag`` + ``docker push``
        for an image whose blobs are already there: one request instead of a push round."""
        url = f"{self.base_url}/manifests/{tag}"
        response = self._request(
            "PUT", url, headers={"Content-Type": manifest.media_type}, body=manifest.body
        )
        if response.status_code in (401, 403) or response.status_code >= 400:
            self._expect_ok(response, f"PUT manifest {tag}")
        return response.header("Docker-Content-Digest") or ""

    # -- blobs between repositories (promote, issue 26) ---------------------------------------

    def has_blob(self, digest: str) -> bool:
        """Whether the repository holds the blob ``digest`` (HEAD, no body)."""
        response = self._request("HEAD", f"{self.base_url}/blobs/{digest}")
        if response.status_code == 404:
            return False
        self._expect_ok(response, f"HEAD blob {digest}")
        return True

    def start_upload(self, digest: str, *, mount_from: str = "") -> str | None:
        """Start a blob upload; with ``mount_from`` (a repository *name* on the same registry)
        ask for a cross-repository mount first. ``None``: the registry mounted the blob (201);
        else the upload URL to :meth:`upload_blob` to (202: no mount, copy it)."""
        query = (
            "?" + urllib.parse.urlencode({"mount": digest, "from": mount_from})
            if mount_from
            else ""
        )
        url = f"{self.base_url}/blobs/uploads/{query}"
        response = self._request("POST", url, body=b"")
        if response.status_code == 201 and mount_from:
            return None
        if response.status_code != 202:
            self._expect_ok(response, f"POST blob upload {digest}")
            raise RegistryUnavailable(
                f"registry {self.repository.registry} answered HTTP {response.status_code} to a "
                f"blob upload for {digest}"
            )
        location = response.header("Location") or ""
        if not location:
            raise RegistryUnavailable(
                f"registry {self.repository.registry} started an upload without a Location"
            )
        return urllib.parse.urljoin(self.origin, location)

    def download_blob(self, digest: str, sink: IO[bytes]) -> int:
        """Stream the blob ``digest`` into ``sink`` (any size: not held in memory), checked
        against its digest; the number of bytes. Each read waits at most ``timeout``."""
        url = f"{self.base_url}/blobs/{digest}"
        hasher = hashlib.sha256()
        size = 0
        for _ in range(2):  # once more after answering an auth challenge
            response = self._stream("GET", url, None)
            with response:
                if response.status_code == 401 and self._authenticate(_challenge(response)):
                    continue
                self._expect_ok(_challenge(response), f"GET blob {digest}")
                for chunk in response.iter_content(_CHUNK):
                    hasher.update(chunk)
                    sink.write(chunk)
                    size += len(chunk)
            break
        if "sha256:" + hasher.hexdigest() != digest:
            raise RegistryUnavailable(
                f"registry {self.repository.registry} served a blob that does not hash to {digest}"
            )
        return size

    def upload_blob(self, location: str, digest: str, source: IO[bytes], size: int) -> None:
        """Finish the upload at ``location`` with the whole blob in one PUT (monolithic)."""
        joiner = "&" if "?" in location else "?"
        url = f"{location}{joiner}" + urllib.parse.urlencode({"digest": digest})
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        for _ in range(2):
            source.seek(0)
            response = self._stream("PUT", url, source, headers)
            with response:
                if response.status_code == 401 and self._authenticate(_challenge(response)):
                    continue
                if response.status_code != 201:
                    self._expect_ok(_challenge(response), f"PUT blob {digest}")
                    raise RegistryUnavailable(
                        f"registry {self.repository.registry} answered HTTP "
                        f"{response.status_code} to the upload of {digest}"
                    )
            return

    def _stream(
        self,
        method: str,
        url: str,
        body: IO[bytes] | None,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """One streamed exchange (blobs of any size) over ``requests``, with our credentials."""
        sent = dict(headers or {})
        if self._authorization:
            sent["Authorization"] = self._authorization
        try:
            return self._session.request(
                method, url, headers=sent, data=body, stream=True, allow_redirects=True
            )
        except Exception as exc:
            fault = _as_fault(exc)
            if isinstance(fault, _TLSFailure | _Transient):
                raise RegistryUnavailable(
                    f"registry {self.repository.registry}: {method} blob failed: {fault}"
                ) from None
            raise

    def tags(self, page_size: int = 100) -> list[str]:
        """Every tag of the repository, following ``Link: <…>; rel="next"`` pagination."""
        url: str | None = f"{self.base_url}/tags/list?n={page_size}"
        found: list[str] = []
        while url:
            response = self._request("GET", url)
            if response.status_code == 404:
                return found
            self._expect_ok(response, "list tags")
            found.extend(response.json().get("tags") or [])
            link = response.next_link()
            url = urllib.parse.urljoin(self.origin, link) if link else None
        return found

    # -- plumbing ---------------------------------------------------------------------------

    def _expect_ok(self, response: _Response, what: str) -> None:
        if response.status_code in (401, 403):
            raise RegistryAuthError(
                f"registry {self.repository.registry} refused our credentials for {what} "
                f"(HTTP {response.status_code}); run `docker login {self.repository.registry}`"
            )
        if response.status_code == 400 and self.plain_http:
            # A TLS server answers a plain-HTTP request with 400 ("Client sent an HTTP request
            # to an HTTPS server"); loopback registries get plain HTTP unless certs.d has a CA.
            registry = self.repository.registry
            raise RegistryUnavailable(
                f"registry {registry} answered HTTP 400 to {what} over plain HTTP: it most likely "
                f"serves TLS. shatag (like the docker daemon) speaks plain HTTP to a loopback "
                f"registry unless its CA is in {DEFAULT_CERTS_DIR}/{registry}/ca.crt; put the "
                "registry's CA certificate there"
            )
        if response.status_code >= 400:
            raise RegistryUnavailable(
                f"registry {self.repository.registry} answered HTTP {response.status_code} to "
                f"{what}"
            )

    def _request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> _Response:
        last_error = ""
        started = time.monotonic()
        end = started + self.budget
        attempts = 0
        for attempt in range(self.retries):
            if attempt:
                delay = backoff(attempt)
                if time.monotonic() + delay >= end:
                    break  # no time left for another attempt: the total budget is spent
                log.info(
                    "registry retry %d/%d in %.2fs: %s",
                    attempt,
                    self.retries - 1,
                    delay,
                    last_error,
                )
                self._sleep(delay)
            limit = min(self.timeout, end - time.monotonic())
            if limit <= 0:
                break
            attempts += 1
            try:
                response = self._send_within(limit, method, url, headers, body)
            except _TLSFailure as exc:
                raise RegistryUnavailable(
                    f"TLS with registry {self.repository.registry} failed: {exc}; trust "
                    f"its CA in {DEFAULT_CERTS_DIR}/{self.repository.registry}/ca.crt"
                ) from None
            except _Deadline:
                last_error = f"no complete answer within {limit:.3g}s"
                continue
            except _Transient as exc:
                last_error = str(exc)
                continue
            if response.status_code >= 500 or response.status_code == 429:
                last_error = f"HTTP {response.status_code}"
                continue
            if response.status_code in (401, 403):
                self._expect_ok(response, f"{method} {urllib.parse.urlparse(url).path}")
            return response
        took = time.monotonic() - started
        raise RegistryUnavailable(
            f"registry {self.repository.registry} unavailable after {attempts} "
            f"attempt{'s' if attempts != 1 else ''} in {took:.1f}s ({last_error}); check that "
            "it is running and reachable (shatag.registry_timeout_sec bounds each attempt, "
            "shatag.registry_retries their number)"
        )

    def _send_within(
        self,
        limit: float,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        body: bytes | None,
    ) -> _Response:
        """:meth:`_send` with its body read in full, all within ``limit`` seconds.

        The socket timeout only bounds each read, so the attempt runs in a daemon thread and is
        abandoned (its socket closed when possible) once ``limit`` has passed.
        """
        outcome: list[_Response | BaseException] = []

        def attempt() -> None:
            try:
                outcome.append(self._send(method, url, headers, body))
            except BaseException as exc:  # noqa: BLE001 -- handed to the caller's thread
                outcome.append(_as_fault(exc))

        worker = threading.Thread(target=attempt, name="shatag-registry", daemon=True)
        worker.start()
        worker.join(limit)
        if worker.is_alive() or not outcome:
            raise _Deadline
        result = outcome[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        body: bytes | None = None,
    ) -> _Response:
        sent = dict(headers or {})
        if self._authorization:
            sent["Authorization"] = self._authorization
        response = self._fetch(method, url, sent, body)
        if response.status_code == 401 and self._authenticate(response):
            sent["Authorization"] = self._authorization or ""
            response = self._fetch(method, url, sent, body)
        return response

    def _fetch(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None
    ) -> _Response:
        """One HTTP exchange, the body read here (at most :data:`MAX_BODY_BYTES`)."""
        if self.plain_http and url.startswith("http://"):
            response = self._fetch_plain(method, url, headers, body)
            if response is not None:
                return response
        return self._fetch_requests(method, url, headers, body)

    def _fetch_plain(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None
    ) -> _Response | None:
        """:meth:`_fetch` over ``http.client``; ``None`` for a redirect (``requests`` follows
        it). Transport faults raise :class:`_Transient`, like ``requests``' do."""
        parts = urllib.parse.urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        sent = {"Accept-Encoding": "identity", "User-Agent": "shatag", **headers}
        conn = http.client.HTTPConnection(parts.netloc, timeout=self.timeout)
        try:
            conn.request(method, target or "/", body=body, headers=sent)
            answer = conn.getresponse()
            if answer.status in _REDIRECTS and answer.getheader("Location"):
                return None
            values: dict[str, list[str]] = {}
            for name, value in answer.getheaders():
                values.setdefault(name.lower(), []).append(value)
            content = self._read_capped(answer.read, method, url)
            return _Response(answer.status, values, content)
        except (OSError, http.client.HTTPException) as exc:
            reason = _short(exc) or type(exc).__name__
            raise _Transient(f"{method} {url}: {reason}") from None
        finally:
            conn.close()

    def _fetch_requests(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None
    ) -> _Response:
        response = self._session.request(
            method, url, headers=headers, data=body, allow_redirects=True, stream=True
        )
        with response:
            chunks = response.iter_content(_CHUNK)
            content = self._read_capped(lambda _size: next(chunks, b""), method, url)
            values = {name.lower(): [value] for name, value in response.headers.items()}
        return _Response(response.status_code, values, content)

    def _read_capped(self, read: Callable[[int], bytes], method: str, url: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while chunk := read(_CHUNK):
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise RegistryUnavailable(
                    f"registry {self.repository.registry} sent more than "
                    f"{MAX_BODY_BYTES} bytes for {method} {urllib.parse.urlparse(url).path}; "
                    "refusing to read it"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _authenticate(self, challenge: _Response) -> bool:
        """Answer a 401 challenge; return whether the request is worth retrying."""
        raw = challenge.header("WWW-Authenticate") or ""
        scheme = raw.split(" ", 1)[0].lower()
        basic = self._basic_credentials()
        if scheme == "basic":
            if not basic:
                raise RegistryAuthError(
                    f"registry {self.repository.registry} needs credentials and the docker "
                    f"config has none; run `docker login {self.repository.registry}`"
                )
            self._authorization = f"Basic {basic}"
            return True
        if scheme == "bearer":
            import oras.auth.utils  # lazy: oras pulls in jsonschema

            backend = self._backend()
            token = backend.request_token(oras.auth.utils.parse_auth_header(raw))
            if not token:
                raise RegistryAuthError(
                    f"registry {self.repository.registry} would not issue a token; check the "
                    f"credentials for it in the docker config"
                )
            self._authorization = f"Bearer {token}"
            return True
        return False

    def _backend(self) -> Any:
        if self._auth_backend is None:
            import oras.auth

            backend = oras.auth.get_auth_backend(
                "token",
                session=self._session,
                insecure=self.plain_http,
                tls_verify=self._verify,
            )
            backend._auth_config = self._docker_config()
            backend._load_auth(self.repository.registry)
            self._auth_backend = backend
        return self._auth_backend

    def _basic_credentials(self) -> str | None:
        backend = self._backend()
        value = getattr(backend, "_basic_auth", None)
        return str(value) if value else None

    def _docker_config(self) -> dict[str, Any]:
        base = self._env.get("DOCKER_CONFIG") or str(Path(self._env.get("HOME", "~")) / ".docker")
        path = Path(base).expanduser() / "config.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}


def open_registry(
    config: RegistryConfig, repository: Repository, *, env: Mapping[str, str]
) -> RegistryClient:
    """The client of ``repository`` as configured: the one place use cases build one."""
    return RegistryClient(repository, env=env, timeout=config.timeout_sec, retries=config.retries)


def _challenge(response: requests.Response) -> _Response:
    """A streamed response's status and headers as a :class:`_Response` (no body)."""
    return _Response(
        response.status_code, {k.lower(): [v] for k, v in response.headers.items()}, b""
    )


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) < 200 else text[:200] + "…"
