"""Issue 24, item 7 (the deploy part): the state disk fills up in the middle of a docker switch.

The docker target's proxy keeps its upstream file in ``<runtime_dir>/proxy/<env>/<name>/`` (the
host's runtime state, issue 23); here that directory is a small tmpfs (a real file system,
mounted for the test and unmounted after), filled to the last byte after the first deploy. The
second deploy passes the state-dir check (history and journal live on the ordinary disk), starts
its new container, and then cannot move traffic: ENOSPC, for real. It must end with a
documented code (STATE_ERROR) in the error line and in history, leave no container of its own
behind, and keep serving the old release.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.test_proxy_deploy import Px, built, px
from tests.reliability.test_issue14_tracebacks import fill, tmpfs

__all__ = ["built", "px"]  # fixtures used below


def _history(site: Px) -> list[dict[str, object]]:
    path = site.state / "prod" / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_full_state_disk_mid_switch_is_state_error_and_leaves_no_container(
    px: Px, built: tuple[dict[str, str], dict[str, str]]
) -> None:
    shas = built[1]
    home = px.runtime / "proxy" / "prod" / px.name
    with tmpfs(home, "1m"):
        try:
            first = px.deploy(shas["A"])
            assert first.returncode == 0, first.stderr
            (app_a,) = px.apps()
            fill(home)
            second = px.deploy(shas["B"])
            assert second.returncode != 0
            line = next(x for x in second.stderr.splitlines() if x.startswith("error: "))
            assert line.startswith("error: STATE_ERROR: "), second.stderr
            assert "full" in line
            assert "Traceback" not in second.stderr
            assert second.record["error_code"] == "STATE_ERROR"
            assert px.apps() == [app_a]  # the new container was removed: no orphan
            assert json.loads(px.serves()) == {"release": "A"}
            last = _history(px)[-1]
            assert (last["sha"], last["result"], last["error_code"]) == (
                shas["B"],
                "failed",
                "STATE_ERROR",
            )
            (home / ".filler").unlink()
            again = px.deploy(shas["B"])
            assert again.returncode == 0, again.stderr
            assert json.loads(px.serves()) == {"release": "B"}
        finally:
            px.cleanup()  # the proxy holds the mount: its containers go first
    assert not any(Path(home).glob(".filler"))
