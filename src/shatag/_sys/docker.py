"""The docker client: one class, :class:`DockerEngine`, for every docker command shatag runs.

One place builds the docker command line (:attr:`DockerEngine.cmd`: the binary, ``--config``,
``--host``, as python-on-whales builds it in ``DockerClient.client_config.docker_cmd``) and runs
it through :func:`shatag._sys.subproc.run` (:meth:`DockerEngine.call`): output streams line by
line, a timeout bounds it, a switch's tools are out of reach of a signal to the whole group. Its
users: the build (``build``, ``tag``, ``push``, removal of a private tag), both docker switches
and the proxy (inspections -- several objects in one call, :meth:`DockerEngine.remember` --,
``run``, ``exec``, ``stop``, ...). None of them pays the 0.2-0.3 s of CPU that importing
python-on-whales and pydantic costs (issue 17): :attr:`DockerEngine.client` imports it on first
use, for what is rare or on a failure path -- a pull for ``proxy: false``, a failed container's
logs, the undo of a stop-then-start switch and its recovery after a kill.

Two builders (FR-017, clean builds, ``linux/amd64`` only):

* BuildKit via ``docker buildx build --load`` when the CLI has buildx, with default
  attestations off (``--provenance=false --sbom=false``) so a push yields one manifest.
* The classic builder (``DOCKER_BUILDKIT=0 docker build``) otherwise — Debian's engine.

Both get ``--no-cache --pull=false`` and no cache import/export.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from shatag._sys import subproc
from shatag.core import json_object
from shatag.errors import (
    BuildFailure,
    DeployFailed,
    PushFailure,
    ToolFailure,
    ToolMissing,
    ToolTimeout,
)

if TYPE_CHECKING:
    from python_on_whales import DockerClient

Builder = Literal["buildx", "classic"]
_PUSH_DIGEST_RE: Final = re.compile(r"digest: (sha256:[0-9a-f]{64})")
_ANSI_RE: Final = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")
# docker push redraws progress bars; only the outcome of each layer is worth a line.
_PUSH_NOISE: Final = ("Preparing", "Waiting", "Pushing")
#: ``docker image tag`` / ``docker image rm`` answer in milliseconds; a daemon that does not
#: answer within this is reported, not waited for.
QUICK_TIMEOUT_SEC: Final = 120.0
# What `docker <kind> inspect` says on stderr of each object it did not find.
_MISSING_RE: Final = re.compile(r"no such \w+: (?P<a>\S+)$|network (?P<b>\S+) not found$", re.I)


@dataclass(frozen=True, slots=True)
class BuiltImage:
    """The image a build produced (its local id) and the builder that made it."""

    image_id: str
    builder: Builder


class DockerEngine:
    """One docker engine, as the environment mapping describes it (DOCKER_HOST, …).

    :meth:`remember` inspects several objects in one call (each docker CLI call costs ~30 ms);
    :meth:`inspect` answers from that look until the next :meth:`run`, which may change any of
    them (issue 17). ``timeout`` bounds :meth:`run` and :meth:`inspect` unless told otherwise.
    """

    def __init__(self, env: Mapping[str, str], *, timeout: float = QUICK_TIMEOUT_SEC) -> None:
        self.env = dict(env)
        self.timeout = timeout
        # Imported on first use only: python-on-whales and pydantic cost 0.2-0.3 s of CPU, and
        # neither a build nor a switch needs the client (issue 17).
        self._client: DockerClient | None = None
        self._builder: Builder | None = None
        self._known: dict[tuple[str, str], dict[str, Any] | None] = {}

    @property
    def client(self) -> DockerClient:
        """python-on-whales' client of this engine, for the rare paths (see the module)."""
        if self._client is None:
            from python_on_whales import DockerClient

            if subproc.which("docker", self.env) is None:
                raise ToolMissing("the docker CLI is not installed; run `bash ci/setup.sh`")
            self._client = DockerClient(
                host=self.env.get("DOCKER_HOST") or None,
                config=self.env.get("DOCKER_CONFIG") or None,
            )
        return self._client

    @cached_property
    def cmd(self) -> list[str]:
        """The docker command line python-on-whales builds for this engine
        (``client_config.docker_cmd``: the binary, ``--config``, ``--host``), made here so that
        running a docker command does not wait for python-on-whales to be imported."""
        binary = subproc.which("docker", self.env)
        if binary is None:
            raise ToolMissing("the docker CLI is not installed; run `bash ci/setup.sh`")
        cmd = [binary]
        if self.env.get("DOCKER_CONFIG"):
            cmd += ["--config", self.env["DOCKER_CONFIG"]]
        if self.env.get("DOCKER_HOST"):
            cmd += ["--host", self.env["DOCKER_HOST"]]
        return cmd

    def call(
        self,
        *args: str,
        timeout: float,
        check: bool = True,
        on_line: Callable[[str], None] | None = None,
        secrets: Iterable[str] = (),
        extra_env: Mapping[str, str] | None = None,
    ) -> subproc.Result:
        """``docker <args>`` on this engine, through the chokepoint (its errors:
        :class:`ToolFailure`, :class:`ToolTimeout`, :class:`ToolMissing`). The one place a
        docker command line is put together and run."""
        env = {**self.env, **extra_env} if extra_env else self.env
        return subproc.run(
            [*self.cmd, *args],
            timeout=timeout,
            env=env,
            check=check,
            on_line=on_line,
            secrets=secrets,
        )

    # -- the build ------------------------------------------------------------------------

    def builder(self) -> Builder:
        """buildx when the CLI has it (overridable with ``SHATAG_BUILDER``), else classic."""
        if self._builder is None:
            forced = self.env.get("SHATAG_BUILDER", "")
            if forced in ("buildx", "classic"):
                self._builder = "buildx" if forced == "buildx" else "classic"
            else:
                probe = self.call("buildx", "version", timeout=30, check=False)
                self._builder = "buildx" if probe.returncode == 0 else "classic"
        return self._builder

    def ping(self) -> None:
        result = self.call("version", "--format", "{{.Server.Version}}", timeout=30, check=False)
        if result.returncode != 0:
            raise BuildFailure(
                "the docker daemon does not answer "
                f"({subproc.mask(result.stderr.strip()[-300:], ())}); start it (bash ci/setup.sh)"
            )

    def build(
        self,
        *,
        context: Path,
        dockerfile: Path,
        platform: str,
        tags: Sequence[str],
        labels: Mapping[str, str],
        timeout: float,
        on_line: Callable[[str], None],
        build_args: Mapping[str, str] | None = None,
    ) -> BuiltImage:
        """Clean build (no cache), return the local image ID (config digest)."""
        builder = self.builder()
        with tempfile.TemporaryDirectory(prefix="shatag-build-") as tmp:
            iidfile = Path(tmp) / "iid"
            extra_env: dict[str, str] = {}
            if builder == "buildx":
                argv = ["buildx", "build", "--load", "--provenance=false", "--sbom=false"]
            else:
                # --force-rm: the classic builder keeps the container of a failed RUN step
                # unless told; a failed build must leave nothing behind on the engine.
                argv = ["build", "--force-rm"]
                extra_env["DOCKER_BUILDKIT"] = "0"
            argv += ["--no-cache", "--pull=false", "--platform", platform]
            argv += ["--file", str(dockerfile), "--iidfile", str(iidfile)]
            for key, value in labels.items():
                argv += ["--label", f"{key}={value}"]
            for key, value in (build_args or {}).items():
                argv += ["--build-arg", f"{key}={value}"]
            for tag in tags:
                argv += ["--tag", tag]
            argv.append(str(context))
            try:
                self.call(*argv, timeout=timeout, on_line=on_line, extra_env=extra_env)
            except ToolFailure as exc:
                self.ping()  # a daemon that is down gets its own clear message
                raise BuildFailure(
                    f"docker build of {context} failed ({exc.message}); the build output above "
                    "shows why"
                ) from None
            image_id = iidfile.read_text().strip() if iidfile.exists() else ""
        if not image_id.startswith("sha256:"):
            raise BuildFailure(f"docker build of {context} reported no image ID")
        return BuiltImage(image_id=image_id, builder=builder)

    def push(self, tag: str, *, timeout: float, on_line: Callable[[str], None]) -> str:
        """Push one tag; return the digest docker reported for it."""
        reported: list[str] = []

        def watch(raw: str) -> None:
            line = _ANSI_RE.sub("", raw).strip()
            match = _PUSH_DIGEST_RE.search(line)
            if match:
                reported.append(match.group(1))
            if line and not line.endswith(_PUSH_NOISE) and " Pushing " not in line:
                on_line(line)

        try:
            self.call("push", tag, timeout=timeout, on_line=watch)
        except ToolFailure as exc:
            raise PushFailure(
                f"docker push {tag} failed: {exc.message}; check that the registry "
                f"{tag.split('/', 1)[0]} is running and that `docker login` was done"
            ) from None
        if not reported:
            raise PushFailure(f"docker push {tag} reported no digest")
        return reported[-1]

    def tag(self, source: str, target: str) -> None:
        try:
            self.call("image", "tag", source, target, timeout=QUICK_TIMEOUT_SEC)
        except ToolMissing:
            raise
        except ToolFailure as exc:  # the daemon went away between build and push
            raise BuildFailure(
                f"docker tag {source} {target} failed ({' '.join(exc.message.split())[-300:]}); "
                "check that the docker daemon is running, then build again"
            ) from None

    def untag(self, tags: Sequence[str]) -> None:
        """Drop local tags (not the registry's): used when a push must not happen. A tag that
        cannot be removed is left as it is (one ``docker image rm`` for all of them)."""
        if not tags:
            return
        with contextlib.suppress(ToolFailure):
            self.call("image", "rm", "--no-prune", *tags, timeout=QUICK_TIMEOUT_SEC, check=False)

    # -- containers, networks, images: what the switches and the proxy need -------------------

    def run(
        self,
        *args: str,
        check: bool = True,
        timeout: float | None = None,
        secrets: tuple[str, ...] = (),
    ) -> subproc.Result:
        """``docker <args>``, a command that may change what :meth:`remember` saw (forgotten
        first); a failure is :class:`DeployFailed`."""
        self.forget()  # what was remembered may change now
        return self._deploy_call(*args, check=check, timeout=timeout, secrets=secrets)

    def _deploy_call(
        self,
        *args: str,
        check: bool = True,
        timeout: float | None = None,
        secrets: tuple[str, ...] = (),
    ) -> subproc.Result:
        _ = self.cmd  # no docker CLI at all is ToolMissing, as for the build
        try:
            return self.call(*args, timeout=timeout or self.timeout, check=check, secrets=secrets)
        except ToolTimeout as exc:
            raise DeployFailed(f"docker {args[0]} did not finish in time: {exc.message}") from None
        except ToolFailure as exc:
            raise DeployFailed(f"docker {args[0]} failed: {exc.message}") from None

    def exec_status(self, container: str, command: Sequence[str], *, timeout: float) -> int:
        """``docker exec`` ``command`` in ``container`` (a health check): its exit status, or -1
        when it could not run or did not finish within ``timeout``."""
        try:
            result = self.call("exec", container, *command, timeout=timeout, check=False)
        except (ToolFailure, ToolTimeout):
            return -1
        return result.returncode

    def inspect(self, kind: str, name: str) -> dict[str, Any] | None:
        """``docker <kind> inspect`` as a dict; ``None`` when there is no such object."""
        if (kind, name) in self._known:
            return self._known[(kind, name)]
        result = self._deploy_call(kind, "inspect", "--format", "{{json .}}", name, check=False)
        if result.returncode != 0:
            text = result.stderr.lower()
            if "no such" in text or "not found" in text:
                return None
            raise DeployFailed(
                f"docker {kind} inspect {name} failed: {result.stderr.strip()[-300:]}; check "
                "that the docker daemon is running"
            )
        try:
            data = json.loads(result.stdout)
        except ValueError:
            raise DeployFailed(f"docker {kind} inspect {name} answered no JSON") from None
        return data if isinstance(data, dict) else None

    def remember(self, looks: Mapping[str, Iterable[str]]) -> None:
        """Inspect the objects named per kind (``{"container": [...], "image": [...]}``): one
        docker call per kind, run side by side, for :meth:`inspect` to answer until the next
        :meth:`run`. Anything this cannot read for certain (an error other than "no such
        object", output that does not line up) is simply not remembered: :meth:`inspect` then
        asks docker itself, and reports that error."""
        calls = {
            kind: wanted
            for kind, names in looks.items()
            if (wanted := [n for n in dict.fromkeys(names) if n and (kind, n) not in self._known])
        }
        answers: dict[str, subproc.Result] = {}

        def look(kind: str) -> None:
            argv = (kind, "inspect", "--format", "{{json .}}", *calls[kind])
            with contextlib.suppress(DeployFailed):  # not remembered: inspect() will say why
                answers[kind] = self._deploy_call(*argv, check=False)

        workers = [threading.Thread(target=look, args=(kind,)) for kind in calls]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        for kind, result in answers.items():
            self._known.update(line_up(kind, calls[kind], result.stdout, result.stderr) or {})

    def forget(self) -> None:
        """Drop what :meth:`remember` saw (after a command that may have changed it)."""
        self._known.clear()

    def names(self, *filters: str) -> list[str]:
        argv = ["ps", "-a", "--no-trunc", "--format", "{{.Names}}"]
        for f in filters:
            argv += ["--filter", f]
        return [n for n in self._deploy_call(*argv).stdout.split() if n]

    def remove(self, name: str) -> None:
        self.run("rm", "-f", name, check=False)


def line_up(
    kind: str, wanted: list[str], stdout: str, stderr: str
) -> dict[tuple[str, str], dict[str, Any] | None] | None:
    """What one ``docker <kind> inspect --format {{json .}} <wanted...>`` said of each name:
    a JSON object per line for those found, in order, and a "no such ..." line on stderr for
    each missing. ``None`` when the answer does not line up exactly (another error, a count or
    name that does not match): then nothing is assumed."""
    missing: set[str] = set()
    for line in filter(None, (raw.strip() for raw in stderr.splitlines())):
        match = _MISSING_RE.search(line)
        if match is None:
            return None
        missing.add(match.group("a") or match.group("b"))
    if not missing <= set(wanted):
        return None
    present = [n for n in wanted if n not in missing]
    lines = [line for line in stdout.splitlines() if line.strip()]
    if len(lines) != len(present) or len(present) + len(missing) != len(set(wanted)):
        return None
    answer: dict[tuple[str, str], dict[str, Any] | None] = {(kind, n): None for n in missing}
    for name, line in zip(present, lines, strict=True):
        data = _inspected(kind, name, line)
        if data is None:
            return None
        answer[(kind, name)] = data
    return answer


def _inspected(kind: str, name: str, line: str) -> dict[str, Any] | None:
    """One line of :func:`line_up`'s answer, if it is the JSON object of ``name``."""
    data = json_object(line)
    if data is None:
        return None
    if kind != "image" and str(data.get("Name", "")).lstrip("/") != name:
        return None  # containers and networks name themselves: they must match
    return data


def labels_of(data: Mapping[str, Any] | None) -> dict[str, str]:
    """The labels of what :meth:`DockerEngine.inspect` answered (container, network, image)."""
    if not data:
        return {}
    config = data.get("Config") if "Config" in data else data
    labels = (config or {}).get("Labels") if isinstance(config, Mapping) else None
    return {str(k): str(v) for k, v in (labels or {}).items()}


def is_running(data: Mapping[str, Any] | None) -> bool:
    """True for an inspected container that runs (and is not restarting)."""
    state = (data or {}).get("State") or {}
    return bool(state.get("Running")) and not bool(state.get("Restarting"))
