"""What a Job is doing, decided from what the API server says about it: pure, no I/O.

The operator reads a Job, its pods and (sometimes) a running pod's log tail from the watch
cache or the API server (embedops.handlers.kube and .memory); this module turns the three into
the `ObservedJob` the planner reads. Keeping the decision apart from the reads, as kopf keeps
cause detection apart from processing, lets every state be tested without a cluster.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from embedops.api.common import JobProgress, JobStatus
from embedops.api.conditions import Reason
from embedops.builders import naming, serving
from embedops.builders.jobs import CONTAINER, KUEUE_QUEUE_LABEL
from embedops.progress import MARKER
from embedops.reconcile import JobState, ObservedDeployment, ObservedJob, ObservedService
from embedops.results import describe_error, error_reason

log = logging.getLogger(__name__)

_IMAGE_PULL = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
_STARTED = ("Running", "Succeeded", "Failed")


def observe_job(job: dict[str, Any], pods: list[dict[str, Any]], log_tail: str | None = None) -> ObservedJob:
    """A Job's state, what holds its pods back, its pods' results (termination messages) and progress.

    A Job counts its Pending pods as active: it is Running here only once one of its pods has
    started, so an unschedulable pod (no GPU free, a missing workspace claim) or an image that
    cannot be pulled shows as what it is. `log_tail` is the end of the running pod's log, or None
    when it was not read (no progress is shown then).
    """
    meta, status = job["metadata"], job.get("status") or {}
    name = meta["name"]
    state = job_state(job, pods)
    results, failures = _results(pods, meta.get("namespace", ""))
    error = reason = None
    if state == "Failed":
        failed = _condition(job, "Failed") or {}
        newest = max(failures)[1] if failures else None
        error = describe_error(newest) or failed.get("message") or failed.get("reason")
        reason = error_reason(newest)
    labels = meta.get("labels") or {}
    report = JobStatus(
        name=name,
        step=labels.get(naming.LABEL_STEP, ""),
        start_time=status.get("startTime"),
        completion_time=status.get("completionTime"),
        # A Job counts its pending pods as active; status.job counts the pods that run.
        active=sum((p.get("status") or {}).get("phase") == "Running" for p in pods),
        succeeded=status.get("succeeded") or 0,
        failed=status.get("failed") or 0,
    )
    waiting = next((w for p in pods if (w := waiting_reason(p)) is not None), None) if state == "Pending" else None
    if state == "Running" and log_tail is not None:
        report.progress = parse_progress(log_tail)
    return ObservedJob(
        name=name,
        state=state,
        results=results,
        error=error,
        reason=reason,
        suspended=bool((job.get("spec") or {}).get("suspend")),
        step=labels.get(naming.LABEL_STEP),
        queue=labels.get(KUEUE_QUEUE_LABEL),
        waiting=waiting,
        report=report,
    )


def observe_trainjob(train_job: dict[str, Any], pods: list[dict[str, Any]]) -> ObservedJob:
    """A Kubeflow Trainer TrainJob as the planner reads a Job: its conditions (Complete, Failed, Suspended), its
    Jobs' pod counts and its trainerStatus progress mirrored, and the result rank 0 wrote (the termination
    message of node 0's pod).

    Trainer's conditions say nothing of running: a TrainJob runs here once one of its pods has started, or
    its Jobs count an active pod.
    """
    meta, spec, status = train_job["metadata"], train_job.get("spec") or {}, train_job.get("status") or {}
    counts = status.get("jobsStatus") or []
    state = job_state(train_job, pods)
    if state == "Pending" and any(c.get("active") for c in counts):
        state = "Running"
    results, failures = _results(pods, meta.get("namespace", ""), container=None)
    error = reason = None
    if state == "Failed":
        failed = _condition(train_job, "Failed") or {}
        newest = max(failures)[1] if failures else None
        error = describe_error(newest) or failed.get("message") or failed.get("reason")
        reason = error_reason(newest)
    labels = meta.get("labels") or {}
    report = JobStatus(
        name=meta["name"],
        step=labels.get(naming.LABEL_STEP, ""),
        active=sum(c.get("active") or 0 for c in counts),
        succeeded=sum(c.get("succeeded") or 0 for c in counts),
        failed=sum(c.get("failed") or 0 for c in counts),
    )
    if state == "Running":
        report.progress = trainer_progress(status.get("trainerStatus") or {})
    waiting = next((w for p in pods if (w := waiting_reason(p)) is not None), None) if state == "Pending" else None
    return ObservedJob(
        name=meta["name"],
        state=state,
        results=results,
        error=error,
        reason=reason,
        suspended=bool(spec.get("suspend")) or _condition(train_job, "Suspended") is not None,
        step=labels.get(naming.LABEL_STEP),
        queue=labels.get(KUEUE_QUEUE_LABEL),
        waiting=waiting,
        report=report,
        kind="TrainJob",
    )


def trainer_progress(trainer_status: dict[str, Any]) -> JobProgress | None:
    """A TrainJob's `trainerStatus` (Trainer v2.2 and later: progress %, remaining seconds, string metrics) as the
    progress a Job's log gives; None when Trainer reports no progress."""
    percent = trainer_status.get("progressPercentage")
    if percent is None:
        return None
    metrics = {m.get("name"): m.get("value") for m in trainer_status.get("metrics") or []}
    try:
        loss = float(metrics["loss"]) if "loss" in metrics else None
    except ValueError:
        loss = None
    return JobProgress(
        task="Training (%)",
        done=int(percent),
        total=100,
        eta_seconds=trainer_status.get("estimatedRemainingSeconds"),
        loss=loss,
    )


def job_state(job: dict[str, Any], pods: list[dict[str, Any]]) -> JobState:
    """Pending, Running, Succeeded or Failed (see observe_job)."""
    if _condition(job, "Complete"):
        return "Succeeded"
    if _condition(job, "Failed"):
        return "Failed"
    if any((p.get("status") or {}).get("phase") in _STARTED for p in pods):
        return "Running"
    return "Pending"


def has_pods(job: dict[str, Any]) -> bool:
    """Whether the Job's (or TrainJob's Jobs') status counts any pod: without one, no pod listing is needed."""
    status = job.get("status") or {}
    if job.get("kind") == "TrainJob":
        return any(
            any(c.get(k) for k in ("active", "ready", "succeeded", "failed")) for c in status.get("jobsStatus") or []
        )
    return bool(
        status.get("active")
        or status.get("succeeded")
        or status.get("failed")
        or status.get("ready")
        or status.get("terminating")
    )


def finished(job: dict[str, Any]) -> bool:
    return _condition(job, "Complete") is not None or _condition(job, "Failed") is not None


def running_pod(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The pod whose log carries the Job's progress lines."""
    return next((p for p in pods if (p.get("status") or {}).get("phase") == "Running"), None)


def parse_progress(text: str) -> JobProgress | None:
    """The last progress document (embedops.progress) in a log's text."""
    for line in reversed(text.splitlines()):
        if MARKER in line:
            try:
                return JobProgress.model_validate(json.loads(line.rsplit(MARKER, 1)[1]))
            except ValueError:
                return None
    return None


def waiting_reason(pod: dict[str, Any]) -> tuple[Reason, str] | None:
    """Why a pending pod cannot start, as the scheduler or the kubelet says it."""
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            return _unschedulable(cond.get("message") or "no node fits")
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _IMAGE_PULL:
            return Reason.IMAGE_PULL_FAILED, f"{waiting['reason']}: {waiting.get('message') or cs.get('image', '')}"
        if waiting.get("reason") == "CreateContainerConfigError":
            # The kubelet's words name the Secret (or its key): `secret "pg" not found`,
            # `couldn't find key dsn in Secret team-a/pg`.
            detail = waiting.get("message") or "a Secret or ConfigMap the pod reads is missing"
            return Reason.MISSING_SECRET, f"{detail} (the spec names it: a dsnSecretRef, or generate's apiKeySecretRef)"
    return None


def _unschedulable(message: str) -> tuple[Reason, str]:
    """A pod the scheduler cannot place, and whether the workspace claim is the cause (missing, or unbound:
    no StorageClass provisions it, which only the claim's own events say)."""
    lowered = message.lower()
    if "persistentvolumeclaim" in lowered and "not found" in lowered:
        return Reason.MISSING_WORKSPACE, message
    if "unbound" in lowered and "persistentvolumeclaim" in lowered:
        return Reason.MISSING_WORKSPACE, (
            f"the workspace claim is not bound (no PersistentVolume or default StorageClass provides it: "
            f"`kubectl describe pvc` says why): {message}"
        )
    return Reason.UNSCHEDULABLE, message


def _condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return cond
    return None


def _results(
    pods: list[dict[str, Any]], namespace: str, container: str | None = CONTAINER
) -> tuple[dict[int, dict[str, Any]], list[tuple[str, str | None]]]:
    """The succeeded pods' results by completion index, and (creation time, message) of the failed ones; from
    `container`'s termination message, or (None: a runtime's pods) any container's."""
    results: dict[int, dict[str, Any]] = {}
    failures = []
    for pod in pods:
        message = _termination_message(pod, container)
        phase = (pod.get("status") or {}).get("phase")
        if phase == "Succeeded" and message:
            try:
                doc = json.loads(message)
            except json.JSONDecodeError:
                log.warning("pod %s/%s: termination message is not JSON", namespace, pod["metadata"]["name"])
                continue
            index = int((pod["metadata"].get("annotations") or {}).get("batch.kubernetes.io/job-completion-index", 0))
            results[index] = doc
        elif phase == "Failed":
            failures.append((pod["metadata"].get("creationTimestamp") or "", message))
    return results, failures


def _termination_message(pod: dict[str, Any], container: str | None = CONTAINER) -> str | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (cs.get("state") or {}).get("terminated") or {}
        if cs.get("name") == container or (container is None and terminated.get("message")):
            return terminated.get("message")
    return None


def observe_deployment(deployment: dict[str, Any]) -> ObservedDeployment:
    """A query-embedding Deployment (spec.serving): rolled out as last applied, as `kubectl rollout status` decides
    it (every replica updated and available, no old one left), or failed (its progress deadline passed, or its
    ReplicaSet cannot make pods: a quota, a missing ServiceAccount)."""
    meta, spec, status = deployment["metadata"], deployment.get("spec") or {}, deployment.get("status") or {}
    replicas = int(spec.get("replicas", 1))
    current = int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
    updated, available = status.get("updatedReplicas") or 0, status.get("availableReplicas") or 0
    ready = current and updated >= replicas and available >= replicas and (status.get("replicas") or 0) <= updated
    failed = None
    for cond in status.get("conditions") or []:
        stalled = cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded"
        if stalled or (cond.get("type") == "ReplicaFailure" and cond.get("status") == "True"):
            failed = f"{cond.get('reason')}: {cond.get('message') or 'no message'}"
    return ObservedDeployment(
        name=meta["name"],
        spec_hash=(meta.get("annotations") or {}).get(serving.SPEC_HASH),
        ready=ready,
        failed=None if ready else failed,
    )


def observe_service(service: dict[str, Any]) -> ObservedService:
    """An index's query-embedding Service, and the version its selector names."""
    meta = service["metadata"]
    version = ((service.get("spec") or {}).get("selector") or {}).get(serving.LABEL_VERSION)
    return ObservedService(
        name=meta["name"],
        spec_hash=(meta.get("annotations") or {}).get(serving.SPEC_HASH),
        version=int(version) if version and version.isdigit() else None,
    )
