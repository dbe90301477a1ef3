"""Metrics counters (T022): off by default, accumulate, never erase each other."""

from __future__ import annotations

from pathlib import Path

from shatag.config import Settings
from shatag.metrics import record_build, record_deploy, record_rollback


def test_counters_accumulate_and_share_one_textfile(tmp_path: Path) -> None:
    textfile = tmp_path / "shatag.prom"
    settings = Settings.from_mapping({"metrics_textfile": str(textfile)})
    record_build(settings.metrics, "canonical")
    record_build(settings.metrics, "canonical")
    record_build(settings.metrics, "staging")
    record_deploy(settings.metrics, "canonical")
    record_rollback(settings.metrics, "canonical")
    record_rollback(settings.metrics, "canonical")
    text = textfile.read_text()
    assert 'image_build_total{repository_type="canonical"} 2.0' in text
    assert 'image_build_total{repository_type="staging"} 1.0' in text
    assert 'deploy_total{repository_type="canonical"} 1.0' in text
    assert 'rollback_total{repository_type="canonical"} 2.0' in text


def test_nothing_is_written_unless_configured(tmp_path: Path) -> None:
    settings = Settings.from_mapping({})
    record_build(settings.metrics, "canonical")
    assert list(tmp_path.iterdir()) == []
