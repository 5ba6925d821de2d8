"""The operator against a real control plane: Jobs, scheduling on GPU nodes, results into status.

Worker pods do not run here (kwok plays the kubelet); a test ends each pod with the
termination message a worker would write, and checks what the operator makes of it.
test_pod_spec.py runs the worker commands for real.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request

from tests.e2e.conftest import METRICS_PORT, running_operator, wait_for

DATASET = {
    "apiVersion": "embedops.dev/v1alpha1",
    "kind": "EmbeddingDataset",
    "metadata": {"name": "ds"},
    "spec": {"source": {"beir": {"path": "data/scifact"}}},
}
FINETUNE = {
    "apiVersion": "embedops.dev/v1alpha1",
    "kind": "FineTuneJob",
    "metadata": {"name": "ft"},
    "spec": {
        "datasetRef": {"name": "ds"},
        "resources": {"cpu": "4", "memory": "16Gi"},
        "scheduling": {
            "priorityClassName": "",
            "queueName": "gpu-queue",
            "backoffLimit": 1,
            "activeDeadlineSeconds": 3600,
        },
    },
}
INDEX = {
    "apiVersion": "embedops.dev/v1alpha1",
    "kind": "EmbeddingIndex",
    "metadata": {"name": "ix"},
    "spec": {
        "model": {"fineTuneJobRef": {"name": "ft"}},
        "source": {"datasetRef": {"name": "ds"}},
        "target": {"name": "docs"},
        "database": {"dsnSecretRef": {"name": "pg"}},
        "embedding": {"shards": 2},
        "probe": {"minRecall": 0.5},
    },
}

PREPARED = {
    "counts": {"corpus": 600, "trainPairs": 433, "testQueries": 100, "titlePairs": 200},
    "fingerprint": "f" * 64,
    "location": "/workspace/embedops/embeddingdatasets/ds/k",
    "invalidSamples": [],
    "preparedAt": "2026-11-25T11:00:00Z",
}
TRAINED = {
    "model": {
        "location": "/workspace/embedops/finetunejobs/ft/k/model",
        "baseModel": "m",
        "dimensions": 384,
        "fingerprint": "a" * 64,
    },
    "baseMetrics": {"ndcgAt10": 0.7897, "mrrAt10": 0.7623, "recallAt10": 0.905, "recallAt100": 0.97, "queries": 100},
    "tunedMetrics": {"ndcgAt10": 0.8167, "mrrAt10": 0.7913, "recallAt10": 0.915, "recallAt100": 0.98, "queries": 100},
    "ndcgGain": 0.027,
    "trainPairs": 433,
    "steps": 84,
    "startTime": "2026-11-25T11:00:00Z",
    "completionTime": "2026-11-25T11:05:00Z",
    "durationSeconds": 288.0,
}


def _shard(state: str) -> str:
    return json.dumps(
        {
            "version": 1,
            "table": "docs_v1",
            "state": state,
            "rows": 600,
            "shardRows": 300,
            "embedded": 300,
            "resumed": False,
            "seconds": 10.0,
            "rowsPerSecond": 45.0,
        }
    )


def _published() -> str:
    probe = {
        "version": 1,
        "k": 10,
        "recallAtK": 0.91,
        "mrrAt10": 0.79,
        "ndcgAt10": 0.81,
        "queries": 100,
        "passed": True,
        "reason": "recall@10 0.9100 >= 0.5",
        "checkedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return json.dumps(
        {
            "candidate": 1,
            "probe": probe,
            "liveVersion": 1,
            "dropped": [],
            "versions": [
                {
                    "version": 1,
                    "table": "docs_v1",
                    "model": TRAINED["model"]["location"],
                    "rows": 600,
                    "state": "Live",
                    "probe": probe,
                    "createdAt": probe["checkedAt"],
                }
            ],
        }
    )


def _secret(kube):
    kube.core.create_namespaced_secret(
        kube.ns, {"metadata": {"name": "pg"}, "stringData": {"dsn": "postgresql://u:p@db.example:5432/x"}}
    )


def _prepare(kube) -> None:
    job = kube.wait_job("prepare")
    (pod,) = kube.wait_running_pods(job.metadata.name)
    assert pod.spec.node_name == "cpu-0"  # no GPU asked, and the GPU node is tainted
    kube.finish(pod.metadata.name, json.dumps(PREPARED))
    kube.wait_ready("EmbeddingDataset", "ds")


def run_lifecycle(kube, *, serving: bool = False) -> None:
    """Dataset → fine-tune → index through to a live version, playing each worker's part (with `serving`: the
    index serves its query model, whose Deployment is rolled out before the publish Job)."""
    _secret(kube)
    index = {**INDEX, "spec": {**INDEX["spec"], "serving": {}}} if serving else INDEX
    for doc in (DATASET, FINETUNE, index):
        kube.apply(doc)
    # The dataset's prepare Job runs first; the others wait for it.
    _prepare(kube)
    ds = kube.get("EmbeddingDataset", "ds")["status"]
    assert ds["counts"]["trainPairs"] == 433 and ds["phase"] == "Ready" and ds["observedGeneration"] == 1

    # Training: one GPU, scheduled on the GPU node, with the scheduling passed through.
    job = kube.wait_job("train")
    assert job.metadata.labels["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert job.spec.backoff_limit == 1 and job.spec.active_deadline_seconds == 3600
    assert job.metadata.owner_references[0].kind == "FineTuneJob"
    (pod,) = kube.wait_running_pods(job.metadata.name)
    assert pod.spec.node_name == "gpu-0"
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    progressing = kube.condition("FineTuneJob", "ft", "Progressing")
    assert progressing["status"] == "True" and progressing["reason"] == "Training"
    kube.finish(pod.metadata.name, json.dumps(TRAINED))
    ft = kube.wait_ready("FineTuneJob", "ft")["status"]
    assert ft["tunedMetrics"]["ndcgAt10"] == 0.8167 and ft["model"]["fingerprint"] == "a" * 64

    # Re-embedding: an Indexed Job of two shards, then the publish step (probe gate, cut-over).
    embed = kube.wait_job("embed")
    assert embed.spec.completion_mode == "Indexed" and embed.spec.completions == 2
    pods = sorted(
        kube.wait_running_pods(embed.metadata.name, 2),
        key=lambda p: p.metadata.annotations["batch.kubernetes.io/job-completion-index"],
    )
    env = {e.name: e for e in pods[0].spec.containers[0].env}
    assert env["EMBEDOPS_DSN"].value_from.secret_key_ref.name == "pg"  # the DSN never in the spec itself
    kube.finish(pods[0].metadata.name, _shard("Building"))
    wait_for(
        "re-index progress in status",
        lambda: (kube.get("EmbeddingIndex", "ix")["status"].get("reindex") or {}).get("rowsDone") == 300,
    )
    kube.finish(pods[1].metadata.name, _shard("Ready"))
    publish = kube.wait_job("publish")
    (pod,) = kube.wait_running_pods(publish.metadata.name)
    config = json.loads(pod.spec.containers[0].command[4])
    assert config["version"] == 1 and config["datasetDir"] == PREPARED["location"]
    kube.finish(pod.metadata.name, _published())
    ix = kube.wait_ready("EmbeddingIndex", "ix")["status"]
    assert ix["liveVersion"] == 1 and ix["rows"] == 600 and ix["probe"]["recallAtK"] == 0.91
    assert "activeJob" not in ix and "reindex" not in ix
    if serving:
        from kubernetes import client

        deployment = client.AppsV1Api(kube.api).read_namespaced_deployment("ix-serve-v1", kube.ns)
        assert deployment.status.available_replicas == 1
        assert TRAINED["model"]["location"] in deployment.spec.template.spec.containers[0].command
        wait_for(
            "the Service selecting v1",
            lambda: kube.core.read_namespaced_service("ix-query", kube.ns).spec.selector["embedops.dev/version"] == "1",
        )


def test_full_lifecycle_on_the_control_plane(kube, operator):
    run_lifecycle(kube)
    # Events, and metrics SREs alert on.
    reasons = {e.reason for e in kube.events("ix")}
    assert {"JobCreated", "Serving"} <= reasons
    text = urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5).read().decode()
    ix = f'kind="EmbeddingIndex",name="ix",namespace="{kube.ns}"'
    tuned = f'kind="FineTuneJob",model="tuned",name="ft",namespace="{kube.ns}"'
    assert f"embedops_index_live_version{{{ix}}} 1.0" in text
    assert f'embedops_index_probe_recall_ratio{{k="10",{ix}}} 0.91' in text
    assert f"embedops_index_probe_version{{{ix}}} 1.0" in text
    assert f'embedops_finetune_ndcg_ratio{{k="10",{tuned}}} 0.8167' in text
    assert f'embedops_finetune_recall_ratio{{k="100",{tuned}}} 0.98' in text
    assert f'embedops_resource_condition{{{ix},status="True",type="Ready"}} 1.0' in text
    assert f'embedops_resource_condition{{{ix},status="False",type="Degraded"}} 1.0' in text
    assert f"embedops_index_gate_failures_total{{{ix}}} 0.0" in text
    assert f'embedops_index_scheduled_run_failures_total{{{ix},step="probe"}} 0.0' in text
    for kind in ("EmbeddingDataset", "FineTuneJob", "EmbeddingIndex"):
        assert f'embedops_reconcile_total{{kind="{kind}",result="error"}}' in text
        assert f'embedops_reconcile_duration_seconds_count{{kind="{kind}",result="success"}}' in text
    assert "embedops_build_info{" in text and "_created" not in text
    if shutil.which("promtool"):  # what Prometheus scrapes, linted
        lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert lint.returncode == 0 and not (lint.stdout + lint.stderr).strip(), lint.stdout + lint.stderr
    # Exactly one Job per step: reconciles every second created nothing twice.
    assert sorted(j.metadata.labels["embedops.dev/step"] for j in kube.jobs()) == [
        "embed",
        "prepare",
        "publish",
        "train",
    ]


def test_gpu_request_that_no_node_fits_stays_pending(kube, operator):
    kube.apply(DATASET)
    _prepare(kube)
    big = json.loads(json.dumps(FINETUNE))
    big["spec"]["resources"]["gpus"] = 4  # the GPU node has 2
    kube.apply(big)
    job = kube.wait_job("train")
    pod = wait_for("the training pod", lambda: next(iter(kube.pods(job.metadata.name)), None))
    event = wait_for(
        "FailedScheduling",
        lambda: next((e for e in kube.events(pod.metadata.name) if e.reason == "FailedScheduling"), None),
    )
    assert "Insufficient nvidia.com/gpu" in event.message
    time.sleep(2)
    pod = kube.core.read_namespaced_pod(pod.metadata.name, kube.ns)
    assert pod.status.phase == "Pending" and not pod.spec.node_name
    # Reported as what it is, in the scheduler's words: not "running".
    progressing = wait_for(
        "Unschedulable",
        lambda: c if (c := kube.condition("FineTuneJob", "ft", "Progressing"))["reason"] == "Unschedulable" else None,
    )
    assert progressing["status"] == "True" and "Insufficient nvidia.com/gpu" in progressing["message"]
    status = kube.get("FineTuneJob", "ft")["status"]
    assert status["phase"] == "Pending" and status["job"]["name"] == job.metadata.name

    # Asking for what fits replaces the pending run: its Job is deleted, the new one scheduled.
    kube.patch("FineTuneJob", "ft", {"spec": {"resources": {"gpus": 1}}})
    wait_for("the pending Job deleted", lambda: job.metadata.name not in {j.metadata.name for j in kube.jobs("train")})
    new = kube.wait_job("train")
    (pod,) = kube.wait_running_pods(new.metadata.name)
    assert pod.spec.node_name == "gpu-0"
    assert any(e.reason == "JobSuperseded" for e in kube.events("ft"))
    kube.finish(pod.metadata.name, json.dumps(TRAINED))  # free the GPU for the tests that follow
    kube.wait_ready("FineTuneJob", "ft")


def test_the_cluster_example_applies_and_runs(kube, operator):
    """examples/cluster/ as a user applies it (its workspace claim exists here already, its demo Postgres is
    not run: the worker pods are played by the test)."""
    import yaml

    from tests.e2e.conftest import ROOT

    kube.core.create_namespaced_secret(
        kube.ns, {"metadata": {"name": "embedops-demo-pg"}, "stringData": {"password": "p", "dsn": "postgresql://x"}}
    )
    for path in sorted((ROOT / "examples" / "cluster").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["apiVersion"].startswith("embedops.dev/"):
                kube.apply(doc)
    prepare = kube.wait_job("prepare")
    (pod,) = kube.wait_running_pods(prepare.metadata.name)
    kube.finish(pod.metadata.name, json.dumps(PREPARED))
    train = kube.wait_job("train")
    (pod,) = kube.wait_running_pods(train.metadata.name)
    assert pod.spec.node_name == "gpu-0"
    assert pod.spec.containers[0].resources.limits == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}
    index = wait_for("the index reconciled", lambda: kube.condition("EmbeddingIndex", "scifact-docs"))
    assert index["reason"] == "WaitingForModel"
    kube.finish(pod.metadata.name, json.dumps(TRAINED))
    kube.wait_job("embed")


def test_a_missing_workspace_claim_is_named(kube, operator):
    kube.core.delete_namespaced_persistent_volume_claim("embedops-workspace", kube.ns)
    wait_for("the claim gone", lambda: not kube.core.list_namespaced_persistent_volume_claim(kube.ns).items)
    kube.apply(DATASET)
    ready = wait_for(
        "MissingWorkspace",
        lambda: (
            c if (c := kube.condition("EmbeddingDataset", "ds") or {}).get("reason") == "MissingWorkspace" else None
        ),
    )
    assert 'persistentvolumeclaim "embedops-workspace" not found' in ready["message"]


def test_kueue_label_suspend_and_resume(kube, operator):
    kube.apply(DATASET)
    _prepare(kube)
    queued = json.loads(json.dumps(FINETUNE))
    queued["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "gpu-queue"}
    queued["spec"]["scheduling"] = {"suspend": True}
    kube.apply(queued)
    job = kube.wait_job("train")
    assert job.metadata.labels["kueue.x-k8s.io/queue-name"] == "gpu-queue" and job.spec.suspend is True
    # In a queue, a suspended Job waits for Kueue (no Kueue runs here: it stays queued).
    wait_for("Queued", lambda: kube.get("FineTuneJob", "ft").get("status", {}).get("phase") == "Queued")
    # Out of the queue, the resource's suspend is the Job's: resuming patches the same Job.
    unqueued = json.loads(json.dumps(FINETUNE))
    unqueued["metadata"]["name"] = "solo"
    unqueued["spec"]["scheduling"] = {"suspend": True}
    kube.apply(unqueued)
    solo = wait_for(
        "the solo Job",
        lambda: next(
            (j for j in kube.jobs("train") if j.metadata.labels["app.kubernetes.io/instance"] == "solo"), None
        ),
    )
    wait_for("Suspended", lambda: kube.get("FineTuneJob", "solo").get("status", {}).get("phase") == "Suspended")
    kube.patch("FineTuneJob", "solo", {"spec": {"scheduling": {"suspend": False}}})
    wait_for("resumed", lambda: kube.batch.read_namespaced_job(solo.metadata.name, kube.ns).spec.suspend is False)
    (pod,) = kube.wait_running_pods(solo.metadata.name)
    assert [
        j.metadata.name for j in kube.jobs("train") if j.metadata.labels["app.kubernetes.io/instance"] == "solo"
    ] == [solo.metadata.name]
    assert any(e.reason == "JobResumed" for e in kube.events("solo"))
    kube.finish(pod.metadata.name, json.dumps(TRAINED))


def _prepare_fails(kube, reason: str, message: str, exit_code: int):
    """The dataset's prepare pod ends as a worker that failed this way would; its Job."""
    kube.apply(DATASET)
    job = kube.wait_job("prepare")
    (pod,) = kube.wait_running_pods(job.metadata.name)
    kube.finish(pod.metadata.name, json.dumps({"error": {"reason": reason, "message": message}}), exit_code=exit_code)
    return job


def test_worker_failure_reaches_status_without_retries(kube, operator):
    job = _prepare_fails(kube, "InvalidInput", 'corpus.jsonl:7: missing "_id"', exit_code=2)
    wait_for("Failed phase", lambda: kube.get("EmbeddingDataset", "ds").get("status", {}).get("phase") == "Failed")
    ready = kube.condition("EmbeddingDataset", "ds")
    assert ready["reason"] == "JobFailed" and 'corpus.jsonl:7: missing "_id"' in ready["message"]
    assert len(kube.pods(job.metadata.name)) == 1  # exit code 2: the pod failure policy failed the Job at once


def test_a_transient_failure_is_retried_by_the_job(kube, operator):
    job = _prepare_fails(kube, "DatabaseUnavailable", "cannot connect to the database", exit_code=3)
    wait_for("a second pod", lambda: len(kube.pods(job.metadata.name)) == 2, timeout=90)
    assert kube.condition("EmbeddingDataset", "ds", "Progressing")["status"] == "True"
    assert kube.get("EmbeddingDataset", "ds")["status"]["phase"] == "Running"


def test_invalid_spec_gives_a_condition_not_a_crash_loop(kube, operator):
    # Valid for the API server, invalid for embedops: a cached loss's mini-batch above the batch.
    kube.apply(DATASET)
    _prepare(kube)
    bad = json.loads(json.dumps(FINETUNE))
    bad["spec"]["loss"] = {"type": "CachedMultipleNegativesRankingLoss", "miniBatchSize": 64}
    bad["spec"]["training"] = {"batchSize": 32}
    kube.apply(bad)
    wait_for("InvalidSpec", lambda: (kube.condition("FineTuneJob", "ft") or {}).get("reason") == "InvalidSpec")
    assert "miniBatchSize must not exceed" in kube.condition("FineTuneJob", "ft")["message"]
    assert kube.jobs("train") == []
    assert any(e.reason == "InvalidSpec" and e.type == "Warning" for e in kube.events("ft"))


def test_restart_mid_flight_creates_no_duplicates(kube):
    with running_operator(kube.ns):
        kube.apply(DATASET)
        job = kube.wait_job("prepare")
        (pod,) = kube.wait_running_pods(job.metadata.name)
    # The operator is down while the pod finishes.
    kube.finish(pod.metadata.name, json.dumps(PREPARED))
    wait_for("the Job to complete", lambda: kube.batch.read_namespaced_job(job.metadata.name, kube.ns).status.succeeded)
    kube.apply(FINETUNE)
    with running_operator(kube.ns):
        kube.wait_ready("EmbeddingDataset", "ds")
        kube.wait_job("train")
        time.sleep(3)  # several reconcile intervals
    with running_operator(kube.ns):
        time.sleep(3)
    steps = sorted(j.metadata.labels["embedops.dev/step"] for j in kube.jobs())
    assert steps == ["prepare", "train"]


def test_deletion_keeps_tables_unless_the_spec_says_delete(kube, operator):
    _secret(kube)
    kept = json.loads(json.dumps(INDEX))
    kept["metadata"]["name"] = "kept"
    kube.apply(kept)
    wait_for("kept reconciled", lambda: kube.get("EmbeddingIndex", "kept").get("status"))
    assert "embedops.dev/finalizer" not in (kube.get("EmbeddingIndex", "kept")["metadata"].get("finalizers") or [])
    kube.custom.delete_namespaced_custom_object("embedops.dev", "v1alpha1", kube.ns, "embeddingindexes", "kept")
    wait_for(
        "kept gone",
        lambda: (
            not kube.custom.list_namespaced_custom_object("embedops.dev", "v1alpha1", kube.ns, "embeddingindexes")[
                "items"
            ]
        ),
    )
    assert kube.jobs("cleanup") == []  # Retain: nothing touches the database

    dropped = json.loads(json.dumps(INDEX))
    dropped["metadata"]["name"] = "dropped"
    dropped["spec"]["deletionPolicy"] = "Delete"
    kube.apply(dropped)
    wait_for(
        "the finalizer",
        lambda: "embedops.dev/finalizer" in (kube.get("EmbeddingIndex", "dropped")["metadata"].get("finalizers") or []),
    )
    kube.custom.delete_namespaced_custom_object("embedops.dev", "v1alpha1", kube.ns, "embeddingindexes", "dropped")
    job = kube.wait_job("cleanup")
    cleanup = json.loads(job.spec.template.spec.containers[0].command[4])
    # It drops the target for this index only (the catalog's owner), never another's.
    assert cleanup["target"] == {"name": "docs", "schema": "public"}
    assert (cleanup["owner"]["namespace"], cleanup["owner"]["name"]) == (kube.ns, "dropped")
    (pod,) = kube.wait_running_pods(job.metadata.name)
    assert kube.get("EmbeddingIndex", "dropped")["metadata"].get("deletionTimestamp")  # held until dropped
    kube.finish(pod.metadata.name, json.dumps({"dropped": ["docs_v1"]}))
    wait_for(
        "dropped gone",
        lambda: (
            not kube.custom.list_namespaced_custom_object("embedops.dev", "v1alpha1", kube.ns, "embeddingindexes")[
                "items"
            ]
        ),
        timeout=60,
    )


def test_a_repeated_event_is_counted_not_copied(kube):
    from embedops.handlers import kube as kubeapi

    body = kube.apply(DATASET)
    for _ in range(3):
        kubeapi.post_event(body, "Warning", "ProbeFailed", "Job x failed: boom")
    (event,) = [e for e in kube.events("ds") if e.reason == "ProbeFailed"]
    assert event.count == 3
