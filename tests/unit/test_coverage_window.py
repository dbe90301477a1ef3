"""``inv signatures`` reads only the metadata files that can matter (issue 17), same report."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from shatag.app.signatures import build_observations, coverage, history_observations, summarize
from shatag.config import Settings
from shatag.ledger.history import HistoryRecord, HistoryStore

BASE = 1_700_000_000


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@settings(max_examples=40, deadline=None)
@given(
    builds=st.lists(
        st.tuples(st.integers(0, 5000), st.integers(0, 600), st.booleans()), max_size=40
    ),
    deploys=st.lists(st.tuples(st.integers(0, 45), st.integers(0, 5000)), max_size=10),
    window=st.integers(1, 12),
    strays=st.lists(st.tuples(st.integers(0, 100), st.booleans()), max_size=4),
)
def test_property_window_reads_give_the_full_report(
    builds: list[tuple[int, int, bool]],
    deploys: list[tuple[int, int]],
    window: int,
    strays: list[tuple[int, bool]],
) -> None:
    root = Path(tempfile.mkdtemp())
    meta = root / "metadata"
    meta.mkdir()
    for i, (created, lag, verified) in enumerate(builds):
        sha = f"{i:040x}"
        path = meta / f"{sha}.json"
        path.write_text(
            json.dumps(
                {
                    "image_sha": sha,
                    "created_at": iso(BASE + created),
                    "signature_status": "verified" if verified else "unverified",
                    "signature_reason": "n/a" if verified else "no_signature",
                }
            )
        )
        os.utime(path, (BASE + created + lag, BASE + created + lag))  # written after created
    for i, (created, junk) in enumerate(strays):
        # Files the report must ignore, newest of all: a name of the right length that is not
        # a SHA (the SHA check waits until a file is read), and other names.
        name = f"{'g' if i % 2 else 'A'}{i:039x}.json" if junk else f"{i:039x}.json"
        path = meta / name
        path.write_text(json.dumps({"image_sha": f"{i:040x}", "created_at": iso(BASE + 9999)}))
        os.utime(path, (BASE + 9999 + created, BASE + 9999 + created))
    cfg = Settings.from_mapping({"metadata_dir": str(meta), "state_dir": str(root / "state")})
    store = HistoryStore(root / "state", "local")
    for sha_index, when in deploys:
        store.append(
            HistoryRecord(
                "deploy",
                "local",
                f"{sha_index:040x}",
                "sha256:" + "1" * 64,
                "ok",
                finished_at=iso(BASE + when),
                signature_status="verified",
                signature_reason="n/a",
            )
        )
    everything = [*build_observations(cfg), *history_observations(cfg)]
    full = summarize(everything, window)
    fast = coverage(cfg, window=window)
    assert fast.shas == full.shas
    assert (fast.total, fast.verified, fast.criterion_met) == (
        full.total,
        full.verified,
        full.criterion_met,
    )
