"""The operator's reads and writes against the API server (the kubernetes client, sync)."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from embedops.api.common import GROUP, VERSION
from embedops.api.kinds import KINDS
from embedops.results import describe_error
from embedops.reconcile import ObservedJob
from embedops.builders import naming
from embedops.builders.jobs import CONTAINER

log = logging.getLogger(__name__)

_api: client.ApiClient | None = None


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
                raise NoCredentials(f"no Kubernetes credentials: not running in a cluster, and {where} "
                                    f"gives none ({err})") from None
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
        return client.CustomObjectsApi(api()).get_namespaced_custom_object(GROUP, VERSION, namespace, plural(kind), name)
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def list_objects(kind: str, namespace: str) -> list[dict[str, Any]]:
    out = client.CustomObjectsApi(api()).list_namespaced_custom_object(GROUP, VERSION, namespace, plural(kind))
    return out.get("items", [])


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


def replace_status(kind: str, namespace: str, name: str, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Make the status `new`, removing what it no longer has."""
    client.CustomObjectsApi(api()).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, plural(kind), name, {"status": merge_patch(old, new)})


def post_event(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    """An Event about a resource, as `kubectl describe` shows it (posted from any thread)."""
    import datetime as dt

    meta = body["metadata"]
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "metadata": {"generateName": f"{meta['name'][:200]}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": body["apiVersion"], "kind": body["kind"], "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta.get("uid")},
        "type": type_, "reason": reason, "message": message[:1024],
        "source": {"component": "embedops-operator"}, "reportingComponent": "embedops.dev/operator",
        "reportingInstance": "embedops-operator", "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }
    try:
        client.CoreV1Api(api()).create_namespaced_event(meta["namespace"], event)
    except ApiException as err:  # an event is never worth failing a reconcile
        log.warning("could not post event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], err.reason)


def create_job(manifest: dict[str, Any]) -> bool:
    """Create a Job; False when it exists already (a restart, or a concurrent reconcile)."""
    try:
        client.BatchV1Api(api()).create_namespaced_job(manifest["metadata"]["namespace"], manifest)
        return True
    except ApiException as err:
        if err.status == 409:
            return False
        raise


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
    jobs = client.BatchV1Api(api()).list_namespaced_job(
        namespace, label_selector=f"{naming.LABEL_OWNER_UID}={owner_uid}")
    out = {}
    for job in jobs.items:
        raw = api().sanitize_for_serialization(job)
        out[raw["metadata"]["name"]] = observe_job(raw)
    return out


def _condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return cond
    return None


def observe_job(job: dict[str, Any]) -> ObservedJob:
    """A Job's state and its pods' results, read from their termination messages."""
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    status = job.get("status") or {}
    if _condition(job, "Complete"):
        state = "Succeeded"
    elif _condition(job, "Failed"):
        state = "Failed"
    elif status.get("active"):
        state = "Running"
    else:
        state = "Pending"
    suspended = bool((job.get("spec") or {}).get("suspend")) and state == "Pending"
    results: dict[int, dict[str, Any]] = {}
    error = None
    if status.get("succeeded") or status.get("failed") or state in ("Succeeded", "Failed"):
        pods = client.CoreV1Api(api()).list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={name}")
        failures = []
        for pod in pods.items:
            raw = api().sanitize_for_serialization(pod)
            message = _termination_message(raw)
            phase = (raw.get("status") or {}).get("phase")
            if phase == "Succeeded" and message:
                try:
                    doc = json.loads(message)
                except json.JSONDecodeError:
                    log.warning("pod %s/%s: termination message is not JSON", namespace, raw["metadata"]["name"])
                    continue
                index = int((raw["metadata"].get("annotations") or {}).get("batch.kubernetes.io/job-completion-index", 0))
                results[index] = doc
            elif phase == "Failed":
                failures.append((raw["metadata"].get("creationTimestamp") or "", message))
        if state == "Failed":
            failed = _condition(job, "Failed") or {}
            newest = max(failures)[1] if failures else None
            error = describe_error(newest) or failed.get("message") or failed.get("reason")
    step = (job["metadata"].get("labels") or {}).get(naming.LABEL_STEP)
    return ObservedJob(name=name, state=state, results=results, error=error, suspended=suspended,  # type: ignore[arg-type]
                       step=step)


def _termination_message(pod: dict[str, Any]) -> str | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == CONTAINER:
            terminated = (cs.get("state") or {}).get("terminated") or {}
            return terminated.get("message")
    return None
