"""Prometheus metrics of the operator, served on `/metrics` (EMBEDOPS_METRICS_PORT, default 8080).

Every gauge is set from a resource's status each time the resource is reconciled, so a
restarted operator exports the same series again within one reconcile interval, and the
series of a deleted resource are removed. Every metric and label is documented in
docs/metrics.md; a test keeps that page and this module in step.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Set as AbstractSet
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, start_http_server

from embedops.api.common import BaseStatus
from embedops.api.finetune import FineTuneJobStatus
from embedops.api.index import EmbeddingIndexSpec, EmbeddingIndexStatus


class Metrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY):
        def gauge(name: str, doc: str, labels: tuple[str, ...]) -> Gauge:
            return Gauge(name, doc, labels, registry=registry)

        ix = ("namespace", "index")
        ixv = ("namespace", "index", "version")
        ft = ("namespace", "finetunejob")
        self.probe_recall = gauge("embedops_index_probe_recall", "Recall@k of the latest probe of the live version.",
                                  ixv + ("k",))
        self.probe_mrr = gauge("embedops_index_probe_mrr", "MRR@10 of the latest probe of the live version.", ixv)
        self.probe_ndcg = gauge("embedops_index_probe_ndcg", "nDCG@10 of the latest probe of the live version.", ixv)
        self.probe_time = gauge("embedops_index_probe_timestamp_seconds", "Unix time of the latest probe.", ix)
        self.min_recall = gauge("embedops_index_min_recall", "The index's spec.probe.minRecall.", ix)
        self.drift_score = gauge("embedops_index_drift_score", "Drift score (MMD²) of the latest measurement.", ixv)
        self.drift_threshold = gauge("embedops_index_drift_threshold", "The index's spec.drift.threshold.", ix)
        self.drift_time = gauge("embedops_index_drift_timestamp_seconds", "Unix time of the latest drift measurement.",
                                ix)
        self.live_version = gauge("embedops_index_live_version", "Version the index's view serves.", ix)
        self.rows = gauge("embedops_index_rows", "Rows of each retained version.", ixv)
        self.reindex_rows = gauge("embedops_index_reindex_rows", "Rows committed by a running re-index so far.", ixv)
        self.reindex_rate = gauge("embedops_index_reindex_rows_per_second", "Throughput of a running re-index.", ixv)
        self.reindex_active = gauge("embedops_index_reindex_active", "1 while a re-index runs.", ix)
        self.ft_ndcg = gauge("embedops_finetune_ndcg", "Held-out nDCG@10 of the base and tuned model.", ft + ("model",))
        self.ft_mrr = gauge("embedops_finetune_mrr", "Held-out MRR@10 of the base and tuned model.", ft + ("model",))
        self.ft_recall = gauge("embedops_finetune_recall_at_10", "Held-out Recall@10 of the base and tuned model.",
                               ft + ("model",))
        self.ft_duration = gauge("embedops_finetune_duration_seconds", "Training plus evaluation time.", ft)
        self.ready = gauge("embedops_resource_ready", "1 when the resource is Ready.", ("namespace", "kind", "name"))
        self.failed = gauge("embedops_resource_failed", "1 when the resource's phase is Failed.",
                            ("namespace", "kind", "name"))
        self.reconciles = Counter("embedops_reconcile_total", "Reconciles run.", ("kind",), registry=registry)
        self.errors = Counter("embedops_reconcile_errors_total", "Reconciles that raised an error.", ("kind",),
                              registry=registry)
        self._index_gauges = (self.probe_recall, self.probe_mrr, self.probe_ndcg, self.probe_time, self.min_recall,
                              self.drift_score, self.drift_threshold, self.drift_time, self.live_version, self.rows,
                              self.reindex_rows, self.reindex_rate, self.reindex_active)
        self._finetune_gauges = (self.ft_ndcg, self.ft_mrr, self.ft_recall, self.ft_duration)

    # -- per resource ----------------------------------------------------------------------

    def observe(self, kind: str, namespace: str, name: str, spec: Any, status: BaseStatus) -> None:
        """Set every series of one resource from its status."""
        ready = status.condition("Ready")
        self.ready.labels(namespace, kind, name).set(1 if ready is not None and ready.status == "True" else 0)
        self.failed.labels(namespace, kind, name).set(1 if status.phase == "Failed" else 0)
        if isinstance(status, EmbeddingIndexStatus):
            self._observe_index(namespace, name, spec, status)
        elif isinstance(status, FineTuneJobStatus):
            self._observe_finetune(namespace, name, status)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        """Remove every series of a deleted resource."""
        self._remove_matching((self.ready, self.failed), {"namespace": namespace, "kind": kind, "name": name})
        if kind == "EmbeddingIndex":
            self._remove_matching(self._index_gauges, {"namespace": namespace, "index": name})
        elif kind == "FineTuneJob":
            self._remove_matching(self._finetune_gauges, {"namespace": namespace, "finetunejob": name})

    def _observe_index(self, ns: str, name: str, spec: EmbeddingIndexSpec | None, st: EmbeddingIndexStatus) -> None:
        want: list[tuple[Gauge, tuple[str, ...], float]] = []
        if spec is not None:
            want += [(self.min_recall, (ns, name), spec.probe.min_recall),
                     (self.drift_threshold, (ns, name), spec.drift.threshold)]
        if st.live_version is not None:
            want.append((self.live_version, (ns, name), st.live_version))
        want += [(self.rows, (ns, name, str(v.version)), v.rows) for v in st.versions]
        if st.probe is not None:
            v = str(st.probe.version)
            want += [(self.probe_recall, (ns, name, v, str(st.probe.k)), st.probe.recall_at_k),
                     (self.probe_mrr, (ns, name, v), st.probe.mrr_at_10),
                     (self.probe_ndcg, (ns, name, v), st.probe.ndcg_at_10),
                     (self.probe_time, (ns, name), _unix(st.probe.checked_at))]
        if st.drift is not None:
            want += [(self.drift_score, (ns, name, str(st.drift.version)), st.drift.score),
                     (self.drift_time, (ns, name), _unix(st.drift.checked_at))]
        want.append((self.reindex_active, (ns, name), 1 if st.active_job else 0))
        if st.reindex is not None:
            v = str(st.reindex.version)
            want.append((self.reindex_rows, (ns, name, v), st.reindex.rows_done))
            if st.reindex.rows_per_second is not None:
                want.append((self.reindex_rate, (ns, name, v), st.reindex.rows_per_second))
        for gauge, labels, value in want:
            gauge.labels(*labels).set(value)
        # Versions come and go: drop this index's series that no longer apply (after setting the
        # new ones, so a scrape never sees the index without its series).
        self._remove_matching(self._index_gauges, {"namespace": ns, "index": name},
                              keep={(id(gauge), labels) for gauge, labels, _ in want})

    def _observe_finetune(self, ns: str, name: str, st: FineTuneJobStatus) -> None:
        for which, m in (("base", st.base_metrics), ("tuned", st.tuned_metrics)):
            if m is not None:
                self.ft_ndcg.labels(ns, name, which).set(m.ndcg_at_10)
                self.ft_mrr.labels(ns, name, which).set(m.mrr_at_10)
                self.ft_recall.labels(ns, name, which).set(m.recall_at_10)
        if st.duration_seconds is not None:
            self.ft_duration.labels(ns, name).set(st.duration_seconds)

    @staticmethod
    def _remove_matching(gauges: tuple[Gauge, ...], match: dict[str, str],
                         keep: AbstractSet[tuple[int, tuple[str, ...]]] = frozenset()) -> None:
        """Remove the series whose labels match, except those in `keep` ((id(gauge), label values))."""
        for g in gauges:
            names = g._labelnames
            for values in list(g._metrics):
                labels = dict(zip(names, values))
                if all(labels.get(k) == v for k, v in match.items() if k in labels) and (id(g), values) not in keep:
                    g.remove(*values)


def _unix(stamp: str) -> float:
    return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc).timestamp()


METRICS = Metrics()


_served: set[int] = set()


def serve(port: int) -> None:
    """Serve /metrics on `port` in a background thread, once per process (0: don't)."""
    if port and port not in _served:
        start_http_server(port)
        _served.add(port)
