"""The reliability session under pytest-xdist: each worker writes its part of the results and
the controller merges them (tests/reliability/conftest.py, issue 27)."""

from __future__ import annotations

from typing import Any

from tests.reliability.conftest import merge_results


def _part(**changes: Any) -> dict[str, Any]:
    part: dict[str, Any] = {
        "counts": {"leaks_found": 0, "outputs_scanned": 2, "faults_injected": 1},
        "figures": {"a": "1 s"},
        "outcomes": [{"scenario": "s", "passed": True}],
        "failed_tests": [],
        "leaks": [],
        "tests_collected": 90,
    }
    return {**part, **changes}


def test_every_row_count_and_figure_of_each_worker_is_kept() -> None:
    merged = merge_results([_part(), _part(figures={"b": "2 s"}, failed_tests=["t::x"])], ["t::x"])
    assert merged["counts"] == {"leaks_found": 0, "outputs_scanned": 4, "faults_injected": 2}
    assert merged["figures"] == {"a": "1 s", "b": "2 s"}
    assert merged["failed_tests"] == ["t::x"]
    assert merged["tests_collected"] == 90
    # Two workers' rows plus the session-end canary row over both.
    assert len(merged["outcomes"]) == 3
    last = merged["outcomes"][-1]
    assert last["passed"] is True
    assert last["observed"] == "0 leaks in 4 outputs of 2 workers"


def test_a_leak_in_any_worker_fails_the_merged_canary_row() -> None:
    leak = "inv build: canaryReg-x"
    merged = merge_results([_part(), _part(leaks=[leak], counts={"leaks_found": 1})], [])
    assert merged["leaks"] == [leak]
    assert merged["counts"]["leaks_found"] == 1
    assert merged["outcomes"][-1]["passed"] is False


def test_a_crashed_worker_that_wrote_no_part_still_fails_the_results() -> None:
    """The controller's own failures (xdist reports a crashed worker's test there) are kept."""
    crashed = "tests/reliability/test_kill.py::test_x"
    merged = merge_results([_part()], [crashed])
    assert merged["failed_tests"] == [crashed]
