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
from embedops.api.index import EmbeddingIndexSpec, EmbeddingIndexStatus
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


def test_a_failed_probe_or_drift_run_counts_once_per_job():
    registry = CollectorRegistry()
    metrics = Metrics(registry)

    def failures(step: str) -> float:
        return _one(registry, "embedops_index_scheduled_run_failures_total", name="docs", step=step)

    healthy = _status(1, [1])
    healthy.set_condition(ConditionType.DEGRADED, "False", Reason.SERVING, "", generation=1, now=NOW)
    metrics.observe("EmbeddingIndex", "ns", "docs", None, healthy)
    assert failures("probe") == failures("drift") == 0  # present before any failure
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
    assert (failures("probe"), failures("drift")) == (2, 1)
    # QualityDegraded is not a failed run.
    metrics.observe("EmbeddingIndex", "ns", "docs", None, _failed_run(healthy, Reason.QUALITY_DEGRADED, "none", 50))
    assert (failures("probe"), failures("drift")) == (2, 1)

    # A restarted operator (a new Metrics) sees the failure the previous one counted: not counted again.
    restarted = Metrics(CollectorRegistry())
    restarted.observe("EmbeddingIndex", "ns", "docs", None, probe2)
    assert restarted._failures and not any(s.value for m in restarted.scheduled_failures.collect() for s in m.samples)


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
    METRICS.watching(["metrics-test"])
    try:
        text = generate_latest(REGISTRY).decode()
    finally:
        METRICS.forget("FineTuneJob", "metrics-test", "ft")
    assert "embedops_finetune_training_loss{" in text and "embedops_resource_waiting_since_timestamp_seconds{" in text
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
