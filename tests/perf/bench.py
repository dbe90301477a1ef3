"""Side-by-side benchmarks on the real engine and registry (issues 7 and 17).

    python -m tests.perf.bench [--runs N] [--only ITEM,...]   (items: see ITEMS)

``nox -s perf`` runs this module; ``SHATAG_SKIP_PERF=1`` skips it. Each comparison interleaves
its two sides in one run (A B, B A, A B, ...) so that other work on the machine slows both
alike, and takes the median of the paired ratios x_i / y_i, by wall time and by CPU time (user +
system of this process's thread and every waited-for child process: ``getrusage``). On a busy
shared machine CPU time is the steadier figure; both are reported, with n, min and max.

The goals of issue 17 (each is a row; ``asserted`` rows fail the session, exit status 1, after
the report is written -- only ratios that hold reliably on a quiet 2-core machine are asserted):

1. docker ``inv deploy`` / ``inv rollback`` <= 1.5x the same switch by hand: with ``proxy:
   false``, ``docker rm -f`` old, ``docker run -d`` new, HTTP poll of ``/healthz``; through the
   proxy (the default), ``docker run -d`` new on its network, HTTP poll, the proxy's upstream
   file replaced, ``docker stop`` old;
2. ``inv deploy`` to file targets <= 1.5x ``python -c 'import invoke'``; ``inv --list`` <= 1.1x;
3. ``inv build`` <= 1.2x the floor that overlaps the SBOM scan with the push (``docker build
   --no-cache``, then ``docker push`` and ``syft scan`` in parallel), tiny app and +50 MB;
4. flat: new-SHA deploy at 100k history records <= 1.1x at 100; ``inv signatures`` with 3,000
   metadata files <= 1.1x with 30; deploy of a 150 MB image <= 1.1x a 1 MB one;
5. ``inv verify`` <= 1.5x its cosign calls by hand.

Also: deploy validation vs ``docker pull`` (>= 20x faster at 200 MB, asserted), ``inv history``
and the test-suite wall time (reported). A full run writes ``docs/performance.md``,
``docs/perf-ratios.png`` (every ratio against its goal), ``docs/perf-validation.png`` and
``build/perf/results.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

from shatag._testing.localregistry import LocalRegistry, free_port
from shatag.app.deploy import resolve_image
from shatag.config import Settings
from shatag.core import ensure_immutable_tag, parse_repository, validate_sha
from shatag.ledger.git import GitLedger
from shatag.ledger.history import HistoryRecord, HistoryStore
from shatag.supplychain.registry import RegistryClient
from shatag.supplychain.signing import EMPTY_TRUSTED_ROOT
from shatag.targets.docker.caddy import CONFIG_FILE as CADDY_CONFIG_FILE
from shatag.targets.docker.caddy import LISTEN_PORT as PROXY_LISTEN_PORT
from shatag.targets.docker.caddy import MOUNT as PROXY_MOUNT
from shatag.targets.docker.caddy import UPSTREAM_FILE, caddy_config

ROOT: Final = Path(__file__).resolve().parents[2]
EXAMPLE: Final = ROOT / "examples" / "api"
DOCS: Final = ROOT / "docs"
REPORT_MD: Final = DOCS / "performance.md"
REPORT_PNG: Final = DOCS / "perf-validation.png"
RATIOS_PNG: Final = DOCS / "perf-ratios.png"
RESULTS_JSON: Final = ROOT / "build" / "perf" / "results.json"
# Written by noxfile.py as the test sessions finish: {"run": …, "total_sec": …, "sessions": {…}}.
SUITE_JSON: Final = ROOT / "build" / "perf" / "suite.json"
TOOLS_BIN: Final = (
    Path(os.environ.get("SHATAG_TOOLS_DIR", Path.home() / ".cache/shatag/tools")) / "bin"
)
MB: Final = 1024 * 1024
BUILD_MIN_RUNS: Final = 9
DOCKER_MIN_RUNS: Final = 7
STARTUP_MIN_RUNS: Final = 9
FLAT_MIN_RUNS: Final = 7
SIZES_MB: Final = (1, 50, 200)
LAYER_MB: Final = 50  # 200 MB → four layers, which docker pull fetches in parallel
BUILD_PAYLOADS_MB: Final = (0, 50)  # the tiny app alone, and with a 50 MB context on top
HISTORY_BIG: Final = 10_000
HISTORY_SMALL: Final = 100
HISTORY_FLAT_BIG: Final = 100_000
METADATA_BIG: Final = 3_000
METADATA_SMALL: Final = 30
FLAT_IMAGE_MB: Final = 150
APPENDS: Final = 40
HEALTH_POLL_SEC: Final = 0.1  # the by-hand gate polls as often as the docker target does
# What the session asserts (figure: "cpu" and/or "wall"). Only ratios that held with margin in
# every measured run on the 2-core machine are asserted; the rest are reported against their goal.
# `inv --list` CPU: ~0.95 on a quiet moment, but 1.12 (0.85-1.40) in the full run on the
# loaded machine: reported, not asserted. The two flat deploy ratios met their goal (1.04-1.05
# and 1.03-1.08 CPU medians) but with pairs up to 1.21: too close to 1.1 to fail a CI run on;
# reported until the margin is real.
LIST_ASSERT: Final[tuple[str, ...]] = ()
FILES_ASSERT: Final[tuple[str, ...]] = ()
BUILD_ASSERT: Final[tuple[str, ...]] = ()
FLAT_HISTORY_ASSERT: Final[tuple[str, ...]] = ()
FLAT_SIZE_ASSERT: Final[tuple[str, ...]] = ()
FLAT_SIGNATURES_ASSERT: Final[tuple[str, ...]] = ()
VERIFY_ASSERT: Final[tuple[str, ...]] = ()
ITEMS: Final = (
    "validation",
    "build",
    "docker",
    "startup",
    "files",
    "flat",
    "verify",
    "history",
    "ledger",
)
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


T = TypeVar("T")


def interleave(runs: int, a: Callable[[int], T], b: Callable[[int], T]) -> tuple[list[T], list[T]]:
    """``runs`` samples of each (seconds, or a :class:`Cost`), alternating which goes first
    (A B, B A, ...)."""
    xs: list[T] = []
    ys: list[T] = []
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
    n: int = 0
    # The ratio as a number, its min and max over the pairs, and its goal (for the plot).
    value: float | None = None
    low: float | None = None
    high: float | None = None
    goal: float | None = None


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
    # Unique name prefixes of what shatag itself creates for a docker target (the app
    # containers of each attempt, the proxy, its network): removed by prefix at the end.
    prefixes: set[str] = field(default_factory=set)

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
        for prefix in sorted(self.prefixes):
            listed = run(
                ["docker", "ps", "-aq", "--filter", f"name=^{prefix}"], self.env, check=False
            ).stdout.split()
            if listed:
                run(["docker", "rm", "-f", *listed], self.env, check=False)
            networks = run(
                ["docker", "network", "ls", "-q", "--filter", f"name=^{prefix}"],
                self.env,
                check=False,
            ).stdout.split()
            if networks:
                run(["docker", "network", "rm", *networks], self.env, check=False)
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
                item="v",
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


# -- costs: wall and CPU time of one side of a pair --------------------------------------------


@dataclass(frozen=True)
class Cost:
    """Wall time and CPU time (user + system) of one measured step.

    CPU counts this process's thread (in-process work such as an HTTP poll by hand) and every
    child process waited for during the step, with their own waited-for children (docker CLI,
    cosign, syft): ``getrusage(RUSAGE_CHILDREN)``. Work done by the docker daemon or the
    registry is in neither side's CPU figure; it is in the wall time.
    """

    wall: float
    cpu: float


class Meter:
    """``with Meter() as m: ...`` then ``m.cost``; ``pause()`` excludes set-up work."""

    def __init__(self) -> None:
        self._wall = 0.0
        self._cpu = 0.0
        self._t = 0.0
        self._c = 0.0

    @staticmethod
    def _cpu_now() -> float:
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return kids.ru_utime + kids.ru_stime + time.thread_time()

    def __enter__(self) -> Meter:
        self.resume()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.pause()

    def resume(self) -> None:
        self._t, self._c = time.perf_counter(), self._cpu_now()

    def pause(self) -> None:
        self._wall += time.perf_counter() - self._t
        self._cpu += self._cpu_now() - self._c

    @property
    def cost(self) -> Cost:
        return Cost(self._wall, self._cpu)


def measured(argv: Sequence[str], env: Mapping[str, str], **kwargs: Any) -> Cost:
    with Meter() as m:
        run(argv, env, **kwargs)
    return m.cost


@dataclass(frozen=True)
class Pairing:
    """Paired ratios x_i / y_i of one comparison, by wall and by CPU time."""

    xs: list[Cost]
    ys: list[Cost]

    def ratios(self, key: str) -> list[float]:
        return [getattr(x, key) / getattr(y, key) for x, y in zip(self.xs, self.ys, strict=True)]

    def ratio(self, key: str) -> float:
        return median(self.ratios(key))

    def spread(self, key: str) -> str:
        values = self.ratios(key)
        return f"{min(values):.2f}-{max(values):.2f}"

    def side(self, which: str, key: str) -> str:
        values = [getattr(c, key) for c in (self.xs if which == "x" else self.ys)]
        return f"{fmt(median(values))} ({fmt(min(values))}-{fmt(max(values))})"

    def as_json(self) -> dict[str, Any]:
        return {
            "shatag": [vars(c) for c in self.xs],
            "baseline": [vars(c) for c in self.ys],
            "ratio_wall": self.ratios("wall"),
            "ratio_cpu": self.ratios("cpu"),
        }


def ratio_rows(
    w: World,
    item: str,
    what: str,
    pairing: Pairing,
    goal: float,
    *,
    assert_on: tuple[str, ...] = (),
) -> None:
    """One row per figure (CPU time, wall time) of a paired comparison, goal ``<= goal``."""
    for key, label in (("cpu", "CPU"), ("wall", "wall")):
        ratio = pairing.ratio(key)
        w.rows.append(
            Row(
                item=item,
                what=f"{what} [{label}]",
                shatag=pairing.side("x", key),
                baseline=pairing.side("y", key),
                ratio=f"{ratio:.2f} ({pairing.spread(key)})",
                target=f"<= {goal:g}",
                asserted=key in assert_on,
                ok=ratio <= goal,
                n=len(pairing.xs),
                value=ratio,
                low=min(pairing.ratios(key)),
                high=max(pairing.ratios(key)),
                goal=goal,
            )
        )


def python_floor(w: World) -> list[str]:
    """The start-up floor of every CLI run: the interpreter importing invoke, nothing else."""
    return [sys.executable, "-c", "import invoke"]


def push_alias(w: World, source: str, ref: str) -> None:
    """Another tag for an image the registry has (its layers exist: a fast push)."""
    run(["docker", "tag", source, ref], w.env)
    run(["docker", "push", "-q", ref], w.env)
    run(["docker", "rmi", ref], w.env)


def fake_sha(label: str) -> str:
    return hashlib.sha1(label.encode(), usedforsecurity=False).hexdigest()


SDL_TEXT: Final = (
    'version: "2.0"\n'
    "services:\n"
    "  api:\n"
    "    image: placeholder\n"
    "    expose:\n"
    "      - port: 8080\n"
    "        as: 80\n"
    "        to:\n"
    "          - global: true\n"
)


def files_config(w: World, label: str, repo: str, envs: Sequence[str]) -> Path:
    """A config whose environments each deploy to an SDL file and a tfvars file (a runtime
    config file outranks ``INVOKE_SHATAG_*`` variables: one file per variant)."""
    environments: dict[str, Any] = {}
    for env_name in envs:
        base = w.tmp / f"{label}-targets" / env_name
        base.mkdir(parents=True, exist_ok=True)
        (base / "deploy.yaml").write_text(SDL_TEXT)
        environments[env_name] = {
            "repository_type": "canonical",
            "targets": [
                {"kind": "sdl", "path": str(base / "deploy.yaml"), "service": "api"},
                {"kind": "tfvars", "path": str(base / "image.auto.tfvars.json")},
            ],
        }
    config = w.tmp / f"{label}.json"
    config.write_text(
        json.dumps(
            {
                "shatag": {
                    "canonical_repository": repo,
                    "staging_repository": f"{repo}-staging",
                    "metadata_dir": str(w.tmp / f"{label}-metadata"),
                    "state_dir": str(w.tmp / f"{label}-state"),
                    "sbom_dir": str(w.tmp / f"{label}-sbom"),
                    "environments": environments,
                }
            }
        )
    )
    return config


# -- 2. inv build vs the by-hand floor (push and SBOM scan overlapped) --------------------------


def bench_build(w: World) -> None:
    for payload in BUILD_PAYLOADS_MB:
        build_pairs(w, payload)


def build_pairs(w: World, payload_mb: int) -> None:
    app = w.app(f"build-app-{payload_mb}")
    repo = f"{w.registry.address}/{w.name}-build{payload_mb}"
    env = {
        **w.env,
        "INVOKE_SHATAG_CANONICAL_REPOSITORY": repo,
        "INVOKE_SHATAG_STAGING_REPOSITORY": f"{repo}-staging",
        "INVOKE_SHATAG_CONTEXT": str(app),
        "INVOKE_SHATAG_METADATA_DIR": str(w.tmp / f"build{payload_mb}-metadata"),
        "INVOKE_SHATAG_STATE_DIR": str(w.tmp / f"build{payload_mb}-state"),
        "INVOKE_SHATAG_SBOM_DIR": str(w.tmp / f"build{payload_mb}-sbom"),
    }
    syft = shutil.which("syft", path=w.env["PATH"])
    builder = ["classic"]
    syft_env = {
        **w.env,
        "SYFT_CHECK_FOR_APP_UPDATE": "false",
        "SYFT_REGISTRY_INSECURE_USE_HTTP": "true",
    }

    def ours(i: int) -> Cost:
        m = Meter()
        sha = commit(app, payload_mb, f"shatag {i}")
        w.images.update({f"{repo}:{sha}", f"{repo}:{sha[:12]}"})
        m.resume()
        proc = run(w.inv(["build", f"--sha={sha}", "--branch=main"]), env)
        m.pause()
        record = last_json(proc.stdout)
        if record.get("reused") is not False:
            raise RuntimeError(f"inv build reused an image: {record}")
        builder[0] = str(record.get("builder") or "classic")
        run(["docker", "rmi", f"{repo}:{sha}", f"{repo}:{sha[:12]}"], w.env, check=False)
        return m.cost

    def by_hand(i: int) -> Cost:
        commit(app, payload_mb, f"direct {i}")
        tag = f"{repo}:direct-{i + 1}-{uuid.uuid4().hex[:6]}"
        w.images.add(tag)
        # The same build shatag runs (see shatag._sys.docker.DockerEngine.build), typed by hand.
        if builder[0] == "buildx":
            argv = ["docker", "buildx", "build", "--load", "--provenance=false", "--sbom=false"]
            build_env = dict(w.env)
        else:
            argv = ["docker", "build"]
            build_env = classic(w.env)
        argv += ["--no-cache", "--pull=false", "--platform", "linux/amd64"]
        argv += ["--file", str(app / "Dockerfile"), "--tag", tag, str(app)]
        out = w.tmp / "by-hand.spdx.json"
        with Meter() as m:
            run(argv, build_env)
            # The floor overlaps the SBOM scan with the push, as shatag does: syft reads the
            # image the build just made from the engine while docker pushes it.
            scan = (
                subprocess.Popen(
                    [syft, "scan", f"docker:{tag}", "-o", f"spdx-json={out}", "-q"],
                    env=syft_env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                if syft
                else None
            )
            run(["docker", "push", tag], w.env)
            if scan is not None:
                _out, err = scan.communicate(timeout=900)
                if scan.returncode != 0:
                    raise RuntimeError(f"syft scan {tag} exited {scan.returncode}: {err!r}")
        run(["docker", "rmi", tag], w.env, check=False)
        return m.cost

    ours(-1)  # warm-up: the busybox and www layers reach the registry once, for both
    by_hand(-1)
    xs, ys = interleave(max(w.runs, BUILD_MIN_RUNS), ours, by_hand)
    pairing = Pairing(xs, ys)
    w.samples[f"build_{payload_mb}mb"] = {**pairing.as_json(), "builder": builder[0]}
    floor = "`docker build --no-cache`, then `docker push` with `syft scan` in parallel"
    if not syft:
        floor = "`docker build --no-cache` + `docker push` (no syft on PATH)"
    workload = "examples/api" + (f" + {payload_mb} MB of random files" if payload_mb else "")
    ratio_rows(
        w,
        "3",
        f"`inv build` ({workload}, {builder[0]} builder) vs the floor: {floor}",
        pairing,
        1.2,
        assert_on=BUILD_ASSERT,
    )


# -- 1. docker deploy and rollback vs the by-hand switch ----------------------------------------


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback http
            return bool(resp.status == 200)
    except (OSError, ValueError):
        return False


def poll_http(url: str, timeout: float = 60.0) -> None:
    """``until curl -fs URL; do sleep 0.1; done``: the by-hand health gate."""
    deadline = time.monotonic() + timeout
    while not http_ok(url):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer 200 within {timeout}s")
        time.sleep(HEALTH_POLL_SEC)


def floor_switch(w: World, name: str, port: int, ref: str) -> Cost:
    """Today's switch (stop the old, start the new), by hand: ``docker rm -f`` the old
    container, ``docker run -d`` the new one on the same port, poll ``/healthz`` over HTTP."""
    with Meter() as m:
        run(["docker", "rm", "-f", name], w.env)
        run(
            ["docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", ref],
            w.env,
        )
        poll_http(f"http://127.0.0.1:{port}/healthz")
    return m.cost


def floor_proxy_switch(w: World, *, old: str, new: str, network: str, ref: str, home: Path) -> Cost:
    """The proxy-gated switch (issue 12), by hand, against a Caddy proxy set up by hand like
    shatag's (:func:`bare_proxy`): ``docker run -d`` the new container on the proxy's network
    (publishing nothing), poll its ``/healthz`` over HTTP on its own address, point the proxy at
    it -- the config change shatag's switch makes: the upstream file Caddy reads per request,
    replaced atomically (docs/docker-target.md says why not the admin API) -- then ``docker
    stop`` the old one. Removing the stopped container is not measured. Like shatag, the app
    runs with ``--init``: busybox httpd as PID 1 ignores SIGTERM, and ``docker stop`` would
    wait its whole 10 s timeout."""
    with Meter() as m:
        run(["docker", "run", "-d", "--init", "--name", new, "--network", network, ref], w.env)
        address = run(
            [
                "docker",
                "inspect",
                "--format",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                new,
            ],
            w.env,
        ).stdout.strip()
        poll_http(f"http://{address}:8080/healthz")
        scratch = home / f".{UPSTREAM_FILE}.tmp"
        scratch.write_text(f"{new}:8080\n")
        scratch.replace(home / UPSTREAM_FILE)
        run(["docker", "stop", old], w.env)
    run(["docker", "rm", old], w.env, check=False)
    return m.cost


def bare_proxy(w: World, name: str, image: str, first_ref: str) -> tuple[str, Path, int]:
    """Set up, by hand and unmeasured, what :func:`floor_proxy_switch` switches: a network,
    a Caddy proxy container like shatag's (same image, config, mount, user and hardening), and
    a first app container it forwards to. Returns (network, proxy home, published port)."""
    network = f"{name}-net"
    home = w.tmp / f"{name}-proxy-home"
    home.mkdir(mode=0o700)
    (home / CADDY_CONFIG_FILE).write_text(json.dumps(caddy_config(), indent=2) + "\n")
    first = f"{name}-0"
    (home / UPSTREAM_FILE).write_text(f"{first}:8080\n")
    port = free_port()
    run(["docker", "network", "create", "--driver", "bridge", network], w.env)
    run(["docker", "run", "-d", "--init", "--name", first, "--network", network, first_ref], w.env)
    run(
        [
            "docker", "run", "--detach", "--name", f"{name}-proxy", "--network", network,
            "--publish", f"127.0.0.1:{port}:{PROXY_LISTEN_PORT}",
            "--user", f"{os.getuid()}:{os.getgid()}", "--read-only", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges", "--volume", f"{home}:{PROXY_MOUNT}",
            "--env", f"HOME={PROXY_MOUNT}", "--env", f"XDG_CONFIG_HOME={PROXY_MOUNT}/config",
            "--env", f"XDG_DATA_HOME={PROXY_MOUNT}/data", "--entrypoint", "/usr/bin/caddy",
            image, "run", "--config", f"{PROXY_MOUNT}/{CADDY_CONFIG_FILE}",
        ],
        w.env,
    )  # fmt: skip
    poll_http(f"http://127.0.0.1:{port}/healthz")  # through the proxy to the first container
    return network, home, port


def docker_config(w: World, app: Path, repo: str, name: str, *, proxy: bool) -> Path:
    config = w.tmp / f"docker-{name}.json"
    config.write_text(
        json.dumps(
            {
                "shatag": {
                    "canonical_repository": repo,
                    "staging_repository": f"{repo}-staging",
                    "context": str(app),
                    "metadata_dir": str(w.tmp / "dk-metadata"),
                    "state_dir": str(w.tmp / f"dk-state-{name}"),
                    "sbom_dir": str(w.tmp / "dk-sbom"),
                    # The proxy's live state, in this run's directory, not /var/lib/shatag.
                    "runtime_dir": str(w.tmp / "dk-runtime"),
                    "default_env": "local",
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
                                    "proxy": proxy,
                                    # The post-switch watch (issue 23, 5 s by default) is a
                                    # deliberate wait the by-hand floor does not make: off here,
                                    # so the ratio measures shatag's own cost of a switch.
                                    "watch_sec": 0,
                                }
                            ],
                        }
                    },
                }
            }
        )
    )
    return config


DOCKER_FLOORS: Final = {
    "direct": "`docker rm -f` old + `docker run -d` new + HTTP poll of `/healthz` every 0.1 s",
    "proxy": "`docker run -d` new on the proxy's network + HTTP poll of its `/healthz` every "
    "0.1 s + the proxy's upstream file replaced + `docker stop` old",
}


def docker_floor(
    w: World, repo: str, mode: str, bare: str, *, proxy_image: str, last: str
) -> Callable[[str, str], Cost]:
    """The by-hand side of ``mode``, set up (unmeasured) with ``last`` running; each call
    ``(sha, digest)`` switches to that release."""
    if mode == "direct":
        port = free_port()
        run(["docker", "run", "-d", "--name", bare, "-p", f"127.0.0.1:{port}:8080", last], w.env)

        def direct(sha: str, digest: str) -> Cost:
            return floor_switch(w, bare, port, f"{repo}:{sha}@{digest}")

        return direct
    network, home, _port = bare_proxy(w, bare, proxy_image, last)
    serving = [f"{bare}-0"]
    numbers = itertools.count(1)

    def gated(sha: str, digest: str) -> Cost:
        new = f"{bare}-{next(numbers)}"
        ref = f"{repo}:{sha}@{digest}"
        cost = floor_proxy_switch(w, old=serving[0], new=new, network=network, ref=ref, home=home)
        serving[0] = new
        return cost

    return gated


def bench_docker_mode(
    w: World, app: Path, repo: str, releases: Sequence[tuple[str, str]], mode: str
) -> dict[str, Any]:
    """Deploys and rollbacks of one docker target in ``mode`` vs that switch by hand."""
    name = f"shatag-perf-{uuid.uuid4().hex[:8]}"
    bare = f"{name}-bare"
    w.containers.update({name, f"{name}-shatag-prev", bare})
    w.prefixes.add(name)  # shatag's app containers, proxy and network; the by-hand ones
    cfg = ["-f", str(docker_config(w, app, repo, name, proxy=mode == "proxy"))]
    for sha, _digest in releases:
        run(w.inv([*cfg, "deploy", f"--sha={sha}"]), w.env)
    image = ""
    if mode == "proxy":
        image = run(
            ["docker", "inspect", "--format", "{{.Config.Image}}", f"{name}-proxy"], w.env
        ).stdout.strip()
    last = f"{repo}:{releases[1][0]}@{releases[1][1]}"
    floor = docker_floor(w, repo, mode, bare, proxy_image=image, last=last)

    def target(i: int) -> tuple[str, str]:
        return releases[i % 2]  # A, B, A, …: every run switches to the other release

    def ours(action: str) -> Callable[[int], Cost]:
        def one(i: int) -> Cost:
            sha, digest = target(i)
            with Meter() as m:
                proc = run(w.inv([*cfg, action, f"--sha={sha}"]), w.env)
            record = last_json(proc.stdout)
            if record.get("phase") != action or record.get("image_digest") != digest:
                raise RuntimeError(f"unexpected {action} record: {record}")
            return m.cost

        return one

    def by_hand(i: int) -> Cost:
        return floor(*target(i))

    runs = max(w.runs, DOCKER_MIN_RUNS)
    deploys = Pairing(*interleave(runs, ours("deploy"), by_hand))
    rollbacks = Pairing(*interleave(runs, ours("rollback"), by_hand))
    switch = "proxy-gated, the default" if mode == "proxy" else "`proxy: false`"
    for action, pairing in (("deploy", deploys), ("rollback", rollbacks)):
        ratio_rows(
            w,
            "1",
            f"`inv {action}` (docker target, {switch}) vs {DOCKER_FLOORS[mode]}",
            pairing,
            1.5,
        )
    return {"deploy": deploys.as_json(), "rollback": rollbacks.as_json()}


def bench_docker(w: World) -> None:
    """Both switches of the docker target, each against its own by-hand floor: ``proxy:
    false`` (stop the old, start the new on the port) and the default proxy-gated switch."""
    app = w.app("docker-app")
    repo = f"{w.registry.address}/{w.name}-dk"
    build_cfg = docker_config(w, app, repo, f"shatag-perf-build-{w.name[5:]}", proxy=False)
    releases: list[tuple[str, str]] = []
    for label in ("A", "B"):
        sha = commit(app, 1, f"release {label}")
        w.images.update({f"{repo}:{sha}", f"{repo}:{sha[:12]}"})
        built = run(w.inv(["-f", str(build_cfg), "build", f"--sha={sha}", "--branch=main"]), w.env)
        releases.append((sha, str(last_json(built.stdout)["image_digest"])))
    client = RegistryClient(parse_repository(repo), env={})
    tags_before = {tag: client.manifest_digest(tag) for tag in client.tags()}
    since = time.time()
    samples = {
        mode: bench_docker_mode(w, app, repo, releases, mode) for mode in ("direct", "proxy")
    }
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
    w.samples["docker"] = {
        **samples,
        "build_or_push_events": ours_events,
        "registry_unchanged": tags_after == tags_before,
    }
    w.rows.append(
        Row(
            item="1",
            what="no build, tag or push during the deploys and rollbacks (docker events, "
            "registry tags)",
            shatag="none" if no_build else f"{len(ours_events)} events",
            baseline="-",
            ratio="-",
            target="none",
            asserted=True,
            ok=no_build,
        )
    )


# -- 2. start-up and deploy to file targets vs `python -c 'import invoke'` ----------------------


def bench_startup(w: World) -> None:
    floor = python_floor(w)
    runs = max(w.runs, STARTUP_MIN_RUNS)
    listing = Pairing(
        *interleave(
            runs, lambda _i: measured(w.inv(["--list"]), w.env), lambda _i: measured(floor, w.env)
        )
    )
    helping = Pairing(
        *interleave(
            runs,
            lambda _i: measured(w.inv(["build", "--help"]), w.env),
            lambda _i: measured(floor, w.env),
        )
    )
    w.samples["startup"] = {"list": listing.as_json(), "build_help": helping.as_json()}
    base = "`python -c 'import invoke'` (same venv)"
    ratio_rows(w, "2", f"`inv --list` vs {base}", listing, 1.1, assert_on=LIST_ASSERT)
    ratio_rows(w, "2", f"`inv build --help` vs {base}", helping, 1.1)


def file_releases(w: World, repo: str, size_mb: int, labels: Sequence[str]) -> list[str]:
    """SHA tags of one ``size_mb`` image (one push; the other tags reuse its layers)."""
    shas = [fake_sha(f"{w.name}-{repo}-{label}") for label in labels]
    random_image(w, repo, shas[0], size_mb)
    source = f"{repo}:{shas[0]}"
    run(["docker", "pull", "-q", source], w.env)
    w.images.add(source)
    for sha in shas[1:]:
        push_alias(w, source, f"{repo}:{sha}")
    return shas


def deploy_cost(w: World, config: Path, env_name: str, sha: str, env: Mapping[str, str]) -> Cost:
    with Meter() as m:
        proc = run(w.inv(["-f", str(config), "deploy", f"--sha={sha}", f"--env={env_name}"]), env)
    record = last_json(proc.stdout)
    if record.get("image_sha") != sha or record.get("phase") != "deploy":
        raise RuntimeError(f"unexpected deploy record: {record}")
    return m.cost


def bench_files(w: World) -> None:
    repo = f"{w.registry.address}/{w.name}-files"
    shas = file_releases(w, repo, 1, ("a", "b"))
    config = files_config(w, "files", repo, ["files"])
    for sha in shas:
        deploy_cost(w, config, "files", sha, w.env)
    floor = python_floor(w)
    pairing = Pairing(
        *interleave(
            max(w.runs, STARTUP_MIN_RUNS),
            lambda i: deploy_cost(w, config, "files", shas[i % 2], w.env),
            lambda _i: measured(floor, w.env),
        )
    )
    w.samples["files"] = pairing.as_json()
    ratio_rows(
        w,
        "2",
        "`inv deploy` to file targets only (SDL + tfvars) vs `python -c 'import invoke'`",
        pairing,
        1.5,
        assert_on=FILES_ASSERT,
    )


# -- 4. flat costs: history size, metadata files, image size -----------------------------------


def bench_flat(w: World) -> None:
    repo = f"{w.registry.address}/{w.name}-flat"
    runs = max(w.runs, FLAT_MIN_RUNS)
    # A new SHA for every deploy (the digest guard finds no record of it anywhere).
    shas = file_releases(w, repo, 1, [f"n{i}" for i in range(2 * runs + 2)])
    configs = {key: files_config(w, f"flat-{key}", repo, ["files"]) for key in ("big", "small")}
    for key, count in (("big", HISTORY_FLAT_BIG), ("small", HISTORY_SMALL)):
        fill_history(w.tmp / f"flat-{key}-state", count, env="files")
    fresh = iter(shas)
    for key in ("big", "small"):  # one deploy each first: what a first deploy sets up
        deploy_cost(w, configs[key], "files", next(fresh), w.env)
    history = Pairing(
        *interleave(
            runs,
            lambda _i: deploy_cost(w, configs["big"], "files", next(fresh), w.env),
            lambda _i: deploy_cost(w, configs["small"], "files", next(fresh), w.env),
        )
    )
    w.samples["flat_history"] = history.as_json()
    ratio_rows(
        w,
        "4",
        f"new-SHA `inv deploy` (file targets) at {HISTORY_FLAT_BIG:,} history records vs "
        f"{HISTORY_SMALL}",
        history,
        1.1,
        assert_on=FLAT_HISTORY_ASSERT,
    )

    # Image size: validation is HEAD + digest, never a pull.
    big = file_releases(w, f"{repo}-big", FLAT_IMAGE_MB, ("a", "b"))
    small = file_releases(w, f"{repo}-small", 1, ("a", "b"))
    sized = {
        "big": files_config(w, "sized-big", f"{repo}-big", ["files"]),
        "small": files_config(w, "sized-small", f"{repo}-small", ["files"]),
    }
    for key, shas_of in (("big", big), ("small", small)):
        for sha in shas_of:
            deploy_cost(w, sized[key], "files", sha, w.env)
    sizes = Pairing(
        *interleave(
            runs,
            lambda i: deploy_cost(w, sized["big"], "files", big[i % 2], w.env),
            lambda i: deploy_cost(w, sized["small"], "files", small[i % 2], w.env),
        )
    )
    w.samples["flat_image_size"] = sizes.as_json()
    ratio_rows(
        w,
        "4",
        f"`inv deploy` (file targets) of a {FLAT_IMAGE_MB} MB image vs a 1 MB one",
        sizes,
        1.1,
        assert_on=FLAT_SIZE_ASSERT,
    )

    # inv signatures: metadata files of every build ever made vs a few.
    meta = {"big": w.tmp / "sig-big", "small": w.tmp / "sig-small"}
    for key, count in (("big", METADATA_BIG), ("small", METADATA_SMALL)):
        fill_metadata(meta[key], count)
    sig_env = {
        k: {
            **w.env,
            "INVOKE_SHATAG_METADATA_DIR": str(v),
            "INVOKE_SHATAG_STATE_DIR": str(w.tmp / "sig-state"),
        }
        for k, v in meta.items()
    }
    signatures = Pairing(
        *interleave(
            runs,
            lambda _i: measured(w.inv(["signatures"]), sig_env["big"]),
            lambda _i: measured(w.inv(["signatures"]), sig_env["small"]),
        )
    )
    w.samples["flat_signatures"] = signatures.as_json()
    ratio_rows(
        w,
        "4",
        f"`inv signatures` with {METADATA_BIG:,} metadata files vs {METADATA_SMALL}",
        signatures,
        1.1,
        assert_on=FLAT_SIGNATURES_ASSERT,
    )


def fill_metadata(directory: Path, count: int) -> None:
    """``count`` build metadata files, one build an hour, each file written as its build ended
    (``inv build`` stamps ``created_at``, then writes the file)."""
    directory.mkdir(parents=True, exist_ok=True)
    start = int(time.time()) - count * 3600
    for i in range(count):
        sha = f"{i:040x}"
        created = start + i * 3600
        data = {
            "image_sha": sha,
            "image_digest": "sha256:" + hashlib.sha256(sha.encode()).hexdigest(),
            "image_ref": f"127.0.0.1:5000/api:{sha}",
            "repository_type": "canonical",
            "signature_status": "verified" if i % 3 else "unverified",
            "signature_reason": "n/a" if i % 3 else "no_signature",
            "created_at": datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        }
        path = directory / f"{sha}.json"
        path.write_text(json.dumps(data) + "\n")
        os.utime(path, (created + 20, created + 20))


# -- 5. inv verify vs the cosign calls it makes, by hand ----------------------------------------


def bench_verify(w: World) -> None:
    cosign = shutil.which("cosign", path=w.env["PATH"])
    if cosign is None:
        w.rows.append(
            Row(
                "5",
                "`inv verify` vs cosign by hand",
                "not measured (no cosign)",
                "-",
                "-",
                "<= 1.5",
                asserted=False,
                ok=True,
            )
        )
        return
    keys = w.tmp / "keys"
    keys.mkdir()
    password = uuid.uuid4().hex
    run([cosign, "generate-key-pair"], {**w.env, "COSIGN_PASSWORD": password}, cwd=keys)
    app = w.app("verify-app")
    repo = f"{w.registry.address}/{w.name}-verify"
    env = {
        **w.env,
        "COSIGN_PASSWORD": password,
        "INVOKE_SHATAG_CANONICAL_REPOSITORY": repo,
        "INVOKE_SHATAG_STAGING_REPOSITORY": f"{repo}-staging",
        "INVOKE_SHATAG_CONTEXT": str(app),
        "INVOKE_SHATAG_METADATA_DIR": str(w.tmp / "verify-metadata"),
        "INVOKE_SHATAG_STATE_DIR": str(w.tmp / "verify-state"),
        "INVOKE_SHATAG_SBOM_DIR": str(w.tmp / "verify-sbom"),
        "INVOKE_SHATAG_COSIGN_KEY": str(keys / "cosign.key"),
        "INVOKE_SHATAG_COSIGN_PUBLIC_KEY": str(keys / "cosign.pub"),
    }
    sha = commit(app, 1, "verify")
    w.images.update({f"{repo}:{sha}", f"{repo}:{sha[:12]}"})
    record = last_json(run(w.inv(["build", f"--sha={sha}", "--branch=main", "--sign"]), env).stdout)
    image = f"{repo}@{record['image_digest']}"
    root = w.tmp / "trusted_root.json"
    root.write_text(EMPTY_TRUSTED_ROOT)
    trust = [
        "--key",
        str(keys / "cosign.pub"),
        "--insecure-ignore-tlog",
        "--trusted-root",
        str(root),
    ]
    cosign_env = {k: v for k, v in env.items() if not k.startswith("INVOKE_")}

    def ours(_i: int) -> Cost:
        with Meter() as m:
            proc = run(w.inv(["verify", f"--sha={sha}"]), env)
        data = last_json(proc.stdout)
        if data.get("signature_status") != "verified":
            raise RuntimeError(f"inv verify did not verify: {data}")
        return m.cost

    def by_hand(_i: int) -> Cost:
        with Meter() as m:
            run([cosign, "verify", *trust, image], cosign_env)
            run([cosign, "verify-attestation", "--type", "spdxjson", *trust, image], cosign_env)
        return m.cost

    pairing = Pairing(*interleave(max(w.runs, STARTUP_MIN_RUNS), ours, by_hand))
    w.samples["verify"] = pairing.as_json()
    ratio_rows(
        w,
        "5",
        "`inv verify` vs its cosign calls by hand (`cosign verify` + `cosign verify-attestation`"
        ", key-based, offline)",
        pairing,
        1.5,
        assert_on=VERIFY_ASSERT,
    )


# -- history (reported) --------------------------------------------------------------------------


def fill_history(state_dir: Path, count: int, env: str = "local") -> HistoryStore:
    store = HistoryStore(state_dir, env)
    store.path.parent.mkdir(parents=True, exist_ok=True)
    with store.path.open("w", encoding="utf-8") as fh:
        for i in range(count):
            fh.write(history_record(i, env).to_json() + "\n")
    return store


def history_record(i: int, env: str = "local") -> HistoryRecord:
    sha = f"{i:040x}"
    digest = "sha256:" + hashlib.sha256(sha.encode()).hexdigest()
    return HistoryRecord(
        action="rollback" if i % 10 == 9 else "deploy",
        env=env,
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
            item="h",
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
            item="h",
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
                    "default_env": "local",
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
            "s",
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
        "s",
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


def plot_ratios(rows: Sequence[Row], path: Path) -> None:
    """Every goal ratio (median, min-max bar) against its goal (a red tick)."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r.value is not None and r.goal is not None]
    if not shown:
        return
    fig, ax = plt.subplots(figsize=(8.0, 0.42 * len(shown) + 1.2), dpi=100)
    for y, r in enumerate(shown):
        value, goal = float(r.value or 0), float(r.goal or 0)
        low, high = float(r.low or value), float(r.high or value)
        color = "tab:green" if value <= goal else "tab:orange"
        ax.errorbar(
            [value], [y], xerr=[[value - low], [high - value]], fmt="o", color=color, capsize=3
        )
        ax.plot([goal], [y], marker="|", markersize=14, color="tab:red")
    labels = [f"{r.item}: {short_label(r.what)}" for r in shown]
    ax.set_yticks(range(len(shown)), labels, fontsize="x-small")
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("shatag / baseline: median of paired ratios (min-max); red: goal")
    ax.set_title("Issue 17: each ratio against its goal")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def short_label(what: str) -> str:
    """The row's comparison, shortened for the plot, its figure ([CPU]/[wall]) kept."""
    text = re.sub(r"`", "", what)
    figure = ""
    match = re.search(r" \[(CPU|wall)\]$", text)
    if match:
        figure, text = match.group(0), text[: match.start()]
    return (text if len(text) <= 60 else text[:57] + "...") + figure


def markdown(w: World, info: Mapping[str, str], elapsed: float) -> str:
    ran = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    head = "| # | comparison | n | shatag | baseline | ratio (min-max) | goal | asserted | result |"
    lines = [
        "# Performance",
        "",
        "<!-- Generated by `nox -s perf` (tests/perf/bench.py); do not edit by hand. -->",
        "",
        f"Measured {ran} by `nox -s perf` in {elapsed / 60:.1f} min, on the real Docker Engine",
        "and a real CNCF distribution registry on loopback. Each comparison interleaves its two",
        "sides in one run (A B, B A, ...); the ratio is the median of the paired ratios",
        "x_i / y_i, with their min and max; the shatag and baseline columns give the median",
        "(min-max) of each side. Every comparison has a **CPU** row (user + system time of the",
        "process and all the processes it waited for, from `getrusage`) and a **wall** row. On a",
        "shared machine CPU time is the steadier figure: other work slows the wall time of both",
        "sides, but not their CPU time. Work done inside the docker daemon or the registry is in",
        "the wall time only. Rows marked `asserted` fail the session when they miss the goal;",
        "the others are reported against it.",
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
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in w.rows:
        result = "pass" if r.ok else ("**FAIL**" if r.asserted else "over goal")
        if r.shatag.startswith("not measured"):
            result = "-"
        lines.append(
            f"| {r.item} | {r.what} | {r.n or '-'} | {r.shatag} | {r.baseline} | {r.ratio} | "
            f"{r.target} | {'yes' if r.asserted else 'no'} | {result} |"
        )
    lines += [
        "",
        "![each ratio against its goal](perf-ratios.png)",
        "",
        "## What is measured",
        "",
        "1. **Docker deploy and rollback** (goal <= 1.5), for both switches of the docker",
        "   target. shatag: `inv deploy --sha=X` and `inv rollback --sha=X` on an environment",
        "   with one docker target, alternating between two releases so that every run switches",
        "   the running container. Each switch is compared with the same switch by hand:",
        "   - `proxy: false`: `docker rm -f` the old container, `docker run -d` the new image by",
        "     digest on the same port, then an HTTP GET of `/healthz` every 0.1 s (shatag's poll",
        "     interval) until it answers 200. (The earlier baseline waited for the engine's first",
        "     scheduled health check, 1 s, which flattered shatag; this one does not.)",
        "   - the proxy-gated switch (the default, issue 12): against a Caddy proxy set up by hand",
        "     like shatag's (same image, config, mount and hardening; not timed), `docker run -d`",
        "     the new image on the proxy's network, poll its `/healthz` on its own address every",
        "     0.1 s, replace the proxy's upstream file (the config change shatag's switch makes,",
        "     see docker-target.md), `docker stop` the old container (`floor_proxy_switch`).",
        "   shatag's switch does more than either floor (ownership checks, a pull by digest",
        "   when the image is missing, the image's HEALTHCHECK, a check through the proxy,",
        "   draining, the history record): the ratio is what that costs. The docker events of",
        "   the run and the registry's tags prove that no build, tag or push happened.",
        "   Where it goes (issue 17): the proxy-gated switch makes 9 docker CLI calls where the",
        "   floor makes 3 (`run`, `inspect`, `stop`): one `inspect` per kind of object, the",
        "   three side by side, for every ownership, proxy, network and image check (it made",
        "   twelve, one after the other); the HEALTHCHECK run at once (`exec`); the list of the",
        "   target's containers, so none is left behind (`ps`); and `rm` after `stop`. It",
        "   waits 0.1 s after moving traffic before it stops the old release (a request that",
        "   read the old upstream is still dialling) and starts a Python interpreter with",
        "   invoke, whose import alone is the whole of item 2's floor (~0.12 s of CPU). The",
        "   `proxy: false` switch makes 8 calls where its floor makes 2 (`rm -f`, `run`): two",
        "   inspections side by side, `stop` and `rename` (the old container is kept until the",
        "   new one is healthy, so a failed gate can bring it back), `run`, `inspect`, `exec`,",
        "   `rm`. Neither switch imports python-on-whales (0.2-0.3 s of CPU) any more, and every",
        "   call goes through `subprocess` rather than `sh` (~13 ms less wall time per call).",
        "   What remains is the price of the gate, the drain, the undo and the interpreter; 1.5",
        "   is not reachable without dropping one of them (each docker CLI call is 10-20 ms of",
        "   CPU, against a floor of 40-60 ms for the whole switch).",
        "2. **Start-up** (goals 1.5 and 1.1). The floor of any CLI run in this venv: `python -c",
        "   'import invoke'`. shatag: `inv --list`, `inv build --help`, and `inv deploy` of a new",
        "   SHA to an environment with only file targets (an SDL file and a tfvars file: registry",
        "   HEAD, digest guard, two atomic writes, history).",
        "3. **Build** (goal <= 1.2). `inv build --sha=<new commit>` (nothing reused; the SBOM is",
        "   made as in every build) vs the floor by hand: `docker build --no-cache --pull=false",
        "   --platform linux/amd64`, then `docker push` and `syft scan docker:<tag>` in",
        "   parallel. Each side builds a fresh commit with new random content. Two workloads:",
        "   examples/api alone, and with 50 MB of random files added.",
        "4. **Flat costs** (goal <= 1.1). A new-SHA `inv deploy` to file targets with",
        f"   {HISTORY_FLAT_BIG:,} history records vs {HISTORY_SMALL} (the digest guard looks",
        "   the SHA up in every environment's history; each side made one deploy before the",
        f"   timed ones); `inv signatures` with {METADATA_BIG:,} build metadata files vs",
        f"   {METADATA_SMALL}; `inv deploy` to file targets of a {FLAT_IMAGE_MB} MB image vs a",
        "   1 MB one (deploy checks the registry by digest, it never pulls).",
        "5. **Verify** (goal <= 1.5). `inv verify --sha=X` of a signed image with an SBOM",
        "   attestation (key-based, offline) vs the two cosign calls it makes, typed by hand",
        "   with the same flags: `cosign verify` and `cosign verify-attestation --type",
        "   spdxjson`.",
        "",
        "Also measured: **v**, deploy validation (policy, tag HEAD, digest guard; in process)",
        "vs the pull-based check (`docker pull -q`) for 1, 50 and 200 MB images",
        "(![validation plot](perf-validation.png)); **h**, `inv history --limit 20` on",
        f"{HISTORY_BIG:,} records vs {HISTORY_SMALL} and the cost of one fsync'd append;",
        "**s**, the wall time of the test sessions of the latest `nox` run",
        "(`build/perf/suite.json`, written by noxfile.py).",
        "",
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
        # PYTHONPATH: `--only` runs can measure another checkout's src (before/after figures).
        for key in ("DOCKER_HOST", "SHATAG_BUILDER", "SHATAG_TOOLS_DIR", "PYTHONPATH"):
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
    "docker": bench_docker,
    "startup": bench_startup,
    "files": bench_files,
    "flat": bench_flat,
    "verify": bench_verify,
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
            plot_ratios(w.rows, RATIOS_PNG)
            print(
                f"perf: wrote {REPORT_MD.relative_to(ROOT)}, {RATIOS_PNG.name}, {REPORT_PNG.name}"
            )
        failed = [r for r in w.rows if r.asserted and not r.ok]
    print(f"perf: {elapsed:.0f} s, {len(failed)} asserted ratio(s) missed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
