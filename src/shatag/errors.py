"""The error hierarchy: every expected failure carries a stable code.

The library raises; exactly one place (``shatag.tasks._edge``) prints
``error: CODE: message`` and exits with ``exit_status``.

>>> err = MissingTag("localhost:5000/api:abc is not in the registry")
>>> (err.code, err.exit_status)
('MISSING_TAG', 1)
"""

from __future__ import annotations


class ShatagError(Exception):
    """Base of every expected failure. ``code`` is stable: CI and docs rely on it."""

    code: str = "ERROR"
    exit_status: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class MissingSha(ShatagError):
    """The SHA is empty or not 40 lowercase hex characters."""

    code = "MISSING_SHA"


class InvalidInput(ShatagError):
    """An operator-supplied value other than the SHA (branch, env, path, config) is unusable."""

    code = "INVALID_INPUT"


class ConfigError(ShatagError):
    """The configuration is inconsistent or names something that does not exist."""

    code = "CONFIG_ERROR"


class BuildFailure(ShatagError):
    code = "BUILD_FAILURE"


class SourceMismatch(ShatagError):
    """The build context is not the commit named by --sha (other HEAD, or modified files)."""

    code = "SOURCE_MISMATCH"


class PushFailure(ShatagError):
    code = "PUSH_FAILURE"


class RegistryUnavailable(ShatagError):
    """The registry could not be reached (refused, timed out, 5xx) after bounded retries."""

    code = "REGISTRY_UNAVAILABLE"


class RegistryAuthError(ShatagError):
    """The registry refused our credentials (401/403)."""

    code = "REGISTRY_AUTH"


class MissingTag(ShatagError):
    code = "MISSING_TAG"


class PolicyViolation(ShatagError):
    code = "POLICY_VIOLATION"


class DigestMismatch(ShatagError):
    code = "DIGEST_MISMATCH"


class SoftVerifyToolError(ShatagError):
    code = "SOFT_VERIFY_TOOL_ERROR"


class SignatureRequired(ShatagError):
    """Policy ``enforce`` and the image is not verified."""

    code = "SIGNATURE_REQUIRED"


class Quarantined(ShatagError):
    """The SHA was quarantined in the environment's ledger (``inv quarantine``, issue 25): no
    deploy, rollback or plan puts it in place until ``inv unquarantine`` lifts it."""

    code = "QUARANTINED"


class DeployFailed(ShatagError):
    code = "DEPLOY_FAILED"


class DeployLocked(ShatagError):
    code = "DEPLOY_LOCKED"


class NotOwned(ShatagError):
    """A container or network with a name shatag would use was not created by shatag for this
    environment and target; it is left untouched (issue 12)."""

    code = "NOT_OWNED"


class Interrupted(ShatagError):
    """SIGTERM, SIGINT or SIGHUP stopped a deploy or rollback; what it had changed was undone
    (issue 12)."""

    code = "INTERRUPTED"


class PromotionBlocked(ShatagError):
    """``promote``: a gate holds the release (not the source's current release, soak not over,
    a check failed, not main-line code for a canonical target); the message names the gate.
    Nothing was changed (issue 26)."""

    code = "PROMOTION_BLOCKED"


class NoRollbackTarget(ShatagError):
    code = "NO_ROLLBACK_TARGET"


class Drift(ShatagError):
    """``status``: a target runs (or pins) something other than the release the ledger says is
    current, or its rollout is not complete (issue 23, item 5). Exit status 3."""

    code = "DRIFT"
    exit_status = 3


class TargetDown(ShatagError):
    """``status``: a target runs nothing, or what runs does not answer its health check
    (issue 23, item 5). Exit status 4 (wins over DRIFT)."""

    code = "TARGET_DOWN"
    exit_status = 4


class LedgerDenied(ShatagError):
    """The state remote refused a write to the git ledger (permissions, a hook, a protected
    ref): nothing was deployed, or what was applied has been restored."""

    code = "LEDGER_DENIED"


class LedgerUnavailable(ShatagError):
    """The git ledger could not be read or written: no git repository, the remote is
    unreachable or timed out, or compare-and-swap retries ran out."""

    code = "LEDGER_UNAVAILABLE"


class StateError(ShatagError):
    """The state directory (history, lock, journal) cannot be read or written: a path that is a
    directory, a read-only or full file system. Raised before anything changes (issue 14)."""

    code = "STATE_ERROR"


class OutputClosed(ShatagError):
    """Whoever reads our stdout closed it (``inv history --json | head -1``)."""

    code = "OUTPUT_CLOSED"


class InternalError(ShatagError):
    """A failure shatag did not anticipate: reported with a code instead of a traceback
    (``SHATAG_DEBUG=1`` logs the traceback)."""

    code = "INTERNAL_ERROR"


class ToolFailure(ShatagError):
    """An external program failed; carries the (masked) command and output."""

    code = "TOOL_FAILURE"

    def __init__(
        self, message: str, *, command: str = "", returncode: int | None = None, output: str = ""
    ) -> None:
        super().__init__(message)
        self.command = command
        self.returncode = returncode
        self.output = output


class ToolTimeout(ToolFailure):
    code = "TOOL_TIMEOUT"


class ToolMissing(ToolFailure):
    code = "TOOL_MISSING"


def _codes(cls: type[ShatagError]) -> set[str]:
    found = {cls.code}
    for sub in cls.__subclasses__():
        found |= _codes(sub)
    return found


#: Every code an expected failure can carry (derived, so a new error class cannot be missed).
ALL_CODES: tuple[str, ...] = tuple(sorted(_codes(ShatagError) - {ShatagError.code}))
