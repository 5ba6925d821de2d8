"""The operator's reads and writes against the API server (the kubernetes client, sync).

Every request the operator makes itself goes through here (kopf's watches are kopf's), so its
API cost can be read off this one module: the reconcile path reads from the watch caches
(embedops.handlers.memory) and comes here only to write, and for pods and logs (see there).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from embedops.api import times
from embedops.api.common import GROUP, VERSION
from embedops.api.kinds import KINDS
from embedops.builders import naming, trainjob
from embedops.builders.jobs import CONTAINER
from embedops.handlers import observe as observe_
from embedops.reconcile import ObservedDeployment, ObservedJob, ObservedService

log = logging.getLogger(__name__)

_api: client.ApiClient | None = None
FIELD_MANAGER = "embedops"  # how the operator's writes show in managedFields
# The custom objects API returns the decoded JSON of an object, typed as `object`.
_Json = dict[str, Any]


class NoCredentials(Exception):
    """Neither in a cluster nor given a usable kubeconfig."""


def api() -> client.ApiClient:
    global _api
    if _api is None:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            # Read KUBECONFIG now: the client's default was fixed when it was imported.
            path = os.environ.get("KUBECONFIG")
            try:
                config.load_kube_config(config_file=path)
            except (config.ConfigException, OSError) as err:
                where = f"$KUBECONFIG ({path})" if path else "~/.kube/config"
                raise NoCredentials(
                    f"no Kubernetes credentials: not running in a cluster, and {where} gives none ({err})"
                ) from None
        _api = client.ApiClient()
    return _api


def missing_kinds() -> list[str]:
    """The embedops kinds the API server does not serve (discovery, allowed to any account)."""
    try:
        served = {r.kind for r in client.CustomObjectsApi(api()).get_api_resources(GROUP, VERSION).resources}
    except ApiException as err:
        if err.status != 404:
            raise
        served = set()
    return [kind for kind in KINDS if kind not in served]


def plural(kind: str) -> str:
    return KINDS[kind].plural


def get_object(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        got = client.CustomObjectsApi(api()).get_namespaced_custom_object(GROUP, VERSION, namespace, plural(kind), name)
        return cast(_Json, got)
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def list_objects(kind: str, namespace: str) -> list[dict[str, Any]]:
    out = client.CustomObjectsApi(api()).list_namespaced_custom_object(GROUP, VERSION, namespace, plural(kind))
    return cast(_Json, out).get("items", [])


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`: removed keys become null."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            nested = merge_patch(before, value)
            if nested:
                patch[key] = nested
        elif value != before:
            patch[key] = value
    return patch


def replace_status(kind: str, namespace: str, name: str, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Make the status `new`, removing what it no longer has; the object as the API server now holds it."""
    patched = client.CustomObjectsApi(api()).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, plural(kind), name, {"status": merge_patch(old, new)}, field_manager=FIELD_MANAGER
    )
    return cast(_Json, patched)


# Events this process posted, by (object uid, type, reason, message) -> (Event name, count): a
# repeat bumps the existing Event's count, as client-go's event correlator does, instead of
# posting a copy (a failure seen on every reconcile would flood `kubectl describe`).
_posted: OrderedDict[tuple[str, str, str, str], tuple[str, int]] = OrderedDict()
_POSTED_MAX = 4096
_posted_lock = threading.Lock()


def post_event(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    """An Event about a resource, as `kubectl describe` shows it (posted from any thread)."""
    meta = body["metadata"]
    message = message[:1024]
    now = times.now()
    key = (meta.get("uid") or meta["name"], type_, reason, message)
    core = client.CoreV1Api(api())
    try:
        with _posted_lock:
            seen = _posted.get(key)
        if seen is not None:
            name, count = seen
            try:
                core.patch_namespaced_event(name, meta["namespace"], {"count": count + 1, "lastTimestamp": now})
                _remember(key, name, count + 1)
                return
            except ApiException as err:
                if err.status != 404:  # gone (Events expire after an hour): post a new one
                    raise
        event: Any = {  # Any: the client sends a dict body as the JSON it is, though typed as its model
            "metadata": {"generateName": f"{meta['name'][:200]}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": body["apiVersion"],
                "kind": body["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message,
            "source": {"component": "embedops-operator"},
            "reportingComponent": "embedops.dev/operator",
            "reportingInstance": "embedops-operator",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        created = core.create_namespaced_event(meta["namespace"], event)
        if (posted := created.metadata.name) is not None:  # always: the API server names what it creates
            _remember(key, posted, 1)
    except ApiException as err:  # an event is never worth failing a reconcile
        log.warning("could not post event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], err.reason)


def _remember(key: tuple[str, str, str, str], name: str, count: int) -> None:
    with _posted_lock:
        _posted[key] = (name, count)
        _posted.move_to_end(key)
        while len(_posted) > _POSTED_MAX:
            _posted.popitem(last=False)


def create_job(manifest: dict[str, Any]) -> bool:
    """Create a Job; False when it exists already (a restart, or a concurrent reconcile)."""
    body: Any = manifest  # the client sends a dict body as the JSON it is, though typed as V1Job
    try:
        client.BatchV1Api(api()).create_namespaced_job(
            manifest["metadata"]["namespace"], body, field_manager=FIELD_MANAGER
        )
        return True
    except ApiException as err:
        if err.status == 409:
            return False
        raise


def suspend_job(namespace: str, name: str, suspend: bool) -> None:
    """Suspend a Job (its pods are deleted) or resume it (the same Job goes on)."""
    client.BatchV1Api(api()).patch_namespaced_job(
        name, namespace, {"spec": {"suspend": suspend}}, field_manager=FIELD_MANAGER
    )


def delete_job(namespace: str, name: str) -> None:
    """Delete a Job and its pods (gone already is fine)."""
    try:
        client.BatchV1Api(api()).delete_namespaced_job(name, namespace, propagation_policy="Background")
    except ApiException as err:
        if err.status != 404:
            raise


def read_job(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return api().sanitize_for_serialization(client.BatchV1Api(api()).read_namespaced_job(name, namespace))
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def owned_jobs(namespace: str, owner_uid: str) -> dict[str, ObservedJob]:
    """The Jobs (and TrainJobs) a resource owns, read from the API server now (the operator reads them from its
    watch cache, embedops.handlers.memory; this is for a caller without one)."""
    selector = f"{naming.LABEL_OWNER_UID}={owner_uid}"
    jobs = client.BatchV1Api(api()).list_namespaced_job(namespace, label_selector=selector)
    out = {}
    for job in jobs.items:
        raw = api().sanitize_for_serialization(job)
        out[raw["metadata"]["name"]] = observe(raw)
    if trainjob_api_served():
        found = client.CustomObjectsApi(api()).list_namespaced_custom_object(
            trainjob.GROUP, _TRAINJOB_VERSION, namespace, _TRAINJOBS, label_selector=selector
        )
        for item in cast(_Json, found).get("items", []):
            out[item["metadata"]["name"]] = observe_trainjob(item)
    return out


# -- Kubeflow Trainer TrainJobs (builders.trainjob) -----------------------------------------------

_TRAINJOB_VERSION = trainjob.VERSION
_TRAINJOBS = "trainjobs"
_SERVED_SECONDS = 60.0  # how long an answer of discovery is trusted
_served: tuple[float, bool] | None = None


def trainjob_api_served() -> bool:
    """Whether the API server serves Kubeflow Trainer's TrainJob (discovery, allowed to any account; asked at
    most once a minute)."""
    global _served
    now = time.monotonic()
    if _served is not None and now - _served[0] < _SERVED_SECONDS:
        return _served[1]
    try:
        resources = client.CustomObjectsApi(api()).get_api_resources(trainjob.GROUP, _TRAINJOB_VERSION).resources
        served = any(r.name == _TRAINJOBS for r in resources)
    except ApiException as err:
        if err.status != 404:
            raise
        served = False
    _served = (now, served)
    return served


def forget_served() -> None:
    """A new operator run asks discovery again."""
    global _served
    _served = None


def create_trainjob(manifest: dict[str, Any]) -> bool:
    """Create a TrainJob; False when it exists already."""
    try:
        client.CustomObjectsApi(api()).create_namespaced_custom_object(
            trainjob.GROUP,
            _TRAINJOB_VERSION,
            manifest["metadata"]["namespace"],
            _TRAINJOBS,
            manifest,
            field_manager=FIELD_MANAGER,
        )
        return True
    except ApiException as err:
        if err.status == 409:
            return False
        raise


def suspend_trainjob(namespace: str, name: str, suspend: bool) -> None:
    client.CustomObjectsApi(api()).patch_namespaced_custom_object(
        trainjob.GROUP, _TRAINJOB_VERSION, namespace, _TRAINJOBS, name, {"spec": {"suspend": suspend}}
    )


def delete_trainjob(namespace: str, name: str) -> None:
    """Delete a TrainJob, and through it its JobSet and pods (gone already is fine)."""
    try:
        client.CustomObjectsApi(api()).delete_namespaced_custom_object(
            trainjob.GROUP, _TRAINJOB_VERSION, namespace, _TRAINJOBS, name, propagation_policy="Background"
        )
    except ApiException as err:
        if err.status != 404:
            raise


def trainjob_pods(namespace: str, name: str) -> list[dict[str, Any]]:
    """The pods of a TrainJob's JobSet (Trainer names the JobSet after the TrainJob)."""
    pods = client.CoreV1Api(api()).list_namespaced_pod(namespace, label_selector=f"{JOBSET_LABEL}={name}")
    return [api().sanitize_for_serialization(p) for p in pods.items]


JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"


def observe_trainjob(train_job: dict[str, Any]) -> ObservedJob:
    meta = train_job["metadata"]
    pods = trainjob_pods(meta["namespace"], meta["name"]) if observe_.has_pods(train_job) else []
    return observe_.observe_trainjob(train_job, pods)


def observe(job: dict[str, Any]) -> ObservedJob:
    """A Job as observe.observe_job decides it, its pods and its running pod's log read now."""
    pods = job_pods(job["metadata"]["namespace"], job["metadata"]["name"]) if observe_.has_pods(job) else []
    running = observe_.running_pod(pods)
    tail = log_tail(job["metadata"]["namespace"], running["metadata"]["name"]) if running is not None else None
    return observe_.observe_job(job, pods, tail)


def job_pods(namespace: str, job_name: str) -> list[dict[str, Any]]:
    pods = client.CoreV1Api(api()).list_namespaced_pod(
        namespace, label_selector=f"batch.kubernetes.io/job-name={job_name}"
    )
    return [api().sanitize_for_serialization(p) for p in pods.items]


def log_tail(namespace: str, pod: str, lines: int = 50) -> str | None:
    """The last lines of a worker pod's log; None when there is none to read."""
    try:
        return (
            client.CoreV1Api(api()).read_namespaced_pod_log(pod, namespace, container=CONTAINER, tail_lines=lines) or ""
        )
    except ApiException as err:  # no log yet, or no right to read it: no progress shown
        log.debug("no log of pod %s/%s: %s", namespace, pod, err.reason)
        return None


# -- query-embedding Deployments and Services (spec.serving, builders.serving) ---------------------


def apply(manifest: dict[str, Any]) -> None:
    """Create or update a Deployment or Service as rendered (server-side apply: fields others set, such as a
    HorizontalPodAutoscaler's replicas under its own manager, are not the operator's unless rendered)."""
    meta = manifest["metadata"]
    body: Any = manifest  # JSON is YAML: the apply patch is the manifest as it is
    options: dict[str, Any] = {
        "field_manager": FIELD_MANAGER,
        "force": True,
        "_content_type": "application/apply-patch+yaml",
    }
    if manifest["kind"] == "Deployment":
        client.AppsV1Api(api()).patch_namespaced_deployment(meta["name"], meta["namespace"], body, **options)
    else:
        client.CoreV1Api(api()).patch_namespaced_service(meta["name"], meta["namespace"], body, **options)


def remove(kind: str, namespace: str, name: str) -> None:
    """Delete an owned Deployment (its pods with it) or Service; gone already is fine."""
    try:
        if kind == "Deployment":
            client.AppsV1Api(api()).delete_namespaced_deployment(name, namespace, propagation_policy="Background")
        else:
            client.CoreV1Api(api()).delete_namespaced_service(name, namespace)
    except ApiException as err:
        if err.status != 404:
            raise


def owned_serving(namespace: str, owner_uid: str) -> tuple[dict[str, ObservedDeployment], dict[str, ObservedService]]:
    """An index's Deployments and Services, read from the API server now (the operator reads its watch cache)."""
    selector = f"{naming.LABEL_OWNER_UID}={owner_uid}"
    deployments = client.AppsV1Api(api()).list_namespaced_deployment(namespace, label_selector=selector).items
    services = client.CoreV1Api(api()).list_namespaced_service(namespace, label_selector=selector).items
    return observe_serving(
        [api().sanitize_for_serialization(d) for d in deployments],
        [api().sanitize_for_serialization(s) for s in services],
    )


def observe_serving(
    deployments: list[dict[str, Any]], services: list[dict[str, Any]]
) -> tuple[dict[str, ObservedDeployment], dict[str, ObservedService]]:
    return (
        {d["metadata"]["name"]: observe_.observe_deployment(d) for d in deployments},
        {s["metadata"]["name"]: observe_.observe_service(s) for s in services},
    )
