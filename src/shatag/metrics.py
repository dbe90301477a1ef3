"""Prometheus counters (seed T022), off unless configured.

``metrics_textfile`` writes the registry in the node-exporter textfile format (atomically);
``metrics_pushgateway`` pushes to a Pushgateway (job ``shatag``). Neither set: nothing happens
and prometheus_client is never imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from shatag.errors import ConfigError

if TYPE_CHECKING:
    from shatag.config import Settings


def _publish(settings: Settings, name: str, documentation: str, labels: dict[str, str]) -> None:
    if not (settings.metrics_textfile or settings.metrics_pushgateway):
        return
    from prometheus_client import CollectorRegistry, Counter, push_to_gateway, write_to_textfile

    registry = CollectorRegistry()
    counter = Counter(name, documentation, list(labels), registry=registry)
    previous = _previous_totals(settings.metrics_textfile, f"{name}_total")
    for known, value in previous.items():
        if known != tuple(sorted(labels.items())):
            counter.labels(**dict(known)).inc(value)
    counter.labels(**labels).inc(previous.get(tuple(sorted(labels.items())), 0.0) + 1)
    if settings.metrics_textfile:
        # write_to_textfile writes a temp file and renames it: readers never see half a file.
        write_to_textfile(settings.metrics_textfile, registry)
    if settings.metrics_pushgateway:
        try:
            push_to_gateway(settings.metrics_pushgateway, job="shatag", registry=registry)
        except OSError as exc:
            raise ConfigError(
                f"could not push metrics to {settings.metrics_pushgateway}: {exc}"
            ) from None


def _previous_totals(textfile: str, sample: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Counters accumulate across runs: read the totals the textfile already holds."""
    if not textfile:
        return {}
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = Path(textfile).read_text()
    except OSError:
        return {}
    totals: dict[tuple[tuple[str, str], ...], float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == sample:
                    totals[tuple(sorted(s.labels.items()))] = float(s.value)
    except ValueError:
        return {}
    return totals


def record_build(settings: Settings, repository_type: str) -> None:
    """``image_build_total{repository_type}``."""
    _publish(
        settings,
        "image_build",
        "Images built and pushed by shatag",
        {"repository_type": repository_type},
    )


def record_rollback(settings: Settings, repository_type: str) -> None:
    """``rollback_total{repository_type}``."""
    _publish(
        settings, "rollback", "Rollbacks performed by shatag", {"repository_type": repository_type}
    )


def record_deploy(settings: Settings, repository_type: str) -> None:
    """``deploy_total{repository_type}``: successful deploys (rollbacks count separately)."""
    _publish(
        settings, "deploy", "Deploys performed by shatag", {"repository_type": repository_type}
    )
