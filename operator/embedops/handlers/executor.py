"""The operator's executor of the plan: observe a resource in the cluster, plan, carry the plan out.

`reconcile_resource` reads what exists (the resource, the Jobs it owns and their pods' results,
the statuses of the resources it references), asks embedops.reconcile for the plan, creates and
deletes Jobs, posts the events, writes the status, and updates the metrics. It reads from the
operator's watch caches (embedops.handlers.memory), so a reconcile with nothing to do makes no
request at all; outside kopf (a test, a one-off call) it reads the API server instead. Its
outcome says when the resource next needs a look although no event came (a due probe, a pending
pod, a running Job's progress, a retry) and which resources refer to it when its readiness
changed; the kopf triggers (embedops.handlers.triggers) queue both. embedops.local is the other
executor of the same plan.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from embedops import metrics, reconcile
from embedops import status as statuses
from embedops.api import times
from embedops.api.common import BaseStatus
from embedops.api.kinds import KINDS
from embedops.builders.jobs import WorkerStep, worker_job
from embedops.builders.trainjob import train_job
from embedops.handlers import jobs, kube, locks, memory
from embedops.settings import OperatorSettings

log = logging.getLogger(__name__)

SETTINGS = OperatorSettings.from_env()
RETRY_SECONDS, MAX_RETRY_SECONDS = 5.0, 300.0  # a failed reconcile is retried after 5 s, 10 s, ... 5 min
MIN_LOOK_SECONDS = 0.5  # no resource is looked at more often than this without an event

_locks = locks.KeyedLocks()
_jobs = jobs.JobObserver(recheck_seconds=SETTINGS.reconcile_seconds)
_failures: dict[memory.Key, int] = {}  # consecutive failed reconciles of a resource


@dataclass(frozen=True)
class Outcome:
    """What a reconcile leaves to the triggers."""

    written: dict[str, Any] | None = None  # the status written; None when it was right already
    look_again: float | None = None  # seconds until the resource needs a look although no event came
    dependants: list[memory.Key] = field(default_factory=list)  # to reconcile now: this one's readiness changed


def start() -> None:
    """A new operator run: what the last one remembered of Jobs and failures is dropped."""
    global _jobs
    _jobs = jobs.JobObserver(recheck_seconds=SETTINGS.reconcile_seconds)
    _failures.clear()
    kube.forget_served()


def forget(key: memory.Key) -> None:
    """The resource is gone."""
    _failures.pop(key, None)


def forget_job(uid: str | None) -> None:
    if uid:
        _jobs.forget(uid)


def reconcile_resource(kind: str, namespace: str, name: str) -> Outcome | None:
    """Reconcile one resource; None when it is gone or being deleted."""
    with _locks.hold((kind, namespace, name)):
        body = _read(kind, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        with metrics.METRICS.reconciling(kind):
            return _reconcile(kind, namespace, name, body)


def _read(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    known = memory.CURRENT
    return known.body(kind, namespace, name) if known is not None else kube.get_object(kind, namespace, name)


def _owned_jobs(namespace: str, owner_uid: str) -> tuple[dict[str, reconcile.ObservedJob], float | None]:
    """The resource's Jobs, and in how many seconds one of them needs a look (a pending pod, progress)."""
    known = memory.CURRENT
    if known is None:
        return kube.owned_jobs(namespace, owner_uid), None
    return _jobs.observe(known.jobs(owner_uid))


def _reconcile(kind: str, namespace: str, name: str, body: dict[str, Any]) -> Outcome:
    observed, jobs_look = _owned_jobs(namespace, body["metadata"]["uid"])
    related = reconcile.related_statuses(body, lambda ref_kind, ref_name: _read(ref_kind, namespace, ref_name))
    # Only a FineTuneJob's plan asks whether TrainJobs are served (a discovery request at most once a minute).
    served = kind == "FineTuneJob" and kube.trainjob_api_served()
    deployments, services = _owned_serving(body)
    plan = reconcile.plan(
        reconcile.Observed(
            body=body,
            jobs=observed,
            related=related,
            trainjob_api=served,
            deployments=deployments,
            services=services,
        ),
        SETTINGS,
    )
    _carry_out(kind, namespace, name, body, plan, observed)
    old = body.get("status") or {}
    stored = statuses.parse(KINDS[kind].status_model, old)
    written, dependants = None, []
    status = plan.status
    if status is not None:
        wire = status.to_wire()
        if wire != old:
            answer = kube.replace_status(kind, namespace, name, old, wire)
            written = wire
            body = _wrote((kind, namespace, name), body, answer, wire)
            if statuses.is_ready(status) != statuses.is_ready(stored):
                dependants = _dependants(kind, namespace, name)
    else:
        status = stored
    if memory.CURRENT is not None:
        memory.CURRENT.reconciled((kind, namespace, name), body)
    _observe_metrics(kind, namespace, name, body, status)
    return Outcome(written=written, look_again=_look_again(body, jobs_look), dependants=dependants)


def _carry_out(
    kind: str,
    namespace: str,
    name: str,
    body: dict[str, Any],
    plan: reconcile.Plan,
    observed: dict[str, reconcile.ObservedJob],
) -> None:
    """Everything the plan asks for but the status: Jobs, serving objects, events."""
    for step in plan.create:
        if _create(step):
            log.info("%s %s/%s: created %s %s", kind, namespace, name, step.launcher, step.name)
    for job_name in plan.delete:
        is_trainjob = job_name in observed and observed[job_name].kind == "TrainJob"
        (kube.delete_trainjob if is_trainjob else kube.delete_job)(namespace, job_name)
        log.info("%s %s/%s: deleted superseded Job %s", kind, namespace, name, job_name)
    for job_name, suspend in plan.suspend.items():
        is_trainjob = job_name in observed and observed[job_name].kind == "TrainJob"
        (kube.suspend_trainjob if is_trainjob else kube.suspend_job)(namespace, job_name, suspend)
    for manifest in plan.apply:
        kube.apply(manifest)
        log.info("%s %s/%s: applied %s %s", kind, namespace, name, manifest["kind"], manifest["metadata"]["name"])
    for child_kind, child in plan.remove:
        kube.remove(child_kind, namespace, child)
        log.info("%s %s/%s: deleted %s %s", kind, namespace, name, child_kind, child)
    for type_, reason, message in plan.events:
        kube.post_event(body, type_, reason, message)
        metrics.METRICS.event_posted(kind, namespace, name, reason)


def _owned_serving(
    body: dict[str, Any],
) -> tuple[dict[str, reconcile.ObservedDeployment], dict[str, reconcile.ObservedService]]:
    """An index's query-embedding Deployments and Service (spec.serving); other kinds have none. Outside kopf
    (a one-off call) they are read only for an index that asks for serving."""
    if body.get("kind") != "EmbeddingIndex":
        return {}, {}
    owner_uid = body["metadata"]["uid"]
    known = memory.CURRENT
    if known is None:
        wanted = (body.get("spec") or {}).get("serving") is not None
        return kube.owned_serving(body["metadata"]["namespace"], owner_uid) if wanted else ({}, {})
    return kube.observe_serving(*known.serving(owner_uid))


def _create(step: WorkerStep) -> bool:
    """Create the Job, or the Kubeflow Trainer TrainJob, that runs a planned step; False when it exists."""
    if step.launcher == "TrainJob":
        return kube.create_trainjob(train_job(step, SETTINGS))
    return kube.create_job(worker_job(step, SETTINGS))


def _wrote(
    key: memory.Key, body: dict[str, Any], answer: dict[str, Any] | None, wire: dict[str, Any]
) -> dict[str, Any]:
    """The resource after our status write, remembered until the watch brings it."""
    if answer is None:  # a test's fake API server
        return {**body, "status": wire}
    if memory.CURRENT is not None:
        memory.CURRENT.wrote(key, answer)
    return {**body, "status": answer.get("status") or {}}


def _look_again(body: dict[str, Any], jobs_look: float | None) -> float:
    """Seconds until the next look with no event: a due probe or drift run, a Job's, or the periodic one.

    The periodic look (EMBEDOPS_RECONCILE_SECONDS) reads memory only: it costs no request unless
    it finds something to do.
    """
    now = times.utcnow()
    looks = [SETTINGS.reconcile_seconds] + ([jobs_look] if jobs_look is not None else [])
    if (due := reconcile.next_due(body, now)) is not None:
        looks.append((due - now).total_seconds())
    return max(min(looks), MIN_LOOK_SECONDS)


def _observe_metrics(kind: str, namespace: str, name: str, body: dict[str, Any], status: BaseStatus) -> None:
    try:
        spec = KINDS[kind].spec_model.model_validate(body.get("spec") or {})
    except Exception:  # noqa: BLE001 - an invalid spec still has a Ready series
        spec = None
    metrics.METRICS.observe(kind, namespace, name, spec, status)


def _dependants(kind: str, namespace: str, name: str) -> list[memory.Key]:
    """The resources whose plan reads this one's status (outside kopf nobody would queue them)."""
    known = memory.CURRENT
    return known.referrers(kind, namespace, name) if known is not None else []


def safe_reconcile(kind: str, namespace: str, name: str) -> Outcome | None:
    """reconcile_resource with its failure logged and retried later, later still if it fails again."""
    key = (kind, namespace, name)
    try:
        outcome = reconcile_resource(kind, namespace, name)
    except Exception as err:  # noqa: BLE001 - retried
        failures = _failures[key] = _failures.get(key, 0) + 1
        delay = min(RETRY_SECONDS * 2 ** (failures - 1), MAX_RETRY_SECONDS)
        log.warning("%s %s/%s: reconcile failed, retried in %.0f s: %s", kind, namespace, name, delay, err)
        return Outcome(look_again=delay)
    _failures.pop(key, None)
    return outcome
