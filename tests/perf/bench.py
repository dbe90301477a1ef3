"""Side-by-side benchmarks on the real engine and registry (issue 7).

    python -m tests.perf.bench [--runs N] [--only validation,build,rollback,startup,history,ledger]

``nox -s perf`` runs this module; ``SHATAG_SKIP_PERF=1`` skips it. Each comparison interleaves
its two commands in one run (A B, B A, A B, ...) so that other work on the machine slows both
alike; medians are reported, and only the ratios of the first three comparisons are asserted
(exit status 1 when one fails, after the report is written):

1. deploy validation -- policy, tag HEAD and digest guard, the library calls ``inv deploy``
   makes before it touches a target (cosign excluded) -- vs the pull-based check
   (``docker pull``), for images of 1, 50 and 200 MB of random layers: >= 20x faster at 200 MB;
2. ``inv build`` vs the same ``docker build --no-cache`` + ``docker push``: median of paired
   ratios <= 1.10;
3. ``inv rollback`` on the local docker target vs ``docker run`` + health wait of the same
   image: median of paired ratios <= 1.5, and no build or push during the rollback.

Start-up, history and the test-suite wall time are reported, not asserted. A full run writes
``docs/performance.md``, ``docs/perf-validation.png`` and ``build/perf/results.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from shatag.config import Settings
from shatag.core import ensure_immutable_tag, parse_repository, validate_sha
from shatag.deploy import resolve_image
from shatag.history import HistoryRecord, HistoryStore
from shatag.ledger_git import GitLedger
from shatag.localregistry import LocalRegistry, free_port
from shatag.registry import RegistryClient

ROOT: Final = Path(__file__).resolve().parents[2]
EXAMPLE: Final = ROOT / "examples" / "api"
DOCS: Final = ROOT / "docs"
REPORT_MD: Final = DOCS / "performance.md"
REPORT_PNG: Final = DOCS / "perf-validation.png"
RESULTS_JSON: Final = ROOT / "build" / "perf" / "results.json"
# Written by noxfile.py as the test sessions finish: {"run": …, "total_sec": …, "sessions": {…}}.
SUITE_JSON: Final = ROOT / "build" / "perf" / "suite.json"
TOOLS_BIN: Final = (
    Path(os.environ.get("SHATAG_TOOLS_DIR", Path.home() / ".cache/shatag/tools")) / "bin"
)
MB: Final = 1024 * 1024
BUILD_MIN_RUNS: Final = 9
SIZES_MB: Final = (1, 50, 200)
LAYER_MB: Final = 50  # 200 MB → four layers, which docker pull fetches in parallel
BUILD_PAYLOAD_MB: Final = 50  # the app's own files on top of examples/api (busybox + www)
HISTORY_BIG: Final = 10_000
HISTORY_SMALL: Final = 100
APPENDS: Final = 40
ITEMS: Final = ("validation", "build", "rollback", "startup", "history", "ledger")
LEDGER_RECORDS: Final = 300
DIGEST_RE: Final = re.compile(r"digest: (sha256:[0-9a-f]{64})")


# -- plumbing ---------------------------------------------------------------------------------


def run(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    cwd: Path | None = None,
    check: bool = True,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(argv),
        cwd=cwd or ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {proc.returncode}\n{proc.stdout[-2000:]}\n"
            f"{proc.stderr[-2000:]}"
        )
    return proc


def timed(argv: Sequence[str], env: Mapping[str, str], **kwargs: Any) -> float:
    started = time.perf_counter()
    run(argv, env, **kwargs)
    return time.perf_counter() - started


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def interleave(
    runs: int, a: Callable[[int], float], b: Callable[[int], float]
) -> tuple[list[float], list[float]]:
    """``runs`` samples of each, alternating which goes first (A B, B A, ...)."""
    xs: list[float] = []
    ys: list[float] = []
    for i in range(runs):
        if i % 2 == 0:
            xs.append(a(i))
            ys.append(b(i))
        else:
            ys.append(b(i))
            xs.append(a(i))
    return xs, ys


def write_random(path: Path, size: int) -> None:
    """Incompressible content, so neither gzip nor the registry can make it cheaper."""
    with path.open("wb") as fh:
        left = size
        while left > 0:
            chunk = min(left, MB)
            fh.write(os.urandom(chunk))
            left -= chunk


def git_in(cwd: Path, args: Sequence[str], stdin: str) -> str:
    """``git args`` with ``stdin`` (plumbing that reads its input)."""
    proc = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={
            **os.environ,
            "GIT_AUTHOR_NAME": "perf",
            "GIT_AUTHOR_EMAIL": "perf@shatag.invalid",
            "GIT_COMMITTER_NAME": "perf",
            "GIT_COMMITTER_EMAIL": "perf@shatag.invalid",
        },
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return proc.stdout.strip()


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "shatag perf",
        "GIT_AUTHOR_EMAIL": "perf@shatag.invalid",
        "GIT_COMMITTER_NAME": "shatag perf",
        "GIT_COMMITTER_EMAIL": "perf@shatag.invalid",
    }
    return run(["git", *args], env, cwd=cwd).stdout.strip()


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


@dataclass
class Row:
    """One line of the report table."""

    item: str
    what: str
    shatag: str
    baseline: str
    ratio: str
    target: str
    asserted: bool
    ok: bool


@dataclass
class World:
    registry: LocalRegistry
    tmp: Path
    env: dict[str, str]
    name: str
    runs: int
    rows: list[Row] = field(default_factory=list)
    samples: dict[str, Any] = field(default_factory=dict)
    images: set[str] = field(default_factory=set)
    containers: set[str] = field(default_factory=set)

    def inv(self, args: Sequence[str]) -> list[str]:
        return [sys.executable, "-m", "invoke", "--search-root", str(ROOT), *args]

    def app(self, label: str) -> Path:
        """A git repo holding a copy of examples/api."""
        path = self.tmp / label
        shutil.copytree(EXAMPLE, path, ignore=shutil.ignore_patterns(".gitignore"))
        (path / "www" / "healthz").write_text("ok\n")
        git(path, "init", "-q", "-b", "main")
        return path

    def cleanup(self) -> None:
        for name in sorted(self.containers):
            run(["docker", "rm", "-f", name], self.env, check=False)
        for ref in sorted(self.images):
            run(["docker", "rmi", "-f", ref], self.env, check=False)


def commit(app: Path, payload_mb: int, message: str) -> str:
    """A new commit with fresh random content (a fresh SHA, and no layer the registry has)."""
    write_random(app / "www" / "payload.bin", max(1, payload_mb * MB))
    (app / "www" / "api.json").write_text(json.dumps({"release": message}) + "\n")
    git(app, "add", "-A")
    git(app, "commit", "-q", "-m", message)
    return git(app, "rev-parse", "HEAD")


def last_json(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"no JSON line in:\n{stdout}")
    data = json.loads(lines[-1])
    if not isinstance(data, dict):
        raise TypeError(f"not a JSON object: {lines[-1]}")
    return data


# -- 1. validation vs pull --------------------------------------------------------------------


def random_image(w: World, repo: str, tag: str, size_mb: int) -> str:
    """Build ``FROM scratch`` + ``size_mb`` MB of random layers, push it, drop it locally."""
    ctx = w.tmp / f"img-{size_mb}"
    ctx.mkdir()
    lines = ["FROM scratch"]
    left = size_mb * MB
    index = 0
    while left > 0:
        chunk = min(left, LAYER_MB * MB)
        write_random(ctx / f"layer{index}.bin", chunk)
        lines.append(f"COPY layer{index}.bin /data/layer{index}.bin")
        left -= chunk
        index += 1
    (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
    ref = f"{repo}:{tag}"
    w.images.add(ref)
    run(["docker", "build", "--no-cache", "-q", "-t", ref, str(ctx)], classic(w.env))
    pushed = run(["docker", "push", ref], w.env).stdout
    run(["docker", "rmi", ref], w.env)
    shutil.rmtree(ctx)
    match = DIGEST_RE.search(pushed)
    if match is None:
        raise RuntimeError(f"docker push {ref} reported no digest:\n{pushed}")
    return match.group(1)


def classic(env: Mapping[str, str]) -> dict[str, str]:
    return {**env, "DOCKER_BUILDKIT": "0"}


def bench_validation(w: World) -> None:
    repo = f"{w.registry.address}/{w.name}-val"
    settings = Settings.from_mapping(
        {
            "canonical_repository": repo,
            "staging_repository": f"{repo}-staging",
            "state_dir": str(w.tmp / "val-state"),
        }
    )
    images: dict[int, tuple[str, Path]] = {}
    for size in SIZES_MB:
        sha = hashlib.sha1(f"{w.name}-{size}".encode(), usedforsecurity=False).hexdigest()
        digest = random_image(w, repo, sha, size)
        meta = w.tmp / f"val-{size}.json"
        meta.write_text(json.dumps({"image_sha": sha, "image_digest": digest}))
        images[size] = (sha, meta)

    def check(sha: str, meta: Path) -> float:
        # What `inv deploy` does before touching a target, minus cosign: SHA and floating-tag
        # policy, the environment's repository policy, HEAD of the tag (a fresh client, so a
        # fresh connection), and the digest guard against the build's metadata.
        started = time.perf_counter()
        tag = ensure_immutable_tag(validate_sha(sha))
        image = resolve_image(settings, settings.environment("local"), tag, env=w.env)
        expected = json.loads(meta.read_text())["image_digest"]
        elapsed = time.perf_counter() - started
        if image.digest != expected:
            raise RuntimeError(f"digest {image.digest} != {expected}")
        return elapsed

    def pull(ref: str) -> float:
        elapsed = timed(["docker", "pull", "-q", ref], w.env)
        run(["docker", "rmi", ref], w.env)  # so the next pull fetches every layer again
        return elapsed

    check(*images[SIZES_MB[0]])  # warm-up: lazy imports, first connection
    series: dict[str, dict[str, list[float]]] = {}
    for size in SIZES_MB:
        sha, meta = images[size]
        ref = f"{repo}:{sha}"
        ours, pulls = interleave(w.runs, lambda _i: check(sha, meta), lambda _i: pull(ref))  # noqa: B023
        series[str(size)] = {"shatag": ours, "pull": pulls}
        ratio = median(pulls) / median(ours)
        big = size == SIZES_MB[-1]
        w.rows.append(
            Row(
                item="1",
                what=f"deploy validation vs `docker pull`, {size} MB image",
                shatag=fmt(median(ours)),
                baseline=fmt(median(pulls)),
                ratio=f"{ratio:.0f}x faster",
                target=">= 20x faster" if big else "<= 50 ms (reported)",
                asserted=big,
                ok=ratio >= 20 if big else median(ours) <= 0.050,
            )
        )
    w.samples["validation"] = series


# -- 2. inv build vs docker build + push ------------------------------------------------------


def bench_build(w: World) -> None:
    app = w.app("build-app")
    repo = f"{w.registry.address}/{w.name}-build"
    env = {
        **w.env,
        "INVOKE_SHATAG_CANONICAL_REPOSITORY": repo,
        "INVOKE_SHATAG_STAGING_REPOSITORY": f"{repo}-staging",
        "INVOKE_SHATAG_CONTEXT": str(app),
        "INVOKE_SHATAG_METADATA_DIR": str(w.tmp / "build-metadata"),
        "INVOKE_SHATAG_STATE_DIR": str(w.tmp / "build-state"),
        "INVOKE_SHATAG_SBOM_DIR": str(w.tmp / "build-sbom"),
    }
    syft = shutil.which("syft", path=w.env["PATH"])
    builder = ["classic"]
    parts: dict[str, list[float]] = {"docker_build": [], "docker_push": [], "syft": []}

    def ours(i: int) -> float:
        sha = commit(app, BUILD_PAYLOAD_MB, f"shatag {i}")
        w.images.update({f"{repo}:{sha}", f"{repo}:{sha[:12]}"})
        started = time.perf_counter()
        proc = run(w.inv(["build", f"--sha={sha}", "--branch=main"]), env)
        elapsed = time.perf_counter() - started
        record = last_json(proc.stdout)
        if record.get("reused") is not False:
            raise RuntimeError(f"inv build reused an image: {record}")
        builder[0] = str(record.get("builder") or "classic")
        run(["docker", "rmi", f"{repo}:{sha}", f"{repo}:{sha[:12]}"], w.env, check=False)
        return elapsed

    def by_hand(i: int) -> float:
        commit(app, BUILD_PAYLOAD_MB, f"direct {i}")
        tag = f"{repo}:direct-{i + 1}-{uuid.uuid4().hex[:6]}"
        w.images.add(tag)
        # The same build shatag runs (see shatag.docker.DockerEngine.build), typed by hand.
        if builder[0] == "buildx":
            argv = ["docker", "buildx", "build", "--load", "--provenance=false", "--sbom=false"]
            build_env = dict(w.env)
        else:
            argv = ["docker", "build"]
            build_env = classic(w.env)
        argv += ["--no-cache", "--pull=false", "--platform", "linux/amd64"]
        argv += ["--file", str(app / "Dockerfile"), "--tag", tag, str(app)]
        t0 = time.perf_counter()
        run(argv, build_env)
        t1 = time.perf_counter()
        pushed = run(["docker", "push", tag], w.env).stdout
        t2 = time.perf_counter()
        if syft:  # the SBOM shatag makes of every pushed digest (FR-008), by hand
            match = DIGEST_RE.search(pushed)
            if match is None:
                raise RuntimeError(f"docker push {tag} reported no digest")
            out = w.tmp / "by-hand.spdx.json"
            syft_env = {
                **w.env,
                "SYFT_CHECK_FOR_APP_UPDATE": "false",
                "SYFT_REGISTRY_INSECURE_USE_HTTP": "true",
            }
            scan = f"registry:{repo}@{match.group(1)}"
            run([syft, "scan", scan, "-o", f"spdx-json={out}", "-q"], syft_env)
        t3 = time.perf_counter()
        if i >= 0:
            parts["docker_build"].append(t1 - t0)
            parts["docker_push"].append(t2 - t1)
            parts["syft"].append(t3 - t2)
        run(["docker", "rmi", tag], w.env, check=False)
        return t3 - t0

    ours(-1)  # warm-up: the busybox and www layers reach the registry once, for both
    by_hand(-1)
    # At least 9 pairs: a single push on a busy 2-core machine varies by +-0.4 s, and the median
    # of the paired ratios is what is asserted.
    xs, ys = interleave(max(w.runs, BUILD_MIN_RUNS), ours, by_hand)
    docker_only = [b + p for b, p in zip(parts["docker_build"], parts["docker_push"], strict=True)]
    ratio = median([x / y for x, y in zip(xs, ys, strict=True)])
    raw = median([x / d for x, d in zip(xs, docker_only, strict=True)])
    overhead = median([x - y for x, y in zip(xs, ys, strict=True)])
    w.samples["build"] = {
        "shatag": xs,
        "by_hand": ys,
        **parts,
        "builder": builder[0],
        "payload_mb": BUILD_PAYLOAD_MB,
    }
    workload = f"examples/api + {BUILD_PAYLOAD_MB} MB of random files, {builder[0]} builder"
    tools = "`docker build --no-cache` + `docker push`" + (" + `syft scan`" if syft else "")
    tools += ", one after the other"
    w.rows += [
        Row(
            item="2",
            what=f"`inv build` vs the same tools by hand: {tools} ({workload})",
            shatag=fmt(median(xs)),
            baseline=fmt(median(ys)),
            ratio=f"{ratio:.3f} ({overhead:+.2f} s)",
            target="<= 1.10",
            asserted=True,
            ok=ratio <= 1.10,
        ),
        Row(
            item="2",
            what="`inv build` (SBOM included) vs `docker build --no-cache` + `docker push` alone",
            shatag=fmt(median(xs)),
            baseline=fmt(median(docker_only)),
            ratio=f"{raw:.3f}",
            target="reported",
            asserted=False,
            ok=True,
        ),
    ]


# -- 3. inv rollback vs docker run + health wait ----------------------------------------------


def wait_healthy(w: World, container: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = run(
            ["docker", "inspect", "--format", "{{.State.Health.Status}}", container],
            w.env,
            check=False,
        ).stdout.strip()
        if status == "healthy":
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{container} not healthy after {timeout}s (status {status!r})")
        time.sleep(0.1)


def wait_check(w: World, container: str, command: Sequence[str], timeout: float = 60.0) -> None:
    """Run the image's HEALTHCHECK command by hand (``docker exec``) until it passes."""
    deadline = time.monotonic() + timeout
    while run(["docker", "exec", container, *command], w.env, check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{container}: its HEALTHCHECK command never passed")
        time.sleep(0.1)


def bench_rollback(w: World) -> None:
    app = w.app("rollback-app")
    repo = f"{w.registry.address}/{w.name}-rb"
    name = f"shatag-perf-{uuid.uuid4().hex[:8]}"
    bare = f"{name}-bare"
    w.containers.update({name, f"{name}-shatag-prev", bare})
    config = w.tmp / "rollback.json"
    config.write_text(
        json.dumps(
            {
                "shatag": {
                    "canonical_repository": repo,
                    "staging_repository": f"{repo}-staging",
                    "context": str(app),
                    "metadata_dir": str(w.tmp / "rb-metadata"),
                    "state_dir": str(w.tmp / "rb-state"),
                    "sbom_dir": str(w.tmp / "rb-sbom"),
                    "environments": {
                        "local": {
                            "repository_type": "canonical",
                            "targets": [
                                {
                                    "kind": "docker",
                                    "name": name,
                                    "port": free_port(),
                                    "container_port": 8080,
                                    "health_path": "/healthz",
                                }
                            ],
                        }
                    },
                }
            }
        )
    )
    cfg = ["-f", str(config)]
    releases: list[tuple[str, str]] = []
    for label in ("A", "B"):
        sha = commit(app, 1, f"release {label}")
        w.images.update({f"{repo}:{sha}", f"{repo}:{sha[:12]}"})
        record = last_json(
            run(w.inv([*cfg, "build", f"--sha={sha}", "--branch=main"]), w.env).stdout
        )
        releases.append((sha, str(record["image_digest"])))
    for sha, _digest in releases:
        run(w.inv([*cfg, "deploy", f"--sha={sha}"]), w.env)
    client = RegistryClient(parse_repository(repo), env={})
    tags_before = {tag: client.manifest_digest(tag) for tag in client.tags()}
    bare_port = free_port()
    since = time.time()

    def target(i: int) -> tuple[str, str]:
        return releases[i % 2]  # A, B, A, …: each rollback switches to the other release

    def ours(i: int) -> float:
        sha, digest = target(i)
        started = time.perf_counter()
        proc = run(w.inv([*cfg, "rollback", f"--sha={sha}"]), w.env)
        elapsed = time.perf_counter() - started
        record = last_json(proc.stdout)
        if record.get("phase") != "rollback" or record.get("image_digest") != digest:
            raise RuntimeError(f"unexpected rollback record: {record}")
        return elapsed

    check = ["/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/healthz"]
    by_exec: list[float] = []

    def bare_run(ref: str) -> None:
        run(
            [
                "docker",
                "run",
                "-d",
                "--name",
                bare,
                "--health-interval=1s",  # as the docker target does
                "-p",
                f"127.0.0.1:{bare_port}:8080",
                ref,
            ],
            w.env,
        )

    def baseline(i: int) -> float:
        """docker run + wait for the engine's `healthy` (returned); then the same run + the
        image's HEALTHCHECK command exec'd by hand until it passes (kept in ``by_exec``)."""
        sha, digest = target(i)
        ref = f"{repo}:{sha}@{digest}"
        started = time.perf_counter()
        bare_run(ref)
        wait_healthy(w, bare)
        elapsed = time.perf_counter() - started
        run(["docker", "rm", "-f", bare], w.env)
        started = time.perf_counter()
        bare_run(ref)
        wait_check(w, bare, check)
        by_exec.append(time.perf_counter() - started)
        run(["docker", "rm", "-f", bare], w.env)
        return elapsed

    xs, ys = interleave(w.runs, ours, baseline)
    until = time.time()
    events = run(
        [
            "docker",
            "events",
            "--since",
            f"{since:.3f}",
            "--until",
            f"{until + 1:.3f}",
            "--filter",
            "type=image",
            "--format",
            "{{.Action}} {{.Actor.ID}}",
        ],
        w.env,
    ).stdout.splitlines()
    ours_events = [e for e in events if repo in e and e.split(" ")[0] in ("push", "tag", "build")]
    tags_after = {tag: client.manifest_digest(tag) for tag in client.tags()}
    no_build = not ours_events and tags_after == tags_before
    ratios = [x / y for x, y in zip(xs, ys, strict=True)]
    ratio = median(ratios)
    w.samples["rollback"] = {
        "shatag": xs,
        "bare": ys,
        "bare_exec_check": by_exec,
        "ratios": ratios,
        "build_or_push_events": ours_events,
        "registry_unchanged": tags_after == tags_before,
    }
    w.rows.append(
        Row(
            item="3",
            what="`inv rollback` (docker target) vs `docker run` + health wait, same image",
            shatag=fmt(median(xs)),
            baseline=fmt(median(ys)),
            ratio=f"{ratio:.2f}",
            target="<= 1.5",
            asserted=True,
            ok=ratio <= 1.5,
        )
    )
    w.rows.append(
        Row(
            item="3",
            what="`inv rollback` vs `docker run` + the image's HEALTHCHECK command exec'd by hand "
            "until it passes (shatag's own overhead)",
            shatag=fmt(median(xs)),
            baseline=fmt(median(by_exec)),
            ratio=f"{median([x / y for x, y in zip(xs, by_exec, strict=True)]):.2f} "
            f"({median([x - y for x, y in zip(xs, by_exec, strict=True)]):+.2f} s)",
            target="reported",
            asserted=False,
            ok=True,
        )
    )
    w.rows.append(
        Row(
            item="3",
            what="no build, tag or push during the rollbacks (docker events, registry tags)",
            shatag="none" if no_build else f"{len(ours_events)} events",
            baseline="-",
            ratio="-",
            target="none",
            asserted=True,
            ok=no_build,
        )
    )


# -- 4. start-up ------------------------------------------------------------------------------


def bench_startup(w: World) -> None:
    a, b = interleave(
        max(w.runs, 7),
        lambda _i: timed(w.inv(["--list"]), w.env),
        lambda _i: timed(w.inv(["build", "--help"]), w.env),
    )
    w.samples["startup"] = {"list": a, "build_help": b}
    for label, values in (("`inv --list`", a), ("`inv build --help`", b)):
        w.rows.append(
            Row(
                item="4",
                what=f"start-up: {label}",
                shatag=fmt(median(values)),
                baseline="-",
                ratio="-",
                target="<= 0.5 s (reported)",
                asserted=False,
                ok=median(values) <= 0.5,
            )
        )


# -- 5. history -------------------------------------------------------------------------------


def fill_history(state_dir: Path, count: int) -> HistoryStore:
    store = HistoryStore(state_dir, "local")
    store.path.parent.mkdir(parents=True, exist_ok=True)
    with store.path.open("w", encoding="utf-8") as fh:
        for i in range(count):
            fh.write(history_record(i).to_json() + "\n")
    return store


def history_record(i: int) -> HistoryRecord:
    sha = f"{i:040x}"
    digest = "sha256:" + hashlib.sha256(sha.encode()).hexdigest()
    return HistoryRecord(
        action="rollback" if i % 10 == 9 else "deploy",
        env="local",
        sha=sha,
        digest=digest,
        result="ok",
        image_ref=f"127.0.0.1:5000/api:{sha}@{digest}",
        repository="127.0.0.1:5000/api",
        repository_type="canonical",
        previous_sha=f"{i - 1:040x}" if i else "",
        initiated_by="perf",
        started_at="2024-01-01T00:00:00.000Z",
        finished_at="2024-01-01T00:00:01.000Z",
        duration_sec=1.0,
        targets=("docker:api",),
    )


def bench_history(w: World) -> None:
    big_dir, small_dir = w.tmp / "hist-big", w.tmp / "hist-small"
    big, small = fill_history(big_dir, HISTORY_BIG), fill_history(small_dir, HISTORY_SMALL)

    def show(state_dir: Path) -> float:
        env = {**w.env, "INVOKE_SHATAG_STATE_DIR": str(state_dir)}
        started = time.perf_counter()
        proc = run(w.inv(["history", "--limit", "20"]), env)
        elapsed = time.perf_counter() - started
        if proc.stdout.count("\n") < 20:
            raise RuntimeError(f"inv history printed too little:\n{proc.stdout}")
        return elapsed

    shown_big, shown_small = interleave(
        w.runs, lambda _i: show(big_dir), lambda _i: show(small_dir)
    )

    def append(store: HistoryStore, i: int) -> float:
        record = history_record(HISTORY_BIG + 1000 + i)
        started = time.perf_counter()
        store.append(record)
        return time.perf_counter() - started

    app_big, app_small = interleave(APPENDS, lambda i: append(big, i), lambda i: append(small, i))
    w.samples["history"] = {
        "show_10000": shown_big,
        "show_100": shown_small,
        "append_10000": app_big,
        "append_100": app_small,
    }
    w.rows.append(
        Row(
            item="5",
            what=f"`inv history --limit 20` with {HISTORY_BIG:,} records (vs {HISTORY_SMALL})",
            shatag=fmt(median(shown_big)),
            baseline=fmt(median(shown_small)),
            ratio=f"{median(shown_big) / median(shown_small):.2f}",
            target="<= 0.5 s (reported)",
            asserted=False,
            ok=median(shown_big) <= 0.5,
        )
    )
    append_ratio = median(app_big) / median(app_small)
    w.rows.append(
        Row(
            item="5",
            what=f"append one record (fsync'd) at {HISTORY_BIG:,} vs {HISTORY_SMALL} records",
            shatag=fmt(median(app_big)),
            baseline=fmt(median(app_small)),
            ratio=f"{append_ratio:.2f}",
            target="O(1): ratio ~1 (reported)",
            asserted=False,
            ok=append_ratio <= 2.0,
        )
    )


# -- 7. the git ledger (issue 15) -------------------------------------------------------------


def _ledger_remote(w: World) -> tuple[Path, Callable[[], Path]]:
    """A bare repository standing for the application's remote, and a factory of fresh
    shallow clones of it (runners)."""
    root = w.tmp / "ledger"
    root.mkdir()
    bare = root / "app.git"
    git(root, "init", "-q", "--bare", "-b", "main", str(bare))
    seed = w.app("ledger-seed")
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "app")
    git(seed, "push", "-q", str(bare), "main")
    count = iter(range(1000))

    def clone() -> Path:
        path = root / f"runner{next(count)}"
        git(root, "clone", "-q", "--depth=1", f"file://{bare}", str(path))
        return path

    return bare, clone


def _hold_lock(path: str, seconds: float) -> None:
    ledger = GitLedger(Path(path), "origin", env=dict(os.environ))
    with ledger.lock("bench", timeout=30, holder="perf holder"):
        time.sleep(seconds)


def bench_ledger(w: World) -> None:
    import multiprocessing

    _bare, clone = _ledger_remote(w)
    runner = clone()
    ledger = GitLedger(runner, "origin", env=w.env)
    local = HistoryStore(w.tmp / "ledger-local", "local")

    def git_append(i: int) -> float:
        record = history_record(20_000 + i)
        started = time.perf_counter()
        ledger.store("appends").append(record)
        return time.perf_counter() - started

    def local_append(i: int) -> float:
        record = history_record(30_000 + i)
        started = time.perf_counter()
        local.append(record)
        return time.perf_counter() - started

    appended, fsynced = interleave(APPENDS, git_append, local_append)

    def lock_cycle(_i: int) -> float:
        started = time.perf_counter()
        with ledger.lock("bench", timeout=5, holder="perf"):
            pass
        return time.perf_counter() - started

    cycles = [lock_cycle(i) for i in range(max(w.runs, 7))]
    # Lock wait: another runner holds the lock for 1 s; how long past that does this one wait?
    ctx = multiprocessing.get_context("fork")
    hold = 1.0
    waits: list[float] = []
    for _ in range(max(w.runs, 5)):
        holder = ctx.Process(target=_hold_lock, args=(str(clone()), hold))
        holder.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the holder has it
            ledger.refresh()
            if ledger.read_lock("bench") is not None:
                break
        with ledger.lock("bench", timeout=30, holder="perf waiter"):
            waits.append(ledger.last_lock_wait_sec)
        holder.join(30)
    # inv history from a brand-new runner (fetch + read) vs the local backend, same records.
    _fill_git_history(runner, LEDGER_RECORDS)
    local_dir = w.tmp / "ledger-local-hist"
    fill_history(local_dir, LEDGER_RECORDS)
    config = w.tmp / "ledger-invoke.yaml"
    config.write_text(
        json.dumps(
            {
                "shatag": {
                    "state_backend": "git",
                    "environments": {
                        "local": {
                            "repository_type": "canonical",
                            "targets": [{"kind": "tfvars", "path": str(w.tmp / "x.json")}],
                        }
                    },
                }
            }
        )
    )

    def show_git(_i: int) -> float:
        fresh = clone()
        started = time.perf_counter()
        proc = run(w.inv(["-f", str(config), "history", "--limit", "20"]), w.env, cwd=fresh)
        elapsed = time.perf_counter() - started
        if proc.stdout.count("\n") < 20:
            raise RuntimeError(f"inv history (git) printed too little:\n{proc.stdout}")
        return elapsed

    def show_local(_i: int) -> float:
        env = {**w.env, "INVOKE_SHATAG_STATE_DIR": str(local_dir)}
        started = time.perf_counter()
        run(w.inv(["history", "--limit", "20"]), env)
        return time.perf_counter() - started

    shown_git, shown_local = interleave(w.runs, show_git, show_local)
    w.samples["ledger"] = {
        "append_git": appended,
        "append_local": fsynced,
        "lock_cycle": cycles,
        "lock_wait_behind_1s": waits,
        "history_git_fresh_clone": shown_git,
        "history_local": shown_local,
        "stats": ledger.stats,
    }
    rows = [
        (
            "git ledger: append one record (build commit + CAS push to a local bare remote)",
            appended,
            fmt(median(fsynced)) + " (local file, fsync)",
            f"{median(appended) / median(fsynced):.0f}",
            "reported",
        ),
        (
            "git ledger: take + release the lock uncontended (create push, fetch, delete push)",
            cycles,
            "-",
            "-",
            "reported",
        ),
        (
            f"git ledger: lock wait behind a {hold:g} s holder (handover = wait - {hold:g} s)",
            waits,
            f"handover {fmt(max(0.0, median(waits) - hold))}",
            "-",
            "reported",
        ),
        (
            f"`inv history --limit 20` from a fresh clone, {LEDGER_RECORDS} records on the "
            "remote (fetch + read) vs the local backend",
            shown_git,
            fmt(median(shown_local)),
            f"{median(shown_git) / median(shown_local):.2f}",
            "reported",
        ),
    ]
    for what, values, baseline, ratio, target in rows:
        w.rows.append(
            Row(
                item="7",
                what=what,
                shatag=fmt(median(values)),
                baseline=baseline,
                ratio=ratio,
                target=f"{target}",
                asserted=False,
                ok=True,
            )
        )


def _fill_git_history(runner: Path, count: int) -> None:
    """``count`` records on refs/shatag/local, built locally and pushed once (a ledger with
    history, without timing hundreds of pushes)."""
    parent = ""
    for i in range(count):
        text = history_record(50_000 + i).to_json() + "\n"
        blob = git_in(runner, ["hash-object", "-w", "--stdin"], text)
        tree = git_in(runner, ["mktree"], f"100644 blob {blob}\trecord.json\n")
        argv = ["commit-tree", tree, "-m", f"record {i}"] + (["-p", parent] if parent else [])
        parent = git_in(runner, argv, "")
    git(runner, "push", "-q", "origin", f"{parent}:refs/shatag/local")


# -- 6. test suite wall time ------------------------------------------------------------------


def suite_row() -> Row:
    try:
        data = json.loads(SUITE_JSON.read_text())
        total = float(data["total_sec"])
    except (OSError, ValueError, KeyError, TypeError):
        return Row(
            "6",
            "full test suite wall time (2 cores)",
            "not measured",
            "-",
            "-",
            "reported; < 15 min",
            asserted=False,
            ok=True,
        )
    sessions = data.get("sessions") or {}
    detail = ", ".join(f"{k} {float(v):.0f} s" for k, v in sessions.items())
    return Row(
        "6",
        f"test suite wall time: the sessions of the latest `nox` run, {data.get('when', '?')} "
        f"({detail})",
        f"{total / 60:.1f} min",
        "-",
        "-",
        "< 15 min (reported)",
        asserted=False,
        ok=total < 15 * 60,
    )


# -- report -----------------------------------------------------------------------------------


def machine(env: Mapping[str, str]) -> dict[str, str]:
    mem = "?"
    with suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    cpu = platform.processor() or "?"
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    docker = run(
        ["docker", "version", "--format", "{{.Server.Version}}"], env, check=False
    ).stdout.strip()
    registry = run(["docker-registry", "--version"], env, check=False).stdout.strip()
    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "kernel": f"{platform.system()} {platform.release()}",
        "docker": docker or "?",
        "registry": registry or "?",
        "python": platform.python_version(),
    }


def plot(series: Mapping[str, Mapping[str, list[float]]], path: Path) -> None:
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [int(s) for s in series]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for key, label, marker in (
        ("pull", "docker pull (pull-based check)", "s"),
        ("shatag", "shatag deploy validation (HEAD + policy + digest)", "o"),
    ):
        meds = [median(series[str(s)][key]) * 1000 for s in sizes]
        lows = [m - min(series[str(s)][key]) * 1000 for s, m in zip(sizes, meds, strict=True)]
        highs = [max(series[str(s)][key]) * 1000 - m for s, m in zip(sizes, meds, strict=True)]
        ax.errorbar(sizes, meds, yerr=[lows, highs], marker=marker, capsize=3, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("image size (MB of random layers)")
    ax.set_ylabel("time (ms, log scale; median, min-max bars)")
    ax.set_title("Checking that an image is deployable")
    ax.set_xticks(sizes)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def markdown(w: World, info: Mapping[str, str], elapsed: float) -> str:
    ran = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    head = "| # | comparison | shatag | baseline | ratio | target | asserted | result |"
    lines = [
        "# Performance",
        "",
        "<!-- Generated by `nox -s perf` (tests/perf/bench.py); do not edit by hand. -->",
        "",
        f"Measured {ran} by `nox -s perf` in {elapsed / 60:.1f} min, on the real Docker Engine",
        "and a real CNCF distribution registry on loopback. Each comparison interleaves its two",
        f"commands in one run (A B, B A, ...), {w.runs} runs each ({BUILD_MIN_RUNS} for item 2);",
        "the table shows medians. Other work on the machine slows both sides of a pair alike,",
        "so the ratios are steadier than",
        "the absolute times; the ratios of items 1-3 are what the session asserts (it fails",
        "when one misses its target).",
        "",
        "Machine: "
        + ", ".join(
            [
                f"{info['cores']} cores ({info['cpu']})",
                f"{info['memory']} RAM",
                f"kernel {info['kernel']}",
                f"Docker Engine {info['docker']} (classic builder)",
                f"registry {info['registry']}",
                f"Python {info['python']}",
            ]
        )
        + ".",
        "",
        head,
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(w.rows, key=lambda row: int(row.item)):  # item 6 (suite) is added last
        result = "pass" if r.ok else ("**FAIL**" if r.asserted else "over target")
        if r.shatag == "not measured":
            result = "-"
        lines.append(
            f"| {r.item} | {r.what} | {r.shatag} | {r.baseline} | {r.ratio} | {r.target} | "
            f"{'yes' if r.asserted else 'no'} | {result} |"
        )
    lines += [
        "",
        "![validation time vs image size](perf-validation.png)",
        "",
        "## What is measured",
        "",
        "1. **Deploy validation vs pull.** shatag: the calls `inv deploy` makes before it touches",
        "   a target, in process -- SHA and floating-tag policy, the environment's repository",
        "   policy, one `HEAD` of the SHA tag's manifest with a fresh client (a new connection),",
        "   and the digest guard against the build's metadata file; cosign is excluded. Python",
        "   start-up is not in this figure (item 4 gives it). Baseline: the pull-based check the",
        "   seed workflows used, `docker pull -q repo:<sha>`, with the image removed locally",
        "   between runs. Images are `FROM scratch` with 1, 50 and 200 MB of random bytes in",
        f"   layers of at most {LAYER_MB} MB.",
        "2. **Build overhead.** `inv build --sha=<new commit>` (a fresh SHA each time, so nothing",
        "   is reused) vs the same tools typed by hand, one after the other: `docker build",
        "   --no-cache --pull=false --platform linux/amd64`, `docker push`, and -- as every",
        "   shatag build makes an SBOM (FR-008) when syft is installed -- `syft scan",
        "   registry:repo@digest -o spdx-json=...`. Each side builds a fresh commit with new",
        "   random content, so neither finds its layers in the registry. shatag scans the image",
        "   it just built from the engine while it pushes it (docs/signatures.md says why that",
        "   SBOM stands for the pushed digest), so most of its SBOM time hides behind the push.",
        "   Its own work on top: Python start-up and imports (invoke, python-on-whales), the git",
        "   checks of the build context (HEAD = SHA, no modified tracked file), a buildx probe,",
        "   registry checks before and after, the short tag stored registry-side, the digest",
        "   proof, the metadata file. The asserted ratio is the median of the per-pair ratios;",
        "   the row below it compares with `docker build` + `docker push` alone (the SBOM step",
        "   then counts as overhead).",
        "3. **Rollback.** `inv rollback --sha=<the other release>` on an environment with one",
        "   docker target (the registry check by digest, stop the running container, start the",
        "   old release, wait until healthy, record history) vs a bare `docker run -d` of the",
        "   same image with the same 1 s health interval, polled every 100 ms until the engine",
        "   says `healthy`. shatag's gate also runs the image's HEALTHCHECK command itself",
        "   (`docker exec`) from the start, so it does not wait for the engine's first probe one",
        "   interval after start -- that is why the ratio is below 1. The reported row below it",
        "   gives the bare run that same head start (the HEALTHCHECK command exec'd by hand",
        "   until it passes): the difference is shatag's own work. The docker events of the run",
        "   and the registry's tags prove that no build, tag or push happened.",
        "4. **Start-up** of the CLI: `python -m invoke --list` and `inv build --help`.",
        f"5. **History**: `inv history --limit 20` on a {HISTORY_BIG:,}-record history (vs",
        f"   {HISTORY_SMALL}); appending one fsync'd record at each size ({APPENDS} appends each).",
        "6. **Suite wall time**: `nox` (the README's test command) runs lint, typecheck, unit,",
        "   contract, integration and reliability, then this session; each test session records",
        "   its duration in `build/perf/suite.json` (noxfile.py), and the row quotes the sessions",
        "   of the latest run. In CI that is a fresh clone on 2 cores, after the first-time tool",
        "   installs of ci/setup.sh (not counted).",
        "7. **Git ledger** (`state_backend: git`, issue 15) against a bare repository on",
        "   local disk standing for the application's remote (a GitHub remote adds its network",
        "   round trips to each push and fetch): appending one record (blob, tree and commit",
        "   built with plumbing, then a compare-and-swap push), vs the local backend's fsync'd",
        "   line; taking and releasing the lock with nobody else (create push, one fetch of",
        "   the ledger, delete push); the wait of a runner whose lock another runner holds for",
        "   1 s (polling every 0.12-0.38 s; what exceeds 1 s is the handover);",
        f"   `inv history --limit 20` in a fresh clone with {LEDGER_RECORDS} records on the",
        "   remote (the fetch included) vs the local backend with the same records.",
        "",
        "Raw samples of the last run: `build/perf/results.json`.",
        "",
        "Kubernetes (issue 16): `inv deploy` vs `kubectl set image` + `kubectl rollout status` on",
        "the test cluster, and what that cluster costs the suite, are in",
        "[performance-kubernetes.md](performance-kubernetes.md) (tests/perf/bench_kubernetes.py,",
        "run by the same session).",
        "",
    ]
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------


@contextmanager
def world(runs: int) -> Iterator[World]:
    with tempfile.TemporaryDirectory(prefix="shatag-perf-") as tmp:
        root = Path(tmp)
        home = root / "home"
        home.mkdir()
        env = {
            "PATH": os.pathsep.join([str(TOOLS_BIN), os.environ.get("PATH", os.defpath)]),
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "USER": "perf",
        }
        for key in ("DOCKER_HOST", "SHATAG_BUILDER", "SHATAG_TOOLS_DIR"):
            if key in os.environ:
                env[key] = os.environ[key]
        registry = LocalRegistry(root / "registry")
        registry.start()
        w = World(registry, root, env, f"perf-{uuid.uuid4().hex[:8]}", runs)
        try:
            yield w
        finally:
            w.cleanup()
            registry.stop()


BENCHES: Final[dict[str, Callable[[World], None]]] = {
    "validation": bench_validation,
    "build": bench_build,
    "rollback": bench_rollback,
    "startup": bench_startup,
    "history": bench_history,
    "ledger": bench_ledger,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="samples per command (>= 5)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {ITEMS}")
    args = parser.parse_args(argv)
    if os.environ.get("SHATAG_SKIP_PERF") == "1":
        print("perf: skipped (SHATAG_SKIP_PERF=1)")
        return 0
    only = [item for item in args.only.split(",") if item] or list(ITEMS)
    unknown = sorted(set(only) - set(ITEMS))
    if unknown:
        parser.error(f"unknown items {unknown}; choose from {ITEMS}")
    full = set(only) == set(ITEMS)
    started = time.perf_counter()
    with world(max(args.runs, 5 if full else 1)) as w:
        info = machine(w.env)
        for item in ITEMS:
            if item in only:
                print(f"perf: {item} ...", flush=True)
                BENCHES[item](w)
        w.rows.append(suite_row())
        elapsed = time.perf_counter() - started
        for r in w.rows:
            mark = "ok " if r.ok else ("FAIL" if r.asserted else "over")
            print(f"{mark} {r.item} {r.what}: {r.shatag} vs {r.baseline} ratio {r.ratio}")
        RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
        RESULTS_JSON.write_text(
            json.dumps(
                {"machine": info, "samples": w.samples, "rows": [vars(r) for r in w.rows]},
                indent=2,
            )
            + "\n"
        )
        if full:
            REPORT_MD.write_text(markdown(w, info, elapsed))
            plot(w.samples["validation"], REPORT_PNG)
            print(f"perf: wrote {REPORT_MD.relative_to(ROOT)} and {REPORT_PNG.relative_to(ROOT)}")
        failed = [r for r in w.rows if r.asserted and not r.ok]
    print(f"perf: {elapsed:.0f} s, {len(failed)} asserted ratio(s) missed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
