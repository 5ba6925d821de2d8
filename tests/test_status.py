"""The status builders (embedops.status): what each one says, and when its conditions' times move."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel

from embedops import status
from embedops.api.common import JobStatus
from embedops.api.conditions import Reason
from embedops.api.dataset import DatasetCounts, EmbeddingDatasetStatus
from embedops.api.finetune import FineTuneJobSpec, FineTuneJobStatus, ModelArtifact, ValidationScores
from embedops.api.index import (
    DriftResult,
    EmbeddingIndexSpec,
    EmbeddingIndexStatus,
    IndexVersion,
    ProbeResult,
    ReindexProgress,
)
from embedops.api.scores import RetrievalScores
from embedops.results import PrepareResult, PublishResult, TrainResult

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(minutes=5)
AT = status.At(generation=3, now=NOW)
JOB = JobStatus(name="ix-embed-1a2b", step="embed", active=1)


def conditions(s) -> dict[str, tuple[str, str, str]]:
    """Each condition as (status, reason, message), by type."""
    return {c.type: (c.status, c.reason, c.message) for c in s.conditions}


def times_of(s) -> dict[str, str]:
    return {c.type: c.last_transition_time for c in s.conditions}


# -- work under way and failures ----------------------------------------------------------------


def test_progressing_marks_the_work_and_a_not_yet_ready_resource():
    got = status.progressing(EmbeddingDatasetStatus(), Reason.PREPARING, "preparing ds", AT, phase="Queued")
    assert conditions(got) == {
        "Ready": ("False", "Preparing", "preparing ds"),
        "Progressing": ("True", "Preparing", "preparing ds"),
    }
    assert (got.phase, got.observed_generation) == ("Queued", 3)
    assert {c.observed_generation for c in got.conditions} == {3}


def test_progressing_keeps_what_the_last_run_published():
    base = status.index_observed(INDEX_SPEC, [version(1, "Live")], AT)
    got = status.progressing(base, Reason.EMBEDDING, "embedding v2", AT)
    assert conditions(got)["Ready"] == ("True", "Serving", "serving v1 (100 rows)")
    assert conditions(got)["Progressing"] == ("True", "Embedding", "embedding v2")
    assert (got.live_version, got.phase) == (1, "Running")
    assert conditions(base)["Progressing"][0] == "False", "the base is not changed"


def test_progressing_after_a_failure_clears_degraded_but_not_a_quality_problem():
    failure = status.failed(EmbeddingDatasetStatus, Reason.JOB_FAILED, "oom", AT)
    rerun = status.progressing(failure, Reason.PREPARING, "preparing again", AT)
    assert conditions(rerun)["Degraded"] == ("False", "Preparing", "preparing again")
    serving_badly = status.index_observed(INDEX_SPEC, [version(1, "Live")], AT, probe=probe(1, recall=0.1))
    reindex = status.progressing(serving_badly, Reason.EMBEDDING, "embedding v2", AT)
    assert conditions(reindex)["Degraded"][:2] == ("True", "QualityDegraded")


def test_failed_is_terminal_and_keeps_the_base_fields():
    base = status.running(EmbeddingDatasetStatus(fingerprint="f1"), Reason.PREPARING, "preparing", AT, JOB)
    got = status.failed(EmbeddingDatasetStatus, Reason.INVALID_SPEC, "spec.source: bad", AT, base)
    assert conditions(got) == {
        "Ready": ("False", "InvalidSpec", "spec.source: bad"),
        "Progressing": ("False", "InvalidSpec", "spec.source: bad"),
        "Degraded": ("True", "InvalidSpec", "spec.source: bad"),
    }
    assert (got.phase, got.active_job, got.fingerprint) == ("Failed", None, "f1")
    assert base.active_job == JOB.name, "the base is not changed"
    fresh = status.failed(FineTuneJobStatus, Reason.MISSING_DATABASE, "no db", AT)
    assert isinstance(fresh, FineTuneJobStatus) and fresh.observed_generation == 3


def test_running_names_the_job():
    got = status.running(FineTuneJobStatus(), Reason.TRAINING, "training", AT, JOB, phase="Pending")
    assert (got.active_job, got.job, got.phase) == (JOB.name, JOB, "Pending")
    assert conditions(got)["Progressing"][:2] == ("True", "Training")


def test_step_failed_remembers_the_inputs_it_ran_with():
    base = status.running(FineTuneJobStatus(), Reason.TRAINING, "training", AT, JOB)
    done = JOB.model_copy(update={"active": 0, "failed": 3})
    got = status.step_failed(base, Reason.JOB_FAILED, "train: CUDA out of memory", AT, inputs_hash="h1", job=done)
    assert (got.inputs_hash, got.job, got.active_job, got.phase) == ("h1", done, None, "Failed")
    assert conditions(got)["Degraded"] == ("True", "JobFailed", "train: CUDA out of memory")


def test_finished_and_reindexing_record_on_the_status_given():
    s = EmbeddingIndexStatus()
    assert status.finished(s, "h2", JOB) is s and (s.inputs_hash, s.job) == ("h2", JOB)
    progress = ReindexProgress(version=2, rows_done=40, rows_total=100)
    assert status.reindexing(s, progress).reindex == progress
    assert status.reindexing(s, None).reindex is None


# -- done ---------------------------------------------------------------------------------------


def prepared(**counts) -> PrepareResult:
    return PrepareResult(
        counts=DatasetCounts(**counts),
        fingerprint="f" * 64,
        location="/workspace/ds",
        invalid_samples=["train.jsonl:3: empty text"],
        prepared_at="2026-11-25T11:00:00Z",
    )


def test_dataset_prepared_says_what_the_dataset_holds():
    got = status.dataset_prepared(prepared(train_pairs=5, test_queries=3, corpus=10, invalid_rows=2), AT)
    assert conditions(got) == {
        "Ready": ("True", "Prepared", "5 training pairs, 3 test queries, 10 documents; 2 invalid rows skipped"),
        "Progressing": ("False", "Prepared", conditions(got)["Ready"][2]),
        "Degraded": ("False", "Prepared", conditions(got)["Ready"][2]),
    }
    assert (got.phase, got.fingerprint, got.location) == ("Ready", "f" * 64, "/workspace/ds")
    assert got.invalid_samples == ["train.jsonl:3: empty text"] and got.prepared_at == "2026-11-25T11:00:00Z"
    clean = status.dataset_prepared(prepared(train_pairs=5, test_queries=3, corpus=10), AT)
    assert conditions(clean)["Ready"][2] == "5 training pairs, 3 test queries, 10 documents"

    class NoCounts(BaseModel):
        fingerprint: str

    bare = status.dataset_prepared(NoCounts(fingerprint="f"), AT)
    assert conditions(bare)["Ready"] == ("True", "Prepared", "prepared")


FINETUNE_SPEC = FineTuneJobSpec(dataset_ref={"name": "ds"})
MODEL = ModelArtifact(location="/workspace/m", base_model="all-MiniLM-L6-v2", dimensions=384, fingerprint="sha256:1")


def scores(ndcg: float) -> RetrievalScores:
    return RetrievalScores(ndcg_at_10=ndcg, mrr_at_10=ndcg, queries=30)


def trained(base: float, tuned: float | None, *, model=MODEL, validation=None) -> TrainResult:
    return TrainResult(
        model=model,
        base_metrics=scores(base),
        tuned_metrics=scores(tuned) if tuned is not None else None,
        validation=validation,
        train_pairs=500,
        steps=100,
        start_time="2026-11-25T11:00:00Z",
        completion_time="2026-11-25T11:30:00Z",
        duration_seconds=1800.0,
    )


def test_finetune_finished_publishes_a_model_that_beats_the_base():
    got = status.finetune_finished(trained(0.5, 0.6), FINETUNE_SPEC, AT)
    assert conditions(got)["Ready"] == ("True", "Trained", "nDCG@10 0.5000 -> 0.6000")
    assert (got.phase, got.model, got.steps, got.train_pairs) == ("Succeeded", MODEL, 100, 500)
    assert got.tuned_metrics.ndcg_at_10 == 0.6


def test_finetune_finished_shows_the_world_size_and_the_global_batch():
    result = trained(0.5, 0.6).model_copy(update={"world_size": 8, "global_batch_size": 512})
    got = status.finetune_finished(result, FINETUNE_SPEC, AT)
    assert (got.world_size, got.global_batch_size) == (8, 512)
    assert got.to_wire()["worldSize"] == 8 and got.to_wire()["globalBatchSize"] == 512


def test_finetune_finished_no_improvement_on_the_test_queries():
    got = status.finetune_finished(trained(0.5, 0.5), FINETUNE_SPEC, AT)
    assert conditions(got)["Ready"] == ("False", "NoImprovement", "nDCG@10 0.5000 -> 0.5000 (not above the base model)")
    assert conditions(got)["Degraded"][:2] == ("True", "NoImprovement")
    assert (got.phase, got.model) == ("Failed", MODEL), "the model is still reported"
    lenient = FineTuneJobSpec(dataset_ref={"name": "ds"}, evaluation={"requireImprovement": False})
    assert conditions(status.finetune_finished(trained(0.5, 0.5), lenient, AT))["Ready"][:2] == ("True", "Trained")


def test_finetune_finished_no_checkpoint_beat_the_base_on_validation():
    best = ValidationScores(queries=40, documents=900, base_ndcg_at_10=0.5, best_ndcg_at_10=0.48, best_step=100)
    got = status.finetune_finished(trained(0.5, None, model=None, validation=best), FINETUNE_SPEC, AT)
    assert conditions(got)["Ready"] == (
        "False",
        "NoImprovement",
        "no checkpoint beat the base model on 40 validation queries (nDCG@10 base 0.5000, best 0.4800 at step 100); "
        "no model published",
    )
    assert (got.phase, got.model, got.validation) == ("Failed", None, best)
    unscored = ValidationScores(queries=40, documents=900, base_ndcg_at_10=0.5)
    got = status.finetune_finished(trained(0.5, None, model=None, validation=unscored), FINETUNE_SPEC, AT)
    assert "(nDCG@10 base 0.5000, no checkpoint scored)" in conditions(got)["Ready"][2]


# -- the index ----------------------------------------------------------------------------------

INDEX_SPEC = EmbeddingIndexSpec(
    model={"name": "all-MiniLM-L6-v2"},
    source={"table": {"table": "docs"}},
    target={"name": "kb"},
    probe={"minRecall": 0.8},
    drift={"threshold": 0.1},
)


def probe(v: int, recall: float = 0.9, passed: bool | None = True, reason: str | None = None) -> ProbeResult:
    return ProbeResult(
        version=v,
        k=10,
        recall_at_k=recall,
        ndcg_at_10=0.7,
        mrr_at_10=0.6,
        queries=20,
        passed=passed,
        reason=reason,
        checked_at="2026-11-25T11:00:00Z",
    )


def drift(v: int, score: float) -> DriftResult:
    return DriftResult(
        version=v,
        score=score,
        centroid_distance=0.01,
        drifted_components=0.0,
        reference_rows=100,
        current_rows=100,
        drifted=score > 0.1,
        checked_at="2026-11-25T11:00:00Z",
    )


def version(v: int, state: str, rows: int = 100, probe_: ProbeResult | None = None) -> IndexVersion:
    return IndexVersion(version=v, table=f"kb_v{v}", model=f"model-{v}", rows=rows, state=state, probe=probe_)


def test_index_observed_serves_the_live_version():
    got = status.index_observed(
        INDEX_SPEC, [version(1, "Retired"), version(3, "Ready"), version(2, "Live", rows=42)], AT, inputs_hash="h"
    )
    assert conditions(got) == {
        "Ready": ("True", "Serving", "serving v2 (42 rows)"),
        "Progressing": ("False", "Serving", "serving v2 (42 rows)"),
        "Degraded": ("False", "Serving", "serving v2 (42 rows)"),
    }
    assert (got.live_version, got.live_model, got.rows, got.phase, got.inputs_hash) == (2, "model-2", 42, "Ready", "h")
    assert [v.version for v in got.versions] == [3, 2, 1]


def test_index_observed_without_a_live_version_fails():
    got = status.index_observed(INDEX_SPEC, [version(1, "Ready")], AT)
    assert conditions(got)["Ready"] == ("False", "NoLiveVersion", "no version passed the probe gate yet")
    assert (got.phase, got.live_version) == ("Failed", None)
    gated = status.index_observed(INDEX_SPEC, [version(1, "Ready")], AT, probe=probe(1, 0.3, False, "recall low"))
    assert conditions(gated)["Ready"] == ("False", "NoLiveVersion", "recall low")


def test_index_observed_degraded_by_the_live_versions_recall():
    got = status.index_observed(INDEX_SPEC, [version(2, "Live")], AT, probe=probe(2, recall=0.5))
    assert conditions(got)["Ready"][:2] == ("True", "Serving"), "it still serves"
    assert conditions(got)["Degraded"] == ("True", "QualityDegraded", "recall@10 0.5000 below 0.8")
    assert got.phase == "Degraded"


def test_index_observed_degraded_by_the_live_versions_drift():
    got = status.index_observed(INDEX_SPEC, [version(2, "Live")], AT, drift=drift(2, 0.25))
    assert conditions(got)["Degraded"] == ("True", "QualityDegraded", "drift 0.2500 above 0.1")
    both = status.index_observed(INDEX_SPEC, [version(2, "Live")], AT, probe=probe(2, 0.5), drift=drift(2, 0.25))
    assert conditions(both)["Degraded"][2] == "recall@10 0.5000 below 0.8; drift 0.2500 above 0.1"


def test_only_the_live_versions_measurements_count():
    versions = [version(1, "Retired"), version(2, "Live")]
    got = status.index_observed(INDEX_SPEC, versions, AT, probe=probe(1, recall=0.1), drift=drift(1, 0.9))
    assert conditions(got)["Degraded"] == ("False", "Serving", "serving v2 (100 rows)")
    assert got.phase == "Ready"
    # Judged by today's threshold, not the one the measurement was taken with.
    stricter = INDEX_SPEC.model_copy(update={"drift": INDEX_SPEC.drift.model_copy(update={"threshold": 0.01})})
    assert conditions(status.index_observed(stricter, versions, AT, drift=drift(2, 0.05)))["Degraded"][0] == "True"


def test_index_published_with_a_note_beside_the_serving_version():
    live_probe = probe(2, recall=0.9)
    published = PublishResult(
        candidate=3,
        probe=probe(3, recall=0.4, passed=False, reason="recall@10 0.4000 is below minRecall 0.8"),
        note_reason=Reason.GATE_FAILED,
        note="v3 not cut over: recall@10 0.4000 is below minRecall 0.8",
        live_version=2,
        versions=[version(3, "Ready"), version(2, "Live", probe_=live_probe)],
    )
    got = status.index_published(INDEX_SPEC, published, AT, drift=drift(2, 0.01))
    assert conditions(got)["Ready"] == ("True", "Serving", "serving v2 (100 rows)")
    assert conditions(got)["Progressing"] == ("False", "GateFailed", published.note)
    assert conditions(got)["Degraded"][0] == "False"
    assert (got.probe, got.drift.version, got.phase) == (live_probe, 2, "Ready"), "the live version's probe shows"


def test_index_published_without_a_live_version_shows_the_candidates_probe():
    failing = probe(1, recall=0.4, passed=False, reason="recall@10 0.4000 is below minRecall 0.8")
    published = PublishResult(
        candidate=1,
        probe=failing,
        note_reason=Reason.GATE_FAILED,
        note="v1 not cut over",
        versions=[version(1, "Ready")],
    )
    got = status.index_published(INDEX_SPEC, published, AT)
    assert got.probe == failing
    assert conditions(got)["Ready"] == ("False", "NoLiveVersion", failing.reason)
    assert conditions(got)["Progressing"][1] == "NoLiveVersion", "no note without a live version"


def test_note_degraded_and_pin_not_retained_leave_the_index_serving():
    serving = status.index_observed(INDEX_SPEC, [version(2, "Live")], AT)
    status.note(serving, Reason.ROLLED_BACK, "v3 was rolled back from", AT)
    assert conditions(serving)["Progressing"] == ("False", "RolledBack", "v3 was rolled back from")
    assert conditions(serving)["Ready"][0] == "True" and serving.phase == "Ready"

    status.degraded(serving, Reason.PROBE_FAILED, "probe: database unavailable", AT)
    assert conditions(serving)["Degraded"] == ("True", "ProbeFailed", "probe: database unavailable")
    assert serving.phase == "Degraded" and conditions(serving)["Ready"][0] == "True"

    fresh = status.index_observed(INDEX_SPEC, [version(2, "Live")], AT)
    pinned = status.pin_not_retained(fresh, "pinnedVersion 7 is not retained", status.At(generation=4, now=NOW))
    assert conditions(pinned)["Degraded"] == ("True", "VersionNotRetained", "pinnedVersion 7 is not retained")
    assert (pinned.phase, pinned.observed_generation, pinned.live_version) == ("Degraded", 4, 2)
    assert conditions(fresh)["Degraded"][0] == "False", "the base is not changed"


# -- reading a status and condition times -------------------------------------------------------


def test_parse_is_ready_and_same_condition():
    assert status.parse(EmbeddingIndexStatus, {"liveVersion": "not a number"}) == EmbeddingIndexStatus()
    assert status.parse(EmbeddingIndexStatus, None) == EmbeddingIndexStatus()
    stored = status.index_observed(INDEX_SPEC, [version(2, "Live")], AT).to_wire()
    read = status.parse(EmbeddingIndexStatus, stored)
    assert read.live_version == 2 and status.is_ready(read)
    assert not status.is_ready(EmbeddingIndexStatus())
    later = status.index_observed(INDEX_SPEC, [version(2, "Live")], status.At(generation=3, now=LATER))
    assert status.same_condition(read, later, status.READY)
    other = status.index_observed(INDEX_SPEC, [version(3, "Live")], AT)
    assert not status.same_condition(read, other, status.READY)
    assert not status.same_condition(read, EmbeddingIndexStatus(), status.READY)


def test_condition_times_come_from_the_planners_now():
    got = status.progressing(EmbeddingDatasetStatus(), Reason.PREPARING, "preparing", AT)
    assert times_of(got) == {"Ready": "2026-11-25T12:00:00Z", "Progressing": "2026-11-25T12:00:00Z"}


def test_a_condition_keeps_its_time_while_its_status_does_not_change():
    later = status.At(generation=3, now=LATER)
    first = status.progressing(EmbeddingDatasetStatus(), Reason.PREPARING, "preparing", AT)
    # Same statuses, another reason and message: no transition.
    again = status.progressing(first, Reason.DEPENDENCY_NOT_READY, "waiting", later)
    assert times_of(again) == times_of(first)
    # Ready stays False, Progressing goes False and Degraded appears: only those two move.
    failure = status.failed(EmbeddingDatasetStatus, Reason.JOB_FAILED, "oom", later, again)
    assert times_of(failure) == {
        "Ready": "2026-11-25T12:00:00Z",
        "Progressing": "2026-11-25T12:05:00Z",
        "Degraded": "2026-11-25T12:05:00Z",
    }
    # A serving index re-observed later keeps Ready's time; a drift problem moves Degraded's.
    serving = status.index_observed(INDEX_SPEC, [version(2, "Live")], AT)
    status.degraded(serving, Reason.DRIFT_FAILED, "drift: timeout", later)
    assert times_of(serving)["Ready"] == "2026-11-25T12:00:00Z"
    assert times_of(serving)["Degraded"] == "2026-11-25T12:05:00Z"
