"""A FineTuneJob's training as a Kubeflow Trainer TrainJob: training across nodes.

One pod holds at most one node's GPUs; across nodes the cluster already has an engine, Kubeflow
Trainer v2 (`trainer.kubeflow.org/v1alpha1`). Its `torch-distributed` runtime starts `numNodes`
pods and gives torchrun in each its place through the environment (PET_NNODES,
PET_NPROC_PER_NODE, PET_NODE_RANK, PET_MASTER_ADDR, PET_MASTER_PORT), so the trainer's command
is the worker's own, behind `torchrun --no-python` (builders.jobs.launcher_command), and the step
reaches the pods in their argv as it reaches a Job's. What embedops adds to the runtime's pods
goes through one runtime patch (Trainer v2.2 and later; manager `embedops.dev/operator`) on the
runtime's trainer job: the workspace volume (a claim every node mounts: ReadWriteMany), a
writable /tmp and /dev/shm, the pod and container security contexts a Job's pod has, node
selector, affinity, tolerations, service account and image pull secrets; the image, env and
resources per node go on `trainer`. The TrainJob carries the owner reference (deleting the
FineTuneJob deletes it, and through it its JobSet and pods), the step labels, and the Kueue
queue-name label, by which Kueue admits a TrainJob as it admits a Job.

What a TrainJob cannot take from embedops (a runtime patch has no field for them):
priorityClassName and the operator's worker_pod_template; the runtime's pod template provides those.
"""

from __future__ import annotations

import copy
from typing import Any

from embedops import steps
from embedops.api.finetune import TRAINJOB_API, TrainJobLauncherSpec
from embedops.builders import naming
from embedops.builders.jobs import (
    KUEUE_QUEUE_LABEL,
    POD_SECURITY,
    WORKER_SECURITY,
    WorkerStep,
    _env,
    _volumes,
    pod_placement,
    pod_resources,
    worker_command,
)
from embedops.settings import OperatorSettings

GROUP, VERSION = TRAINJOB_API.split("/")
KIND = "TrainJob"
PATCH_MANAGER = "embedops.dev/operator"  # the runtime patch's owner (Kueue's is kueue.x-k8s.io/manager)


def _launcher(step: WorkerStep) -> TrainJobLauncherSpec:
    if not isinstance(step.config, steps.TrainStep):
        raise ValueError(f"only a train step runs as a TrainJob, not {step.step}")
    return step.config.spec.train_job


def _runtime_patch(step: WorkerStep, launcher: TrainJobLauncherSpec, settings: OperatorSettings) -> dict[str, Any]:
    """What embedops adds to the pods of the runtime's trainer job."""
    volumes, mounts = _volumes(step, settings)
    sched = step.scheduling
    pod: dict[str, Any] = {
        "volumes": volumes,
        "containers": [
            {"name": launcher.container, "volumeMounts": mounts, "securityContext": copy.deepcopy(WORKER_SECURITY)}
        ],
        "securityContext": copy.deepcopy(POD_SECURITY),
    }
    placement = pod_placement(sched, step.gpus, settings)
    placement.pop("priorityClassName", None)  # no field of a runtime patch (the module's docstring)
    pod.update(placement)
    job = {"name": launcher.job, "template": {"spec": {"template": {"spec": pod}}}}
    return {"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [job]}}}}


def train_job(step: WorkerStep, settings: OperatorSettings) -> dict[str, Any]:
    """The TrainJob that runs `step` (a train step) on `step.nodes` nodes of `step.gpus` GPUs each."""
    launcher = _launcher(step)
    owner = step.owner
    labels = naming.child_labels(owner.kind, owner.name, owner.uid, step.step, step.key)
    metadata_labels = dict(labels)
    if step.scheduling.queue_name:
        metadata_labels[KUEUE_QUEUE_LABEL] = step.scheduling.queue_name
    trainer: dict[str, Any] = {
        "image": settings.worker_image,
        "command": worker_command(step),
        "env": _env(step),
        "numNodes": step.nodes,
        "numProcPerNode": step.gpus,
    }
    if resources := pod_resources(step.resources, step.gpus, settings):
        trainer["resourcesPerNode"] = resources
    spec: dict[str, Any] = {
        "runtimeRef": {"name": launcher.runtime_ref.name, "apiGroup": GROUP, "kind": launcher.runtime_ref.kind},
        "suspend": step.scheduling.suspend,
        "trainer": trainer,
        "runtimePatches": [_runtime_patch(step, launcher, settings)],
    }
    if step.scheduling.active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = step.scheduling.active_deadline_seconds
    return {
        "apiVersion": TRAINJOB_API,
        "kind": KIND,
        "metadata": {
            "name": step.name,
            "namespace": owner.namespace,
            "labels": metadata_labels,
            "ownerReferences": [owner.reference()],
        },
        "spec": spec,
    }
