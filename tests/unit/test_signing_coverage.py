"""Coverage and the escalation criterion (FR-014): pure, over hand-made observations."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shatag.app.signatures import Observation, summarize


def _obs(i: int, status: str = "verified", reason: str = "n/a", code: str = "") -> Observation:
    return Observation(f"{i:040x}", "build", f"2024-01-01T00:{i // 60:02d}:{i % 60:02d}", status,
                       reason, code)  # fmt: skip


def test_fr014_criterion_met_with_27_of_30_verified_and_no_failures() -> None:
    obs = [_obs(i) for i in range(27)] + [
        _obs(i, "unverified", "no_signature") for i in range(27, 30)
    ]
    report = summarize(obs, 30)
    assert (report.total, report.verified_pct, report.criterion_met) == (30, 90.0, True)


def test_fr014_one_tool_failure_in_30_blocks_escalation() -> None:
    obs = [_obs(i) for i in range(29)] + [_obs(29, "unverified", "tool_missing")]
    report = summarize(obs, 30)
    assert report.tool_failures == 1
    assert not report.criterion_met
    assert "tool failures" in report.reason


def test_fr014_too_few_shas_is_not_met() -> None:
    report = summarize([_obs(i) for i in range(5)], 30)
    assert not report.criterion_met
    assert "only 5" in report.reason


def test_fr014_newest_observation_of_a_sha_wins_and_window_keeps_newest() -> None:
    old = Observation("a" * 40, "build", "2024-01-01", "unverified", "no_signature")
    new = Observation("a" * 40, "deploy", "2024-02-01", "verified", "n/a")
    failed = Observation("b" * 40, "deploy", "2024-03-01", "unverified", "n/a",
                         "SOFT_VERIFY_TOOL_ERROR")  # fmt: skip
    report = summarize([old, new, failed], 2)
    assert report.verified == 1
    assert report.tool_failures == 1
    assert [s["sha"] for s in report.shas] == ["b" * 40, "a" * 40]


_REASONS = st.sampled_from(["n/a", "no_signature", "invalid", "error", "tool_missing"])
_ROWS = st.lists(
    st.tuples(st.integers(0, 60), st.sampled_from(["verified", "unverified"]), _REASONS)
)


@given(_ROWS)
def test_fr014_report_is_consistent(rows: list[tuple[int, str, str]]) -> None:
    report = summarize([_obs(i, s, r) for i, s, r in rows], 30)
    assert report.total == min(30, len({i for i, _, _ in rows}))
    assert 0 <= report.verified <= report.total
    assert 0.0 <= report.verified_pct <= 100.0
    if report.criterion_met:
        assert report.total >= 30
        assert report.verified_pct >= 90.0
        assert report.tool_failure_pct < 1.0
