"""Prometheus metrics of the operator, served on `/metrics` (EMBEDOPS_METRICS_PORT, default 8080).

Every gauge is set from a resource's status each time the resource is reconciled, so a
restarted operator exports the same series again within one reconcile interval, and the
series of a deleted resource are removed. Every series of a resource carries the same three
labels, `namespace`, `name` and `kind`, so any two join `on (namespace, kind, name)`; no label
carries a value that changes in a resource's normal life (a version number is a gauge's value,
not a label), so a cut-over does not start new series. Every metric and label is documented in
docs/metrics.md; a test keeps that page and this module in step.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Iterable, Iterator
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
from embedops.api.conditions import SCHEDULED_FAILURES, ConditionType, Reason
from embedops.api.finetune import FineTuneJobSpec, FineTuneJobStatus
from embedops.api.index import EmbeddingIndexSpec, EmbeddingIndexStatus, live_version
from embedops.api.kinds import KINDS

# A counter's `_created` series doubles every counter and histogram for a timestamp no alert
# reads. The switch is process-wide and read at each collection, so it holds for REGISTRY (what
# the operator serves) as well as for any other registry.
disable_created_metrics()

RESOURCE = ("namespace", "name", "kind")
CONDITION_STATUSES = ("True", "False", "Unknown")
RESULTS = ("success", "error")
RECONCILE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# The phases in which a resource waits for its pods or for another resource (statuses.progressing).
WAITING_PHASES = frozenset({"Pending", "Queued", "Suspended"})
REVISION_ENV = "EMBEDOPS_REVISION"  # the source revision, set when the image is built
# A scheduled run's failure, as the planner reports it on the Degraded condition: reason -> step.
FAILED_STEPS = {reason.value: step for step, reason in SCHEDULED_FAILURES.items()}
SYNC_OPERATIONS = ("embedded", "deleted")  # embedops_index_sync_rows_total's `operation`

Series = tuple[Gauge, tuple[str, ...], float]  # (gauge, label values, value)


class Metrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY):
        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            made = Gauge(name, doc, RESOURCE + labels, registry=registry)
            self._resource_gauges.append(made)
            return made

        self._resource_gauges: list[Gauge] = []
        # The last scheduled-run failure seen per resource: (reason, message); see _count_failure.
        self._failures: dict[tuple[str, ...], tuple[str, str] | None] = {}
        # The last sync seen per table index: (version, lastSyncTime); see _count_sync.
        self._syncs: dict[tuple[str, ...], tuple[int, str | None] | None] = {}
        k, mk = ("k",), ("model", "k")
        # -- index: probes
        self.probe_recall = gauge(
            "embedops_index_probe_recall_ratio", "Recall@k of the latest probe (k: spec.probe.k).", k
        )
        self.probe_mrr = gauge(
            "embedops_index_probe_mrr_ratio", "MRR@10 (mean reciprocal rank, top 10) of the latest probe.", k
        )
        self.probe_ndcg = gauge("embedops_index_probe_ndcg_ratio", "nDCG@10 of the latest probe.", k)
        self.probe_version = gauge("embedops_index_probe_version", "Version the latest probe measured.")
        self.probe_time = gauge("embedops_index_probe_timestamp_seconds", "Unix time of the latest probe.")
        self.probe_interval = gauge(
            "embedops_index_probe_interval_seconds", "The index's spec.probe.intervalMinutes, in seconds."
        )
        self.cutover_recall = gauge(
            "embedops_index_cutover_recall_ratio", "Recall@k the live version measured when it was cut over.", k
        )
        self.min_recall = gauge("embedops_index_min_recall_ratio", "The index's spec.probe.minRecall.")
        self.max_regression = gauge("embedops_index_max_regression_ratio", "The index's spec.probe.maxRegression.")
        # -- index: drift
        self.drift_score = gauge("embedops_index_drift_score", "Drift score (squared MMD) of the latest measurement.")
        self.drift_version = gauge("embedops_index_drift_version", "Version the latest drift measurement measured.")
        self.drift_threshold = gauge("embedops_index_drift_threshold", "The index's spec.drift.threshold.")
        self.drift_time = gauge("embedops_index_drift_timestamp_seconds", "Unix time of the latest drift measurement.")
        # -- index: versions and re-index
        self.live_version = gauge("embedops_index_live_version", "Version the index's view serves.")
        self.rows = gauge("embedops_index_rows", "Rows of the live version.")
        self.retained = gauge("embedops_index_retained_versions", "Versions the index keeps (live, ready, retired).")
        self.reindex_version = gauge("embedops_index_reindex_version", "Version a running re-index builds.")
        self.reindex_rows = gauge("embedops_index_reindex_rows", "Rows committed by a running re-index so far.")
        self.reindex_rate = gauge("embedops_index_reindex_rows_per_second", "Throughput of a running re-index.")
        self.reindex_active = gauge("embedops_index_reindex_active", "1 while a re-index runs.")
        # -- index: sync with a source table
        self.sync_time = gauge(
            "embedops_index_sync_timestamp_seconds",
            "Unix time since when the live version holds every change of its source table (its last sync, else "
            "its build).",
        )
        self.sync_interval = gauge(
            "embedops_index_sync_interval_seconds",
            "The index's spec.sync.intervalMinutes, in seconds (0: no schedule).",
        )
        self.sync_pending = gauge(
            "embedops_index_sync_pending_rows",
            "Rows the last sync of the live version found changed and did not apply.",
        )
        self.sync_changed = gauge(
            "embedops_index_sync_changed_ratio",
            "Share of the live version's rows inserted, updated or deleted since it was built.",
        )
        # -- fine-tune
        self.ft_ndcg = gauge("embedops_finetune_ndcg_ratio", "Held-out nDCG@10 of the base and tuned model.", mk)
        self.ft_mrr = gauge("embedops_finetune_mrr_ratio", "Held-out MRR@10 of the base and tuned model.", mk)
        self.ft_recall = gauge(
            "embedops_finetune_recall_ratio", "Held-out Recall@10 and Recall@100 of the base and tuned model.", mk
        )
        self.ft_duration = gauge("embedops_finetune_duration_seconds", "Training plus evaluation time.")
        self.ft_gpus = gauge(
            "embedops_finetune_gpus", "GPUs the training pod requests (spec.resources.gpus, 1 by default)."
        )
        self.train_step = gauge("embedops_finetune_training_step", "Training steps done by the running training.")
        self.train_last_step = gauge("embedops_finetune_training_last_step", "Training steps in all, when known.")
        self.train_loss = gauge("embedops_finetune_training_loss", "The last logged training loss.")
        self.train_eta = gauge("embedops_finetune_training_eta_seconds", "Seconds the running training still needs.")
        # -- every kind
        self.condition = gauge(
            "embedops_resource_condition",
            "1 for the current status of each condition type, 0 for the other statuses.",
            ("type", "status"),
        )
        self.condition_reason = gauge(
            "embedops_resource_condition_reason", "1 for the current reason of each condition type.", ("type", "reason")
        )
        self.waiting_since = gauge(
            "embedops_resource_waiting_since_timestamp_seconds",
            "Unix time the resource's current wait (phase Pending, Queued or Suspended) began.",
            ("phase", "reason"),
        )
        self.gate_failures = Counter(
            "embedops_index_gate_failures_total",
            "New versions that failed the probe gate (GateFailed events posted).",
            RESOURCE,
            registry=registry,
        )
        self.scheduled_failures = Counter(
            "embedops_index_scheduled_run_failures_total",
            "Scheduled probe, drift and sync Jobs of the live version that failed (Degraded ProbeFailed, DriftFailed "
            "or SyncFailed).",
            RESOURCE + ("step",),
            registry=registry,
        )
        self.sync_rows = Counter(
            "embedops_index_sync_rows_total",
            "Rows the syncs of the live version embedded (new or changed text) and deleted, by operation.",
            RESOURCE + ("operation",),
            registry=registry,
        )
        self.reconciles = Counter(
            "embedops_reconcile_total", "Reconciles run, by result.", ("kind", "result"), registry=registry
        )
        self.reconcile_duration = Histogram(
            "embedops_reconcile_duration_seconds",
            "Time one reconcile took, by result.",
            ("kind", "result"),
            buckets=RECONCILE_BUCKETS,
            registry=registry,
        )
        self.watched = Gauge(
            "embedops_watched_namespace",
            '1 for each namespace the operator watches; namespace="*" when it watches every namespace.',
            ("namespace",),
            registry=registry,
        )
        self.build_info = Gauge(
            "embedops_build_info",
            "The operator's version, source revision, Python and kopf versions; always 1.",
            ("version", "revision", "python_version", "kopf_version"),
            registry=registry,
        )
        self.build_info.labels(
            _package_version("embedops", "0.0.0"),
            os.environ.get(REVISION_ENV) or "unknown",
            platform.python_version(),
            _package_version("kopf", "unknown"),
        ).set(1)
        # Every kind's series exist from the start, at 0: `rate()` and `increase()` then see the
        # first error too, and a dashboard shows 0 rather than "no data".
        for kind in KINDS:
            for result in RESULTS:
                self.reconciles.labels(kind, result)
                self.reconcile_duration.labels(kind, result)

    # -- the operator's calls -----------------------------------------------------------------

    def watching(self, namespaces: Iterable[str]) -> None:
        """The namespaces the operator watches (kopf's `namespaces`); none: every namespace."""
        self.watched.clear()
        for namespace in sorted(set(namespaces)) or ["*"]:
            self.watched.labels(namespace).set(1)

    @contextlib.contextmanager
    def reconciling(self, kind: str) -> Iterator[None]:
        """Count one reconcile of `kind` by its result, and time it."""
        start = time.perf_counter()
        try:
            yield
        except Exception:  # what kopf retries; an interrupt is not a failed reconcile
            self._reconciled(kind, "error", start)
            raise
        self._reconciled(kind, "success", start)

    def _reconciled(self, kind: str, result: str, start: float) -> None:
        self.reconciles.labels(kind, result).inc()
        self.reconcile_duration.labels(kind, result).observe(time.perf_counter() - start)

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
            index_spec = spec if isinstance(spec, EmbeddingIndexSpec) else None
            want += _index_series(self, key, index_spec, status)
            self.gate_failures.labels(*key)  # at 0 until the first failure, so increase() sees it
            self._count_failure(key, status)
            if index_spec is not None and index_spec.source.table is not None:
                want += _sync_series(self, key, index_spec, status)
                self._count_sync(key, status)
        elif isinstance(status, FineTuneJobStatus):
            want += _finetune_series(self, key, spec if isinstance(spec, FineTuneJobSpec) else None, status)
        for gauge, labels, value in want:
            gauge.labels(*labels).set(value)
        # After setting the new series, so a scrape never sees the resource without its series.
        self._remove(key, keep={(id(gauge), labels) for gauge, labels, _ in want})

    def _count_failure(self, key: tuple[str, ...], status: EmbeddingIndexStatus) -> None:
        """Count a scheduled probe, drift or sync run that failed: the planner reports it as Degraded with reason
        ProbeFailed, DriftFailed or SyncFailed and a message naming the Job, which is new for every run (a second
        failure after the first keeps Degraded=True and its lastTransitionTime, but names another Job).

        The first look at an index after the operator starts only remembers its failure: the previous
        operator counted it, and a counter that starts at 1 would hide it from increase() anyway.
        """
        for step in FAILED_STEPS.values():
            self.scheduled_failures.labels(*key, step)  # at 0 from the start, so increase() sees the first
        cond = status.condition(ConditionType.DEGRADED)
        seen = (cond.reason, cond.message) if cond is not None and cond.status == "True" else None
        if seen is not None and seen[0] not in FAILED_STEPS:
            seen = None
        first_look = key not in self._failures
        if seen is not None and not first_look and seen != self._failures[key]:
            self.scheduled_failures.labels(*key, FAILED_STEPS[seen[0]]).inc()
        self._failures[key] = seen

    def _count_sync(self, key: tuple[str, ...], status: EmbeddingIndexStatus) -> None:
        """Add the rows of a sync the status shows for the first time: each sync Job that completes writes a new
        status.sync, with a new lastSyncTime (the start of its diff) or, after a cut-over, a new version. A sync
        that stopped early keeps the previous lastSyncTime, and is not counted (it stops when its version is
        dropped). The first look at an index after the operator starts only remembers its last sync, as
        _count_failure does.
        """
        for operation in SYNC_OPERATIONS:
            self.sync_rows.labels(*key, operation)  # at 0 from the start, so increase() sees the first sync
        sync = status.sync
        seen = (sync.version, sync.last_sync_time) if sync is not None else None
        if sync is not None and key in self._syncs and seen != self._syncs[key]:
            self.sync_rows.labels(*key, "embedded").inc(sync.rows_embedded)
            self.sync_rows.labels(*key, "deleted").inc(sync.rows_deleted)
        self._syncs[key] = seen

    def forget(self, kind: str, namespace: str, name: str) -> None:
        """Remove every series of a deleted resource."""
        key = (namespace, name, kind)
        self._remove(key)
        self._failures.pop(key, None)
        self._syncs.pop(key, None)
        with contextlib.suppress(KeyError):  # older prometheus_client versions raise for a missing series
            self.gate_failures.remove(*key)
        for step in FAILED_STEPS.values():
            with contextlib.suppress(KeyError):
                self.scheduled_failures.remove(*key, step)
        for operation in SYNC_OPERATIONS:
            with contextlib.suppress(KeyError):
                self.sync_rows.remove(*key, operation)

    def _remove(self, key: tuple[str, ...], keep: AbstractSet[tuple[int, tuple[str, ...]]] = frozenset()) -> None:
        """Remove the resource's gauge series (label values starting with `key`) except those in `keep`."""
        for g in self._resource_gauges:
            for values in list(g._metrics):
                if values[: len(key)] == key and (id(g), values) not in keep:
                    g.remove(*values)


def _resource_series(m: Metrics, key: tuple[str, ...], st: BaseStatus) -> list[Series]:
    """The conditions and the current wait: the series every kind has."""
    want: list[Series] = []
    for type_ in ConditionType:
        cond = st.condition(type_)
        if cond is not None:
            want += [(m.condition, key + (type_.value, s), 1 if cond.status == s else 0) for s in CONDITION_STATUSES]
            want.append((m.condition_reason, key + (type_.value, cond.reason), 1))
    progressing = st.condition(ConditionType.PROGRESSING)
    if st.phase in WAITING_PHASES and progressing is not None and progressing.status == "True":
        # Progressing keeps its lastTransitionTime while only its reason changes (Queued -> Unschedulable);
        # a Job's startTime is set when Kueue admits it, so the later of the two is when this wait began.
        stamps = [progressing.last_transition_time] + ([st.job.start_time] if st.job and st.job.start_time else [])
        since = max(_unix(s) for s in stamps)
        want.append((m.waiting_since, key + (st.phase, progressing.reason), since))
    return want


def _index_series(
    m: Metrics, key: tuple[str, ...], spec: EmbeddingIndexSpec | None, st: EmbeddingIndexStatus
) -> list[Series]:
    want: list[Series] = []
    if spec is not None:
        want += [
            (m.min_recall, key, spec.probe.min_recall),
            (m.max_regression, key, spec.probe.max_regression),
            (m.probe_interval, key, spec.probe.interval_minutes * 60),
            (m.drift_threshold, key, spec.drift.threshold),
        ]
    if st.live_version is not None:
        want.append((m.live_version, key, st.live_version))
    if st.rows is not None:
        want.append((m.rows, key, st.rows))
    want.append((m.retained, key, len(st.versions)))
    live = live_version(st.versions)
    if live is not None and live.probe is not None:  # the publish step's probe: the version's own baseline
        want.append((m.cutover_recall, key + (str(live.probe.k),), live.probe.recall_at_k))
    if st.probe is not None:
        want += [
            (m.probe_recall, key + (str(st.probe.k),), st.probe.recall_at_k),
            (m.probe_mrr, key + ("10",), st.probe.mrr_at_10),
            (m.probe_ndcg, key + ("10",), st.probe.ndcg_at_10),
            (m.probe_version, key, st.probe.version),
            (m.probe_time, key, _unix(st.probe.checked_at)),
        ]
    if st.drift is not None:
        want += [
            (m.drift_score, key, st.drift.score),
            (m.drift_version, key, st.drift.version),
            (m.drift_time, key, _unix(st.drift.checked_at)),
        ]
    want.append((m.reindex_active, key, 1 if st.active_job else 0))
    if st.reindex is not None:
        want += [(m.reindex_version, key, st.reindex.version), (m.reindex_rows, key, st.reindex.rows_done)]
        if st.reindex.rows_per_second is not None:
            want.append((m.reindex_rate, key, st.reindex.rows_per_second))
    return want


def _sync_series(m: Metrics, key: tuple[str, ...], spec: EmbeddingIndexSpec, st: EmbeddingIndexStatus) -> list[Series]:
    """The sync of a table index's live version: since when it holds its table, and its last sync's counts."""
    want: list[Series] = [(m.sync_interval, key, spec.sync.interval_minutes * 60)]
    live = live_version(st.versions)
    if live is None:
        return want
    if (since := st.synced_since(live)) is not None:
        want.append((m.sync_time, key, _unix(since)))
    if st.sync is not None and st.sync.version == live.version:  # after a cut-over: the previous version's sync
        want += [(m.sync_pending, key, st.sync.pending_rows), (m.sync_changed, key, st.sync.changed_fraction)]
    return want


def _finetune_series(
    m: Metrics, key: tuple[str, ...], spec: FineTuneJobSpec | None, st: FineTuneJobStatus
) -> list[Series]:
    want: list[Series] = []
    if spec is not None:
        want.append((m.ft_gpus, key, 1 if spec.resources.gpus is None else spec.resources.gpus))
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
    job = st.job
    if job is not None and job.step == "train" and st.active_job == job.name and job.progress is not None:
        progress = job.progress
        want.append((m.train_step, key, progress.done))
        optional = (
            (m.train_last_step, progress.total),
            (m.train_loss, progress.loss),
            (m.train_eta, progress.eta_seconds),
        )
        want += [(gauge, key, value) for gauge, value in optional if value is not None]
    return want


def _unix(stamp: str) -> float:
    if (when := times.parse_time(stamp)) is None:
        raise ValueError("a status time is empty")
    return when.timestamp()


def _package_version(package: str, default: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return default


METRICS = Metrics()


_served: set[int] = set()


def serve(port: int) -> None:
    """Serve /metrics on `port` in a background thread, once per process (0: don't)."""
    if port and port not in _served:
        start_http_server(port)
        _served.add(port)
