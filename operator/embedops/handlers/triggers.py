"""What makes the operator reconcile a resource: kopf's handlers of the three kinds and their Jobs.

Each trigger only finds out which resource to reconcile and queues it
(embedops.handlers.workqueue); the queue's threads hand it to embedops.handlers.executor, which
observes, plans and carries the plan out. Triggers:

- a watch event of a resource that changed it, the listing at operator start included (the
  event of a status write of our own shows the resource as its reconcile left it: skipped);
- any change of a Job the operator owns (a pod started, finished or failed; the Job is gone), and of an
  index's query-embedding Deployment or Service (spec.serving: a version's pods Ready, a rollout failed);
- a change of a resource's Ready condition, for the resources that reference it (found in an
  index, not by listing the namespace);
- the time a resource asked for when it was last reconciled: its next probe or drift run, a
  pending pod or a running Job's progress to look at, a retry after an error, and at the latest
  EMBEDOPS_RECONCILE_SECONDS (a look in memory, free unless it finds work).

What the executor reads (the resources, who refers to whom, the Jobs) is in kopf's indexes,
declared here and read through embedops.handlers.memory.

kopf keeps its bookkeeping in annotations under `embedops.dev/` and uses the finalizer
`embedops.dev/finalizer`, which it adds only to an EmbeddingIndex with
`deletionPolicy: Delete` or `sync.mode: trigger` (the deletions that have work to do: dropping
tables, removing the source table's triggers).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from embedops import metrics, reconcile, steps
from embedops.api.common import GROUP, VERSION
from embedops.api.finetune import TRAINJOB_API
from embedops.api.index import EmbeddingIndexSpec
from embedops.api.kinds import KINDS
from embedops.builders import naming
from embedops.builders.jobs import WorkerStep, worker_job
from embedops.handlers import executor, kube, memory, workqueue

log = logging.getLogger(__name__)


class QuietStorageWarmup(logging.Filter):
    """Right after the CRDs are created the API server answers watches with 503 "storage is
    (re)initializing" for a few seconds; kopf retries, but logs an ERROR with the whole response
    body for each kind and namespace. Say it once, in one line, at INFO."""

    _MARK = "storage is (re)initializing"

    def __init__(self) -> None:
        super().__init__()
        self._said = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self._MARK not in record.getMessage():
            return True
        if self._said:
            return False
        self._said = True
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.msg, record.args, record.exc_info, record.exc_text = (
            "the API server is still initializing the storage of the embedops kinds (new CRDs); watching "
            "starts when it is ready",
            (),
            None,
            None,
        )
        return True


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = naming.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=naming.ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=naming.ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # kopf's own log lines do not become Events; ours are posted below
    settings.execution.max_workers = 4  # the handlers only queue; the reconciles run on the queue's threads
    settings.watching.server_timeout = 300
    # No cluster-wide watching of CRDs and namespaces (it would need cluster-wide RBAC): the
    # served kinds are resolved once, here, so the CRDs must be installed first (the chart does).
    settings.scanning.disabled = True
    quiet = QuietStorageWarmup()
    for handler in logging.getLogger().handlers:
        handler.addFilter(quiet)
    try:
        missing = kube.missing_kinds()
    except kube.NoCredentials as err:
        raise kopf.PermanentError(str(err)) from None
    if missing:
        raise kopf.PermanentError(
            f"the API server does not serve {', '.join(missing)} "
            f"({GROUP}/{VERSION}): install the CRDs (crds/ or the Helm chart) first"
        )
    metrics.serve(executor.SETTINGS.metrics_port)
    log.info(
        "embedops operator: worker image %s, workspace claim %s at %s",
        executor.SETTINGS.worker_image,
        executor.SETTINGS.workspace_claim,
        executor.SETTINGS.workspace_path,
    )


MANAGED = {"app.kubernetes.io/managed-by": naming.MANAGED_BY}
WORKERS = 4  # reconciles at once; each spends most of its time waiting for the API server

for _kind in KINDS.values():
    kopf.index(GROUP, VERSION, _kind.plural, id=memory.RESOURCES)(memory.index_resource)
    kopf.index(GROUP, VERSION, _kind.plural, id=memory.REFERENCES)(memory.index_references)
kopf.index("batch", "v1", "jobs", labels=MANAGED, id=memory.JOBS)(memory.index_job)
# Kubeflow Trainer's TrainJobs (a FineTuneJob across nodes); where the cluster serves none, kopf logs the resource
# as unresolved and watches it once its CRD appears.
TRAINJOB_GROUP, TRAINJOB_VERSION = TRAINJOB_API.split("/")
kopf.index(TRAINJOB_GROUP, TRAINJOB_VERSION, "trainjobs", labels=MANAGED, id=memory.TRAINJOBS)(memory.index_job)
kopf.index("apps", "v1", "deployments", labels=MANAGED, id=memory.DEPLOYMENTS)(memory.index_job)
kopf.index("", "v1", "services", labels=MANAGED, id=memory.SERVICES)(memory.index_job)

# kopf's own timers would put a finalizer on every resource (only an index that drops its tables
# on deletion should have one), and a thread per timer would not scale: one queue holds them all.
_queue: workqueue.WorkQueue | None = None


@kopf.on.startup()
def start_workers(**kwargs: Any) -> None:
    """The reconcile threads, and the indexes they read (empty now: kopf fills them before any handler runs)."""
    global _queue
    memory.CURRENT = memory.Memory(
        kwargs[memory.RESOURCES],
        kwargs[memory.REFERENCES],
        kwargs[memory.JOBS],
        kwargs[memory.TRAINJOBS],
        kwargs[memory.DEPLOYMENTS],
        kwargs[memory.SERVICES],
    )
    executor.start()
    _queue = workqueue.WorkQueue(_work, workers=WORKERS)
    _queue.start()


@kopf.on.cleanup()
def stop_workers(**_: Any) -> None:
    if _queue is not None:
        _queue.stop()
    memory.CURRENT = None


def _work(key: Any) -> float | None:
    outcome = executor.safe_reconcile(*key)
    if outcome is None:
        return None  # gone, or being deleted
    for other in outcome.dependants:
        _add(other)
    return outcome.look_again


def _add(key: memory.Key) -> None:
    if _queue is not None:
        _queue.add(key)


def resource_event(body: kopf.Body, type: str | None, **_: Any) -> None:  # noqa: A002 - kopf passes it as `type`
    """A change of a resource (and each one listed at start): reconcile it, unless it is our own status write."""
    key = memory.key_of(body)
    if type == "DELETED":
        _forget(key)
        return
    known = memory.CURRENT
    if known is not None and known.unchanged(key, body):
        return
    _add(key)


def _forget(key: memory.Key) -> None:
    if memory.CURRENT is not None:
        memory.CURRENT.forget(key)
    if _queue is not None:
        _queue.forget(key)
    executor.forget(key)
    metrics.METRICS.forget(*key)


for _kind in KINDS.values():
    kopf.on.event(GROUP, VERSION, _kind.plural, id="reconcile")(resource_event)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)  # a version's query model Ready, or failed
@kopf.on.event("", "v1", "services", labels=MANAGED)  # an index's Service edited (switched back by the plan)
@kopf.on.event(TRAINJOB_GROUP, TRAINJOB_VERSION, "trainjobs", labels=MANAGED)
def job_changed(body: kopf.Body, type: str | None, **_: Any) -> None:  # noqa: A002 - kopf passes it as `type`
    owner = next(
        (
            r
            for r in body["metadata"].get("ownerReferences") or []
            if r.get("apiVersion", "").startswith(f"{GROUP}/") and r.get("kind") in KINDS
        ),
        None,
    )
    if type == "DELETED":
        executor.forget_job(body["metadata"].get("uid"))
    if owner is not None:
        _add((owner["kind"], body["metadata"]["namespace"], owner["name"]))


# -- deletion -----------------------------------------------------------------------------------


def _cleans_up(spec: kopf.Spec, **_: Any) -> bool:
    return spec.get("deletionPolicy") == "Delete" or (spec.get("sync") or {}).get("mode") == "trigger"


@kopf.on.delete(GROUP, VERSION, "embeddingindexes", id="drop-tables", when=_cleans_up)
def drop_tables(body: kopf.Body, **_: Any) -> None:
    """deletionPolicy: Delete, or sync mode trigger (whose triggers must not outlive the index): run a cleanup
    Job and let the resource go once it succeeded."""
    spec = EmbeddingIndexSpec.model_validate(body.get("spec") or {})
    owner = reconcile.owner_of(dict(body))
    if spec.database.dsn_secret_ref is None:
        return  # nothing was ever built
    step = WorkerStep(
        owner=owner,
        key=owner.uid,
        config=steps.CleanupStep(
            target=spec.target,
            owner=reconcile.target_owner(owner),
            drop_tables=spec.deletion_policy == "Delete",
        ),
        resources=spec.resources,
        scheduling=spec.scheduling,
        dsn_secret=spec.database.dsn_secret_ref,
        ttl_seconds=600,
    )
    manifest = worker_job(step, executor.SETTINGS)
    # Not owned: the garbage collector would delete it with the resource it cleans up after.
    manifest["metadata"].pop("ownerReferences")
    job = kube.read_job(owner.namespace, manifest["metadata"]["name"])
    if job is None:
        kube.create_job(manifest)
        raise kopf.TemporaryError(f"dropping {spec.target.schema_name}.{spec.target.name}: Job created", delay=5)
    observed = kube.observe(job)
    if observed.state == "Succeeded":
        metrics.METRICS.forget("EmbeddingIndex", owner.namespace, owner.name)
        return
    if observed.state == "Failed":
        kube.post_event(dict(body), "Warning", "CleanupFailed", f"Job {observed.name} failed: {observed.error}")
        raise kopf.TemporaryError(f"cleanup Job {observed.name} failed; delete it to retry", delay=60)
    raise kopf.TemporaryError(f"waiting for cleanup Job {observed.name}", delay=5)
