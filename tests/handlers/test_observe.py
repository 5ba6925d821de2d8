"""A Job's state from (Job, pods, log tail), without a cluster: embedops.handlers.observe."""

from __future__ import annotations

import json

from embedops.api.conditions import Reason
from embedops.handlers.observe import job_state, observe_job, parse_progress


def _job(status=None, suspend=False, labels=None):
    return {
        "metadata": {
            "name": "j",
            "namespace": "ns",
            "uid": "u",
            "labels": {"embedops.dev/step": "embed", **(labels or {})},
        },
        "spec": {"suspend": suspend},
        "status": status or {},
    }


def _pod(phase, *, index=0, message=None, conditions=None, waiting=None, created="2026-12-01T10:00:00Z"):
    state = {"terminated": {"message": message}} if message is not None else {}
    if waiting:
        state = {"waiting": waiting}
    return {
        "metadata": {
            "name": f"p{index}-{phase}",
            "creationTimestamp": created,
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
        },
        "status": {
            "phase": phase,
            "conditions": conditions or [],
            "containerStatuses": [{"name": "worker", "image": "img", "state": state}],
        },
    }


def _done(type_, **extra):
    return {"conditions": [{"type": type_, "status": "True", **extra}]}


def test_a_job_is_pending_until_one_of_its_pods_has_started():
    job = _job({"active": 1})
    assert observe_job(job, []).state == "Pending"
    assert observe_job(job, [_pod("Pending")]).state == "Pending"
    assert observe_job(job, [_pod("Pending"), _pod("Running", index=1)]).state == "Running"


def test_the_jobs_conditions_decide_success_and_failure():
    assert job_state(_job(_done("Complete")), []) == "Succeeded"
    assert job_state(_job(_done("Failed")), [_pod("Running")]) == "Failed"


def test_results_are_keyed_by_completion_index_and_unreadable_ones_skipped():
    pods = [
        _pod("Succeeded", index=1, message=json.dumps({"shard": 1})),
        _pod("Succeeded", index=0, message=json.dumps({"shard": 0})),
        _pod("Succeeded", index=2, message="not json"),
        _pod("Running", index=3),
    ]
    got = observe_job(_job({"active": 1, "succeeded": 3}), pods)
    assert got.results == {0: {"shard": 0}, 1: {"shard": 1}}
    assert got.state == "Running" and got.report.succeeded == 3 and got.report.step == "embed"


def test_a_failed_job_says_why_from_its_newest_failed_pod_or_its_condition():
    err = json.dumps({"error": {"reason": "InvalidInput", "message": "corpus.jsonl:7: missing _id"}})
    pods = [
        _pod("Failed", index=0, message="old", created="2026-12-01T09:00:00Z"),
        _pod("Failed", index=0, message=err, created="2026-12-01T10:00:00Z"),
    ]
    assert "missing _id" in observe_job(_job(_done("Failed")), pods).error
    bare = observe_job(_job(_done("Failed", reason="DeadlineExceeded", message="Job was active longer")), [])
    assert bare.error == "Job was active longer"


def test_a_pending_pod_says_what_holds_it():
    unschedulable = [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.",
        }
    ]
    got = observe_job(_job({"active": 1}), [_pod("Pending", conditions=unschedulable)])
    assert got.waiting == (Reason.UNSCHEDULABLE, unschedulable[0]["message"])
    claim = [{**unschedulable[0], "message": 'persistentvolumeclaim "embedops-workspace" not found'}]
    assert observe_job(_job({"active": 1}), [_pod("Pending", conditions=claim)]).waiting[0] == Reason.MISSING_WORKSPACE
    pull = observe_job(
        _job({"active": 1}), [_pod("Pending", waiting={"reason": "ImagePullBackOff", "message": "nope"})]
    )
    assert pull.waiting == (Reason.IMAGE_PULL_FAILED, "ImagePullBackOff: nope")
    # Only a pending Job is held back by its pods.
    assert (
        observe_job(_job({"active": 1}), [_pod("Running"), _pod("Pending", conditions=unschedulable)]).waiting is None
    )


def test_suspension_and_queue_come_from_the_job():
    got = observe_job(_job(suspend=True, labels={"kueue.x-k8s.io/queue-name": "gpu"}), [])
    assert got.suspended and got.queue == "gpu" and got.state == "Pending"


def test_progress_is_read_from_the_log_tail_of_a_running_job_only():
    line = (
        'INFO embedops.progress: Training steps: 120/300 progress={"task": "Training steps", "done": 120, '
        '"total": 300, "rate": 2.5, "loss": 0.4}'
    )
    running = observe_job(_job({"active": 1}), [_pod("Running")], "loading\n" + line + "\n")
    assert (running.report.progress.done, running.report.progress.loss) == (120, 0.4)
    assert observe_job(_job({"active": 1}), [_pod("Running")], None).report.progress is None  # the log was not read
    assert observe_job(_job(_done("Complete")), [_pod("Succeeded", message="{}")], line).report.progress is None
    assert parse_progress("no progress here\n") is None
    assert parse_progress("progress={broken") is None


def test_a_pods_progress_lines_become_status_job_progress(caplog):
    import logging

    from embedops import progress

    progress.use_bars(False)
    with caplog.at_level(logging.INFO, logger="embedops.progress"), progress.task("Training steps", total=300) as task:
        task._log_every = 0
        task.extra["loss"] = 0.4321
        task.advance(120)
    log = "\n".join(f"12:00:0{i} INFO embedops.progress: {m}" for i, m in enumerate(caplog.messages))
    got = parse_progress("Loading weights...\n" + log + "\nTraining steps: done, 120 items in 1.0s")
    assert (got.task, got.done, got.total, got.loss) == ("Training steps", 120, 300, 0.4321)
    assert got.rate > 0 and got.eta_seconds is not None
    assert parse_progress("no progress here\n") is None


def test_a_missing_secret_an_unbound_claim_and_pending_pods_are_named():
    """Issue 17, items 3, 12 and 5: what holds a pod back is said in words, and pending pods are not active."""
    secret = observe_job(
        _job({"active": 1}),
        [_pod("Pending", waiting={"reason": "CreateContainerConfigError", "message": 'secret "pg" not found'})],
    )
    assert secret.waiting[0] == Reason.MISSING_SECRET and 'secret "pg" not found' in secret.waiting[1]
    # A Secret without the key an EmbeddingDataset's generator endpoint names (issue 21).
    no_key = "couldn't find key api-key in Secret team-a/llm"
    key = observe_job(
        _job({"active": 1}), [_pod("Pending", waiting={"reason": "CreateContainerConfigError", "message": no_key})]
    )
    assert key.waiting == (
        Reason.MISSING_SECRET,
        f"{no_key} (the spec names it: a dsnSecretRef, or generate's apiKeySecretRef)",
    )
    unbound = [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims.",
        }
    ]
    claim = observe_job(_job({"active": 1}), [_pod("Pending", conditions=unbound)]).waiting
    assert claim[0] == Reason.MISSING_WORKSPACE and "the workspace claim is not bound" in claim[1]
    # The Job counts its pending pod as active; status.job counts the pods that run.
    assert observe_job(_job({"active": 1}), [_pod("Pending")]).report.active == 0
    assert observe_job(_job({"active": 2}), [_pod("Running"), _pod("Pending", index=1)]).report.active == 1


def test_a_failed_workers_own_reason_is_kept_beside_its_words():
    doc = '{"error":{"reason":"TargetConflict","message":"target public.docs belongs to EmbeddingIndex a/b"}}'
    got = observe_job(_job(_done("Failed", reason="BackoffLimitExceeded")), [_pod("Failed", message=doc)])
    assert got.reason == "TargetConflict"
    assert got.error == "TargetConflict: target public.docs belongs to EmbeddingIndex a/b"
    # A log tail (a crash) or the Job's own condition carries no worker reason.
    crash = observe_job(_job(_done("Failed", reason="BackoffLimitExceeded")), [_pod("Failed", message="boom\n")])
    assert (crash.reason, crash.error) == (None, "boom")
