"""The ``promotion`` block of an environment and the source-release reading of ``promote``
(issue 26): parsing and refusals, and what the ledger's records say is offered."""

from __future__ import annotations

import re
from typing import Any

import pytest

from shatag.app.promote import candidate
from shatag.config import Settings
from shatag.errors import ConfigError
from shatag.ledger.history import HistoryRecord

TARGET = [{"kind": "tfvars", "path": "x.tfvars.json"}]


def settings(**production: Any) -> Settings:
    envs = {
        "staging": {"repository_type": "staging", "targets": TARGET},
        "production": {"targets": [{"kind": "tfvars", "path": "p.tfvars.json"}], **production},
    }
    return Settings.from_mapping({"environments": envs})


def test_a_promotion_block_is_parsed_with_its_defaults() -> None:
    promo = settings(promotion={"from": "staging", "checks": ["curl -fsS 'http://x/a b'"]})
    parsed = promo.environment("production").promotion
    assert parsed is not None
    assert (parsed.source, parsed.soak_sec, parsed.check_timeout_sec) == ("staging", 0.0, 300.0)
    assert parsed.checks == (("curl", "-fsS", "http://x/a b"),)
    assert promo.environment("staging").promotion is None


@pytest.mark.parametrize(
    ("promotion", "message"),
    [
        ({"from": "nowhere"}, "promotion.from names 'nowhere', which is not configured"),
        ({"from": "production"}, "promotion goes round in a circle: production -> production"),
        ({"soak_sec": 5}, "promotion.from must name the environment"),
        ({"from": "staging", "soak_sec": -1}, "soak_sec must be"),
        ({"from": "staging", "checks": [[]]}, "checks[0] names no program"),
        ({"from": "staging", "checks": "true"}, "checks must be a list of commands"),
        ({"from": "staging", "approve": True}, "unknown keys"),
        ("staging", "must be a mapping"),
    ],
)
def test_a_bad_promotion_block_is_a_config_error(promotion: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings(promotion=promotion)


def _r(sha: str, when: str, action: str = "deploy", result: str = "ok") -> HistoryRecord:
    return HistoryRecord(action, "staging", sha, f"sha256:{sha}", result, finished_at=when)  # type: ignore[arg-type]  # literal values chosen by the caller


def test_the_offer_is_the_current_release_since_its_unbroken_run() -> None:
    newest_first = [
        _r("B", "t5", result="failed"),  # undone: B kept serving
        _r("B", "t4"),  # a redeploy does not restart the soak
        _r("B", "t3"),
        _r("A", "t1"),
    ]
    offer = candidate("staging", newest_first, None)
    assert (offer.sha, offer.since, offer.refused) == ("B", "t3", "")
    assert candidate("staging", newest_first, "B").since == "t3"


def test_a_sha_rolled_back_or_never_run_is_not_offered_and_says_why() -> None:
    newest_first = [_r("A", "t3", "rollback"), _r("B", "t2"), _r("A", "t1")]
    rolled = candidate("staging", newest_first, "B")
    assert rolled.record is None
    assert rolled.refused.startswith("B was rolled back in 'staging' at t3 by unknown (to A)")
    never = candidate("staging", newest_first, "C")
    assert never.refused.startswith("C never ran successfully in 'staging'")
    assert candidate("staging", [], None).refused == "'staging' has no successful deployment"
    assert candidate("staging", newest_first, "A").since == "t3"  # serving again since then
