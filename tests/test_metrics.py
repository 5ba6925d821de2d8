"""The operator's Prometheus metrics: documented exactly, one label set per resource, series that
follow the status, counters the executor drives, and a scrape promtool finds clean."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from embedops import reconcile
from embedops.api.conditions import ConditionType, Reason
from embedops.api.finetune import FineTuneJobSpec, FineTuneJobStatus
from embedops.api.index import EmbeddingIndexSpec, EmbeddingIndexStatus, SyncStatus
from embedops.api.kinds import KINDS
from embedops.metrics import RESOURCE, Metrics

DOC = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


def _documented() -> dict[str, tuple[str, set[str]]]:
    """Metric name -> (type, labels), from the table in docs/metrics.md."""
    rows = re.findall(r"^\| (embedops_\w+) \| (\w+) \| ([^|]+) \|", DOC.read_text(), flags=re.M)
    return {name: (type_, {label.strip() for label in labels.split(",")}) for name, type_, labels in rows}


def _registered(metrics: Metrics) -> dict[str, tuple[str, set[str]]]:
    out = {}
    for value in vars(metrics).values():
        if hasattr(value, "_labelnames"):
            name = value._name.removesuffix("_total") + ("_total" if value._type == "counter" else "")
            out[name] = (value._type, set(value._labelnames))
    return out


def test_every_metric_type_and_label_is_documented_and_nothing_else():
    assert _registered(Metrics(CollectorRegistry())) == _documented()


def test_every_resource_metric_has_the_resource_labels():
    for name, (_, labels) in _documented().items():
        if name.startswith(("embedops_index_", "embedops_finetune_", "embedops_resource_")):
            assert set(RESOURCE) <= labels, name
            assert not labels & {"index", "finetunejob"}, name
        assert not re.search(r"_at_\d+$", name), f"{name}: a depth belongs in the k label"


# -- series from statuses ---------------------------------------------------------------------


PROBE = {"k": 20, "recallAtK": 0.9, "mrrAt10": 0.7, "ndcgAt10": 0.8, "queries": 50, "checkedAt": "2026-11-25T10:00:00Z"}
SPEC = {
    "source": {"datasetRef": {"name": "ds"}},
    "target": {"name": "docs"},
    "model": {"name": "m"},
    "probe": {"intervalMinutes": 45},
}


def _status(live: int, versions: list[int]) -> EmbeddingIndexStatus:
    return EmbeddingIndexStatus.model_validate(
        {
            "liveVersion": live,
            "versions": [
                {
                    "version": v,
                    "table": f"docs_v{v}",
                    "model": "m",
                    "rows": 100 * v,
                    "state": "Live" if v == live else "Ready",
                    "probe": {**PROBE, "version": v, "recallAtK": 0.95},
                }
                for v in versions
            ],
            "rows": 100 * live,
            "probe": {**PROBE, "version": live},
        }
    )


def _series(registry: CollectorRegistry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for m in registry.collect() for s in m.samples if s.name == name}


def _of(series: dict, **match: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {k: v for k, v in series.items() if all((label, value) in k for label, value in match.items())}


def _one(registry: CollectorRegistry, metric: str, /, **match: str) -> float:
    (value,) = _of(_series(registry, metric), **match).values()
    return value


def test_index_series_follow_versions_in_values_not_labels_and_vanish_on_delete():
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.observe("EmbeddingIndex", "ns", "docs", EmbeddingIndexSpec.model_validate(SPEC), _status(1, [1]))
    metrics.observe("EmbeddingIndex", "ns", "other", None, _status(1, [1]))
    before = {s.name for m in registry.collect() for s in m.samples}
    recall_series = set(_of(_series(registry, "embedops_index_probe_recall_ratio"), name="docs"))
    metrics.observe("EmbeddingIndex", "ns", "docs", EmbeddingIndexSpec.model_validate(SPEC), _status(2, [2, 1]))
    # A cut-over changes values: the same series, no new ones.
    assert set(_of(_series(registry, "embedops_index_probe_recall_ratio"), name="docs")) == recall_series
    assert {s.name for m in registry.collect() for s in m.samples} == before
    assert _one(registry, "embedops_index_live_version", name="docs") == 2
    assert _one(registry, "embedops_index_probe_version", name="docs") == 2
    assert _one(registry, "embedops_index_rows", name="docs") == 200
    assert _one(registry, "embedops_index_retained_versions", name="docs") == 2
    assert _one(registry, "embedops_index_cutover_recall_ratio", name="docs", k="20") == 0.95
    assert _one(registry, "embedops_index_probe_recall_ratio", name="docs", k="20") == 0.9
    assert _one(registry, "embedops_index_probe_interval_seconds", name="docs") == 45 * 60
    assert _one(registry, "embedops_index_max_regression_ratio", name="docs") == 0.02
    assert {dict(k)["k"] for k in _series(registry, "embedops_index_probe_ndcg_ratio")} == {"10"}
    assert not _of(_series(registry, "embedops_index_probe_interval_seconds"), name="other")  # no spec, no series
    for m in registry.collect():
        for sample in m.samples:
            assert "version" not in sample.labels or sample.name == "embedops_build_info", sample

    metrics.forget("EmbeddingIndex", "ns", "docs")
    for name in (
        "embedops_index_rows",
        "embedops_index_probe_recall_ratio",
        "embedops_resource_condition",
        "embedops_index_gate_failures_total",
        "embedops_index_scheduled_run_failures_total",
    ):
        assert not _of(_series(registry, name), name="docs"), name
    assert _series(registry, "embedops_index_rows")  # "other" keeps its series
    assert _of(_series(registry, "embedops_index_gate_failures_total"), name="other") == {
        (("kind", "EmbeddingIndex"), ("name", "other"), ("namespace", "ns")): 0
    }


def _failed_run(status: EmbeddingIndexStatus, reason: Reason, job: str, minute: int) -> EmbeddingIndexStatus:
    status = status.model_copy(deep=True)
    now = NOW + dt.timedelta(minutes=minute)
    status.set_condition(ConditionType.DEGRADED, "True", reason, f"Job {job} failed: deadline", generation=1, now=now)
    return status


def test_a_failed_probe_drift_or_sync_run_counts_once_per_job():
    registry = CollectorRegistry()
    metrics = Metrics(registry)

    def failures(step: str) -> float:
        return _one(registry, "embedops_index_scheduled_run_failures_total", name="docs", step=step)

    healthy = _status(1, [1])
    healthy.set_condition(ConditionType.DEGRADED, "False", Reason.SERVING, "", generation=1, now=NOW)
    metrics.observe("EmbeddingIndex", "ns", "docs", None, healthy)
    assert failures("probe") == failures("drift") == failures("sync") == 0  # present before any failure
    probe1 = _failed_run(healthy, Reason.PROBE_FAILED, "docs-probe-1", 1)
    metrics.observe("EmbeddingIndex", "ns", "docs", None, probe1)
    metrics.observe("EmbeddingIndex", "ns", "docs", None, probe1)  # the same failed Job, seen again
    assert failures("probe") == 1
    # The next run fails too: Degraded stays True (same lastTransitionTime), the message names the new Job.
    probe2 = _failed_run(probe1, Reason.PROBE_FAILED, "docs-probe-2", 31)
    assert (
        probe2.condition(ConditionType.DEGRADED).last_transition_time
        == probe1.condition(ConditionType.DEGRADED).last_transition_time
    )
    metrics.observe("EmbeddingIndex", "ns", "docs", None, probe2)
    metrics.observe("EmbeddingIndex", "ns", "docs", None, _failed_run(probe2, Reason.DRIFT_FAILED, "docs-drift-1", 40))
    metrics.observe("EmbeddingIndex", "ns", "docs", None, _failed_run(healthy, Reason.SYNC_FAILED, "docs-sync-1", 45))
    assert (failures("probe"), failures("drift"), failures("sync")) == (2, 1, 1)
    # QualityDegraded and AnnIndexStale are not failed runs.
    metrics.observe("EmbeddingIndex", "ns", "docs", None, _failed_run(healthy, Reason.QUALITY_DEGRADED, "none", 50))
    metrics.observe("EmbeddingIndex", "ns", "docs", None, _failed_run(healthy, Reason.ANN_INDEX_STALE, "none", 55))
    assert (failures("probe"), failures("drift"), failures("sync")) == (2, 1, 1)

    # A restarted operator (a new Metrics) sees the failure the previous one counted: not counted again.
    restarted = Metrics(CollectorRegistry())
    restarted.observe("EmbeddingIndex", "ns", "docs", None, probe2)
    assert restarted._failures and not any(s.value for m in restarted.scheduled_failures.collect() for s in m.samples)


# -- sync with a source table -----------------------------------------------------------------

TABLE_SPEC = {**SPEC, "source": {"table": {"table": "articles"}}, "sync": {"intervalMinutes": 10}}


def _at(minute: int) -> str:
    return (NOW + dt.timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _unix(minute: int) -> float:
    return (NOW + dt.timedelta(minutes=minute)).timestamp()


def _table_status(
    live: int, *, created: int, synced: int | None = None, sync: dict | None = None
) -> EmbeddingIndexStatus:
    """A table index serving `live`, built at minute `created` (caught up at `synced`), with `sync` as status.sync."""
    status = _status(live, [live])
    status.versions[0].created_at = _at(created)
    status.versions[0].synced_at = _at(synced) if synced is not None else None
    if sync is not None:
        status.sync = SyncStatus.model_validate(
            {"rowsEmbedded": 0, "rowsDeleted": 0, "lagSeconds": 1.5, "version": live} | sync
        )
    return status


def test_a_table_index_exports_since_when_its_live_version_holds_its_table():
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    spec = EmbeddingIndexSpec.model_validate(TABLE_SPEC)

    def sync_series() -> dict[str, float]:
        return {
            name: _one(registry, f"embedops_index_sync_{name}", name="docs")
            for name in ("timestamp_seconds", "interval_seconds", "pending_rows", "changed_ratio")
            if _of(_series(registry, f"embedops_index_sync_{name}"), name="docs")
        }

    # Built at minute 0, never synced: it holds its table as of its build.
    metrics.observe("EmbeddingIndex", "ns", "docs", spec, _table_status(1, created=0))
    assert sync_series() == {"timestamp_seconds": _unix(0), "interval_seconds": 600}
    # Its last complete sync's diff started at minute 20 (after the version's own syncedAt, 10); a later one stopped
    # with 40 rows pending; 5 % of its rows changed since the build.
    sync = {"lastSyncTime": _at(20), "pendingRows": 40, "changedFraction": 0.05}
    metrics.observe("EmbeddingIndex", "ns", "docs", spec, _table_status(1, created=0, synced=10, sync=sync))
    assert sync_series() == {
        "timestamp_seconds": _unix(20),
        "interval_seconds": 600,
        "pending_rows": 40,
        "changed_ratio": 0.05,
    }
    # Cut over to v2, built at 30 and caught up at 45 in the cut-over's lock; status.sync is still v1's: it says
    # nothing of v2's pending rows or changes, and v2's catch-up is since when it holds its table.
    sync = {"version": 1, "lastSyncTime": _at(50), "pendingRows": 40, "changedFraction": 0.05}
    metrics.observe("EmbeddingIndex", "ns", "docs", spec, _table_status(2, created=30, synced=45, sync=sync))
    assert sync_series() == {"timestamp_seconds": _unix(45), "interval_seconds": 600}
    # v2 without a catch-up: its build.
    metrics.observe("EmbeddingIndex", "ns", "docs", spec, _table_status(2, created=30, sync=sync))
    assert sync_series()["timestamp_seconds"] == _unix(30)

    # The schedule off: the interval says 0 (the alert never fires); no live version yet: only the interval.
    off = EmbeddingIndexSpec.model_validate({**TABLE_SPEC, "sync": {"intervalMinutes": 0}})
    metrics.observe("EmbeddingIndex", "ns", "docs", off, _table_status(2, created=30))
    assert sync_series() == {"timestamp_seconds": _unix(30), "interval_seconds": 0}
    metrics.observe("EmbeddingIndex", "ns", "docs", spec, EmbeddingIndexStatus())
    assert sync_series() == {"interval_seconds": 600}

    # A dataset index is not synced, and an index whose spec does not parse says nothing of its sync.
    metrics.observe("EmbeddingIndex", "ns", "ds", EmbeddingIndexSpec.model_validate(SPEC), _table_status(1, created=0))
    metrics.observe("EmbeddingIndex", "ns", "broken", None, _table_status(1, created=0))
    for name in ("ds", "broken"):
        for metric in ("timestamp_seconds", "interval_seconds", "rows_total"):
            assert not _of(_series(registry, f"embedops_index_sync_{metric}"), name=name), (name, metric)

    metrics.forget("EmbeddingIndex", "ns", "docs")
    for metric in ("timestamp_seconds", "interval_seconds", "rows_total"):
        assert not _series(registry, f"embedops_index_sync_{metric}"), metric


def test_rows_synced_count_each_sync_once_from_zero_and_not_again_after_a_restart():
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    spec = EmbeddingIndexSpec.model_validate(TABLE_SPEC)

    def synced(status: EmbeddingIndexStatus, on: Metrics = metrics, reg: CollectorRegistry = registry) -> tuple:
        on.observe("EmbeddingIndex", "ns", "docs", spec, status)
        return tuple(
            _one(reg, "embedops_index_sync_rows_total", name="docs", operation=op) for op in ("embedded", "deleted")
        )

    assert synced(_table_status(1, created=0)) == (0, 0)  # present before the first sync
    first = _table_status(1, created=0, sync={"lastSyncTime": _at(5), "rowsEmbedded": 120, "rowsDeleted": 7})
    assert synced(first) == (120, 7)
    assert synced(first) == (120, 7)  # the same sync, seen at the next reconcile
    # The next sync finds nothing, then one finds 3 changed rows: a new lastSyncTime each.
    assert synced(_table_status(1, created=0, sync={"lastSyncTime": _at(10)})) == (120, 7)
    second = _table_status(1, created=0, sync={"lastSyncTime": _at(15), "rowsEmbedded": 3, "rowsDeleted": 1})
    assert synced(second) == (123, 8)
    # After a cut-over, the new version's first sync: a new version (its diff may start in the same second).
    assert synced(_table_status(2, created=12, sync={"lastSyncTime": _at(15), "rowsEmbedded": 2})) == (125, 8)

    # A restarted operator (a new Metrics) sees the sync the previous one counted: not counted again.
    restarted_registry = CollectorRegistry()
    restarted = Metrics(restarted_registry)
    assert synced(second, restarted, restarted_registry) == (0, 0)
    third = _table_status(1, created=0, sync={"lastSyncTime": _at(20), "rowsEmbedded": 4, "rowsDeleted": 2})
    assert synced(third, restarted, restarted_registry) == (4, 2)


def test_a_wait_exports_when_it_began():
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    status = FineTuneJobStatus.model_validate(
        {
            "phase": "Queued",
            "conditions": [
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "Queued",
                    "lastTransitionTime": "2026-11-25T10:00:00Z",
                }
            ],
            "job": {"name": "ft-train", "step": "train"},
        }
    )
    metrics.observe("FineTuneJob", "ml", "ft", None, status)
    waits = _series(registry, "embedops_resource_waiting_since_timestamp_seconds")
    assert {(dict(k)["phase"], dict(k)["reason"]): v for k, v in waits.items()} == {
        ("Queued", "Queued"): dt.datetime(2026, 11, 25, 10, tzinfo=dt.UTC).timestamp()
    }
    # Kueue admits the Job (startTime), no node fits: a new wait, with the same Progressing transition time.
    status.phase = "Pending"
    status.conditions[0].reason = "Unschedulable"
    status.job.start_time = "2026-11-25T11:00:00Z"
    metrics.observe("FineTuneJob", "ml", "ft", None, status)
    waits = _series(registry, "embedops_resource_waiting_since_timestamp_seconds")
    assert {(dict(k)["phase"], dict(k)["reason"]): v for k, v in waits.items()} == {
        ("Pending", "Unschedulable"): dt.datetime(2026, 11, 25, 11, tzinfo=dt.UTC).timestamp()
    }
    status.phase = "Running"
    metrics.observe("FineTuneJob", "ml", "ft", None, status)
    assert not _series(registry, "embedops_resource_waiting_since_timestamp_seconds")


def test_training_progress_and_gpus():
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    progress = {"task": "Training steps", "done": 120, "total": 400, "rate": 2.0, "etaSeconds": 140, "loss": 0.31}
    status = FineTuneJobStatus.model_validate(
        {
            "phase": "Running",
            "activeJob": "ft-train",
            "job": {"name": "ft-train", "step": "train", "progress": progress},
        }
    )
    spec = FineTuneJobSpec.model_validate({"datasetRef": {"name": "ds"}})
    metrics.observe("FineTuneJob", "ml", "ft", spec, status)
    got = {
        name: _one(registry, f"embedops_finetune_{name}", name="ft")
        for name in ("training_step", "training_last_step", "training_loss", "training_eta_seconds", "gpus")
    }
    assert got == {
        "training_step": 120,
        "training_last_step": 400,
        "training_loss": 0.31,
        "training_eta_seconds": 140,
        "gpus": 1,
    }
    status.active_job = None  # finished: no progress series
    metrics.observe("FineTuneJob", "ml", "ft", spec, status)
    assert not _series(registry, "embedops_finetune_training_step")


def test_build_info_and_watched_namespaces(monkeypatch):
    monkeypatch.setenv("EMBEDOPS_REVISION", "abc1234")
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    ((labels, value),) = _series(registry, "embedops_build_info").items()
    info = dict(labels)
    assert value == 1 and info["revision"] == "abc1234"
    assert info["kopf_version"] == importlib.metadata.version("kopf")
    monkeypatch.delenv("EMBEDOPS_REVISION")
    bare = CollectorRegistry()
    Metrics(bare)
    assert dict(next(iter(_series(bare, "embedops_build_info"))))["revision"] == "unknown"
    metrics.watching([])
    assert _series(registry, "embedops_watched_namespace") == {(("namespace", "*"),): 1}
    metrics.watching(["search", "ml"])
    assert set(_series(registry, "embedops_watched_namespace")) == {(("namespace", "ml"),), (("namespace", "search"),)}


def test_conditions_one_series_per_status_and_the_current_reason():
    """The issue's case: an index serving at recall 0.42 with minRecall 0.5 is Ready and Degraded."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    status = _status(1, [1])
    status.set_condition(ConditionType.READY, "True", Reason.SERVING, "serving v1", generation=1, now=NOW)
    status.set_condition(
        ConditionType.DEGRADED, "True", Reason.QUALITY_DEGRADED, "recall@20 0.42 < 0.5", generation=1, now=NOW
    )
    metrics.observe("EmbeddingIndex", "ns", "docs", None, status)

    conditions = {
        (dict(k)["type"], dict(k)["status"]): v
        for k, v in _of(_series(registry, "embedops_resource_condition"), name="docs").items()
    }
    assert conditions == {
        ("Ready", "True"): 1,
        ("Ready", "False"): 0,
        ("Ready", "Unknown"): 0,
        ("Degraded", "True"): 1,
        ("Degraded", "False"): 0,
        ("Degraded", "Unknown"): 0,
    }
    reasons = {(dict(k)["type"], dict(k)["reason"]) for k in _series(registry, "embedops_resource_condition_reason")}
    assert reasons == {("Ready", "Serving"), ("Degraded", "QualityDegraded")}

    # Recovered: the same series change value; the old reason's series goes.
    status.set_condition(ConditionType.DEGRADED, "False", Reason.SERVING, "", generation=1, now=NOW)
    status.set_condition(
        ConditionType.PROGRESSING, "False", Reason.GATE_FAILED, "v2 not cut over", generation=1, now=NOW
    )
    metrics.observe("EmbeddingIndex", "ns", "docs", None, status)
    conditions = {
        (dict(k)["type"], dict(k)["status"]): v for k, v in _series(registry, "embedops_resource_condition").items()
    }
    assert conditions[("Degraded", "True")] == 0 and conditions[("Degraded", "False")] == 1
    assert conditions[("Progressing", "False")] == 1 and len(conditions) == 9
    reasons = {(dict(k)["type"], dict(k)["reason"]) for k in _series(registry, "embedops_resource_condition_reason")}
    assert reasons == {("Ready", "Serving"), ("Degraded", "Serving"), ("Progressing", "GateFailed")}


def test_finetune_series_carry_k_and_follow_the_status():
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    scores = {"ndcgAt10": 0.8, "mrrAt10": 0.7, "recallAt10": 0.9, "recallAt100": 0.97, "queries": 100}
    status = FineTuneJobStatus.model_validate({"baseMetrics": scores, "tunedMetrics": scores, "durationSeconds": 60})
    metrics.observe("FineTuneJob", "ml", "ft", None, status)
    recall = {
        (dict(k)["model"], dict(k)["k"]): v for k, v in _series(registry, "embedops_finetune_recall_ratio").items()
    }
    assert recall == {("base", "10"): 0.9, ("base", "100"): 0.97, ("tuned", "10"): 0.9, ("tuned", "100"): 0.97}
    assert all(dict(k)["kind"] == "FineTuneJob" for k in _series(registry, "embedops_finetune_ndcg_ratio"))
    # A rerun clears the tuned scores: their series go with them.
    metrics.observe("FineTuneJob", "ml", "ft", None, FineTuneJobStatus.model_validate({"baseMetrics": scores}))
    assert {dict(k)["model"] for k in _series(registry, "embedops_finetune_mrr_ratio")} == {"base"}
    assert not _series(registry, "embedops_finetune_duration_seconds")
    assert not _series(registry, "embedops_index_gate_failures_total")  # indexes only


def test_reconcile_series_exist_at_zero_for_every_kind():
    registry = CollectorRegistry()
    Metrics(registry)
    totals = _series(registry, "embedops_reconcile_total")
    assert totals == {(("kind", kind), ("result", result)): 0 for kind in KINDS for result in ("success", "error")}
    assert set(_series(registry, "embedops_reconcile_duration_seconds_count")) == {
        (("kind", kind), ("result", result)) for kind in KINDS for result in ("success", "error")
    }
    assert set(_series(registry, "embedops_build_info").values()) == {1}


# -- the executor's calls ---------------------------------------------------------------------


@pytest.fixture
def executor(monkeypatch):
    """The operator's executor with a fake API server holding one index; the plan is the test's."""
    from embedops.handlers import executor, kube

    body = {
        "apiVersion": "embedops.dev/v1alpha1",
        "kind": "EmbeddingIndex",
        "metadata": {"name": "docs", "namespace": "metrics-test", "uid": "u1"},
        "spec": {},
        "status": {},
    }
    posted = []
    monkeypatch.setattr(kube, "get_object", lambda kind, ns, name: body)
    monkeypatch.setattr(kube, "owned_jobs", lambda ns, uid: {})
    monkeypatch.setattr(kube, "post_event", lambda body, *event: posted.append(event))
    monkeypatch.setattr(kube, "replace_status", lambda *args: None)
    monkeypatch.setattr(reconcile, "references", lambda body: [])
    executor.posted = posted
    yield executor
    from embedops.metrics import METRICS

    METRICS.forget("EmbeddingIndex", "metrics-test", "docs")


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_gate_failure_event_counts_once_per_event_posted(executor, monkeypatch):
    key = {"namespace": "metrics-test", "name": "docs", "kind": "EmbeddingIndex"}
    gate = ("Warning", Reason.GATE_FAILED.value, "v2 not cut over: recall@10 0.4200 < 0.5")
    plans = iter(
        [
            reconcile.Plan(events=[("Normal", "JobCreated", "created Job x")]),
            reconcile.Plan(events=[gate]),
            reconcile.Plan(),
        ]
    )
    monkeypatch.setattr(reconcile, "plan", lambda *args, **kwargs: next(plans))
    executor.reconcile_resource("EmbeddingIndex", "metrics-test", "docs")
    assert REGISTRY.get_sample_value("embedops_index_gate_failures_total", key) == 0  # present before any failure
    executor.reconcile_resource("EmbeddingIndex", "metrics-test", "docs")
    executor.reconcile_resource("EmbeddingIndex", "metrics-test", "docs")
    assert REGISTRY.get_sample_value("embedops_index_gate_failures_total", key) == 1
    assert [reason for _, reason, _ in executor.posted] == ["JobCreated", "GateFailed"]


def test_reconciles_are_counted_by_result_and_timed(executor, monkeypatch):
    success = {"kind": "EmbeddingIndex", "result": "success"}
    error = {"kind": "EmbeddingIndex", "result": "error"}
    before = (
        _value("embedops_reconcile_total", **success),
        _value("embedops_reconcile_total", **error),
        _value("embedops_reconcile_duration_seconds_count", **success),
        _value("embedops_reconcile_duration_seconds_count", **error),
    )
    monkeypatch.setattr(reconcile, "plan", lambda *args, **kwargs: reconcile.Plan())
    executor.reconcile_resource("EmbeddingIndex", "metrics-test", "docs")

    def broken(*args, **kwargs):
        raise RuntimeError("conflict")

    monkeypatch.setattr(reconcile, "plan", broken)
    with pytest.raises(RuntimeError):
        executor.reconcile_resource("EmbeddingIndex", "metrics-test", "docs")
    after = (
        _value("embedops_reconcile_total", **success),
        _value("embedops_reconcile_total", **error),
        _value("embedops_reconcile_duration_seconds_count", **success),
        _value("embedops_reconcile_duration_seconds_count", **error),
    )
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1, 1]


# -- the scrape -------------------------------------------------------------------------------


def test_the_operators_scrape_has_no_created_series_and_promtool_finds_it_clean(executor, monkeypatch):
    """What the operator serves (the default registry, after reconciles), as promtool lints it."""
    status = _status(1, [1])
    status.set_condition(
        ConditionType.DEGRADED, "True", Reason.QUALITY_DEGRADED, "recall below minRecall", generation=1, now=NOW
    )
    gate = ("Warning", Reason.GATE_FAILED.value, "v2 not cut over")
    monkeypatch.setattr(reconcile, "plan", lambda *args, **kwargs: reconcile.Plan(status=status, events=[gate]))
    executor.reconcile_resource("EmbeddingIndex", "metrics-test", "docs")
    # Every other family with samples too: a training that waited, then runs, and the watched namespaces.
    from embedops.metrics import METRICS

    progress = {"task": "Training steps", "done": 1, "total": 9, "rate": 1.0, "etaSeconds": 8, "loss": 0.5}
    training = FineTuneJobStatus.model_validate(
        {
            "phase": "Pending",
            "activeJob": "ft-train",
            "conditions": [
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "Unschedulable",
                    "lastTransitionTime": "2026-11-25T10:00:00Z",
                }
            ],
            "job": {"name": "ft-train", "step": "train", "progress": progress},
        }
    )
    spec = FineTuneJobSpec.model_validate({"datasetRef": {"name": "ds"}})
    METRICS.observe("FineTuneJob", "metrics-test", "ft", spec, training)
    table = EmbeddingIndexSpec.model_validate(TABLE_SPEC)
    METRICS.observe("EmbeddingIndex", "metrics-test", "articles", table, _table_status(1, created=0))
    synced = _table_status(1, created=0, sync={"lastSyncTime": _at(5), "rowsEmbedded": 3, "pendingRows": 1})
    METRICS.observe("EmbeddingIndex", "metrics-test", "articles", table, synced)
    METRICS.watching(["metrics-test"])
    try:
        text = generate_latest(REGISTRY).decode()
    finally:
        METRICS.forget("FineTuneJob", "metrics-test", "ft")
        METRICS.forget("EmbeddingIndex", "metrics-test", "articles")
    assert "embedops_finetune_training_loss{" in text and "embedops_resource_waiting_since_timestamp_seconds{" in text
    assert 'embedops_index_sync_rows_total{kind="EmbeddingIndex",name="articles",namespace="metrics-test",' in text
    assert "embedops_index_sync_pending_rows{" in text and "embedops_index_sync_changed_ratio{" in text
    assert "_created" not in text
    assert (
        'embedops_resource_condition{kind="EmbeddingIndex",name="docs",namespace="metrics-test",'
        'status="True",type="Degraded"} 1.0' in text
    )
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not on PATH")
    out = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out.stdout + out.stderr
