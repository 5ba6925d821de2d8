"""The operator's executor of the plan: observe a resource in the cluster, plan, carry the plan out.

`reconcile_resource` reads what exists (the resource, the Jobs it owns and their pods' results,
the statuses of the resources it references), asks embedops.reconcile for the plan, creates and
deletes Jobs, posts the events, writes the status, and updates the metrics. embedops.local is
the other executor of the same plan; the kopf triggers that call this one are in
embedops.handlers.triggers.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Any

from embedops import metrics, reconcile
from embedops import status as statuses
from embedops.api.common import BaseStatus
from embedops.api.kinds import KINDS
from embedops.handlers import kube
from embedops.settings import OperatorSettings

log = logging.getLogger(__name__)

SETTINGS = OperatorSettings.from_env()
_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)


def reconcile_resource(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """Reconcile one resource; returns the status written (None when unchanged or gone)."""
    with _locks[f"{kind}/{namespace}/{name}"]:
        body = kube.get_object(kind, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        with metrics.METRICS.reconciling(kind):
            return _reconcile(kind, namespace, name, body)


def _reconcile(kind: str, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
    jobs = kube.owned_jobs(namespace, body["metadata"]["uid"])
    related = reconcile.related_statuses(body, lambda ref_kind, ref_name: kube.get_object(ref_kind, namespace, ref_name))
    plan = reconcile.plan(reconcile.Observed(body=body, jobs=jobs, related=related), SETTINGS)
    for manifest in plan.create:
        if kube.create_job(manifest):
            log.info("%s %s/%s: created Job %s", kind, namespace, name, manifest["metadata"]["name"])
    for job_name in plan.delete:
        kube.delete_job(namespace, job_name)
        log.info("%s %s/%s: deleted superseded Job %s", kind, namespace, name, job_name)
    for job_name, suspend in plan.suspend.items():
        kube.suspend_job(namespace, job_name, suspend)
    for type_, reason, message in plan.events:
        kube.post_event(body, type_, reason, message)
        metrics.METRICS.event_posted(kind, namespace, name, reason)
    old = body.get("status") or {}
    stored = statuses.parse(KINDS[kind].status_model, old)
    written = None
    status = plan.status
    if status is not None:
        wire = status.to_wire()
        if wire != old:
            kube.replace_status(kind, namespace, name, old, wire)
            written = wire
            if statuses.is_ready(status) != statuses.is_ready(stored):
                _nudge_dependants(kind, namespace, name)
    else:
        status = stored
    _observe_metrics(kind, namespace, name, body, status)
    return written


def _observe_metrics(kind: str, namespace: str, name: str, body: dict[str, Any], status: BaseStatus) -> None:
    try:
        spec = KINDS[kind].spec_model.model_validate(body.get("spec") or {})
    except Exception:  # noqa: BLE001 - an invalid spec still has a Ready series
        spec = None
    metrics.METRICS.observe(kind, namespace, name, spec, status)


def _nudge_dependants(kind: str, namespace: str, name: str) -> None:
    """Reconcile the resources that reference this one, now that its readiness changed."""
    for other_kind in ("FineTuneJob", "EmbeddingIndex"):
        for other in kube.list_objects(other_kind, namespace):
            if (kind, name) in reconcile.references(other):
                threading.Thread(target=safe_reconcile, args=(other_kind, namespace, other["metadata"]["name"]),
                                 daemon=True).start()


def safe_reconcile(kind: str, namespace: str, name: str) -> None:
    try:
        reconcile_resource(kind, namespace, name)
    except Exception as err:  # noqa: BLE001 - the sweep retries
        log.warning("%s %s/%s: reconcile failed, retried on the next sweep: %s", kind, namespace, name, err)


