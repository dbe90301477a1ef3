"""The docker adapter: python-on-whales for the engine, our chokepoint for the hot paths.

Every command on a hot path -- a build's ``build``, ``tag``, ``push`` and removal of its private
tag; the switches' inspections, ``run``, ``exec``, ``stop`` (see
:class:`shatag.targets.docker.proxy.Docker`)
-- runs through :func:`shatag._sys.subproc.run` with the docker command line python-on-whales would
build (``DockerClient.client_config.docker_cmd``: the binary, ``--config``, ``--host``; see
:meth:`DockerEngine.cmd`): output streams line by line, a timeout bounds it, a switch's tools
are out of reach of a signal to the whole group, and neither a build nor a switch pays the
0.2-0.3 s of CPU that importing python-on-whales and pydantic costs (issue 17).
python-on-whales remains the client for what is rare or on a failure path: a pull for
``proxy: false``, a failed container's logs, the undo of a stop-then-start switch and its
recovery after a kill.

Two builders (FR-017, clean builds, ``linux/amd64`` only):

* BuildKit via ``docker buildx build --load`` when the CLI has buildx, with default
  attestations off (``--provenance=false --sbom=false``) so a push yields one manifest.
* The classic builder (``DOCKER_BUILDKIT=0 docker build``) otherwise — Debian's engine.

Both get ``--no-cache --pull=false`` and no cache import/export.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from shatag._sys import subproc
from shatag.errors import BuildFailure, PushFailure, ToolFailure, ToolMissing, ToolTimeout

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


@dataclass(frozen=True, slots=True)
class BuiltImage:
    """The image a build produced (its local id) and the builder that made it."""

    image_id: str
    builder: Builder


class DockerEngine:
    """One docker engine, as the environment mapping describes it (DOCKER_HOST, …)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = dict(env)
        # Imported on first use only: python-on-whales and pydantic cost 0.2-0.3 s of CPU, and
        # neither a build nor a switch needs the client (issue 17).
        self._client: DockerClient | None = None
        self._builder: Builder | None = None

    @property
    def client(self) -> DockerClient:
        if self._client is None:
            from python_on_whales import DockerClient

            if subproc.which("docker", self._env) is None:
                raise ToolMissing("the docker CLI is not installed; run `bash ci/setup.sh`")
            self._client = DockerClient(
                host=self._env.get("DOCKER_HOST") or None,
                config=self._env.get("DOCKER_CONFIG") or None,
            )
        return self._client

    def cmd(self) -> list[str]:
        """The docker command line python-on-whales builds for this engine
        (``client_config.docker_cmd``: the binary, ``--config``, ``--host``), made here so that
        running a docker command does not wait for python-on-whales to be imported."""
        binary = subproc.which("docker", self._env)
        if binary is None:
            raise ToolMissing("the docker CLI is not installed; run `bash ci/setup.sh`")
        cmd = [binary]
        if self._env.get("DOCKER_CONFIG"):
            cmd += ["--config", self._env["DOCKER_CONFIG"]]
        if self._env.get("DOCKER_HOST"):
            cmd += ["--host", self._env["DOCKER_HOST"]]
        return cmd

    def _docker(
        self,
        *args: str,
        timeout: float,
        check: bool = True,
        on_line: Callable[[str], None] | None = None,
    ) -> subproc.Result:
        """``docker <args>`` on this engine, through the chokepoint."""
        return subproc.run(
            [*self.cmd(), *args], timeout=timeout, env=self._env, check=check, on_line=on_line
        )

    def builder(self) -> Builder:
        """buildx when the CLI has it (overridable with ``SHATAG_BUILDER``), else classic."""
        if self._builder is None:
            forced = self._env.get("SHATAG_BUILDER", "")
            if forced in ("buildx", "classic"):
                self._builder = "buildx" if forced == "buildx" else "classic"
            else:
                probe = self._docker("buildx", "version", timeout=30, check=False)
                self._builder = "buildx" if probe.returncode == 0 else "classic"
        return self._builder

    def ping(self) -> None:
        result = self._docker("version", "--format", "{{.Server.Version}}", timeout=30, check=False)
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
    ) -> BuiltImage:
        """Clean build (no cache), return the local image ID (config digest)."""
        builder = self.builder()
        with tempfile.TemporaryDirectory(prefix="shatag-build-") as tmp:
            iidfile = Path(tmp) / "iid"
            argv = [*self.cmd()]
            env = dict(self._env)
            if builder == "buildx":
                argv += ["buildx", "build", "--load", "--provenance=false", "--sbom=false"]
            else:
                # --force-rm: the classic builder keeps the container of a failed RUN step
                # unless told; a failed build must leave nothing behind on the engine.
                argv += ["build", "--force-rm"]
                env["DOCKER_BUILDKIT"] = "0"
            argv += ["--no-cache", "--pull=false", "--platform", platform]
            argv += ["--file", str(dockerfile), "--iidfile", str(iidfile)]
            for key, value in labels.items():
                argv += ["--label", f"{key}={value}"]
            for tag in tags:
                argv += ["--tag", tag]
            argv.append(str(context))
            try:
                subproc.run(argv, timeout=timeout, env=env, on_line=on_line)
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
            self._docker("push", tag, timeout=timeout, on_line=watch)
        except ToolFailure as exc:
            raise PushFailure(
                f"docker push {tag} failed: {exc.message}; check that the registry "
                f"{tag.split('/', 1)[0]} is running and that `docker login` was done"
            ) from None
        if not reported:
            raise PushFailure(f"docker push {tag} reported no digest")
        return reported[-1]

    def exec_status(self, container: str, command: Sequence[str], *, timeout: float) -> int:
        """``docker exec`` ``command`` in ``container`` (a health check): its exit status, or -1
        when it could not run or did not finish within ``timeout``."""
        try:
            result = self._docker("exec", container, *command, timeout=timeout, check=False)
        except (ToolFailure, ToolTimeout):
            return -1
        return result.returncode

    def tag(self, source: str, target: str) -> None:
        try:
            self._docker("image", "tag", source, target, timeout=QUICK_TIMEOUT_SEC)
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
            self._docker("image", "rm", "--no-prune", *tags, timeout=QUICK_TIMEOUT_SEC, check=False)
