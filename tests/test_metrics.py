"""The operator's Prometheus metrics: documented exactly, and following an index's versions."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from embedops.api.index import EmbeddingIndexStatus
from embedops.metrics import Metrics

DOC = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"


def _documented() -> dict[str, set[str]]:
    rows = re.findall(r"^\| (embedops_\w+) \| ([^|]+) \|", DOC.read_text(), flags=re.M)
    return {name: {label.strip() for label in labels.split(",")} for name, labels in rows}


def test_every_metric_and_label_is_documented_and_nothing_else():
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    registered = {}
    for value in vars(metrics).values():
        if hasattr(value, "_labelnames"):
            name = value._name.removesuffix("_total") + ("_total" if value._type == "counter" else "")
            registered[name] = set(value._labelnames)
    assert registered == _documented()


def _status(live: int, versions: list[int]) -> EmbeddingIndexStatus:
    return EmbeddingIndexStatus.model_validate({
        "liveVersion": live,
        "versions": [{"version": v, "table": f"docs_v{v}", "model": "m", "rows": 100 * v,
                      "state": "Live" if v == live else "Ready"} for v in versions],
        "probe": {"version": live, "k": 10, "recallAtK": 0.9, "mrrAt10": 0.7, "ndcgAt10": 0.8, "queries": 50,
                  "checkedAt": "2026-11-25T10:00:00Z"},
    })


def _series(registry: CollectorRegistry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value
            for m in registry.collect() for s in m.samples if s.name == name}


def test_index_series_follow_versions_and_vanish_on_delete():
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.observe("EmbeddingIndex", "ns", "docs", None, _status(1, [1]))
    metrics.observe("EmbeddingIndex", "ns", "other", None, _status(1, [1]))
    metrics.observe("EmbeddingIndex", "ns", "docs", None, _status(2, [2, 1]))
    rows = _series(registry, "embedops_index_rows")
    assert {dict(k)["version"]: v for k, v in rows.items() if dict(k)["index"] == "docs"} == {"1": 100, "2": 200}
    recall = _series(registry, "embedops_index_probe_recall")
    # The probe series moved to the new live version; the other index is untouched.
    assert sorted((dict(k)["index"], dict(k)["version"]) for k in recall) == [("docs", "2"), ("other", "1")]
    assert _series(registry, "embedops_index_live_version")[(("index", "docs"), ("namespace", "ns"))] == 2

    metrics.observe("EmbeddingIndex", "ns", "docs", None, _status(2, [2]))
    assert sorted(dict(k)["version"] for k in _series(registry, "embedops_index_rows") if ("index", "docs") in k) == ["2"]

    metrics.forget("EmbeddingIndex", "ns", "docs")
    for name in ("embedops_index_rows", "embedops_index_probe_recall", "embedops_resource_ready"):
        assert all(("index", "docs") not in k and ("name", "docs") not in k for k in _series(registry, name))
    assert _series(registry, "embedops_index_rows")  # "other" keeps its series
