"""Worker Jobs: one builder for every step, so every pod the operator starts looks the same.

A worker pod runs `embedops worker <name> --spec-json <step> --result /dev/termination-log`:
its typed step (embedops.steps) is in the pod spec, rendered here and nowhere else (no
ConfigMap to go stale, and `kubectl describe` shows exactly what ran), the database DSN comes
from a Secret through the environment, and the
small JSON result comes back through the termination message, which the operator copies
into status. A worker's exit code says whether trying again can help (docs/operator.md):
2 (invalid config or input) fails the Job at once through a pod failure policy; 3 (transient:
the database unreachable) and 1 (anything else) retry up to `backoffLimit`; a pod evicted or
preempted (the DisruptionTarget condition: a spot node reclaimed, Kueue preemption) is retried
without counting against it. What a cluster adds to every worker pod (pull secrets, a CA bundle,
a proxy, a log sidecar) comes from the operator's settings: worker_pod_template is merged under
the rendered pod, the way Kubeflow Trainer's runtime patches are.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from embedops import steps
from embedops.api.common import API_VERSION, PodScheduling, Resources, Scheduling, SecretKeySelector
from embedops.api.generate import API_KEY_ENV, ApiKeySecretRef
from embedops.builders import naming
from embedops.settings import OperatorSettings

WORKERS = tuple(steps.STEPS)  # `embedops worker NAME`: prepare, train, embed, publish, probe, drift, cleanup
GPU = "nvidia.com/gpu"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
CONTAINER = "worker"
TERMINATION_LOG = "/dev/termination-log"
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_TRANSIENT = 3
RUN_AS = 10001  # the worker image's non-root user
# Every worker pod runs locked down: non-root, no privilege escalation, a read-only root, no capabilities.
POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS,
    "runAsGroup": RUN_AS,
    "fsGroup": RUN_AS,
    "seccompProfile": {"type": "RuntimeDefault"},
}
WORKER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


@dataclass(frozen=True)
class Owner:
    """The custom resource a child belongs to."""

    kind: str
    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class WorkerStep:
    """One run of one worker for one owner: the typed step, and how its pods are scheduled."""

    owner: Owner
    key: str  # inputs hash: part of the name, so new inputs mean a new Job
    config: steps.AnyStep
    resources: Resources = field(default_factory=Resources)
    scheduling: Scheduling = field(default_factory=Scheduling)
    gpus: int = 0
    dsn_secret: SecretKeySelector | None = None  # the Secret of the DSN its pods get (on a cluster)
    api_key_secret: ApiKeySecretRef | None = None  # the Secret of a generator endpoint's API key
    ttl_seconds: int | None = None  # overrides scheduling.ttlSecondsAfterFinished
    launcher: Literal["Job", "TrainJob"] = "Job"  # what runs its pods: worker_job or builders.trainjob.train_job
    nodes: int = 1  # nodes a TrainJob spans, `gpus` on each

    @property
    def step(self) -> str:
        """The worker it runs, and its Job's step label: prepare, train, embed, publish, probe, drift, cleanup."""
        return self.config.NAME

    @property
    def name(self) -> str:
        """The Job's name."""
        return naming.child_name(self.owner.name, self.step, self.key)

    @property
    def shards(self) -> int | None:
        """An embed step runs as an Indexed Job of `embedding.shards` completions, one pod each."""
        return self.config.embedding.shards if isinstance(self.config, steps.EmbedStep) else None


def launcher_command(step: WorkerStep) -> list[str]:
    """What starts the worker: itself, or for a train step on several GPUs torchrun with one process per GPU
    (in one pod, so `--standalone`: a local rendezvous, no master address; embedops.workers.training.distributed).
    In a TrainJob, Kubeflow Trainer's torch runtime gives torchrun its nodes, processes, rank and master through
    the environment (PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK, PET_MASTER_ADDR, PET_MASTER_PORT)."""
    if step.launcher == "TrainJob":
        return ["torchrun", "--no-python"]
    if isinstance(step.config, steps.TrainStep) and step.gpus > 1:
        # torchrun exits 1 whatever its processes did; `embedops torchrun` exits 2 for invalid input, which the
        # Job's podFailurePolicy fails at once instead of retrying on GPUs.
        return ["embedops", "torchrun", "--standalone", f"--nproc_per_node={step.gpus}", "--no-python"]
    return []


def worker_command(step: WorkerStep) -> list[str]:
    """The pod's command: the one place a step becomes text (embedops.steps.parse reads it back)."""
    return [
        *launcher_command(step),
        "embedops",
        "worker",
        step.step,
        "--spec-json",
        json.dumps(step.config.to_wire(), sort_keys=True, separators=(",", ":")),
        "--result",
        TERMINATION_LOG,
    ]


def pod_resources(res: Resources, gpus: int, settings: OperatorSettings) -> dict[str, Any]:
    """The operator's defaults (worker_resources, else worker_cpu / worker_memory as request = limit),
    then the resource's own cpu and memory as request = limit: the CPU limit is what a worker sizes
    its tokenizer pool by (its cgroup quota)."""
    defaults = settings.worker_resources or {}
    requests: dict[str, Any] = dict(defaults.get("requests") or {})
    limits: dict[str, Any] = dict(defaults.get("limits") or {})
    if settings.worker_resources is None:
        if settings.worker_cpu:
            requests["cpu"] = limits["cpu"] = settings.worker_cpu
        if settings.worker_memory:
            requests["memory"] = limits["memory"] = settings.worker_memory
    if res.cpu:
        requests["cpu"] = limits["cpu"] = res.cpu
    if res.memory:
        requests["memory"] = limits["memory"] = res.memory
    if gpus:
        requests[GPU] = limits[GPU] = str(gpus)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def pod_tolerations(scheduling: PodScheduling, gpus: int) -> list[dict[str, Any]]:
    tolerations = [t.to_wire() for t in scheduling.tolerations]
    # GPU node pools are tainted nvidia.com/gpu; a pod that asks for GPUs tolerates it (as
    # the ExtendedResourceToleration admission plugin would, where a cluster enables it).
    if gpus and not any(t.get("key") == GPU for t in tolerations):
        tolerations.append({"key": GPU, "operator": "Exists", "effect": "NoSchedule"})
    return tolerations


def _env(step: WorkerStep) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "HOME", "value": "/tmp"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if step.dsn_secret is not None:
        env.append(
            {
                "name": "EMBEDOPS_DSN",
                "valueFrom": {"secretKeyRef": {"name": step.dsn_secret.name, "key": step.dsn_secret.key}},
            }
        )
    if step.api_key_secret is not None:
        ref = step.api_key_secret
        env.append({"name": API_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    return env


def _volumes(step: WorkerStep, settings: OperatorSettings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pod's volumes and the container's mounts: the workspace, a writable /tmp, and /dev/shm on GPUs."""
    volumes: list[dict[str, Any]] = [
        {"name": "workspace", "persistentVolumeClaim": {"claimName": settings.workspace_claim}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts = [{"name": "workspace", "mountPath": settings.workspace_path}, {"name": "tmp", "mountPath": "/tmp"}]
    if step.gpus:
        # PyTorch data loaders share tensors through /dev/shm, which is 64 MiB by default.
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    return volumes, mounts


def _container(step: WorkerStep, settings: OperatorSettings, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": settings.worker_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": worker_command(step),
        "env": _env(step),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": copy.deepcopy(WORKER_SECURITY),
    }
    if resources := pod_resources(step.resources, step.gpus, settings):
        container["resources"] = resources
    return container


def _pod_spec(step: WorkerStep, settings: OperatorSettings) -> dict[str, Any]:
    sched = step.scheduling
    volumes, mounts = _volumes(step, settings)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [_container(step, settings, mounts)],
        "volumes": volumes,
        "securityContext": copy.deepcopy(POD_SECURITY),
    }
    pod_spec.update(pod_placement(sched, step.gpus, settings))
    return pod_spec


def pod_placement(sched: PodScheduling, gpus: int, settings: OperatorSettings) -> dict[str, Any]:
    """The pod spec fields a resource's scheduling (and the operator's pull secrets) pass through, where set."""
    passed_through = {
        "nodeSelector": dict(sched.node_selector),
        "tolerations": pod_tolerations(sched, gpus),
        "affinity": sched.affinity,
        "priorityClassName": sched.priority_class_name,
        "serviceAccountName": sched.service_account_name,
        "imagePullSecrets": [{"name": name} for name in settings.worker_image_pull_secrets],
    }
    return {key: value for key, value in passed_through.items() if value}


# How worker_pod_template merges under a rendered pod, as a strategic merge patch would: lists of
# these fields merged by the key (an item of the same key merged, the rendered one's fields
# winning), these appended, and a volume of a name the operator renders replaced whole (one
# volume has one source).
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "env": "name",
    "imagePullSecrets": "name",
    "ports": "containerPort",
    "volumeMounts": "mountPath",
}
_APPENDED = {"tolerations", "envFrom"}


def _merged(template: Any, rendered: Any, field_name: str = "") -> Any:
    """`rendered` over `template`: maps merged key by key, lists as _MERGE_KEYS and _APPENDED say,
    anything else the rendered value's."""
    if isinstance(template, dict) and isinstance(rendered, dict):
        out = dict(template)
        for key, value in rendered.items():
            out[key] = _merged(template[key], value, key) if key in template else value
        return out
    if isinstance(template, list) and isinstance(rendered, list):
        if field_name in _APPENDED:
            return rendered + [item for item in template if item not in rendered]
        if merge_key := _MERGE_KEYS.get(field_name):
            theirs = {item.get(merge_key): item for item in template if isinstance(item, dict)}
            ours = {item.get(merge_key) for item in rendered}
            merged = [
                _merged(theirs[item[merge_key]], item)
                if item[merge_key] in theirs and field_name != "volumes"
                else item
                for item in rendered
            ]
            return merged + [item for item in template if not isinstance(item, dict) or item.get(merge_key) not in ours]
    return rendered


def _pod_template(step: WorkerStep, labels: dict[str, str], settings: OperatorSettings) -> dict[str, Any]:
    """The Job's pod template, merged over the operator's worker_pod_template where one is set."""
    rendered = {"metadata": {"labels": labels}, "spec": _pod_spec(step, settings)}
    if settings.worker_pod_template is None:
        return rendered
    merged: dict[str, Any] = _merged(copy.deepcopy(settings.worker_pod_template), rendered)
    return merged


def _job_spec(step: WorkerStep, pod_template: dict[str, Any]) -> dict[str, Any]:
    sched = step.scheduling
    job_spec: dict[str, Any] = {
        "backoffLimit": sched.backoff_limit,
        "suspend": sched.suspend,
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [EXIT_INVALID]},
                },
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        },
        "template": pod_template,
    }
    if step.shards is not None:
        job_spec.update(completionMode="Indexed", completions=step.shards, parallelism=step.shards)
        # A shard that fails is retried on its own; the others go on.
        job_spec["backoffLimitPerIndex"] = sched.backoff_limit
        job_spec.pop("backoffLimit")
    if sched.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = sched.active_deadline_seconds
    ttl = step.ttl_seconds if step.ttl_seconds is not None else sched.ttl_seconds_after_finished
    if ttl is not None:
        job_spec["ttlSecondsAfterFinished"] = ttl
    return job_spec


def worker_job(step: WorkerStep, settings: OperatorSettings) -> dict[str, Any]:
    """The batch/v1 Job that runs `step` for its owner."""
    owner = step.owner
    labels = naming.child_labels(owner.kind, owner.name, owner.uid, step.step, step.key)
    job_labels = dict(labels)
    if step.scheduling.queue_name:
        job_labels[KUEUE_QUEUE_LABEL] = step.scheduling.queue_name
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": step.name,
            "namespace": owner.namespace,
            "labels": job_labels,
            "ownerReferences": [owner.reference()],
        },
        "spec": _job_spec(step, _pod_template(step, labels, settings)),
    }
