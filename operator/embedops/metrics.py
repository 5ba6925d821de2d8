"""Prometheus metrics of the operator, served on `/metrics` (EMBEDOPS_METRICS_PORT, default 8080).

Every gauge is set from a resource's status each time the resource is reconciled, so a
restarted operator exports the same series again within one reconcile interval, and the
series of a deleted resource are removed. Every series of a resource carries the same three
labels, `namespace`, `name` and `kind`, so any two join `on (namespace, kind, name)`. Every
metric and label is documented in docs/metrics.md; a test keeps that page and this module in step.
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

from embedops.api import times
from embedops.api.common import BaseStatus
from embedops.api.conditions import ConditionType, Reason
from embedops.api.finetune import FineTuneJobStatus
from embedops.api.index import EmbeddingIndexSpec, EmbeddingIndexStatus
from embedops.api.kinds import KINDS

# A counter's `_created` series doubles every counter and histogram for a timestamp no alert
# reads. The switch is process-wide and read at each collection, so it holds for REGISTRY (what
# the operator serves) as well as for any other registry.
disable_created_metrics()

RESOURCE = ("namespace", "name", "kind")
CONDITION_STATUSES = ("True", "False", "Unknown")
RESULTS = ("success", "error")
RECONCILE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

Series = tuple[Gauge, tuple[str, ...], float]  # (gauge, label values, value)


class Metrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY):
        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            made = Gauge(name, doc, RESOURCE + labels, registry=registry)
            self._resource_gauges.append(made)
            return made

        self._resource_gauges: list[Gauge] = []
        v, k = ("version",), ("k",)
        self.probe_recall = gauge("embedops_index_probe_recall", "Recall@k of the latest probe.", v + k)
        self.probe_mrr = gauge("embedops_index_probe_mrr", "MRR@k of the latest probe.", v + k)
        self.probe_ndcg = gauge("embedops_index_probe_ndcg", "nDCG@k of the latest probe.", v + k)
        self.probe_time = gauge("embedops_index_probe_timestamp_seconds", "Unix time of the latest probe.")
        self.min_recall = gauge("embedops_index_min_recall", "The index's spec.probe.minRecall.")
        self.drift_score = gauge("embedops_index_drift_score", "Drift score (MMD²) of the latest measurement.", v)
        self.drift_threshold = gauge("embedops_index_drift_threshold", "The index's spec.drift.threshold.")
        self.drift_time = gauge("embedops_index_drift_timestamp_seconds", "Unix time of the latest drift measurement.")
        self.live_version = gauge("embedops_index_live_version", "Version the index's view serves.")
        self.rows = gauge("embedops_index_rows", "Rows of each retained version.", v)
        self.reindex_rows = gauge("embedops_index_reindex_rows", "Rows committed by a running re-index so far.", v)
        self.reindex_rate = gauge("embedops_index_reindex_rows_per_second", "Throughput of a running re-index.", v)
        self.reindex_active = gauge("embedops_index_reindex_active", "1 while a re-index runs.")
        self.ft_ndcg = gauge("embedops_finetune_ndcg", "Held-out nDCG@k of the base and tuned model.", ("model",) + k)
        self.ft_mrr = gauge("embedops_finetune_mrr", "Held-out MRR@k of the base and tuned model.", ("model",) + k)
        self.ft_recall = gauge(
            "embedops_finetune_recall", "Held-out Recall@k of the base and tuned model.", ("model",) + k
        )
        self.ft_duration = gauge("embedops_finetune_duration_seconds", "Training plus evaluation time.")
        self.ready = gauge("embedops_resource_ready", "1 when the resource's Ready condition is True, else 0.")
        self.failed = gauge("embedops_resource_failed", "1 when the resource's phase is Failed, else 0.")
        self.condition = gauge(
            "embedops_resource_condition",
            "1 for the current status of each condition type, 0 for the other statuses.",
            ("type", "status"),
        )
        self.condition_reason = gauge(
            "embedops_resource_condition_reason", "1 for the current reason of each condition type.", ("type", "reason")
        )
        self.gate_failures = Counter(
            "embedops_index_gate_failures_total",
            "New versions that failed the probe gate (GateFailed events posted).",
            RESOURCE,
            registry=registry,
        )
        self.reconciles = Counter(
            "embedops_reconcile_total", "Reconciles run, by result.", ("kind", "result"), registry=registry
        )
        self.reconcile_duration = Histogram(
            "embedops_reconcile_duration_seconds",
            "Time one reconcile took.",
            ("kind",),
            buckets=RECONCILE_BUCKETS,
            registry=registry,
        )
        self.build_info = Gauge(
            "embedops_build_info",
            "The operator's version and Python version; always 1.",
            ("version", "python_version"),
            registry=registry,
        )
        self.build_info.labels(_package_version(), platform.python_version()).set(1)
        # Every kind's series exist from the start, at 0: `rate()` and `increase()` then see the
        # first error too, and a dashboard shows 0 rather than "no data".
        for kind in KINDS:
            for result in RESULTS:
                self.reconciles.labels(kind, result)
            self.reconcile_duration.labels(kind)

    # -- the executor's calls -----------------------------------------------------------------

    @contextlib.contextmanager
    def reconciling(self, kind: str) -> Iterator[None]:
        """Count one reconcile of `kind` by its result, and time it."""
        start = time.perf_counter()
        try:
            yield
        except Exception:  # what kopf retries; an interrupt is not a failed reconcile
            self.reconciles.labels(kind, "error").inc()
            raise
        else:
            self.reconciles.labels(kind, "success").inc()
        finally:
            self.reconcile_duration.labels(kind).observe(time.perf_counter() - start)

    def event_posted(self, kind: str, namespace: str, name: str, reason: str) -> None:
        """Count the events that metrics follow: a GateFailed event is one candidate version rejected."""
        if reason == Reason.GATE_FAILED:
            self.gate_failures.labels(namespace, name, kind).inc()

    # -- per resource ----------------------------------------------------------------------

    def observe(self, kind: str, namespace: str, name: str, spec: Any, status: BaseStatus) -> None:
        """Set every series of one resource from its status, and remove those that no longer apply."""
        key = (namespace, name, kind)
        want = _resource_series(self, key, status)
        if isinstance(status, EmbeddingIndexStatus):
            want += _index_series(self, key, spec, status)
            self.gate_failures.labels(*key)  # at 0 until the first failure, so increase() sees it
        elif isinstance(status, FineTuneJobStatus):
            want += _finetune_series(self, key, status)
        for gauge, labels, value in want:
            gauge.labels(*labels).set(value)
        # After setting the new series, so a scrape never sees the resource without its series.
        self._remove(key, keep={(id(gauge), labels) for gauge, labels, _ in want})

    def forget(self, kind: str, namespace: str, name: str) -> None:
        """Remove every series of a deleted resource."""
        key = (namespace, name, kind)
        self._remove(key)
        with contextlib.suppress(KeyError):  # older prometheus_client versions raise for a missing series
            self.gate_failures.remove(*key)

    def _remove(self, key: tuple[str, ...], keep: AbstractSet[tuple[int, tuple[str, ...]]] = frozenset()) -> None:
        """Remove the resource's gauge series (label values starting with `key`) except those in `keep`."""
        for g in self._resource_gauges:
            for values in list(g._metrics):
                if values[: len(key)] == key and (id(g), values) not in keep:
                    g.remove(*values)


def _resource_series(m: Metrics, key: tuple[str, ...], st: BaseStatus) -> list[Series]:
    """Ready, Failed and the conditions: the series every kind has."""
    ready = st.condition(ConditionType.READY)
    want: list[Series] = [
        (m.ready, key, 1 if ready is not None and ready.status == "True" else 0),
        (m.failed, key, 1 if st.phase == "Failed" else 0),
    ]
    for type_ in ConditionType:
        cond = st.condition(type_)
        if cond is not None:
            want += [(m.condition, key + (type_.value, s), 1 if cond.status == s else 0) for s in CONDITION_STATUSES]
            want.append((m.condition_reason, key + (type_.value, cond.reason), 1))
    return want


def _index_series(
    m: Metrics, key: tuple[str, ...], spec: EmbeddingIndexSpec | None, st: EmbeddingIndexStatus
) -> list[Series]:
    want: list[Series] = []
    if spec is not None:
        want += [(m.min_recall, key, spec.probe.min_recall), (m.drift_threshold, key, spec.drift.threshold)]
    if st.live_version is not None:
        want.append((m.live_version, key, st.live_version))
    want += [(m.rows, key + (str(v.version),), v.rows) for v in st.versions]
    if st.probe is not None:
        v = str(st.probe.version)
        want += [
            (m.probe_recall, key + (v, str(st.probe.k)), st.probe.recall_at_k),
            (m.probe_mrr, key + (v, "10"), st.probe.mrr_at_10),
            (m.probe_ndcg, key + (v, "10"), st.probe.ndcg_at_10),
            (m.probe_time, key, _unix(st.probe.checked_at)),
        ]
    if st.drift is not None:
        want += [
            (m.drift_score, key + (str(st.drift.version),), st.drift.score),
            (m.drift_time, key, _unix(st.drift.checked_at)),
        ]
    want.append((m.reindex_active, key, 1 if st.active_job else 0))
    if st.reindex is not None:
        v = str(st.reindex.version)
        want.append((m.reindex_rows, key + (v,), st.reindex.rows_done))
        if st.reindex.rows_per_second is not None:
            want.append((m.reindex_rate, key + (v,), st.reindex.rows_per_second))
    return want


def _finetune_series(m: Metrics, key: tuple[str, ...], st: FineTuneJobStatus) -> list[Series]:
    want: list[Series] = []
    for model, ir in (("base", st.base_metrics), ("tuned", st.tuned_metrics)):
        if ir is not None:
            scores = [
                (m.ft_ndcg, "10", ir.ndcg_at_10),
                (m.ft_mrr, "10", ir.mrr_at_10),
                (m.ft_recall, "10", ir.recall_at_10),
                (m.ft_recall, "100", ir.recall_at_100),
            ]
            # A recall that was not measured is no series (a gauge holds numbers only).
            want += [(gauge, key + (model, at), value) for gauge, at, value in scores if value is not None]
    if st.duration_seconds is not None:
        want.append((m.ft_duration, key, st.duration_seconds))
    return want


def _unix(stamp: str) -> float:
    if (when := times.parse_time(stamp)) is None:
        raise ValueError("a status time is empty")
    return when.timestamp()


def _package_version() -> str:
    try:
        return version("embedops")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return "0.0.0"


METRICS = Metrics()


_served: set[int] = set()


def serve(port: int) -> None:
    """Serve /metrics on `port` in a background thread, once per process (0: don't)."""
    if port and port not in _served:
        start_http_server(port)
        _served.add(port)
