"""What the operator knows of the cluster without asking the API server: kopf's watch caches.

A reconcile used to read its resource, the resources it references and the Jobs it owns from the
API server, and a resource becoming Ready listed every FineTuneJob and EmbeddingIndex of its
namespace to find the ones waiting for it. kopf already watches all of these; its indexes
(`@kopf.index`, registered in embedops.handlers.triggers) keep what the watches deliver, so the
reconcile reads memory instead, as controller-runtime reconcilers read their informer caches:

- the three kinds by (kind, namespace, name);
- who refers to whom: for each (kind, namespace, name), the resources whose plan reads its status;
- the Jobs (and Kubeflow Trainer TrainJobs) the operator made, by the uid of the resource that owns them;
- an index's query-embedding Deployments and Service (spec.serving), by the index's uid too.

kopf fills the indexes before it calls any handler, so the first reconcile already sees every
object. One thing memory cannot know sooner than the API server tells it is a status this
process has just written: until its watch event arrives, the status written is laid over the
cached object (only the operator writes statuses, so the newest one is ours). The same record
tells a watch event caused by our own status write (nothing to do) from a change.

The index functions are pure; `Memory` only reads the indexes kopf keeps. Those are updated on
kopf's event loop and read from the reconcile threads, hence the retry in `_values`.
"""

from __future__ import annotations

import copy
import json
import threading
from typing import Any

from kopf import Index

from embedops import reconcile
from embedops.builders import naming

Key = tuple[str, str, str]  # (kind, namespace, name)

# kopf's index ids; each reaches the handlers as a keyword argument of this name.
RESOURCES = "embedops_resources"
REFERENCES = "embedops_references"
JOBS = "embedops_jobs"
TRAINJOBS = "embedops_trainjobs"  # Kubeflow Trainer TrainJobs (a FineTuneJob across nodes), by owner uid too
DEPLOYMENTS = "embedops_deployments"  # an index's query-embedding Deployments (spec.serving), by owner uid
SERVICES = "embedops_services"  # and its Service

# Annotations kopf itself writes (its progress storage and diff base use the embedops.dev/ prefix):
# a change of one of them is no change of the resource.
KOPF_ANNOTATIONS = frozenset(
    {f"{naming.ANNOTATION_PREFIX}/last-handled-configuration", f"{naming.ANNOTATION_PREFIX}/drop-tables"}
)


def key_of(body: Any) -> Key:
    return body["kind"], body["metadata"]["namespace"], body["metadata"]["name"]


def slim(body: Any) -> dict[str, Any]:
    """A plain copy of a watched object without its managedFields (half of its size, never read)."""
    raw = json.loads(json.dumps(dict(body)))
    raw.get("metadata", {}).pop("managedFields", None)
    return raw


def index_resource(body: Any, **_: Any) -> dict[Key, dict[str, Any]]:
    return {key_of(body): slim(body)}


def index_references(body: Any, **_: Any) -> dict[Key, Key]:
    """For each resource this one's plan reads the status of: this one (references are in the namespace)."""
    namespace = body["metadata"]["namespace"]
    return {(kind, namespace, name): key_of(body) for kind, name in reconcile.references(dict(body))}


def index_job(body: Any, **_: Any) -> dict[str, dict[str, Any]] | None:
    uid = (body["metadata"].get("labels") or {}).get(naming.LABEL_OWNER_UID)
    return {uid: slim(body)} if uid else None


def fingerprint(body: dict[str, Any]) -> str:
    """What a reconcile reads from the resource itself: the same fingerprint means the same plan."""
    meta = body.get("metadata") or {}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in KOPF_ANNOTATIONS}
    return json.dumps(
        [body.get("spec"), meta.get("labels"), annotations, meta.get("deletionTimestamp"), body.get("status")],
        sort_keys=True,
        default=str,
    )


def _values(index: Index[Any, Any], key: Any) -> list[Any]:
    for _ in range(5):
        try:
            return list(index[key]) if key in index else []
        except KeyError:  # emptied between the test and the read
            return []
        except RuntimeError:  # changed by the event loop while read: read again
            continue
    return list(index[key]) if key in index else []


class Memory:
    """The indexes of one operator run, and the statuses it wrote since."""

    def __init__(
        self,
        resources: Index[Any, Any],
        references: Index[Any, Any],
        jobs: Index[Any, Any],
        trainjobs: Index[Any, Any] | None = None,
        deployments: Index[Any, Any] | None = None,
        services: Index[Any, Any] | None = None,
    ) -> None:
        self._resources, self._references, self._jobs, self._trainjobs = resources, references, jobs, trainjobs
        self._deployments, self._services = deployments, services
        self._lock = threading.Lock()
        self._written: dict[Key, tuple[str, dict[str, Any]]] = {}  # key -> (resourceVersion, status)
        self._reconciled: dict[Key, str] = {}  # key -> fingerprint of the resource as its last reconcile left it

    def body(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The resource as last watched, with the status this process wrote since, if any."""
        found = _values(self._resources, (kind, namespace, name))
        if not found:
            return None
        body = copy.deepcopy(found[0])  # the planner's to read; kopf's copy stays as the watch left it
        with self._lock:
            written = self._written.get((kind, namespace, name))
        if written is None:
            return body
        version, status = written
        if _newer_or_same(body["metadata"].get("resourceVersion"), version):
            with self._lock:  # the watch caught up with our write
                if self._written.get((kind, namespace, name)) == written:
                    del self._written[(kind, namespace, name)]
            return body
        return {**body, "status": status}

    def referrers(self, kind: str, namespace: str, name: str) -> list[Key]:
        """The resources whose plan reads this one's status."""
        return sorted(set(_values(self._references, (kind, namespace, name))))

    def jobs(self, owner_uid: str) -> list[dict[str, Any]]:
        trainjobs = _values(self._trainjobs, owner_uid) if self._trainjobs is not None else []
        return _values(self._jobs, owner_uid) + trainjobs

    def serving(self, owner_uid: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """An index's Deployments and Services (spec.serving), as last watched."""
        deployments = _values(self._deployments, owner_uid) if self._deployments is not None else []
        services = _values(self._services, owner_uid) if self._services is not None else []
        return deployments, services

    def wrote(self, key: Key, obj: dict[str, Any]) -> None:
        """Our status write, as the API server answered it (the object with its new resourceVersion)."""
        with self._lock:
            self._written[key] = (obj["metadata"].get("resourceVersion") or "", obj.get("status") or {})

    def reconciled(self, key: Key, body: dict[str, Any]) -> None:
        with self._lock:
            self._reconciled[key] = fingerprint(body)

    def unchanged(self, key: Key, body: Any) -> bool:
        """Whether a watch event shows the resource as its last reconcile left it (our own status write)."""
        with self._lock:
            last = self._reconciled.get(key)
        return last is not None and last == fingerprint(dict(body))

    def forget(self, key: Key) -> None:
        with self._lock:
            self._written.pop(key, None)
            self._reconciled.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._written) + len(self._reconciled)


def _newer_or_same(cached: str | None, written: str) -> bool:
    """Whether the cached object is at least as new as our write. Resource versions are etcd's
    revision numbers in every API server we know; one that is not a number is taken as newer
    (the watch is then trusted over our memory, as before this cache existed)."""
    try:
        return int(cached or 0) >= int(written)
    except ValueError:
        return True


CURRENT: Memory | None = None  # the running operator's; None outside kopf (reads go to the API server)
