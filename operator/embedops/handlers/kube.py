"""The operator's reads and writes against the API server (the kubernetes client, sync)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections import OrderedDict
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from embedops.api.common import GROUP, VERSION, JobProgress, JobStatus
from embedops.api.conditions import Reason
from embedops.api.kinds import KINDS
from embedops.progress import MARKER
from embedops.results import describe_error
from embedops.reconcile import ObservedJob
from embedops.builders import naming
from embedops.builders.jobs import CONTAINER, KUEUE_QUEUE_LABEL

log = logging.getLogger(__name__)

_api: client.ApiClient | None = None
FIELD_MANAGER = "embedops"  # how the operator's writes show in managedFields


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
        GROUP, VERSION, namespace, plural(kind), name, {"status": merge_patch(old, new)}, field_manager=FIELD_MANAGER)


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
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
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
        event = {
            "metadata": {"generateName": f"{meta['name'][:200]}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": body["apiVersion"], "kind": body["kind"], "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta.get("uid")},
            "type": type_, "reason": reason, "message": message,
            "source": {"component": "embedops-operator"}, "reportingComponent": "embedops.dev/operator",
            "reportingInstance": "embedops-operator", "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        created = core.create_namespaced_event(meta["namespace"], event)
        _remember(key, created.metadata.name, 1)
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
    try:
        client.BatchV1Api(api()).create_namespaced_job(manifest["metadata"]["namespace"], manifest,
                                                       field_manager=FIELD_MANAGER)
        return True
    except ApiException as err:
        if err.status == 409:
            return False
        raise


def suspend_job(namespace: str, name: str, suspend: bool) -> None:
    """Suspend a Job (its pods are deleted) or resume it (the same Job goes on)."""
    client.BatchV1Api(api()).patch_namespaced_job(name, namespace, {"spec": {"suspend": suspend}},
                                                  field_manager=FIELD_MANAGER)


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
    """A Job's state, what holds its pods back, and its pods' results, read from their termination messages.

    A Job counts its Pending pods as active: it is Running here only once one of its pods has
    started, so an unschedulable pod (no GPU free, a missing workspace claim) or an image that
    cannot be pulled shows as what it is.
    """
    meta, status = job["metadata"], job.get("status") or {}
    name, namespace = meta["name"], meta["namespace"]
    pods = [api().sanitize_for_serialization(p) for p in client.CoreV1Api(api()).list_namespaced_pod(
        namespace, label_selector=f"batch.kubernetes.io/job-name={name}").items] if _has_pods(status) else []
    if _condition(job, "Complete"):
        state = "Succeeded"
    elif _condition(job, "Failed"):
        state = "Failed"
    elif any((p.get("status") or {}).get("phase") in ("Running", "Succeeded", "Failed") for p in pods):
        state = "Running"
    else:
        state = "Pending"
    results, failures = _results(pods, namespace)
    error = None
    if state == "Failed":
        failed = _condition(job, "Failed") or {}
        newest = max(failures)[1] if failures else None
        error = describe_error(newest) or failed.get("message") or failed.get("reason")
    labels = meta.get("labels") or {}
    report = JobStatus(name=name, step=labels.get(naming.LABEL_STEP, ""), start_time=status.get("startTime"),
                       completion_time=status.get("completionTime"), active=status.get("active") or 0,
                       succeeded=status.get("succeeded") or 0, failed=status.get("failed") or 0)
    waiting = next((w for p in pods if (w := _waiting(p)) is not None), None) if state == "Pending" else None
    if state == "Running":
        report.progress = _progress(namespace, pods)
    return ObservedJob(name=name, state=state, results=results, error=error,  # type: ignore[arg-type]
                       suspended=bool((job.get("spec") or {}).get("suspend")), step=labels.get(naming.LABEL_STEP),
                       queue=labels.get(KUEUE_QUEUE_LABEL), waiting=waiting, report=report)


def _has_pods(status: dict[str, Any]) -> bool:
    return bool(status.get("active") or status.get("succeeded") or status.get("failed") or status.get("ready")
                or status.get("terminating"))


def _results(pods: list[dict[str, Any]], namespace: str) -> tuple[dict[int, dict[str, Any]], list[tuple[str, str | None]]]:
    """The succeeded pods' results by completion index, and (creation time, message) of the failed ones."""
    results: dict[int, dict[str, Any]] = {}
    failures = []
    for pod in pods:
        message = _termination_message(pod)
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


def _progress(namespace: str, pods: list[dict[str, Any]]) -> JobProgress | None:
    """The last progress line (embedops.progress) in the log of the Job's running pod."""
    running = next((p for p in pods if (p.get("status") or {}).get("phase") == "Running"), None)
    if running is None:
        return None
    try:
        tail = client.CoreV1Api(api()).read_namespaced_pod_log(running["metadata"]["name"], namespace,
                                                               container=CONTAINER, tail_lines=50)
    except ApiException as err:  # no log yet, or no right to read it: no progress shown
        log.debug("no log of pod %s/%s: %s", namespace, running["metadata"]["name"], err.reason)
        return None
    return parse_progress(tail or "")


def parse_progress(text: str) -> JobProgress | None:
    """The last progress document (embedops.progress) in a log's text."""
    for line in reversed(text.splitlines()):
        if MARKER in line:
            try:
                return JobProgress.model_validate(json.loads(line.rsplit(MARKER, 1)[1]))
            except ValueError:
                return None
    return None


_IMAGE_PULL = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}


def _waiting(pod: dict[str, Any]) -> tuple[Reason, str] | None:
    """Why a pending pod cannot start, as the scheduler or the kubelet says it."""
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("reason") == "Unschedulable":
            message = cond.get("message") or "no node fits"
            missing_claim = "persistentvolumeclaim" in message and "not found" in message
            return (Reason.MISSING_WORKSPACE if missing_claim else Reason.UNSCHEDULABLE), message
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _IMAGE_PULL:
            return Reason.IMAGE_PULL_FAILED, f"{waiting['reason']}: {waiting.get('message') or cs.get('image', '')}"
    return None


def _termination_message(pod: dict[str, Any]) -> str | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == CONTAINER:
            terminated = (cs.get("state") or {}).get("terminated") or {}
            return terminated.get("message")
    return None
