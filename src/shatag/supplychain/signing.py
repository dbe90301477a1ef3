"""cosign adapter: sign by digest, verify softly, classify what cosign really answers.

Every call goes through :func:`shatag._sys.subproc.run` (argument list, timeout, secrets masked).
The key password travels only as ``COSIGN_PASSWORD`` in the environment mapping, never on a
command line, and is masked in anything we keep of cosign's output.

The classification below was written from cosign's real behaviour (v2.6.5, observed by running
it against a local registry; see ``docs/signatures.md`` for the table and how each row was
produced). Anything cosign answers that is not in the table is a tool error
(:class:`SoftVerifyToolError`), never "verified".

>>> classify_verify(10, "", "Error: no signatures found").reason
'no_signature'
>>> classify_verify(12, "", "Error: no matching signatures: invalid signature").reason
'invalid'
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from shatag._sys.subproc import Result, run, which
from shatag.config import SigningConfig
from shatag.errors import (
    ConfigError,
    InvalidInput,
    SignatureRequired,
    SoftVerifyToolError,
    ToolFailure,
    ToolMissing,
    ToolTimeout,
)

log = logging.getLogger("shatag.signing")

SignatureStatus = Literal["verified", "unverified"]
SignatureReason = Literal[
    "n/a", "no_signature", "invalid", "key_not_found", "tool_missing", "error"
]

COSIGN: Final = "cosign"
PASSWORD_ENV: Final = "COSIGN_PASSWORD"  # noqa: S105 -- the variable's name, not a password
# Environment that marks a GitHub Actions job allowed to mint an OIDC token
# (`permissions: id-token: write`); cosign picks the token up by itself for keyless signing.
GITHUB_OIDC_ENV: Final = "ACTIONS_ID_TOKEN_REQUEST_URL"
SIGSTORE_TOKEN_ENV: Final = "SIGSTORE_ID_TOKEN"  # noqa: S105 -- a variable name

_BY_DIGEST_RE: Final = re.compile(r"[^@\s]+@sha256:[0-9a-f]{64}")
_VERSION_RE: Final = re.compile(r"GitVersion:\s*v?(\d+)\.(\d+)\.(\d+)")
# Key references cosign resolves itself (KMS, Kubernetes secrets, PKCS#11): not local files.
_KEY_URI_RE: Final = re.compile(r"[a-z][a-z0-9+.-]*://")

# cosign exit codes (cmd/cosign/errors/exit_codes.go); only the older signature path uses them.
EXIT_NO_SIGNATURES: Final = 10
EXIT_TAG_NOT_FOUND: Final = 11
EXIT_NO_MATCHING_SIGNATURES: Final = 12
EXIT_NO_CERTIFICATE: Final = 13


@dataclass(frozen=True, slots=True)
class SignatureResult:
    """What verification found. ``status`` and ``reason`` go into the build/deploy records."""

    status: SignatureStatus
    reason: SignatureReason
    detail: str = ""

    @property
    def verified(self) -> bool:
        return self.status == "verified"


VERIFIED_NA: Final = SignatureResult("verified", "n/a", "")


def _unverified(reason: SignatureReason, detail: str) -> SignatureResult:
    return SignatureResult("unverified", reason, detail)


@dataclass(frozen=True, slots=True, order=True)
class CosignVersion:
    """cosign's version (``cosign version``), ordered."""

    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}"


def parse_cosign_version(text: str) -> CosignVersion | None:
    """Parse ``cosign version`` output (``GitVersion:    v2.6.5``).

    >>> parse_cosign_version("GitVersion:    v2.6.5\\nGitCommit: x")
    CosignVersion(major=2, minor=6, patch=5)
    >>> parse_cosign_version("garbage") is None
    True
    """
    match = _VERSION_RE.search(text)
    if match is None:
        return None
    return CosignVersion(int(match[1]), int(match[2]), int(match[3]))


# ---------------------------------------------------------------------------------------------
# Pure classification (unit-tested; table in docs/signatures.md)
# ---------------------------------------------------------------------------------------------

_NO_SIGNATURE_TEXT: Final = ("no signatures found", "no valid bundles exist in registry")
_INVALID_TEXT: Final = (
    "no matching signatures",
    "invalid signature",
    "signature mismatch",
    "failed to verify signature",
    "no certificate found on signature",
)
_KEY_TEXT: Final = ("loading public key",)
_NO_ATTESTATION_TEXT: Final = ("no matching attestations: \n", "none of the attestations matched")
_INVALID_ATTESTATION_TEXT: Final = (
    "accepted signatures do not match threshold",
    "invalid signature",
    "no matching signatures",
)


def _error_lines(stderr: str) -> str:
    """cosign's own error line(s), without its tlog/TUF warnings."""
    kept = [
        line.strip()
        for line in stderr.splitlines()
        if line.strip() and not line.lstrip().startswith("WARNING")
    ]
    errors = [line for line in kept if line.startswith("Error:")]
    chosen = errors or kept[-3:]
    return " | ".join(chosen)[:500] or "(no output)"


def classify_verify(
    returncode: int, stdout: str, stderr: str, *, digest: str = ""
) -> SignatureResult:
    """Map one ``cosign verify`` run to a result, or raise :class:`SoftVerifyToolError`.

    Exit 0 counts only when stdout is the JSON list cosign prints on success and, when
    ``digest`` is given, every verified payload names that digest.
    """
    text = stderr.lower()
    detail = _error_lines(stderr)
    if returncode == 0:
        return _check_success_payload(stdout, digest)
    if returncode == EXIT_NO_SIGNATURES or (
        returncode == 1 and any(t in text for t in _NO_SIGNATURE_TEXT)
    ):
        return _unverified("no_signature", detail)
    if returncode in (EXIT_NO_MATCHING_SIGNATURES, EXIT_NO_CERTIFICATE) or (
        returncode == 1 and any(t in text for t in _INVALID_TEXT)
    ):
        return _unverified("invalid", detail)
    if returncode == 1 and any(t in text for t in _KEY_TEXT):
        return _unverified("key_not_found", detail)
    raise SoftVerifyToolError(
        f"cosign verify gave no pass/fail answer (exit {returncode}): {detail}; "
        "check the registry is reachable and cosign works (`cosign version`), then retry"
    )


def classify_verify_attestation(returncode: int, stdout: str, stderr: str) -> SignatureResult:
    """Map one ``cosign verify-attestation`` run. cosign exits 1 for every failure here."""
    text = stderr.lower()
    detail = _error_lines(stderr)
    if returncode == 0:
        if not stdout.strip():
            raise SoftVerifyToolError(
                "cosign verify-attestation exited 0 but printed no attestation"
            )
        return VERIFIED_NA
    if returncode in (1, EXIT_NO_SIGNATURES) and (
        any(t in text for t in _NO_ATTESTATION_TEXT)
        or text.rstrip().endswith("no matching attestations:")
        or "no signatures found" in text
    ):
        return _unverified("no_signature", detail)
    if returncode in (1, EXIT_NO_MATCHING_SIGNATURES) and any(
        t in text for t in _INVALID_ATTESTATION_TEXT
    ):
        return _unverified("invalid", detail)
    if returncode == 1 and any(t in text for t in _KEY_TEXT):
        return _unverified("key_not_found", detail)
    raise SoftVerifyToolError(
        f"cosign verify-attestation gave no pass/fail answer (exit {returncode}): {detail}"
    )


def _check_success_payload(stdout: str, digest: str) -> SignatureResult:
    try:
        payloads = json.loads(stdout)
    except ValueError:
        raise SoftVerifyToolError(
            "cosign verify exited 0 but its output is not the expected JSON; not trusting it"
        ) from None
    if not isinstance(payloads, list) or not payloads:
        raise SoftVerifyToolError("cosign verify exited 0 but listed no verified signature")
    if digest:
        for item in payloads:
            named = (
                item.get("critical", {}).get("image", {}).get("docker-manifest-digest")
                if isinstance(item, dict)
                else None
            )
            if named != digest:
                return _unverified(
                    "invalid", f"a verified signature names {named!r}, not the image {digest}"
                )
    return VERIFIED_NA


def _trusted(config: SigningConfig) -> str:
    if config.cosign_public_key:
        return f"shatag.cosign_public_key ({config.cosign_public_key})"
    return f"the keyless identity {config.keyless_identity!r} of {config.keyless_issuer!r}"


def describe_unverified(config: SigningConfig, result: SignatureResult) -> str:
    """What an unverified result means for the operator, by reason (issue 24, item 7): an
    image signed by another key is *signed*, just not by a trusted key -- "sign it" would be
    the wrong advice.

    >>> describe_unverified(SigningConfig(cosign_public_key="k.pub"),
    ...                     _unverified("invalid", "no matching signatures"))[:48]
    'the image is signed by a key that is not trusted'
    """
    detail = result.detail or "no detail"
    if result.reason == "invalid":
        return (
            "the image is signed by a key that is not trusted: its signature does not verify "
            f"against {_trusted(config)} ({detail}); sign it with the trusted key "
            "(shatag.cosign_key), or trust the key it was signed with"
        )
    if result.reason == "no_signature":
        return f"the image is not signed ({detail}); sign it with `inv build --sign`"
    return (
        f"the image's signature could not be checked ({result.reason}: {detail}); configure "
        "shatag.cosign_public_key (or keyless_identity/keyless_issuer) and install cosign"
    )


def enforce_policy(config: SigningConfig, result: SignatureResult) -> None:
    """Under ``signature_policy: enforce`` an unverified image stops the job (FR-014).

    >>> enforce_policy(SigningConfig(), _unverified("no_signature", ""))  # soft
    """
    if config.policy == "enforce" and not result.verified:
        raise SignatureRequired(
            f"signature_policy is 'enforce' and the image is unverified: "
            f"{describe_unverified(config, result)}; or set shatag.signature_policy to 'soft'"
        )


# ---------------------------------------------------------------------------------------------
# cosign invocation
# ---------------------------------------------------------------------------------------------


def _require_by_digest(image: str) -> str:
    if not _BY_DIGEST_RE.fullmatch(image):
        raise InvalidInput(
            f"{image!r} is not a by-digest reference (repo@sha256:<64 hex>); cosign signs and "
            "verifies the manifest digest, never a tag"
        )
    return image


def _digest_of(image: str) -> str:
    return image.rpartition("@")[2]


_version_cache: dict[tuple[str, float], CosignVersion] = {}


def cosign_version(config: SigningConfig, env: Mapping[str, str]) -> CosignVersion:
    """Detect the installed cosign's version (cached per binary). Raises ToolMissing/…

    An unreadable but successful ``cosign version`` is assumed to be v2 (the pinned one).
    A ``cosign version`` that fails or hangs is a broken tool: :class:`SoftVerifyToolError`.
    """
    path = which(COSIGN, env)
    if path is None:
        raise ToolMissing("cosign is not installed or not on PATH", command=COSIGN)
    key = (path, Path(path).stat().st_mtime)
    if key in _version_cache:
        return _version_cache[key]
    try:
        result = run([path, "version"], timeout=min(config.tool_timeout_sec, 30.0), env=env)
    except ToolMissing:
        raise
    except ToolFailure as exc:
        raise SoftVerifyToolError(f"`cosign version` failed, cosign is unusable: {exc}") from None
    version = parse_cosign_version(result.stdout + result.stderr)
    if version is None:
        log.warning("could not read the cosign version; assuming v2 flags")
        version = CosignVersion(2, 0, 0)
    _version_cache[key] = version
    return version


def _is_key_file(ref: str) -> bool:
    return not _KEY_URI_RE.match(ref)


# An empty Sigstore trusted root. Key-based verification needs no CA and no log, but cosign
# (v3 always, v2 for new-format bundles) refuses to check a bundle without *some* trusted root
# ("trusted root is required when using new bundle format") and would otherwise fetch the public
# one from TUF over the network. Observed: with this file both v2.6.5 and v3.0.2 verify old
# (``.sig``) and new (bundle) signatures offline; see docs/signatures.md.
EMPTY_TRUSTED_ROOT: Final = (
    '{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}\n'
)


def verification_flags(
    config: SigningConfig, trusted_root: Path | None = None
) -> list[str] | SignatureResult:
    """The trust flags for ``verify``/``verify-attestation``, or ``key_not_found``.

    Key-based (``cosign_public_key``) verification is offline: no transparency log, and
    ``trusted_root`` (a file holding :data:`EMPTY_TRUSTED_ROOT`) instead of the public
    Sigstore root. Keyless (``keyless_identity`` + ``keyless_issuer``) checks the Fulcio
    certificate identity and the Rekor log, as GitHub-OIDC-signed images need.
    """
    # The verify flags we use are the same in cosign v2 and v3 (observed), so verification
    # never needs `cosign version` (0.3-0.6 s saved per build/deploy).
    key = config.cosign_public_key
    if key:
        if _is_key_file(key) and not Path(key).is_file():
            return _unverified("key_not_found", f"public key file {key} does not exist")
        flags = ["--key", key, "--insecure-ignore-tlog"]
        if trusted_root is not None:
            flags += ["--trusted-root", str(trusted_root)]
        return flags
    if config.keyless_identity and config.keyless_issuer:
        return [
            "--certificate-identity-regexp",
            config.keyless_identity,
            "--certificate-oidc-issuer",
            config.keyless_issuer,
        ]
    return _unverified(
        "key_not_found",
        "no cosign_public_key and no keyless_identity/keyless_issuer configured",
    )


@contextlib.contextmanager
def _trusted_root_file() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="shatag-cosign-") as tmp:
        path = Path(tmp) / "trusted_root.json"
        path.write_text(EMPTY_TRUSTED_ROOT)
        yield path


def _verify_with_trust(
    config: SigningConfig,
    env: Mapping[str, str],
    command: list[str],
    image: str,
    what: str,
) -> Result | SignatureResult:
    """Run ``cosign <command> <trust flags> <image>`` or return why it cannot answer."""
    if which(COSIGN, env) is None:
        return _unverified("tool_missing", "cosign is not installed or not on PATH")
    untrusted = verification_flags(config)
    if isinstance(untrusted, SignatureResult):
        return untrusted  # no trust configured: no temporary trusted root either (issue 17)
    with _trusted_root_file() as trusted_root:
        flags = verification_flags(config, trusted_root)
        if isinstance(flags, SignatureResult):
            return flags
        return _run_cosign([*command, *flags, image], config, env, what)


def _run_cosign(
    argv: list[str], config: SigningConfig, env: Mapping[str, str], what: str
) -> Result | SignatureResult:
    """Run a read-only cosign command; ToolMissing → ``tool_missing``; failures → tool error."""
    try:
        return run(
            [COSIGN, *argv],
            timeout=config.tool_timeout_sec,
            env=env,
            secrets=_secrets(env),
            check=False,
        )
    except ToolMissing:
        return _unverified("tool_missing", "cosign is not installed or not on PATH")
    except ToolTimeout:
        raise SoftVerifyToolError(
            f"cosign {what} did not answer within {config.tool_timeout_sec:g}s "
            "(shatag.tool_timeout_sec); check registry reachability and retry"
        ) from None
    except ToolFailure as exc:
        raise SoftVerifyToolError(f"cosign {what} could not run: {exc}") from None


def _secrets(env: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(
        v for k, v in env.items() if k == PASSWORD_ENV or k.endswith(("_TOKEN", "_PASSWORD"))
    )


def verify_signature(
    config: SigningConfig, image_by_digest: str, *, env: Mapping[str, str]
) -> SignatureResult:
    """Verify the cosign signature of ``repo@sha256:…`` against the configured trust (FR-014).

    Returns ``verified``/``n/a`` or ``unverified`` with a reason; raises
    :class:`SoftVerifyToolError` when cosign gives no pass/fail answer (crash, garbage,
    timeout, registry unreachable).
    """
    image = _require_by_digest(image_by_digest)
    outcome = _verify_with_trust(config, env, ["verify"], image, "verify")
    if isinstance(outcome, SignatureResult):
        return outcome
    result = classify_verify(
        outcome.returncode, outcome.stdout, outcome.stderr, digest=_digest_of(image)
    )
    log.info("signature of %s: %s (%s)", image, result.status, result.reason)
    return result


def verify_attestation(
    config: SigningConfig,
    image_by_digest: str,
    *,
    env: Mapping[str, str],
    predicate_type: str = "spdxjson",
) -> SignatureResult:
    """Verify a cosign attestation of ``predicate_type`` on the image (same vocabulary)."""
    image = _require_by_digest(image_by_digest)
    outcome = _verify_with_trust(
        config,
        env,
        ["verify-attestation", "--type", predicate_type],
        image,
        "verify-attestation",
    )
    if isinstance(outcome, SignatureResult):
        return outcome
    return classify_verify_attestation(outcome.returncode, outcome.stdout, outcome.stderr)


def verify_attestation_statements(
    config: SigningConfig,
    image_by_digest: str,
    *,
    env: Mapping[str, str],
    predicate_type: str,
) -> tuple[SignatureResult, list[dict[str, object]]]:
    """:func:`verify_attestation`, plus the in-toto statements cosign verified (each line
    cosign prints is an envelope whose base64 ``payload`` is one statement). A verified
    answer whose output holds no readable statement is a tool error, never "verified"."""
    image = _require_by_digest(image_by_digest)
    outcome = _verify_with_trust(
        config,
        env,
        ["verify-attestation", "--type", predicate_type],
        image,
        "verify-attestation",
    )
    if isinstance(outcome, SignatureResult):
        return outcome, []
    result = classify_verify_attestation(outcome.returncode, outcome.stdout, outcome.stderr)
    if not result.verified:
        return result, []
    statements = [s for s in map(_statement, outcome.stdout.splitlines()) if s is not None]
    if not statements:
        raise SoftVerifyToolError(
            "cosign verify-attestation exited 0 but printed no readable in-toto statement"
        )
    return result, statements


def _statement(line: str) -> dict[str, object] | None:
    """The in-toto statement inside one DSSE envelope line of cosign's output."""
    import base64
    import binascii

    try:
        envelope = json.loads(line)
        payload = envelope.get("payload", "") if isinstance(envelope, dict) else ""
        statement = json.loads(base64.b64decode(payload, validate=True))
    except (ValueError, binascii.Error):
        return None
    return statement if isinstance(statement, dict) else None


def signing_flags(
    config: SigningConfig, version: CosignVersion, env: Mapping[str, str]
) -> list[str]:
    """Flags for ``cosign sign``/``attest``: key-based offline, or keyless under GitHub OIDC.

    Key-based signing uploads nothing to a transparency log, so it works offline against a
    plain-HTTP loopback registry. cosign v3 refuses ``--tlog-upload=false`` unless its default
    signing config is turned off too (``--use-signing-config=false``).
    Keyless signing needs an OIDC token: in GitHub Actions with ``permissions: id-token: write``
    cosign fetches it itself (``ACTIONS_ID_TOKEN_REQUEST_URL``), elsewhere pass
    ``SIGSTORE_ID_TOKEN``; the signature is logged in Rekor, as keyless verification expects.
    """
    key = config.cosign_key
    if key:
        if _is_key_file(key) and not Path(key).is_file():
            raise ConfigError(
                f"cosign_key {key} does not exist; generate one with "
                "`COSIGN_PASSWORD=... cosign generate-key-pair` or fix shatag.cosign_key"
            )
        flags = ["--key", key, "--tlog-upload=false"]
        if version.major >= 3:
            flags.append("--use-signing-config=false")
        return flags
    if env.get(GITHUB_OIDC_ENV) or env.get(SIGSTORE_TOKEN_ENV):
        return []  # keyless: Fulcio certificate + Rekor entry, identity from the OIDC token
    raise ConfigError(
        "signing needs shatag.cosign_key (key-based) or a GitHub Actions OIDC token "
        "(keyless: `permissions: id-token: write`)"
    )


def _signing_env(env: Mapping[str, str]) -> dict[str, str]:
    # Without COSIGN_PASSWORD cosign would prompt on a terminal; an empty one suits a key
    # generated without password and fails cleanly for an encrypted key.
    out = dict(env)
    out.setdefault(PASSWORD_ENV, "")
    return out


def _mutating_cosign(
    argv: list[str], config: SigningConfig, env: Mapping[str, str], what: str
) -> None:
    sign_env = _signing_env(env)
    try:
        run(
            [COSIGN, *argv],
            timeout=config.tool_timeout_sec,
            env=sign_env,
            secrets=_secrets(sign_env),
        )
    except ToolMissing:
        raise ToolMissing(
            f"cosign is not installed or not on PATH; {what} needs it (run ci/install-tools.sh)",
            command=COSIGN,
        ) from None
    except ToolFailure as exc:
        raise ToolFailure(
            f"cosign {what} failed; the SHA tags are unchanged: {exc}",
            command=exc.command,
            returncode=exc.returncode,
            output=exc.output,
        ) from None


def sign_image(config: SigningConfig, image_by_digest: str, *, env: Mapping[str, str]) -> None:
    """Sign ``repo@sha256:…`` with cosign (FR-010). Tags are never touched: cosign stores the
    signature beside the manifest (``sha256-<hex>.sig`` tag or an OCI referrer)."""
    image = _require_by_digest(image_by_digest)
    version = cosign_version(config, env)
    flags = signing_flags(config, version, env)
    _mutating_cosign(["sign", *flags, "-y", image], config, env, "sign")


def attest_predicate(
    config: SigningConfig,
    image_by_digest: str,
    predicate: Path,
    *,
    env: Mapping[str, str],
    predicate_type: str = "spdxjson",
) -> None:
    """Attach ``predicate`` (e.g. an SPDX-JSON SBOM) as a signed in-toto attestation."""
    image = _require_by_digest(image_by_digest)
    version = cosign_version(config, env)
    flags = signing_flags(config, version, env)
    _mutating_cosign(
        ["attest", *flags, "--type", predicate_type, "--predicate", str(predicate), "-y", image],
        config,
        env,
        "attest",
    )
