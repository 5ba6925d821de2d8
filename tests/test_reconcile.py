"""The operator's planning, from observed state to Jobs and status, with no cluster."""

from __future__ import annotations

import datetime as dt
import json

from embedops import steps
from embedops.api.common import JobStatus
from embedops.api.conditions import Reason
from embedops.builders.jobs import worker_job
from embedops.reconcile import Observed, ObservedJob, plan
from embedops.settings import OperatorSettings

SETTINGS = OperatorSettings(worker_image="w:1")
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


def body(kind: str, name: str, spec: dict, status: dict | None = None, generation: int = 1, **meta) -> dict:
    out = {
        "apiVersion": "embedops.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "generation": generation, **meta},
        "spec": spec,
    }
    if status is not None:
        out["status"] = status
    return out


def ready(plan_) -> tuple[str, str]:
    cond = plan_.status.condition("Ready")
    return cond.status, cond.reason


DATASET_SPEC = {"source": {"beir": {"path": "data/scifact"}}}
PREPARED = {
    "counts": {"corpus": 10, "trainPairs": 5, "testQueries": 3},
    "fingerprint": "f" * 64,
    "location": "/workspace/embedops/embeddingdatasets/ds/k",
    "invalidSamples": [],
    "preparedAt": "2026-11-25T11:00:00Z",
}


def _run_dataset_to_ready() -> tuple[dict, str]:
    b = body("EmbeddingDataset", "ds", DATASET_SPEC)
    first = plan(Observed(b, now=NOW), SETTINGS)
    job = first.create[0]
    name = job.name
    b["status"] = first.status.to_wire()
    done = plan(Observed(b, jobs={name: ObservedJob(name, "Succeeded", {0: PREPARED})}, now=NOW), SETTINGS)
    b["status"] = done.status.to_wire()
    return b, name


def test_dataset_runs_one_prepare_job_and_copies_its_result():
    b = body("EmbeddingDataset", "ds", DATASET_SPEC)
    first = plan(Observed(b, now=NOW), SETTINGS)
    assert [j.name.split("-")[1] for j in first.create] == ["prepare"]
    assert ready(first) == ("False", "Preparing") and first.status.phase == "Running"
    config = first.create[0].config
    assert str(config.base_dir) == "/workspace" and config.spec.source.beir.path == "data/scifact"
    name = first.create[0].name
    b["status"] = first.status.to_wire()
    # While the Job runs, nothing new is created.
    running = plan(Observed(b, jobs={name: ObservedJob(name, "Running")}, now=NOW), SETTINGS)
    assert running.create == [] and running.status.active_job == name
    b, _ = _run_dataset_to_ready()
    assert b["status"]["fingerprint"] == "f" * 64 and b["status"]["counts"]["trainPairs"] == 5
    assert b["status"]["phase"] == "Ready" and "activeJob" not in b["status"]
    # Finished, and the Job deleted by its TTL: nothing runs again.
    assert plan(Observed(b, now=NOW), SETTINGS).create == []
    assert plan(Observed(b, now=NOW), SETTINGS).status is None


def test_a_changed_spec_or_rerun_annotation_starts_a_new_run():
    b, old = _run_dataset_to_ready()
    b["spec"] = {**DATASET_SPEC, "split": {"testFraction": 0.3}}
    b["metadata"]["generation"] = 2
    again = plan(
        Observed(b, jobs={old: ObservedJob(old, "Succeeded", {0: PREPARED}, step="prepare")}, now=NOW), SETTINGS
    )
    assert len(again.create) == 1 and again.create[0].name != old
    assert again.delete == []  # a finished run is history, not in the way
    # The last good result stays Ready while the new run goes on.
    assert ready(again)[0] == "True" and again.status.condition("Progressing").status == "True"
    b2, old2 = _run_dataset_to_ready()
    b2["metadata"]["annotations"] = {"embedops.dev/rerun": "2026-11-25"}
    rerun = plan(Observed(b2, now=NOW), SETTINGS)
    assert len(rerun.create) == 1 and rerun.create[0].name != old2


def test_a_dataset_can_mine_on_a_gpu_node():
    spec = {
        **DATASET_SPEC,
        "resources": {"gpus": 1, "memory": "32Gi"},
        "scheduling": {"nodeSelector": {"pool": "gpu"}, "queueName": "mining"},
    }
    (job,) = plan(Observed(body("EmbeddingDataset", "ds", spec), now=NOW), SETTINGS).create
    pod = worker_job(job, SETTINGS)["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"pool": "gpu"} and job.scheduling.queue_name == "mining"
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])


def test_invalid_spec_is_reported_not_raised():
    b = body("EmbeddingDataset", "ds", {"source": {"beir": {"path": "x"}, "pairs": {"path": "y"}}})
    p = plan(Observed(b, now=NOW), SETTINGS)
    assert p.create == [] and ready(p) == ("False", "InvalidSpec")
    assert "exactly one of source.beir, source.pairs, source.postgres" in p.status.condition("Ready").message
    assert p.events and p.events[0][:2] == ("Warning", "InvalidSpec")
    # The same failure again posts no second event.
    b["status"] = p.status.to_wire()
    assert plan(Observed(b, now=NOW), SETTINGS).events == []


def test_failed_job_fails_the_resource_with_the_workers_message():
    b = body("EmbeddingDataset", "ds", DATASET_SPEC)
    name = plan(Observed(b, now=NOW), SETTINGS).create[0].name
    p = plan(
        Observed(b, jobs={name: ObservedJob(name, "Failed", error="InvalidInput: corpus.jsonl:3: bad")}, now=NOW),
        SETTINGS,
    )
    assert ready(p) == ("False", "JobFailed") and p.status.phase == "Failed"
    assert "corpus.jsonl:3: bad" in p.status.condition("Ready").message
    assert p.create == []
    # A rerun after the failure: Progressing again, and no longer Degraded by the old failure.
    b["status"] = p.status.to_wire()
    b["metadata"]["annotations"] = {"embedops.dev/rerun": "1"}
    again = plan(Observed(b, now=NOW), SETTINGS)
    assert len(again.create) == 1 and again.status.condition("Progressing").status == "True"
    assert again.status.condition("Degraded").status == "False"


def test_finetune_waits_for_its_dataset_then_trains_on_a_gpu():
    ft = body("FineTuneJob", "ft", {"datasetRef": {"name": "ds"}})
    waiting = plan(Observed(ft, now=NOW), SETTINGS)
    assert waiting.create == [] and ready(waiting) == ("False", "DependencyNotFound")
    ds, _ = _run_dataset_to_ready()
    p = plan(Observed(ft, related={("EmbeddingDataset", "ds"): ds["status"]}, now=NOW), SETTINGS)
    (job,) = p.create
    assert job.gpus == 1
    assert str(job.config.dataset_dir) == PREPARED["location"]
    assert str(job.config.output_dir).startswith("/workspace/embedops/finetunejobs/ft/")


TRAINED = {
    "model": {
        "location": "/workspace/embedops/finetunejobs/ft/k1/model",
        "baseModel": "m",
        "dimensions": 384,
        "fingerprint": "a" * 64,
    },
    "baseMetrics": {"ndcgAt10": 0.6, "mrrAt10": 0.5, "recallAt10": 0.7, "recallAt100": 0.9, "queries": 3},
    "tunedMetrics": {"ndcgAt10": 0.7, "mrrAt10": 0.6, "recallAt10": 0.8, "recallAt100": 0.95, "queries": 3},
    "ndcgGain": 0.1,
    "trainPairs": 5,
    "steps": 2,
    "startTime": "2026-11-25T11:00:00Z",
    "completionTime": "2026-11-25T11:10:00Z",
    "durationSeconds": 600.0,
}
INDEX_SPEC = {
    "model": {"fineTuneJobRef": {"name": "ft"}},
    "source": {"datasetRef": {"name": "ds"}},
    "target": {"name": "docs"},
    "database": {"dsnSecretRef": {"name": "pg"}},
    "embedding": {"shards": 2},
    "probe": {"minRecall": 0.5},
}


def _trained_status(model_fingerprint: str = "a" * 64) -> dict:
    ft = body("FineTuneJob", "ft", {"datasetRef": {"name": "ds"}})
    ds, _ = _run_dataset_to_ready()
    related = {("EmbeddingDataset", "ds"): ds["status"]}
    p = plan(Observed(ft, related=related, now=NOW), SETTINGS)
    name = p.create[0].name
    result = json.loads(json.dumps(TRAINED))
    result["model"]["fingerprint"] = model_fingerprint
    done = plan(
        Observed(ft, jobs={name: ObservedJob(name, "Succeeded", {0: result})}, related=related, now=NOW), SETTINGS
    )
    return done.status.to_wire()


def _publish_result(version: int, recall: float = 0.8) -> dict:
    probe = {
        "version": version,
        "k": 10,
        "recallAtK": recall,
        "mrrAt10": 0.6,
        "ndcgAt10": 0.65,
        "queries": 3,
        "passed": True,
        "reason": "ok",
        "checkedAt": "2026-11-25T12:00:00Z",
    }
    return {
        "candidate": version,
        "probe": probe,
        "liveVersion": version,
        "dropped": [],
        "versions": [
            {
                "version": version,
                "table": f"docs_v{version}",
                "model": "/m",
                "rows": 10,
                "state": "Live",
                "probe": probe,
                "createdAt": "2026-11-25T11:50:00Z",
            }
        ],
    }


def test_index_embeds_in_shards_then_publishes_then_probes_on_schedule():
    ds, _ = _run_dataset_to_ready()
    related = {("EmbeddingDataset", "ds"): ds["status"], ("FineTuneJob", "ft"): _trained_status()}
    ix = body("EmbeddingIndex", "ix", INDEX_SPEC)
    p = plan(Observed(ix, related=related, now=NOW), SETTINGS)
    (embed,) = p.create
    assert embed.shards == 2 and ready(p) == ("False", "Embedding")
    config = embed.config
    # The catalog records where the model is, so probes of any retained version can load it.
    assert config.model == TRAINED["model"]["location"]
    ix["status"] = p.status.to_wire()
    en = embed.name
    shard = {
        "version": 1,
        "table": "docs_v1",
        "rows": 10,
        "shardRows": 5,
        "embedded": 5,
        "resumed": False,
        "seconds": 1.0,
        "rowsPerSecond": 50.0,
    }
    # One shard done: progress is reported, nothing new starts.
    half = plan(
        Observed(
            ix, jobs={en: ObservedJob(en, "Running", {0: {**shard, "state": "Building"}})}, related=related, now=NOW
        ),
        SETTINGS,
    )
    assert half.create == [] and half.status.reindex.rows_done == 5
    jobs = {en: ObservedJob(en, "Succeeded", {0: {**shard, "state": "Building"}, 1: {**shard, "state": "Ready"}})}
    p = plan(Observed(ix, jobs=jobs, related=related, now=NOW), SETTINGS)
    (publish,) = p.create
    assert ready(p) == ("False", "Publishing")
    pconfig = publish.config
    assert pconfig.version == 1 and str(pconfig.dataset_dir) == PREPARED["location"]
    ix["status"] = p.status.to_wire()
    pn = publish.name
    jobs[pn] = ObservedJob(pn, "Succeeded", {0: _publish_result(1)})
    p = plan(Observed(ix, jobs=jobs, related=related, now=NOW), SETTINGS)
    assert ready(p) == ("True", "Serving") and p.status.live_version == 1 and p.status.reindex is None
    ix["status"] = p.status.to_wire()
    # Steady state: nothing due yet, and nothing to write.
    steady = plan(Observed(ix, jobs=jobs, related=related, now=NOW + dt.timedelta(minutes=5)), SETTINGS)
    assert steady.create == [] and steady.status is None
    # Half an hour on, a probe Job of the live version; an hour on, a drift Job too.
    later = plan(Observed(ix, related=related, now=NOW + dt.timedelta(minutes=61)), SETTINGS)
    assert sorted(j.step for j in later.create) == ["drift", "probe"]
    probe_job = next(j for j in later.create if j.step == "probe")
    assert probe_job.ttl_seconds == SETTINGS.periodic_job_ttl_seconds
    drift_job = next(j for j in later.create if j.step == "drift")
    # Drift re-encodes with the arithmetic the version was built with.
    drift_config = drift_job.config
    assert drift_config.embedding.precision == "auto" and drift_config.embedding.batch_size == 64
    # A probe below minRecall degrades the index.
    name = probe_job.name
    low = {
        "version": 1,
        "k": 10,
        "recallAtK": 0.2,
        "mrrAt10": 0.1,
        "ndcgAt10": 0.1,
        "queries": 3,
        "checkedAt": "2026-11-25T13:01:00Z",
    }
    degraded = plan(
        Observed(
            ix,
            jobs={name: ObservedJob(name, "Succeeded", {0: low})},
            related=related,
            now=NOW + dt.timedelta(minutes=61),
        ),
        SETTINGS,
    )
    assert degraded.status.phase == "Degraded"
    assert degraded.status.condition("Degraded").reason == "QualityDegraded"
    # A spec change that needs no new version (a drift threshold) is still observed at once.
    ix["metadata"]["generation"] = 2
    ix["spec"] = {**INDEX_SPEC, "drift": {"threshold": 0.5}}
    observed = plan(Observed(ix, jobs=jobs, related=related, now=NOW + dt.timedelta(minutes=5)), SETTINGS)
    assert observed.create == [] and observed.status.observed_generation == 2
    assert ready(observed) == ("True", "Serving")
    # The rerun annotation re-embeds the source into a fresh version (no reuse of the built one).
    ix["metadata"]["annotations"] = {"embedops.dev/rerun": "rows-changed"}
    (again,) = plan(Observed(ix, jobs=jobs, related=related, now=NOW + dt.timedelta(minutes=5)), SETTINGS).create
    assert again.step == "embed" and again.name != en
    assert again.config.reuse is False
    assert config.reuse is True


def test_index_follows_a_new_model_and_a_pin_republishes_without_rebuilding():
    ds, _ = _run_dataset_to_ready()
    related = {("EmbeddingDataset", "ds"): ds["status"], ("FineTuneJob", "ft"): _trained_status()}
    ix = body("EmbeddingIndex", "ix", INDEX_SPEC)
    first = plan(Observed(ix, related=related, now=NOW), SETTINGS).create[0].name
    related2 = {**related, ("FineTuneJob", "ft"): _trained_status("b" * 64)}
    second = plan(Observed(ix, related=related2, now=NOW), SETTINGS).create[0].name
    assert first != second  # a new model, a new build
    pinned = body("EmbeddingIndex", "ix", {**INDEX_SPEC, "pinnedVersion": 1})
    assert plan(Observed(pinned, related=related, now=NOW), SETTINGS).create[0].name == first


def test_index_without_database_or_model():
    ix = body("EmbeddingIndex", "ix", {k: v for k, v in INDEX_SPEC.items() if k != "database"})
    assert ready(plan(Observed(ix, now=NOW), SETTINGS)) == ("False", "MissingDatabase")
    ds, _ = _run_dataset_to_ready()
    untrained = {
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "Training", "lastTransitionTime": "2026-11-25T11:00:00Z"}
        ]
    }
    ix = body("EmbeddingIndex", "ix", INDEX_SPEC)
    p = plan(
        Observed(ix, related={("EmbeddingDataset", "ds"): ds["status"], ("FineTuneJob", "ft"): untrained}, now=NOW),
        SETTINGS,
    )
    assert p.create == [] and ready(p) == ("False", "WaitingForModel")


def test_a_run_superseded_while_pending_is_deleted():
    b = body("EmbeddingDataset", "ds", DATASET_SPEC)
    first = plan(Observed(b, now=NOW), SETTINGS).create[0].name
    b["spec"] = {**DATASET_SPEC, "resources": {"memory": "64Gi"}}
    b["metadata"]["generation"] = 2
    jobs = {
        first: ObservedJob(first, "Pending", step="prepare"),
        "ds-probe-x": ObservedJob("ds-probe-x", "Running", step="probe"),
    }
    p = plan(Observed(b, jobs=jobs, now=NOW), SETTINGS)
    assert len(p.create) == 1 and p.create[0].name != first
    assert p.delete == [first]  # only the same step's run
    assert ("Normal", "JobSuperseded", f"deleted Job {first}: its inputs changed") in p.events


def test_a_relative_model_name_resolves_in_the_workspace():
    ds, _ = _run_dataset_to_ready()
    spec = {**INDEX_SPEC, "model": {"name": "models/tuned"}}
    (embed,) = plan(
        Observed(body("EmbeddingIndex", "ix", spec), related={("EmbeddingDataset", "ds"): ds["status"]}, now=NOW),
        SETTINGS,
    ).create
    assert embed.config.model == "/workspace/models/tuned"
    bundled = {**INDEX_SPEC, "model": {"name": "all-MiniLM-L6-v2"}}
    (embed,) = plan(
        Observed(body("EmbeddingIndex", "ix", bundled), related={("EmbeddingDataset", "ds"): ds["status"]}, now=NOW),
        SETTINGS,
    ).create
    assert embed.config.model == "all-MiniLM-L6-v2"


def _job_names(kind: str, spec: dict, related: dict | None = None) -> list[str]:
    return [j.name for j in plan(Observed(body(kind, "r", spec), related=related or {}, now=NOW), SETTINGS).create]


def test_spelling_out_the_defaults_starts_nothing_new():
    """An operator upgrade that fills in a new default is a spec that spells that default out."""
    from embedops.api.kinds import KINDS

    ds, _ = _run_dataset_to_ready()
    related = {("EmbeddingDataset", "ds"): ds["status"], ("FineTuneJob", "ft"): _trained_status()}
    for kind, spec in (
        ("EmbeddingDataset", DATASET_SPEC),
        ("FineTuneJob", {"datasetRef": {"name": "ds"}}),
        ("EmbeddingIndex", INDEX_SPEC),
    ):
        full = KINDS[kind].spec_model.model_validate(spec).model_dump(mode="json", by_alias=True)
        assert len(json.dumps(full)) > 2 * len(json.dumps(spec))
        assert _job_names(kind, full, related) == _job_names(kind, spec, related), kind


def test_a_new_defaulted_field_keeps_the_job_names(monkeypatch):
    import dataclasses

    from pydantic import Field, create_model

    from embedops.api.dataset import EmbeddingDatasetSpec
    from embedops.api.kinds import KINDS

    before = _job_names("EmbeddingDataset", DATASET_SPEC)
    newer = create_model("EmbeddingDatasetSpec", __base__=EmbeddingDatasetSpec, shuffle_buffer=(int, Field(default=7)))
    monkeypatch.setitem(KINDS, "EmbeddingDataset", dataclasses.replace(KINDS["EmbeddingDataset"], spec_model=newer))
    assert _job_names("EmbeddingDataset", DATASET_SPEC) == before
    assert _job_names("EmbeddingDataset", {**DATASET_SPEC, "shuffleBuffer": 8}) != before


def test_search_and_schedule_settings_rebuild_nothing():
    ds, _ = _run_dataset_to_ready()
    related = {("EmbeddingDataset", "ds"): ds["status"], ("FineTuneJob", "ft"): _trained_status()}
    embed = _job_names("EmbeddingIndex", INDEX_SPEC, related)
    tuned = {
        **INDEX_SPEC,
        "ann": {"efSearch": 100},
        "embedding": {"shards": 4, "batchSize": 16},
        "probe": {"minRecall": 0.5, "intervalMinutes": 5},
    }
    assert _job_names("EmbeddingIndex", tuned, related) == embed
    assert _job_names("EmbeddingIndex", {**INDEX_SPEC, "embedding": {"maxSeqLength": 128}}, related) != embed


def _train(spec: dict | None = None, labels: dict | None = None, jobs: dict | None = None, status: dict | None = None):
    ds, _ = _run_dataset_to_ready()
    ft = body(
        "FineTuneJob",
        "ft",
        {"datasetRef": {"name": "ds"}, **(spec or {})},
        status,
        **({"labels": labels} if labels else {}),
    )
    return plan(Observed(ft, jobs=jobs or {}, related={("EmbeddingDataset", "ds"): ds["status"]}, now=NOW), SETTINGS)


def test_the_kueue_label_on_the_resource_reaches_its_jobs():
    (job,) = _train(labels={"kueue.x-k8s.io/queue-name": "gpu-queue"}).create
    assert job.scheduling.queue_name == "gpu-queue"
    # spec.scheduling.queueName, when set, is the queue.
    (job,) = _train({"scheduling": {"queueName": "team-a"}}, labels={"kueue.x-k8s.io/queue-name": "x"}).create
    assert job.scheduling.queue_name == "team-a"


def test_suspend_toggles_the_same_job_and_queued_jobs_are_left_to_kueue():
    (job,) = _train({"scheduling": {"suspend": True}}).create
    name = job.name
    assert job.scheduling.suspend is True
    held = ObservedJob(name, "Pending", suspended=True, step="train")
    p = _train({"scheduling": {"suspend": True}}, jobs={name: held})
    assert p.create == [] and p.suspend == {} and p.status.phase == "Suspended"
    assert ready(p) == ("False", "Suspended")
    # Resuming patches the same Job: nothing is deleted or created, its name does not change.
    p = _train({"scheduling": {"suspend": False}}, jobs={name: held})
    assert (p.create, p.delete, p.suspend) == ([], [], {name: False})
    assert ("Normal", "JobResumed", f"resumed Job {name}") in p.events
    running = ObservedJob(name, "Running", step="train")
    assert _train({"scheduling": {"suspend": True}}, jobs={name: running}).suspend == {name: True}
    # In a Kueue queue, Kueue decides: a suspended Job is waiting for admission.
    (job,) = _train({"scheduling": {"queueName": "gpus"}}).create
    name = job.name
    queued = ObservedJob(name, "Pending", suspended=True, step="train", queue="gpus")
    p = _train({"scheduling": {"queueName": "gpus"}}, jobs={name: queued})
    assert p.suspend == {} and p.status.phase == "Queued"
    assert p.status.condition("Progressing").message == f"Job {name} waits for Kueue to admit it (queue gpus)"


def test_a_pending_pod_is_reported_with_the_schedulers_words_and_the_jobs_counts():
    from embedops.api.common import JobStatus
    from embedops.api.conditions import Reason

    (job,) = _train().create
    name = job.name
    report = JobStatus(name=name, step="train", start_time="2026-11-25T12:00:00Z", active=1)
    stuck = ObservedJob(
        name,
        "Pending",
        step="train",
        report=report,
        waiting=(Reason.UNSCHEDULABLE, "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."),
    )
    p = _train(jobs={name: stuck})
    assert p.status.phase == "Pending" and ready(p) == ("False", "Unschedulable")
    assert "Insufficient nvidia.com/gpu" in p.status.condition("Progressing").message
    assert p.status.job.active == 1 and p.status.job.start_time == "2026-11-25T12:00:00Z"
    done = ObservedJob(
        name,
        "Succeeded",
        {0: TRAINED},
        step="train",
        report=report.model_copy(update={"active": 0, "succeeded": 1, "completion_time": "2026-11-25T12:09:00Z"}),
    )
    finished = _train(jobs={name: done}).status
    assert finished.job.succeeded == 1 and finished.job.completion_time == "2026-11-25T12:09:00Z"


def _serving_index(spec: dict) -> tuple[dict, dict]:
    ds, _ = _run_dataset_to_ready()
    related = {("EmbeddingDataset", "ds"): ds["status"], ("FineTuneJob", "ft"): _trained_status()}
    ix, _ = drive_to_serving(spec, related)
    return ix, related


def _embed_result(version: int) -> dict:
    """An embed shard's result: version `version` built, 10 rows."""
    return {
        "version": version,
        "table": f"docs_v{version}",
        "state": "Ready",
        "rows": 10,
        "shardRows": 10,
        "embedded": 10,
        "resumed": False,
        "seconds": 1.0,
        "rowsPerSecond": 10.0,
    }


def drive_to_serving(spec: dict, related: dict) -> tuple[dict, list]:
    """An index planned through its embed and publish Jobs (both succeeding) to Serving v1; with the steps planned."""
    ix = body("EmbeddingIndex", "ix", spec)
    jobs: dict = {}
    created = []
    for results in (
        {0: _embed_result(1)},
        {0: _publish_result(1)},
    ):
        p = plan(Observed(ix, jobs=jobs, related=related, now=NOW), SETTINGS)
        (job,) = p.create
        created.append(job)
        ix["status"] = p.status.to_wire()
        jobs[job.name] = ObservedJob(job.name, "Succeeded", results)
    ix["status"] = plan(Observed(ix, jobs=jobs, related=related, now=NOW), SETTINGS).status.to_wire()
    return ix, created


def test_one_probe_at_a_time_with_the_interval_as_its_deadline():
    ix, related = _serving_index(INDEX_SPEC)
    later = NOW + dt.timedelta(minutes=31)
    (probe,) = [j for j in plan(Observed(ix, related=related, now=later), SETTINGS).create if j.step == "probe"]
    assert probe.scheduling.active_deadline_seconds == 30 * 60
    # Still running an interval later: no second probe piles up behind it.
    slow = {probe.name: ObservedJob(probe.name, "Running", step="probe")}
    again = plan(Observed(ix, jobs=slow, related=related, now=later + dt.timedelta(minutes=30)), SETTINGS)
    assert [j for j in again.create if j.step == "probe"] == []


def test_a_schedule_change_starts_nothing_and_a_probe_can_be_asked_for():
    ix, related = _serving_index(INDEX_SPEC)
    ix["spec"] = {**INDEX_SPEC, "probe": {**INDEX_SPEC["probe"], "intervalMinutes": 5}}
    ix["metadata"]["generation"] = 2
    p = plan(Observed(ix, related=related, now=NOW + dt.timedelta(minutes=1)), SETTINGS)
    assert p.create == [] and p.status.observed_generation == 2
    ix["status"] = p.status.to_wire()
    ix["metadata"]["annotations"] = {"embedops.dev/probe": "2026-11-25T12:00:30Z"}
    (asked,) = plan(Observed(ix, related=related, now=NOW + dt.timedelta(minutes=1)), SETTINGS).create
    assert asked.step == "probe"
    # Once a probe ran after the time asked for, the annotation asks for nothing more.
    ix["status"]["probe"]["checkedAt"] = "2026-11-25T12:01:00Z"
    assert plan(Observed(ix, related=related, now=NOW + dt.timedelta(minutes=2)), SETTINGS).create == []


def test_a_pin_to_a_version_the_index_does_not_keep_is_reported_once():
    ix, related = _serving_index(INDEX_SPEC)
    ix["spec"] = {**INDEX_SPEC, "pinnedVersion": 9}
    ix["metadata"]["generation"] = 2
    p = plan(Observed(ix, related=related, now=NOW), SETTINGS)
    assert p.create == [] and ready(p) == ("True", "Serving") and p.status.live_version == 1
    degraded = p.status.condition("Degraded")
    assert (degraded.status, degraded.reason) == ("True", "VersionNotRetained")
    assert degraded.message == "spec.pinnedVersion 9 is not a version this index keeps (v1); v1 keeps serving"
    assert [e[:2] for e in p.events] == [("Warning", "VersionNotRetained")]
    ix["status"] = p.status.to_wire()
    assert plan(Observed(ix, related=related, now=NOW), SETTINGS).events == []


def test_only_the_live_versions_drift_degrades_the_index():
    from embedops import status as statuses
    from embedops.api.index import DriftResult, EmbeddingIndexSpec, IndexVersion

    spec = EmbeddingIndexSpec.model_validate(INDEX_SPEC)
    live = IndexVersion(version=2, table="docs_v2", model="/m", rows=10, state="Live")
    old = DriftResult(
        version=1,
        score=0.5,
        centroid_distance=0.1,
        drifted_components=0.5,
        reference_rows=10,
        current_rows=10,
        drifted=True,
        checked_at="2026-11-25T11:00:00Z",
    )
    assert statuses.index_observed(spec, [live], statuses.At(1, NOW), drift=old).condition("Degraded").status == "False"
    now = old.model_copy(update={"version": 2})
    assert (
        statuses.index_observed(spec, [live], statuses.At(1, NOW), drift=now).condition("Degraded").reason
        == "QualityDegraded"
    )


def test_each_change_of_degraded_is_one_event():
    ix, related = _serving_index(INDEX_SPEC)
    later = NOW + dt.timedelta(minutes=31)
    (probe,) = [j for j in plan(Observed(ix, related=related, now=later), SETTINGS).create if j.step == "probe"]
    name = probe.name
    low = {
        "version": 1,
        "k": 10,
        "recallAtK": 0.42,
        "mrrAt10": 0.1,
        "ndcgAt10": 0.1,
        "queries": 3,
        "checkedAt": "2026-11-25T12:31:00Z",
    }
    p = plan(
        Observed(ix, jobs={name: ObservedJob(name, "Succeeded", {0: low}, step="probe")}, related=related, now=later),
        SETTINGS,
    )
    assert p.status.phase == "Degraded"
    assert [(e[0], e[1]) for e in p.events] == [("Warning", "QualityDegraded")]
    assert "recall@10 0.4200 below 0.5" in p.events[0][2]
    ix["status"] = p.status.to_wire()
    # The same Degraded on the next reconciles: no more events.
    again = plan(
        Observed(ix, jobs={name: ObservedJob(name, "Succeeded", {0: low}, step="probe")}, related=related, now=later),
        SETTINGS,
    )
    assert again.events == []
    # A good probe later: one Normal event says it recovered.
    good = {**low, "recallAtK": 0.9, "checkedAt": "2026-11-25T13:02:00Z"}
    later = NOW + dt.timedelta(minutes=62)
    (probe,) = [j for j in plan(Observed(ix, related=related, now=later), SETTINGS).create if j.step == "probe"]
    name = probe.name
    p = plan(
        Observed(ix, jobs={name: ObservedJob(name, "Succeeded", {0: good}, step="probe")}, related=related, now=later),
        SETTINGS,
    )
    assert [(e[0], e[1]) for e in p.events if e[1] != "JobCreated"] == [("Normal", "Recovered")]
    assert p.status.phase == "Ready"


def test_a_failed_probe_job_is_one_event_however_often_it_is_seen():
    ix, related = _serving_index(INDEX_SPEC)
    later = NOW + dt.timedelta(minutes=31)
    (probe,) = [j for j in plan(Observed(ix, related=related, now=later), SETTINGS).create if j.step == "probe"]
    failed = {probe.name: ObservedJob(probe.name, "Failed", error="boom", step="probe")}
    p = plan(Observed(ix, jobs=failed, related=related, now=later), SETTINGS)
    assert [e[1] for e in p.events] == ["ProbeFailed"] and p.status.phase == "Degraded"
    ix["status"] = p.status.to_wire()
    assert plan(Observed(ix, jobs=failed, related=related, now=later), SETTINGS).events == []


def test_a_worker_refusal_is_the_index_s_own_reason_not_job_failed():
    """Issue 16/17: a second index on a target another owns says TargetConflict (and an empty source EmptySource)."""
    ds, _ = _run_dataset_to_ready()
    related = {("EmbeddingDataset", "ds"): ds["status"], ("FineTuneJob", "ft"): _trained_status()}
    ix = body("EmbeddingIndex", "ix", INDEX_SPEC)
    (embed,) = plan(Observed(ix, related=related, now=NOW), SETTINGS).create
    assert embed.config.owner == steps.TargetOwner(namespace="ns", name="ix", uid="uid-ix")
    for worker_reason, detail in (
        ("TargetConflict", "target public.docs belongs to EmbeddingIndex other/docs"),
        ("EmptySource", "source: table public.docs has no row with text to embed"),
    ):
        failed = ObservedJob(
            embed.name, "Failed", error=f"{worker_reason}: {detail}", reason=worker_reason, step="embed"
        )
        p = plan(Observed(ix, jobs={embed.name: failed}, related=related, now=NOW), SETTINGS)
        assert ready(p) == ("False", worker_reason) and p.status.phase == "Failed"
        assert p.status.condition("Degraded").status == "True"
        assert p.status.condition("Ready").message == f"Job {embed.name}: {detail}"
        assert ("Warning", worker_reason, f"Job {embed.name}: {detail}") in p.events
    # Any other worker failure stays JobFailed, with the worker's words.
    other = ObservedJob(
        embed.name, "Failed", error="InvalidInput: model not found", reason="InvalidInput", step="embed"
    )
    assert ready(plan(Observed(ix, jobs={embed.name: other}, related=related, now=NOW), SETTINGS)) == (
        "False",
        "JobFailed",
    )


def test_a_dataset_whose_generation_gave_nothing_says_generation_failed():
    """spec.generate with no query to train on (its generator unreachable through every retry of the pod, or its
    filters dropping every query) is the dataset's own reason, which alerts and Argo CD's health know."""
    b = body("EmbeddingDataset", "ds", DATASET_SPEC)
    (prepare,) = plan(Observed(b, now=NOW), SETTINGS).create
    detail = "spec.generate: every one of the 5 requests to the generator failed; first: did not answer"
    failed = ObservedJob(
        prepare.name, "Failed", error=f"GenerationFailed: {detail}", reason="GenerationFailed", step="prepare"
    )
    p = plan(Observed(b, jobs={prepare.name: failed}, now=NOW), SETTINGS)
    assert ready(p) == ("False", "GenerationFailed") and p.status.phase == "Failed"
    assert p.status.condition("Ready").message == f"Job {prepare.name}: {detail}"
    assert ("Warning", "GenerationFailed", f"Job {prepare.name}: {detail}") in p.events


def test_waiting_work_is_pending_and_a_failed_dependency_is_named():
    """Issue 17, items 4 and 5: phase Pending while waiting; a failed dataset said on the FineTuneJob."""
    ft = body("FineTuneJob", "ft", {"datasetRef": {"name": "ds"}})
    waiting = plan(Observed(ft, related={("EmbeddingDataset", "ds"): {}}, now=NOW), SETTINGS)
    assert ready(waiting) == ("False", "DependencyNotReady") and waiting.status.phase == "Pending"
    failed = {
        "phase": "Failed",
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "JobFailed",
                "message": "Job ds-prepare-1 failed: InvalidInput: data/scifact: no such folder",
                "lastTransitionTime": "2026-11-25T11:00:00Z",
            }
        ],
    }
    p = plan(Observed(ft, related={("EmbeddingDataset", "ds"): failed}, now=NOW), SETTINGS)
    assert ready(p) == ("False", "DependencyFailed") and p.status.phase == "Pending"
    assert "EmbeddingDataset ds failed (JobFailed: Job ds-prepare-1 failed: InvalidInput" in (
        p.status.condition("Ready").message
    )


def test_a_pod_that_cannot_start_posts_one_warning_event_when_the_wait_begins():
    b = body("EmbeddingDataset", "ds", DATASET_SPEC)
    first = plan(Observed(b, now=NOW), SETTINGS)
    name = first.create[0].name
    b["status"] = first.status.to_wire()
    stuck = ObservedJob(name, "Pending", waiting=(Reason.UNSCHEDULABLE, "0/2 nodes are available"), step="prepare")
    p = plan(Observed(b, jobs={name: stuck}, now=NOW), SETTINGS)
    assert ready(p) == ("False", "Unschedulable") and p.status.phase == "Pending"
    assert [e for e in p.events if e[1] == "Unschedulable"] == [
        ("Warning", "Unschedulable", f"Job {name} cannot start its pod: 0/2 nodes are available")
    ]
    b["status"] = p.status.to_wire()
    assert plan(Observed(b, jobs={name: stuck}, now=NOW), SETTINGS).events == [], "the same wait is no news"


def test_a_probe_that_hits_its_deadline_degrades_the_index_and_each_failure_is_an_event():
    """Issue 17, items 2 and 7: a failed probe of an earlier slot is not replaced unseen by the next one."""
    ix, related = _serving_index(INDEX_SPEC)
    later = NOW + dt.timedelta(minutes=61)
    (probe,) = [j for j in plan(Observed(ix, related=related, now=later), SETTINGS).create if j.step == "probe"]
    deadline = "DeadlineExceeded: Job was active longer than specified deadline"
    report = JobStatus(name=probe.name, step="probe", start_time="2026-11-25T13:01:00Z")
    failed = {probe.name: ObservedJob(probe.name, "Failed", error=deadline, step="probe", report=report)}
    # Half an hour on, the next slot's probe is due: the failure is still the index's latest word.
    next_slot = later + dt.timedelta(minutes=30)
    p = plan(Observed(ix, jobs=failed, related=related, now=next_slot), SETTINGS)
    assert p.status.condition("Degraded").reason == "ProbeFailed" and p.status.phase == "Degraded"
    assert deadline in p.status.condition("Degraded").message
    assert [e[1] for e in p.events if e[0] == "Warning"] == ["ProbeFailed"]
    assert any(j.step == "probe" for j in p.create), "the next probe still starts"
    # A second failed probe is a second event, not the first one's count.
    ix["status"] = p.status.to_wire()
    (second,) = [j for j in p.create if j.step == "probe"]
    report2 = JobStatus(name=second.name, step="probe", start_time="2026-11-25T13:31:00Z")
    both = {**failed, second.name: ObservedJob(second.name, "Failed", error=deadline, step="probe", report=report2)}
    again = plan(Observed(ix, jobs=both, related=related, now=next_slot + dt.timedelta(minutes=1)), SETTINGS)
    assert [e for e in again.events if e[1] == "ProbeFailed"] == [
        ("Warning", "ProbeFailed", f"Job {second.name} failed: {deadline}")
    ]
