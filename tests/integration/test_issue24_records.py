"""Issue 24, items 3 and 4: hostile input never corrupts what shatag records.

Real registry, real docker engine, real git (the images are built by the real ``inv build``
in :mod:`tests.integration.test_deploy_rollback`'s module world).

* 3 -- a "secret" whose value is also the SHA, the target's container name or the environment's
  name (``PIPELINE_KEY=<sha>`` is a real CI habit) must not be masked in history, the JSON
  lines, or the tool output shatag reads back (docker labels): the deploy, the next deploy and
  the rollback go through with every recorded field intact; a real secret in free text is
  still masked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.integration.test_deploy_rollback import Site, World, make_site, world

__all__ = ["make_site", "world"]  # fixtures used by the tests below


def _history_lines(site: Site) -> list[dict[str, object]]:
    path = site.dir / "state" / "production" / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_secret_equal_to_the_sha_target_or_env_never_corrupts_records(
    world: World, make_site: Callable[..., Site]
) -> None:
    site = make_site()
    a, b = world.a, world.b
    hostile = {
        "PIPELINE_KEY": a.sha,  # the SHA being deployed, then rolled back to
        "CONTAINER_SECRET": site.container,  # the docker target's name
        "ENV_PASSWORD": "production",  # the environment's name
        "REAL_TOKEN": "tok-issue24-canary",  # a real secret: still masked in free text
    }
    first = site.inv("deploy", f"--sha={a.sha}", "--env=production", env=hostile)
    assert first.returncode == 0, first.stderr
    assert first.record["image_sha"] == a.sha
    second = site.inv("deploy", f"--sha={b.sha}", "--env=production", env=hostile)
    assert second.returncode == 0, second.stderr
    assert second.record["previous_sha"] == a.sha
    assert second.record["targets"] == [
        f"sdl:{site.sdl}",
        f"tfvars:{site.tfvars}",
        f"docker:{site.container}",
    ]
    back = site.inv("rollback", "--env=production", env=hostile)
    assert back.returncode == 0, back.stderr
    assert back.record["image_sha"] == a.sha
    assert back.record["image_digest"] == a.digest
    site.assert_runs(a)
    lines = _history_lines(site)
    assert [(r["action"], r["sha"], r["env"]) for r in lines] == [
        ("deploy", a.sha, "production"),
        ("deploy", b.sha, "production"),
        ("rollback", a.sha, "production"),
    ]
    assert all(f"docker:{site.container}" in r["targets"] for r in lines)  # type: ignore[operator]
    assert "***" not in json.dumps(lines)
    # The human line names what ran, in clear.
    assert f"deployed: production {a.pinned(world.canonical)}" in first.stderr


def test_a_real_secret_in_free_text_is_still_masked(
    world: World, make_site: Callable[..., Site], tmp_path: Path
) -> None:
    canary = "tok-issue24-free-text-canary"
    script = tmp_path / "apply.sh"
    script.write_text("#!/bin/sh\necho failing with $DEPLOY_TOKEN >&2\nexit 3\n")
    script.chmod(0o755)
    site = make_site(apply=str(script))
    result = site.inv(
        "deploy", f"--sha={world.a.sha}", "--env=production", env={"DEPLOY_TOKEN": canary}
    )
    assert result.returncode != 0
    assert "error: DEPLOY_FAILED" in result.stderr
    assert canary not in result.stderr + result.stdout
    assert "***" in result.stderr
    lines = _history_lines(site)
    assert lines[-1]["result"] == "failed"
    assert lines[-1]["sha"] == world.a.sha
    assert canary not in json.dumps(lines)
    assert "***" in str(lines[-1]["error"])
