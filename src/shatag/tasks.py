"""The Invoke task collection. Tasks adapt; the library decides.

Each task reads flags and configuration, builds one typed request, calls one library
function, prints its record and turns our error into an exit code. Any project can use it::

    # tasks.py
    from shatag.tasks import ns  # noqa: F401

Configuration lives under ``shatag`` in invoke config (``invoke.yaml``, ``inv -f FILE``, the
``shatag`` script's ``shatag.yaml``, ``INVOKE_SHATAG_*`` variables); keys and defaults:
:data:`shatag.config.DEFAULTS`; relative paths resolve against the file that set them.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoke.collection import Collection
from invoke.config import Config
from invoke.context import Context
from invoke.exceptions import Exit, ParseError, UnknownFileType
from invoke.executor import Executor
from invoke.tasks import task

from shatag import _exit, _invoke, output
from shatag._defaults import DEFAULTS, FILE_ONLY, invoke_defaults
from shatag._sys import signals
from shatag.errors import InternalError, InvalidInput, OutputClosed, ShatagError
from shatag.limits import clip_message

if TYPE_CHECKING:
    from shatag.app.deploy import DeployRecord, PlanRecord
    from shatag.config import Settings

log = logging.getLogger("shatag.tasks")


def _parse_error_line(self: ParseError) -> str:
    flat = " ".join(Exception.__str__(self).split())
    return f"error: INVALID_INPUT: {flat}; see `{output.PROGRAM} --help <task>`"


# Invoke's own parser rejects some hostile flag values before any task runs (``--sha`` with no
# value, ``--sha=--rebuild``) and prints str(ParseError) itself. This module is imported before
# task flags are parsed, so those messages too follow our `error: CODE: message` contract.
ParseError.__str__ = _parse_error_line  # type: ignore[method-assign,assignment]
# Likewise an INVOKE_SHATAG_* value Invoke cannot cast (a list over a list from a file) reaches
# Settings' validation (CONFIG_ERROR) instead of a raw UncastableEnvVar traceback (issue 13).
_invoke.install_env_cast()
# A CLI run ends without the interpreter's teardown once its output is flushed (issue 17).
_exit.install()


class FastExitExecutor(Executor):
    """Runs the requested tasks, then ends a CLI process at once (:mod:`shatag._exit`)."""

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        results = super().execute(*args, **kwargs)
        _exit.finished()
        return results


def _config_error(where: str, exc: ShatagError) -> None:
    """A configuration file refused while Invoke loads it: reported like any task's error
    (Invoke's Program turns the :class:`Exit` into the exit status)."""
    _report("config", os.environ, {"config_file": where}, exc)


def _load_yaml_bounded(self: Config, path: Any) -> Any:
    """Invoke's YAML loader for ``invoke.yaml``, ``inv -f FILE`` and ``shatag.yaml``, bounded
    (issues 14 and 24): a FIFO, directory or dangling symlink, a file over the size or node
    limit, an alias bomb, a non-string key or a syntax error is ``CONFIG_ERROR``, not a hang, a
    traceback or a MemoryError. (``/etc/invoke.yaml`` and ``~/.invoke.yaml`` are read before
    shatag is imported and keep invoke's own loader.)"""
    del self
    from shatag.limits import load_yaml

    where = str(path)
    try:
        # FileNotFoundError passes: invoke tries the next suffix (invoke.yaml, invoke.yml, …)
        return load_yaml(_invoke.read_config_file(path), where)
    except ShatagError as exc:
        _config_error(where, exc)
    raise AssertionError("unreachable")  # pragma: no cover -- _report always raises


def _load_json_bounded(self: Config, path: Any) -> Any:
    """Invoke's JSON loader (``inv -f x.json``), with the same file checks as YAML."""
    del self
    import json

    from shatag.errors import ConfigError
    from shatag.limits import check_string_keys, flat

    where = str(path)
    try:
        try:
            data = json.loads(_invoke.read_config_file(path))
        except ValueError as exc:  # RecursionError is not one: nesting is bounded by size
            raise ConfigError(f"{where} is not valid JSON: {flat(str(exc))}") from None
        check_string_keys(data, where)
    except (ShatagError, RecursionError) as exc:
        err = exc if isinstance(exc, ShatagError) else ConfigError(f"{where} nests too deeply")
        _config_error(where, err)
    else:
        return data
    raise AssertionError("unreachable")  # pragma: no cover -- _report always raises


_invoke_load_py = Config._load_py


def _load_py_checked(self: Config, path: Any) -> Any:
    """Invoke's Python-file loader (``inv -f x.py`` runs that file), after the same checks
    that it is a regular file of bounded size."""
    try:
        _invoke.read_config_file(path)
    except ShatagError as exc:
        _config_error(str(path), exc)
    return _invoke_load_py(self, path)


_invoke_load_file = Config._load_file


def _load_file_checked(
    self: Config, prefix: str, absolute: bool = False, merge: bool = True
) -> None:
    """Invoke's file loading, with a named file (``-f``, ``INVOKE_RUNTIME_CONFIG``) that is
    missing or of an unknown type a CONFIG_ERROR (issue 24, item 6): Invoke itself skips a
    missing ``-f`` file silently (the built-in defaults were used) and raises
    ``UnknownFileType`` for ``-f x.bak`` as a traceback."""
    from shatag.errors import ConfigError
    from shatag.limits import shown

    named = getattr(self, f"_{prefix}_path", None) if absolute else None
    if named is not None and getattr(self, f"_{prefix}_found", None) is None:
        where = shown(str(named), 300)
        if not os.path.lexists(os.path.expanduser(str(named))):
            _config_error(str(named), ConfigError(f"configuration file {where} does not exist"))
    try:
        _invoke_load_file(self, prefix, absolute, merge)
    except UnknownFileType:
        try:  # a FIFO, directory or device is named as such first
            _invoke.read_config_file(os.path.expanduser(str(named)))
        except ShatagError as exc:
            _config_error(str(named), exc)
        except OSError:
            pass
        suffix = os.path.splitext(str(named))[1]
        _config_error(
            str(named),
            ConfigError(
                f"configuration file {shown(str(named), 300)}: "
                + (f"a {shown(suffix, 40)} file" if suffix else "a file without a suffix")
                + " is not configuration; use .yaml, .yml or .json"
            ),
        )


# Invoke looks its loaders up by file suffix (``_load_yaml`` / ``_load_yml`` / ...).
Config._load_yaml = _load_yaml_bounded  # type: ignore[method-assign]
Config._load_yml = _load_yaml_bounded
Config._load_json = _load_json_bounded  # type: ignore[method-assign]
Config._load_py = _load_py_checked  # type: ignore[method-assign]
Config._load_file = _load_file_checked  # type: ignore[method-assign]


def _plain(value: Any) -> Any:
    """Invoke's DataProxy → plain dicts and lists."""
    if isinstance(value, Mapping) or hasattr(value, "_config"):
        return {str(k): _plain(value[k]) for k in value}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _environ() -> dict[str, str]:
    """The one place that reads the process environment.

    The pinned tools that ``ci/setup.sh`` installs (cosign, syft) live in
    ``$SHATAG_TOOLS_DIR/bin`` (default ``~/.cache/shatag/tools/bin``); that directory is
    appended to PATH, so a cosign already on PATH still wins.
    """
    env = dict(os.environ)
    tools = Path(env.get("SHATAG_TOOLS_DIR") or Path(env.get("HOME", "/")) / ".cache/shatag/tools")
    tools_bin = tools / "bin"
    if tools_bin.is_dir():
        env["PATH"] = os.pathsep.join([p for p in (env.get("PATH"), str(tools_bin)) if p])
    from shatag.masking import register, secret_values

    register(secret_values(env))  # masked in everything shatag writes (issue 14, item 4)
    return env


def _logging(env: Mapping[str, str]) -> None:
    from shatag.masking import MaskingFilter

    level = logging.DEBUG if env.get("SHATAG_DEBUG") else logging.WARNING
    logging.basicConfig(level=level, stream=sys.stderr, format="shatag: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(MaskingFilter())


def _report(phase: str, env: Mapping[str, str], fields: dict[str, Any], exc: ShatagError) -> None:
    """The one place an error is printed: JSON failure line on stdout (while stdout is open),
    ``error: CODE: …`` on stderr; long messages are cut (issue 14, item 8)."""
    message = clip_message(output.as_run(exc.message))
    if not isinstance(exc, OutputClosed):
        try:
            output.emit_json({"phase": phase, **fields, "error_code": exc.code, "message": message})
        except BrokenPipeError:
            _drop_stdout()
    output.error(exc.code, message, env=env)
    raise Exit(code=exc.exit_status)


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so nothing (not even the interpreter's final flush) writes
    into a pipe whose reader is gone."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


@contextmanager
def _edge(phase: str, env: Mapping[str, str], fields: dict[str, Any]) -> Iterator[None]:
    """Catch errors once: ours with their code; a closed stdout as OUTPUT_CLOSED; anything
    unanticipated as INTERNAL_ERROR (traceback logged with ``SHATAG_DEBUG=1``), never a raw
    traceback (issue 14, item 9)."""
    try:
        yield
    except Exit:
        raise
    except ShatagError as exc:
        _report(phase, env, fields, exc)
    except BrokenPipeError:
        _drop_stdout()
        _report(
            phase,
            env,
            fields,
            OutputClosed(
                "the reader of stdout closed it (e.g. `| head`); the rest of the output was "
                "dropped. Whatever the command had done before is done"
            ),
        )
    except Exception as exc:
        log.debug("unexpected failure in %s", phase, exc_info=True)
        _report(
            phase,
            env,
            fields,
            InternalError(
                f"unexpected {type(exc).__name__}: {exc}. This is a shatag bug: please report "
                "it with the output of the same command run with SHATAG_DEBUG=1"
            ),
        )


def _settings(c: Context, environ: Mapping[str, str]) -> Settings:
    """The run's settings: ``-R/--dry`` refused, ``INVOKE_SHATAG_*`` names checked, relative
    paths resolved against the file that set them (issue 13)."""
    if c.config.get("run", {}).get("dry"):
        raise InvalidInput(
            "-R/--dry only echoes the shell commands Invoke would run, and shatag runs none "
            "through Invoke, so it would build or deploy for real; use --plan on deploy or "
            "rollback to see what would change without changing it"
        )
    from shatag.config import Settings  # lazy: `inv --list` and `--help` validate nothing

    merged = _plain(c.config.get("shatag") or {})
    raw = _invoke.variables_win(merged, c.config)  # variables over every file (issue 23)
    for key in sorted(k for k in raw if raw[k] != merged.get(k)):
        log.debug("INVOKE_SHATAG_%s overrides shatag.%s from the file", key.upper(), key)
    known = _invoke.env_var_names({**dict.fromkeys(DEFAULTS, ""), **raw})
    _invoke.check_env_names(environ, known, file_only=FILE_ONLY)
    loaded, dirs = _invoke.layer_dirs(c.config, Path.cwd())
    log.debug("configuration file: %s", loaded or "none (built-in defaults)")
    base = loaded.parent if loaded is not None else Path.cwd()
    return Settings.from_mapping(raw, base_dirs=dirs, base_dir=dirs.get("environments", base))


@task(
    help={
        "sha": "full 40-hex git SHA to build (default: GITHUB_SHA or `git rev-parse HEAD`)",
        "branch": "branch it was built from; main branches go to the canonical repository, "
        "others to staging (default: GITHUB_HEAD_REF/GITHUB_REF_NAME or the current branch)",
        "sign": "sign the pushed image by digest with cosign (FR-010)",
        "rebuild": "build even if the SHA tag exists, and fail DIGEST_MISMATCH if it differs",
        "metadata_out": "where to write the metadata JSON (default build/metadata/<sha>.json)",
    }
)
def build(
    c: Context,
    sha: str | None = None,
    branch: str | None = None,
    sign: bool = False,
    rebuild: bool = False,
    metadata_out: str | None = None,
) -> None:
    """Clean-build, tag with the git SHA, push, and prove the pushed digest."""
    env = _environ()
    _logging(env)
    fields: dict[str, Any] = {"image_sha": sha or ""}
    with _edge("build", env, fields):
        from shatag.app.build import BuildRequest, default_branch, default_sha, metadata_path
        from shatag.app.build import build as run_build

        settings = _settings(c, env)
        request = BuildRequest(
            sha=sha if sha is not None else default_sha(env, settings.context),
            branch=branch if branch is not None else default_branch(env, settings.context),
            rebuild=rebuild,
            sign=sign,
            metadata_out=Path(metadata_out) if metadata_out else None,
        )
        fields["image_sha"] = request.sha
        with output.group(f"docker build {request.sha}", env=env):
            record = run_build(settings, request, env=env, on_line=output.say)
        data = record.as_dict()
        output.write_json_atomic(metadata_path(settings, request), data)
        warning = None
        if not record.reused:
            from shatag.metrics import record_build

            warning = record_build(settings.metrics, record.repository_type)
        output.emit_json(data)
        output.say(f"image: {record.image_ref}")
        if warning:
            output.warn(warning)
        output.github_outputs(
            {
                "image_ref": record.image_ref,
                "image_digest": record.image_digest,
                "image_sha": record.image_sha,
                "repository": record.repository,
            },
            env=env,
        )
        output.step_summary(
            "shatag build",
            {k: data[k] for k in ("image_ref", "repository_type", "reused", "signature_status")},
            env=env,
        )


def _emit_switch(
    record: DeployRecord, env: Mapping[str, str], *, data: dict[str, Any] | None = None
) -> None:
    """Print a deploy/rollback record: JSON line, human line, GitHub outputs and summary."""
    data = data if data is not None else record.as_dict()
    output.emit_json(data)
    output.say(record.human_line())
    for warning in record.warnings:
        output.warn(warning)
    output.github_outputs(
        {
            "image_ref": record.image_ref,
            "image_digest": record.image_digest,
            "image_sha": record.image_sha,
            "previous_sha": record.previous_sha,
        },
        env=env,
    )
    output.step_summary(
        f"shatag {record.action} ({record.env})",
        {k: data[k] for k in ("image_ref", "previous_sha", "repository_type", "signature_status")},
        env=env,
    )


_ENV_HELP = (
    "environment under shatag.environments (default: shatag.default_env; required once "
    "environments are configured; without any, the built-in local)"
)
_PLAN_HELP = (
    "show per target what would change (a diff for files, old -> new image for containers) "
    "after every check, and change nothing"
)


def _emit_plan(record: PlanRecord) -> None:
    """Print a plan: JSON line (``phase=plan``) and, for people, the per-target changes."""
    output.emit_json(record.as_dict())
    for line in record.human_lines():
        output.say(line)


@task(
    help={
        "sha": "full 40-hex git SHA to deploy (required; floating tags are refused)",
        "env": _ENV_HELP,
        "metadata": "build metadata JSON whose image_digest the registry digest must equal",
        "plan": _PLAN_HELP,
    }
)
def deploy(
    c: Context,
    sha: str | None = None,
    env: str | None = None,
    metadata: str | None = None,
    plan: bool = False,
) -> None:
    """Deploy repo:<sha>@sha256:<digest> to every target of an environment."""
    environ = _environ()
    _logging(environ)
    fields: dict[str, Any] = {"image_sha": sha or "", "env": env or ""}
    with _edge("deploy", environ, fields), signals.graceful():
        from shatag.app.deploy import DeployRequest, deploy_route, plan_switch
        from shatag.app.deploy import deploy as run_deploy

        settings = _settings(c, environ)
        request = DeployRequest(
            sha=sha or "", env=env, metadata=Path(metadata) if metadata else None
        )
        fields["env"] = settings.environment(env).name
        if plan:
            _emit_plan(
                plan_switch(settings, *deploy_route(settings, request, env=environ), env=environ)
            )
            return
        record = run_deploy(settings, request, env=environ, on_line=output.say)
        _emit_switch(record, environ)


@task(
    help={
        "sha": "full 40-hex git SHA to go back to (default: the previous deployment)",
        "env": _ENV_HELP,
        "plan": _PLAN_HELP,
    }
)
def rollback(
    c: Context, sha: str | None = None, env: str | None = None, plan: bool = False
) -> None:
    """Re-deploy an earlier SHA without building (default: the previous deployment)."""
    environ = _environ()
    _logging(environ)
    fields: dict[str, Any] = {"image_sha": sha or "", "env": env or ""}
    with _edge("rollback", environ, fields), signals.graceful():
        from shatag.app.deploy import plan_switch
        from shatag.app.rollback import RollbackRequest, rollback_route
        from shatag.app.rollback import rollback as run_rollback

        settings = _settings(c, environ)
        request = RollbackRequest(sha=sha, env=env)  # an explicit empty --sha is MISSING_SHA
        fields["env"] = settings.environment(env).name
        if plan:
            route = rollback_route(settings, request, env=environ)
            _emit_plan(plan_switch(settings, *route, env=environ))
            return
        record = run_rollback(settings, request, env=environ, on_line=output.say)
        _emit_switch(record, environ)


@task(
    help={
        "to": "the environment to promote into (its shatag.environments.<name>.promotion says "
        "where from)",
        "sha": "full 40-hex git SHA to promote (default: the one the source environment serves)",
        "plan": "show every gate's state and what would change, and change nothing",
    }
)
def promote(c: Context, to: str = "", sha: str | None = None, plan: bool = False) -> None:
    """Promote the release serving in the source environment into --to, by digest, through
    its gates (current release, soak, main line, checks)."""
    environ = _environ()
    _logging(environ)
    fields: dict[str, Any] = {"image_sha": sha or "", "env": to}
    with _edge("promote", environ, fields), signals.graceful():
        from shatag.app.promote import PromoteRequest, plan_promotion
        from shatag.app.promote import promote as run_promote

        settings = _settings(c, environ)
        if not to:
            raise InvalidInput("name the environment to promote into: --to=NAME")
        request = PromoteRequest(to=to, sha=sha)
        if plan:
            planned = plan_promotion(settings, request, env=environ)
            output.emit_json(planned.as_dict())
            for line in planned.human_lines():
                output.say(line)
            return
        result = run_promote(settings, request, env=environ, on_line=output.say)
        for gate in result.gates:
            output.say(gate.line())
        if result.copy is not None:
            output.say(result.copy.human_line())
        _emit_switch(result.record, environ, data=result.as_dict())


@task(
    name="board",
    help={
        "html": "also write the board as one self-contained HTML page to this file",
        "json": "print the board as one JSON line instead of the text",
    },
)
def board_(c: Context, html: str | None = None, json: bool = False) -> None:
    """The release board: per environment in promotion order, what serves since when, its
    signature and provenance, and what waits to be promoted (and which gate holds it)."""
    environ = _environ()
    _logging(environ)
    with _edge("board", environ, {}):
        from shatag._sys.fs import atomic_write_text
        from shatag.app.board import board, render_html
        from shatag.masking import mask

        result = board(_settings(c, environ), env=environ)
        if html:
            Path(html).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(Path(html), mask(render_html(result)))
        if json:
            output.emit_json(result.as_dict())
        else:
            for line in result.human_lines():
                print(line)
        if html:
            output.say(f"board: wrote {html}")


@task(
    name="history",
    help={
        "env": _ENV_HELP,
        "limit": "how many records, newest first (default 20; 0 for all)",
        "json": "one JSON line per record instead of the table",
    },
)
def history_(c: Context, env: str | None = None, limit: int = 20, json: bool = False) -> None:
    """The rollback catalog: deployments newest first, the current one marked."""
    environ = _environ()
    _logging(environ)
    with _edge("history", environ, {"env": env or ""}):
        from shatag.ledger import open_ledger
        from shatag.ledger.history import catalog, format_catalog
        from shatag.ledger.statedir import check_state_dir

        settings = _settings(c, environ)
        name = settings.environment(env).name
        if settings.state_backend == "local":
            check_state_dir(settings.state_dir, name, write=False)
        ledger = open_ledger(settings.state, name, environ=environ, stale_ok=True)
        rows = catalog(ledger, limit=limit or None)
        if ledger.stale:  # the remote is down: the last fetched copy, and how old (issue 23)
            output.warn(ledger.stale)
        if json:
            for row in rows:
                output.emit_json(row)
        else:
            print(format_catalog(name, rows))


@task(name="status", help={"env": _ENV_HELP})
def status_(c: Context, env: str | None = None) -> None:
    """Whether each target runs the release the ledger says is current (exit 0 in sync,
    3 DRIFT, 4 TARGET_DOWN)."""
    environ = _environ()
    _logging(environ)
    fields: dict[str, Any] = {"env": env or ""}
    with _edge("status", environ, fields):
        from shatag.app.status import status

        record = status(_settings(c, environ), env, env=environ)
        for line in record.human_lines():
            output.say(line)
        problem = record.problem()
        if problem is None:
            output.emit_json(record.as_dict())
            return
        fields.update(record.as_dict())  # the failure's JSON line is the whole record
        raise problem


def _mark(c: Context, action: str, sha: str, env: str | None, reason: str) -> None:
    environ = _environ()
    _logging(environ)
    fields: dict[str, Any] = {"image_sha": sha, "env": env or ""}
    with _edge(action, environ, fields):
        from shatag.app.quarantine import mark

        settings = _settings(c, environ)
        fields["env"] = settings.environment(env).name
        done = mark(
            settings,
            "quarantine" if action == "quarantine" else "unquarantine",
            sha,
            env_name=env,
            reason=reason,
            env=environ,
        )
        if done is None:
            output.emit_json({"phase": action, "image_sha": sha, "env": fields["env"]})
            output.say(f"{sha} is not quarantined in {fields['env']}: nothing to lift")
            return
        output.emit_json({"phase": action, **done.as_line()})
        verb = "quarantined" if action == "quarantine" else "lifted the quarantine of"
        output.say(f"{verb} {sha} in {done.env} ({done.initiated_by}, {done.finished_at})")


@task(
    help={
        "sha": "full 40-hex git SHA to block",
        "reason": "why (required; shown to whoever tries to deploy it)",
        "env": _ENV_HELP,
    }
)
def quarantine(c: Context, sha: str = "", reason: str = "", env: str | None = None) -> None:
    """Block a SHA in an environment: deploy, rollback and --plan of it are refused."""
    _mark(c, "quarantine", sha, env, reason)


@task(help={"sha": "full 40-hex git SHA to release", "reason": "why (optional)", "env": _ENV_HELP})
def unquarantine(c: Context, sha: str = "", reason: str = "", env: str | None = None) -> None:
    """Lift the quarantine of a SHA in an environment (recorded in its history too)."""
    _mark(c, "unquarantine", sha, env, reason)


@task(help={"sha": "full 40-hex git SHA whose image (canonical repository) to verify"})
def verify(c: Context, sha: str = "") -> None:
    """Signature status of one SHA-tagged image (cosign, by digest; FR-014)."""
    environ = _environ()
    _logging(environ)
    with _edge("verify", environ, {"image_sha": sha}):
        from shatag.app.verify import verify_sha

        record = verify_sha(_settings(c, environ), sha, env=environ)
        output.emit_json(record.as_dict())
        output.say(
            f"{record.image_ref}: signature {record.signature_status} "
            f"({record.signature_reason}); sbom attestation {record.sbom_attestation_status} "
            f"({record.sbom_attestation_reason})"
        )
        for deployment in record.deployments:
            output.say(deployment.human_line())


@task(
    help={
        "window": "how many of the newest built/deployed SHAs to look at (default 30)",
        "json": "print the full report (every SHA) as one JSON line",
    }
)
def signatures(c: Context, window: int = 30, json: bool = False) -> None:
    """Signature coverage and whether it is safe to switch to signature_policy enforce."""
    environ = _environ()
    _logging(environ)
    with _edge("signatures", environ, {}):
        from shatag.app.signatures import coverage, format_report

        report = coverage(_settings(c, environ), window=window, env=environ)
        data = report.as_dict()
        if not json:
            data.pop("shas")
        output.emit_json(data)
        output.say(format_report(report))


ns = Collection("shatag")
ns.add_task(build)
ns.add_task(deploy)
ns.add_task(rollback)
ns.add_task(promote)
ns.add_task(board_)
ns.add_task(history_)
ns.add_task(status_)
ns.add_task(verify)
ns.add_task(signatures)
ns.add_task(quarantine)
ns.add_task(unquarantine)
ns.configure(
    {"shatag": invoke_defaults(), "tasks": {"executor_class": "shatag.tasks.FastExitExecutor"}}
)
