"""Handlers of the three kinds, and of the Jobs they own.

Each handler only finds out which resource to reconcile; `reconcile` reads what exists
(the resource, its Jobs and their results, the resources it references), asks
embedops.reconcile for a plan, and carries it out. Triggers:

- any watch event of a resource, the listing at operator start included (a status write
  of our own comes back as an event too; its reconcile finds nothing to do);
- a sweep thread that reconciles every known resource every EMBEDOPS_RECONCILE_SECONDS, for
  probe and drift schedules, retries after errors, and missed events;
- any change of a Job the operator owns (a pod finished, a Job completed or failed);
- a change of a resource's Ready condition, for the resources that reference it.

kopf keeps its bookkeeping in annotations under `embedops.dev/` and uses the finalizer
`embedops.dev/finalizer`, which it adds only to an EmbeddingIndex with
`deletionPolicy: Delete` (the one deletion that has work to do: dropping tables).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Any

import kopf

from embedops import metrics, reconcile
from embedops.api.common import GROUP, VERSION, BaseStatus
from embedops.api.index import EmbeddingIndexSpec
from embedops.api.kinds import KINDS
from embedops.handlers import kube
from embedops.builders import naming
from embedops.builders.jobs import WorkerStep, worker_job
from embedops.settings import OperatorSettings

log = logging.getLogger(__name__)

SETTINGS = OperatorSettings.from_env()
_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = naming.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=naming.ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=naming.ANNOTATION_PREFIX, key="last-handled-configuration")
    settings.posting.level = logging.WARNING  # kopf's own log lines do not become Events; ours are posted below
    settings.execution.max_workers = 8
    settings.watching.server_timeout = 300
    # No cluster-wide watching of CRDs and namespaces (it would need cluster-wide RBAC): the
    # served kinds are resolved once, here, so the CRDs must be installed first (the chart does).
    settings.scanning.disabled = True
    try:
        missing = kube.missing_kinds()
    except kube.NoCredentials as err:
        raise kopf.PermanentError(str(err)) from None
    if missing:
        raise kopf.PermanentError(f"the API server does not serve {', '.join(missing)} "
                                  f"({GROUP}/{VERSION}): install the CRDs (crds/ or the Helm chart) first")
    metrics.serve(SETTINGS.metrics_port)
    log.info("embedops operator: worker image %s, workspace claim %s at %s", SETTINGS.worker_image,
             SETTINGS.workspace_claim, SETTINGS.workspace_path)


# -- reconcile ----------------------------------------------------------------------------------


def _with_transition_times(new: BaseStatus, old: dict[str, Any]) -> None:
    """Keep a condition's lastTransitionTime when its status did not change."""
    previous = {c.get("type"): c for c in old.get("conditions") or []}
    for cond in new.conditions:
        before = previous.get(cond.type)
        if before is not None and before.get("status") == cond.status and before.get("lastTransitionTime"):
            cond.last_transition_time = before["lastTransitionTime"]


def reconcile_resource(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """Reconcile one resource; returns the status written (None when unchanged or gone)."""
    with _locks[f"{kind}/{namespace}/{name}"]:
        body = kube.get_object(kind, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        metrics.METRICS.reconciles.labels(kind).inc()
        try:
            return _reconcile(kind, namespace, name, body)
        except Exception:
            metrics.METRICS.errors.labels(kind).inc()
            raise


def _reconcile(kind: str, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
    jobs = kube.owned_jobs(namespace, body["metadata"]["uid"])
    related = {}
    for ref_kind, ref_name in reconcile.references(body):
        other = kube.get_object(ref_kind, namespace, ref_name)
        if other is not None:
            related[(ref_kind, ref_name)] = other.get("status") or {}
    plan = reconcile.plan(reconcile.Observed(body=body, jobs=jobs, related=related), SETTINGS)
    for manifest in plan.create:
        if kube.create_job(manifest):
            log.info("%s %s/%s: created Job %s", kind, namespace, name, manifest["metadata"]["name"])
    for job_name in plan.delete:
        kube.delete_job(namespace, job_name)
        log.info("%s %s/%s: deleted superseded Job %s", kind, namespace, name, job_name)
    for type_, reason, message in plan.events:
        kube.post_event(body, type_, reason, message)
    old = body.get("status") or {}
    written = None
    status = plan.status
    if status is not None:
        _with_transition_times(status, old)
        wire = status.to_wire()
        if wire != old:
            kube.replace_status(kind, namespace, name, old, wire)
            written = wire
            if _ready(wire) != _ready(old):
                _nudge_dependants(kind, namespace, name)
    else:
        status = _status_model(kind, old)
    _observe_metrics(kind, namespace, name, body, status)
    return written


def _ready(status: dict[str, Any]) -> str | None:
    return next((c.get("status") for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)


def _status_model(kind: str, raw: dict[str, Any]) -> BaseStatus:
    model = KINDS[kind].status_model
    try:
        return model.model_validate(raw)
    except Exception:  # noqa: BLE001 - metrics must not fail a reconcile
        return model()


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
                threading.Thread(target=_safe_reconcile, args=(other_kind, namespace, other["metadata"]["name"]),
                                 daemon=True).start()


def _safe_reconcile(kind: str, namespace: str, name: str) -> None:
    try:
        reconcile_resource(kind, namespace, name)
    except Exception as err:  # noqa: BLE001 - the sweep retries
        log.warning("%s %s/%s: reconcile failed, retried on the next sweep: %s", kind, namespace, name, err)


# Every resource seen, reconciled again every EMBEDOPS_RECONCILE_SECONDS by the sweep thread.
# (kopf's own timers would put a finalizer on every resource; only an index that drops its
# tables on deletion should have one.)
_known: set[tuple[str, str, str]] = set()
_known_lock = threading.Lock()
_stop = threading.Event()


def _sweep() -> None:
    while not _stop.wait(SETTINGS.reconcile_seconds):
        with _known_lock:
            keys = list(_known)
        for kind, namespace, name in keys:
            if _stop.is_set():
                return
            _safe_reconcile(kind, namespace, name)


@kopf.on.startup()
def start_sweep(**_: Any) -> None:
    with _known_lock:
        _known.clear()
    _stop.clear()
    threading.Thread(target=_sweep, name="embedops-sweep", daemon=True).start()


@kopf.on.cleanup()
def stop_sweep(**_: Any) -> None:
    _stop.set()


def resource_event(body: kopf.Body, type: str | None, **_: Any) -> None:  # noqa: A002 - kopf's argument name
    """Any change of a resource (and each one listed at start): reconcile it."""
    key = (body["kind"], body["metadata"]["namespace"], body["metadata"]["name"])
    if type == "DELETED":
        with _known_lock:
            _known.discard(key)
        metrics.METRICS.forget(*key)
        return
    with _known_lock:
        _known.add(key)
    _safe_reconcile(*key)


for _kind in KINDS.values():
    kopf.on.event(GROUP, VERSION, _kind.plural, id="reconcile")(resource_event)


@kopf.on.event("batch", "v1", "jobs", labels={"app.kubernetes.io/managed-by": naming.MANAGED_BY})
def job_changed(body: kopf.Body, type: str | None, **_: Any) -> None:  # noqa: A002 - kopf's argument name
    owner = next((r for r in body["metadata"].get("ownerReferences") or []
                  if r.get("apiVersion", "").startswith(f"{GROUP}/") and r.get("kind") in KINDS), None)
    if owner is None or type == "DELETED":
        return
    _safe_reconcile(owner["kind"], body["metadata"]["namespace"], owner["name"])


# -- deletion -----------------------------------------------------------------------------------


def _deletes_tables(spec: kopf.Spec, **_: Any) -> bool:
    return spec.get("deletionPolicy") == "Delete"


@kopf.on.delete(GROUP, VERSION, "embeddingindexes", id="drop-tables", when=_deletes_tables)
def drop_tables(body: kopf.Body, **_: Any) -> None:
    """deletionPolicy: Delete: run a cleanup Job and let the resource go once it succeeded."""
    spec = EmbeddingIndexSpec.model_validate(body.get("spec") or {})
    owner = reconcile.owner_of(dict(body))
    if spec.database.dsn_secret_ref is None:
        return  # nothing was ever built
    step = WorkerStep(step="cleanup", worker="cleanup", key=owner.uid, config={"target": spec.target.to_wire()},
                      resources=spec.resources, scheduling=spec.scheduling, dsn_secret=spec.database.dsn_secret_ref,
                      ttl_seconds=600)
    manifest = worker_job(owner, step, SETTINGS)
    # Not owned: the garbage collector would delete it with the resource it cleans up after.
    manifest["metadata"].pop("ownerReferences")
    job = kube.read_job(owner.namespace, manifest["metadata"]["name"])
    if job is None:
        kube.create_job(manifest)
        raise kopf.TemporaryError(f"dropping {spec.target.schema_name}.{spec.target.name}: Job created", delay=5)
    observed = kube.observe_job(job)
    if observed.state == "Succeeded":
        metrics.METRICS.forget("EmbeddingIndex", owner.namespace, owner.name)
        return
    if observed.state == "Failed":
        kube.post_event(dict(body), "Warning", "CleanupFailed", f"Job {observed.name} failed: {observed.error}")
        raise kopf.TemporaryError(f"cleanup Job {observed.name} failed; delete it to retry", delay=60)
    raise kopf.TemporaryError(f"waiting for cleanup Job {observed.name}", delay=5)
