"""The git ledger's pure parts (issue 15): its configuration keys, the lock record, how a push
rejection is classified, when a lock is stale."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shatag.config import Settings, StateConfig
from shatag.errors import ConfigError
from shatag.ledger import LocalLedger, open_ledger
from shatag.ledger.git_lock import LockInfo, holder_is_gone, run_url, stale_reason
from shatag.ledger.gitrefs import is_conflict


def test_state_backend_defaults_to_local_and_git_is_opt_in() -> None:
    default = Settings.from_mapping({})
    assert default.state == StateConfig(backend="local", dir=Path(".shatag"), remote="origin")
    git = Settings.from_mapping(
        {"state_backend": "git", "state_remote": "upstream", "state_lock_ttl_sec": "30"}
    )
    assert (git.state.backend, git.state.remote, git.state.lock_ttl_sec) == ("git", "upstream", 30)
    assert git.state.timeout_sec == git.tool_timeout_sec


def test_the_local_backend_is_what_open_ledger_gives_by_default(tmp_path: Path) -> None:
    settings = Settings.from_mapping({"state_dir": str(tmp_path)})
    assert isinstance(open_ledger(settings.state, "local"), LocalLedger)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("state_backend", "s3"),
        ("state_backend", ""),
        ("state_remote", "--upload-pack=touch /tmp/x"),
        ("state_remote", "origin main"),
        ("state_remote", ""),
        ("state_lock_ttl_sec", "0"),
        ("state_lock_ttl_sec", "soon"),
    ],
)
def test_bad_state_settings_are_config_errors(key: str, value: str) -> None:
    with pytest.raises(ConfigError):
        Settings.from_mapping({key: value})


@given(st.text(max_size=80))
def test_any_state_remote_is_a_safe_argument_or_a_config_error(value: str) -> None:
    try:
        remote = Settings.from_mapping({"state_remote": value}).state_remote
    except ConfigError:
        return
    assert remote
    assert not remote.startswith("-")
    assert not any(c.isspace() or ord(c) < 32 for c in remote)


@given(st.text(max_size=300))
def test_any_lock_json_parses_or_is_none(text: str) -> None:
    info = LockInfo.from_json(text)
    assert info is None or isinstance(info.expires_unix, float)


def _info(**changes: object) -> LockInfo:
    base: dict[str, object] = {
        "env": "production",
        "holder": "deploy abc by ci",
        "host": "runner-7",
        "pid": 4242,
        "token": "t",
        "acquired_at": "2026-01-01T00:00:00.000Z",
        "expires_at": "2026-01-01T00:01:00.000Z",
        "expires_unix": 1000.0,
    }
    base.update(changes)
    return LockInfo(**base)  # type: ignore[arg-type]


def test_lock_info_round_trips_and_describes_its_holder() -> None:
    info = _info(where="https://github.com/o/r/actions/runs/9")
    assert LockInfo.from_json(info.to_json()) == info
    text = info.describe(now=990.0)
    assert "deploy abc by ci on runner-7 pid 4242" in text
    assert "actions/runs/9" in text
    assert "expires in 10s" in text
    assert "expired 5s ago" in info.describe(now=1005.0)


def test_a_lock_is_stale_when_expired_or_unreadable_never_when_held_elsewhere() -> None:
    assert stale_reason(None, 0.0) == "its lock.json is unreadable"
    assert stale_reason(_info(), 1001.0).startswith("it expired")
    # Another machine: only the expiry counts, however dead its pid looks from here.
    assert stale_reason(_info(pid=2**22 + 1), 999.0) == ""
    assert not holder_is_gone(_info(host=socket.gethostname()))  # no boot id / pid namespace


def test_push_rejections_are_races_or_refusals() -> None:
    assert is_conflict("!\tabc:refs/shatag/p\t[rejected] (stale info)")
    assert is_conflict("!\tabc:refs/shatag/p\t[rejected] (fetch first)")
    assert is_conflict("!\tabc:refs/shatag/p\t[remote rejected] (failed to update ref)")
    assert is_conflict("!\tabc:refs/shatag/p\t[remote rejected] (cannot lock ref 'x')")
    assert not is_conflict("!\tabc:refs/shatag/p\t[remote rejected] (pre-receive hook declined)")
    assert not is_conflict("!\tabc:refs/shatag/p\t[remote rejected] (permission denied)")


def test_the_run_url_names_the_actions_run_when_there_is_one() -> None:
    env = {
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "o/r",
        "GITHUB_RUN_ID": "42",
    }
    assert run_url(env) == "https://github.com/o/r/actions/runs/42"
    assert run_url({}) == ""
