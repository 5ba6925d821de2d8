"""A Kubeflow Trainer TrainJob as the planner reads it (embedops.handlers.observe.observe_trainjob), no cluster."""

from __future__ import annotations

import json

from embedops.handlers.observe import has_pods, observe_trainjob


def _trainjob(conditions=(), jobs_status=(), suspend=False):
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {
            "name": "ft-train-abc",
            "namespace": "ns",
            "labels": {"embedops.dev/step": "train", "kueue.x-k8s.io/queue-name": "q"},
        },
        "spec": {"suspend": suspend},
        "status": {"conditions": list(conditions), "jobsStatus": list(jobs_status)},
    }


def _node_pod(index: int, phase: str, message: str | None = None):
    state = {"terminated": {"message": message}} if message is not None else {"terminated": {}}
    return {
        "metadata": {
            "name": f"ft-train-abc-node-0-{index}",
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
        },
        "status": {"phase": phase, "containerStatuses": [{"name": "node", "state": state}]},
    }


def _true(type_, message=""):
    return {"type": type_, "status": "True", "reason": type_, "message": message}


def test_a_suspended_trainjob_waits_in_its_queue():
    observed = observe_trainjob(_trainjob([_true("Suspended")], suspend=True), [])
    assert (observed.state, observed.suspended, observed.queue, observed.kind) == ("Pending", True, "q", "TrainJob")


def test_a_trainjob_with_active_pods_runs_and_its_counts_are_mirrored():
    counts = [{"name": "node", "ready": 2, "active": 2, "succeeded": 0, "failed": 1, "suspended": 0}]
    job = _trainjob(jobs_status=counts)
    assert has_pods(job) and not has_pods(_trainjob())
    observed = observe_trainjob(job, [])
    assert observed.state == "Running"
    assert (observed.report.active, observed.report.failed, observed.report.step) == (2, 1, "train")


def test_the_trainers_progress_is_the_jobs_progress():
    trainer = {
        "progressPercentage": 40,
        "estimatedRemainingSeconds": 600,
        "metrics": [{"name": "loss", "value": "0.8125"}, {"name": "lr", "value": "3e-5"}],
        "lastUpdatedTime": "2026-12-03T12:00:00Z",
    }
    job = _trainjob(jobs_status=[{"name": "node", "active": 2}])
    job["status"]["trainerStatus"] = trainer
    progress = observe_trainjob(job, []).report.progress
    assert (progress.done, progress.total, progress.eta_seconds, progress.loss) == (40, 100, 600, 0.8125)
    assert progress.rate is None
    assert observe_trainjob(_trainjob(jobs_status=[{"name": "node", "active": 2}]), []).report.progress is None


def test_a_complete_trainjob_carries_rank_0s_result_from_node_0():
    result = {"steps": 10, "worldSize": 16}
    pods = [_node_pod(0, "Succeeded", json.dumps(result)), _node_pod(1, "Succeeded")]
    observed = observe_trainjob(_trainjob([_true("Complete")]), pods)
    assert observed.state == "Succeeded" and observed.results == {0: result}


def test_a_failed_trainjob_says_why():
    message = json.dumps({"error": {"reason": "InvalidInput", "message": "training diverged"}})
    failed = observe_trainjob(_trainjob([_true("Failed", "jobset failed")]), [_node_pod(0, "Failed", message)])
    assert failed.state == "Failed" and "training diverged" in failed.error and failed.reason == "InvalidInput"
    bare = observe_trainjob(_trainjob([_true("Failed", "TrainingRuntime team-torch not found")]), [])
    assert bare.error == "TrainingRuntime team-torch not found"
