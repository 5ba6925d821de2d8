"""What makes the operator reconcile a resource: kopf's handlers of the three kinds and their Jobs.

Each trigger only finds out which resource to reconcile and hands it to
embedops.handlers.executor, which observes, plans and carries the plan out. Triggers:

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
from typing import Any

import kopf

from embedops import metrics, reconcile
from embedops.api.common import GROUP, VERSION
from embedops.api.index import EmbeddingIndexSpec
from embedops.api.kinds import KINDS
from embedops.builders import naming
from embedops.builders.jobs import WorkerStep, worker_job
from embedops.handlers import executor, kube

log = logging.getLogger(__name__)


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
    metrics.serve(executor.SETTINGS.metrics_port)
    log.info("embedops operator: worker image %s, workspace claim %s at %s", executor.SETTINGS.worker_image,
             executor.SETTINGS.workspace_claim, executor.SETTINGS.workspace_path)


# Every resource seen, reconciled again every EMBEDOPS_RECONCILE_SECONDS by the sweep thread.
# (kopf's own timers would put a finalizer on every resource; only an index that drops its
# tables on deletion should have one.)
_known: set[tuple[str, str, str]] = set()
_known_lock = threading.Lock()
_stop = threading.Event()


def _sweep() -> None:
    while not _stop.wait(executor.SETTINGS.reconcile_seconds):
        with _known_lock:
            keys = list(_known)
        for kind, namespace, name in keys:
            if _stop.is_set():
                return
            executor.safe_reconcile(kind, namespace, name)


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
    executor.safe_reconcile(*key)


for _kind in KINDS.values():
    kopf.on.event(GROUP, VERSION, _kind.plural, id="reconcile")(resource_event)


@kopf.on.event("batch", "v1", "jobs", labels={"app.kubernetes.io/managed-by": naming.MANAGED_BY})
def job_changed(body: kopf.Body, type: str | None, **_: Any) -> None:  # noqa: A002 - kopf's argument name
    owner = next((r for r in body["metadata"].get("ownerReferences") or []
                  if r.get("apiVersion", "").startswith(f"{GROUP}/") and r.get("kind") in KINDS), None)
    if owner is None or type == "DELETED":
        return
    executor.safe_reconcile(owner["kind"], body["metadata"]["namespace"], owner["name"])


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
    manifest = worker_job(owner, step, executor.SETTINGS)
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
