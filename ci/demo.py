"""The main job on the embedded defaults, end to end, for real.

A local distribution registry on localhost:5000 (started if nothing answers there), the
example API as a git repository with two commits, then exactly what an operator runs:

    inv build        (commit A)   → localhost:5000/api:<A>
    inv deploy --sha=<A>          → proxy shatag-local-proxy on 127.0.0.1:8080 → A
    inv build        (commit B)
    inv deploy --sha=<B>          → while a request loop hits 127.0.0.1:8080
    inv rollback                  → back to A, no build, no push, same loop
    inv history --limit=3

Then a staging → production promotion (issue 26), with ``-f .shatag/demo-promote/shatag.yaml``
(two environments of tfvars files; production takes releases from staging after a 3 s soak
and one check):

    inv build --branch=feature-c  (commit C) → localhost:5000/api-staging:<C>
    inv deploy --sha=<C> --env=staging
    inv promote --to=production   → refused: PROMOTION_BLOCKED, gate soak
    inv promote --to=production   → 3 s later: copied to localhost:5000/api by digest, deployed
    inv board --html=build/demo-board.html

During the switch to B and the rollback a request loop (about 50 requests per second, on
loopback) counts what answered and what failed, and prints the figure: the switch goes through
the Caddy proxy shatag runs, so the count of failed requests is expected to be 0.

Run it with ``bash ci/setup.sh && .venv/bin/python ci/demo.py``. A second run reuses the
same commits, so the builds report ``"reused": true`` (FR-009).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / ".shatag"
APP = STATE / "demo-app"
TOOLS_BIN = Path(os.environ.get("SHATAG_TOOLS_DIR", Path.home() / ".cache/shatag/tools")) / "bin"
sys.path.insert(0, str(ROOT / "src"))

from shatag._testing.localregistry import LocalRegistry  # noqa: E402

# What docker build/push print under a "--- docker build" header: folded into one line per
# command, so the whole first run (set-up + tour) stays under 80 lines (issue 18).
_DOCKER_OUTPUT = re.compile(
    r"\s*$|\s{2,}\S|Step \d+/\d+ : |DEPRECATED:|Successfully (built|tagged) |The push refers to "
    r"|[\w.-]+: (Preparing|Waiting|Pushed|Layer already exists|Mounted from|digest: )|#\d+ "
    r"| ---> |Removing intermediate|Sending build context"
)


def folded(lines: list[str]) -> list[str]:
    """``lines`` with each docker output section replaced by its header and a line count."""
    out: list[str] = []
    header, count = "", 0
    for line in lines:
        if header and _DOCKER_OUTPUT.match(line):
            count += 1
            continue
        if header:
            out.append(_fold(header, count))
            header = ""
        if line.startswith("--- docker "):
            header, count = line, 0
        else:
            out.append(line)
    if header:
        out.append(_fold(header, count))
    return out


def _fold(header: str, count: int) -> str:
    return f"{header} ({count} lines of docker output folded)" if count else header


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def git(*args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "shatag demo",
        "GIT_AUTHOR_EMAIL": "demo@shatag.invalid",
        "GIT_COMMITTER_NAME": "shatag demo",
        "GIT_COMMITTER_EMAIL": "demo@shatag.invalid",
        "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
        "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
    }
    return subprocess.run(
        ["git", *args], cwd=APP, env=env, check=True, capture_output=True, text=True, timeout=30
    ).stdout.strip()


def demo_app() -> tuple[str, str, str]:
    """Three commits of the example API whose responses differ (fixed dates: stable SHAs);
    C is the one promoted from staging to production."""
    if not (APP / ".git").exists():
        shutil.rmtree(APP, ignore_errors=True)
        shutil.copytree(ROOT / "examples" / "api", APP, ignore=shutil.ignore_patterns(".gitignore"))
        git("init", "-q", "-b", "main")
    done = len(git("log", "--format=%H", "main").splitlines()) if git("branch", "--list") else 0
    for version in ("A", "B", "C")[done:]:
        (APP / "www" / "api.json").write_text(json.dumps({"release": version}) + "\n")
        git("add", "-A")
        git("commit", "-q", "-m", f"release {version}")
    # The branch, not HEAD: builds come from the commit's tree, nothing is checked out.
    log = git("log", "--format=%H", "-n", "3", "main").splitlines()
    return log[2], log[1], log[0]


def inv(*args: str, expect: int = 0) -> dict[str, object]:
    env = {
        **os.environ,
        "PATH": os.pathsep.join(
            [str(TOOLS_BIN), str(Path(sys.executable).parent), os.environ["PATH"]]
        ),
        "INVOKE_SHATAG_CONTEXT": str(APP),
    }
    print(f"$ inv {' '.join(args)}", flush=True)
    proc = subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(ROOT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    for line in folded(proc.stderr.splitlines()):
        print(f"  {line}")
    records = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    for line in proc.stdout.splitlines():
        if not line.startswith("{"):
            print(f"  {line}")
    if proc.returncode != expect:
        raise SystemExit(f"demo: `inv {' '.join(args)}` failed with exit code {proc.returncode}")
    return records[-1] if records else {}


def serving() -> str:
    for _ in range(30):
        try:
            with urllib.request.urlopen("http://127.0.0.1:8080/api.json", timeout=2) as resp:
                return str(resp.read().decode().strip())
        except OSError:
            time.sleep(0.5)
    return "(no answer on 127.0.0.1:8080)"


class RequestLoop:
    """GET /api.json on 127.0.0.1:8080 about 50 times a second until stopped (bounded)."""

    def __init__(self, rate: float = 50.0, limit_sec: float = 300.0) -> None:
        self.rate, self.limit_sec = rate, limit_sec
        self.answers: Counter[str] = Counter()
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RequestLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit_sec
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen("http://127.0.0.1:8080/api.json", timeout=5) as r:
                    self.answers[json.loads(r.read().decode()).get("release", "?")] += 1
            except (OSError, ValueError, urllib.error.HTTPError):
                self.failed += 1
            self._stop.wait(1.0 / self.rate)

    def report(self) -> str:
        sent = sum(self.answers.values()) + self.failed
        seen = ", ".join(f"{k}: {v}" for k, v in self.answers.items())
        return f"request loop: {sent} requests, {self.failed} failed (answered by {seen})"


def main() -> None:
    step("registry on localhost:5000")
    registry = LocalRegistry(STATE / "demo-registry", port=5000)
    if registry.answers():
        print("  a registry already answers on localhost:5000; using it")
    else:
        registry.start()
        print(f"  started docker-registry (storage {registry.workdir}/storage); it keeps running")
    sha_a, sha_b, sha_c = demo_app()
    step(f"build A = {sha_a}")
    inv("build", f"--sha={sha_a}", "--branch=main")
    step("deploy A to environment local (127.0.0.1:8080, through the proxy shatag-local-proxy)")
    inv("deploy", f"--sha={sha_a}")
    print(f"  serving: {serving()}")
    step(f"build B = {sha_b}")
    inv("build", f"--sha={sha_b}", "--branch=main")
    step("deploy B, while a request loop runs against 127.0.0.1:8080")
    with RequestLoop() as loop:
        time.sleep(0.5)
        inv("deploy", f"--sha={sha_b}")
        time.sleep(0.5)
    print(f"  {loop.report()}")
    print(f"  serving: {serving()}")
    step("rollback (no --sha: the previous deployment, A) — no build, no push; same loop")
    with RequestLoop() as back:
        time.sleep(0.5)
        record = inv("rollback")
        time.sleep(0.5)
    print(f"  {back.report()}")
    print(f"  serving: {serving()}")
    step("history (the last 3 records)")
    inv("history", "--limit=3")
    if record.get("image_sha") != sha_a:
        raise SystemExit("demo: rollback did not return to A")
    failed = loop.failed + back.failed
    promotion(sha_c)
    print(
        f"\ndemo: build → deploy → rollback → promote done, {failed} failed requests during the "
        "two switches; the app answers on http://127.0.0.1:8080/; the release board is "
        f"{BOARD.relative_to(ROOT)}"
    )


PROMOTE = STATE / "demo-promote"
BOARD = ROOT / "build" / "demo-board.html"
#: The check production's promotion runs: staging's target file pins the promoted digest.
_CHECK = (
    "import os, sys; sys.exit(os.environ['SHATAG_PROMOTE_DIGEST'] not in open(sys.argv[1]).read())"
)


def promotion(sha_c: str) -> None:
    """Staging → production by digest: C built on a feature branch (staging repository),
    deployed to staging, promoted after its soak (copied into the canonical repository)."""
    shutil.rmtree(PROMOTE, ignore_errors=True)  # a fresh ledger: the soak gate shows each run
    PROMOTE.mkdir(parents=True)
    config = PROMOTE / "shatag.yaml"
    staging_file = PROMOTE / "staging.auto.tfvars.json"
    production = {
        "repository_type": "canonical",
        "targets": [{"kind": "tfvars", "path": "production.auto.tfvars.json"}],
        "promotion": {
            "from": "staging",
            "soak_sec": 3,
            "checks": [[sys.executable, "-c", _CHECK, str(staging_file)]],
        },
    }
    staging = {
        "repository_type": "staging",
        "targets": [{"kind": "tfvars", "path": staging_file.name}],
    }
    config.write_text(
        json.dumps(
            {
                "shatag": {
                    "state_dir": "state",
                    "environments": {"staging": staging, "production": production},
                }
            },
            indent=2,
        )
    )
    f = ["-f", str(config)]
    step(f"build C = {sha_c} on a feature branch: it goes to the staging repository")
    inv("build", f"--sha={sha_c}", "--branch=feature-c")
    step("deploy C to staging; promote it to production at once: the soak gate holds it")
    inv(*f, "deploy", f"--sha={sha_c}", "--env=staging")
    inv(*f, "promote", "--to=production", expect=1)
    time.sleep(3.2)
    step("3 s later: promote (gates pass; copied to the canonical repository by digest)")
    record = inv(*f, "promote", "--to=production")
    if record.get("image_sha") != sha_c or record.get("promoted_from") != "staging":
        raise SystemExit("demo: the promotion did not put C in production")
    step("the release board")
    inv(*f, "board", f"--html={BOARD}")


if __name__ == "__main__":
    main()
