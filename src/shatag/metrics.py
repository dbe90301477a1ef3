"""Prometheus counters, off unless configured.

``metrics_textfile`` writes the registry in the node-exporter textfile format (atomically);
``metrics_pushgateway`` pushes to a Pushgateway (job ``shatag``). Neither set: nothing happens
and prometheus_client is never imported.

Metrics never fail a build, deploy or rollback (issue 14, item 3): every ``record_*`` returns
``None`` or a warning (the task prints ``warning: …``), with the Pushgateway URL's credentials
masked.

>>> safe_url("http://user:s3cret@gw:9091/x")
'http://***@gw:9091/x'
"""

from __future__ import annotations

import logging
import urllib.parse
from pathlib import Path

from shatag.config import MetricsConfig

log = logging.getLogger("shatag.metrics")

_DOCS: dict[str, str] = {
    "image_build": "Images built and pushed by shatag",
    "rollback": "Rollbacks performed by shatag",
    "deploy": "Deploys performed by shatag",
}

_Totals = dict[str, dict[tuple[tuple[str, str], ...], float]]


def _publish(config: MetricsConfig, name: str, labels: dict[str, str]) -> None:
    """Add 1 to ``<name>_total{labels}``; every other counter in the textfile is kept."""
    if not (config.textfile or config.pushgateway):
        return
    from prometheus_client import CollectorRegistry, Counter, push_to_gateway, write_to_textfile

    totals = _previous_totals(config.textfile)
    mine = totals.setdefault(name, {})
    key = tuple(sorted(labels.items()))
    mine[key] = mine.get(key, 0.0) + 1
    registry = CollectorRegistry()
    for family, series in sorted(totals.items()):
        label_names = sorted({label for key_ in series for label, _ in key_})
        counter = Counter(family, _DOCS.get(family, family), label_names, registry=registry)
        for series_key, value in series.items():
            counter.labels(**dict(series_key)).inc(value)
    if config.textfile:
        # write_to_textfile writes a temp file and renames it: readers never see half a file.
        write_to_textfile(config.textfile, registry)
    if config.pushgateway:
        push_to_gateway(config.pushgateway, job="shatag", registry=registry)


def safe_url(url: str) -> str:
    """``url`` without the credentials of its userinfo part."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "(unparsable URL)"
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"***@{host}"))


def _guarded(config: MetricsConfig, name: str, labels: dict[str, str]) -> str | None:
    """:func:`_publish`, with any failure turned into a warning (never raised)."""
    try:
        _publish(config, name, labels)
    except Exception as exc:
        places = []
        if config.textfile:
            places.append(f"textfile {config.textfile}")
        if config.pushgateway:
            places.append(f"Pushgateway {safe_url(config.pushgateway)}")
        detail = str(exc)
        if config.pushgateway:
            detail = detail.replace(config.pushgateway, safe_url(config.pushgateway))
            userinfo = urllib.parse.urlsplit(config.pushgateway).netloc.rpartition("@")[0]
            if userinfo:
                detail = detail.replace(userinfo, "***")
        log.debug("metrics failure", exc_info=True)
        return (
            f"metrics not recorded ({name}_total to {' and '.join(places)}): "
            f"{type(exc).__name__}: {detail[:300]}; the command itself succeeded"
        )
    return None


def _previous_totals(textfile: str) -> _Totals:
    """Counters accumulate across runs: read every counter total the textfile already holds."""
    if not textfile:
        return {}
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = Path(textfile).read_text()
    except OSError:
        return {}
    totals: _Totals = {}
    try:
        for family in text_string_to_metric_families(text):
            if family.type != "counter" or family.name not in _DOCS:
                continue
            for s in family.samples:
                if s.name == f"{family.name}_total":
                    key = tuple(sorted(s.labels.items()))
                    totals.setdefault(family.name, {})[key] = float(s.value)
    except ValueError:
        return {}
    return totals


def record_build(config: MetricsConfig, repository_type: str) -> str | None:
    """``image_build_total{repository_type}``; a warning when it could not be recorded."""
    return _guarded(config, "image_build", {"repository_type": repository_type})


def record_rollback(config: MetricsConfig, repository_type: str) -> str | None:
    """``rollback_total{repository_type}``; a warning when it could not be recorded."""
    return _guarded(config, "rollback", {"repository_type": repository_type})


def record_deploy(config: MetricsConfig, repository_type: str) -> str | None:
    """``deploy_total{repository_type}``: successful deploys (rollbacks count separately)."""
    return _guarded(config, "deploy", {"repository_type": repository_type})
