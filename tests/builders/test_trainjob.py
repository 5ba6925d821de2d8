"""The TrainJob builder: a FineTuneJob across nodes as a Kubeflow Trainer v2 TrainJob, with no cluster."""

from __future__ import annotations

import json

import pytest

from embedops import steps
from embedops.api.common import Scheduling
from embedops.api.finetune import FineTuneJobSpec
from embedops.builders.jobs import WorkerStep
from embedops.builders.trainjob import train_job
from tests.builders.test_jobs import OWNER, SETTINGS, _embed_step


def _step(spec: dict | None = None, **overrides) -> WorkerStep:
    ft = FineTuneJobSpec.model_validate({"datasetRef": {"name": "ds"}, **(spec or {})})
    config = steps.TrainStep(spec=ft, dataset_dir="/workspace/ds", output_dir="/workspace/out")
    args = dict(owner=OWNER, key="abc123", config=config, gpus=8, nodes=4, launcher="TrainJob")
    return WorkerStep(**(args | overrides))


def test_a_train_step_across_nodes_is_a_trainjob_on_the_torch_runtime():
    scheduling = Scheduling.model_validate(
        {
            "nodeSelector": {"gpu": "h100"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
            "queueName": "team-a-gpus",
            "serviceAccountName": "trainer",
            "priorityClassName": "high",
            "suspend": True,
            "activeDeadlineSeconds": 7200,
            "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        }
    )
    job = train_job(_step(scheduling=scheduling), SETTINGS)
    assert (job["apiVersion"], job["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    meta, spec = job["metadata"], job["spec"]
    assert meta["name"].startswith("scifact-minilm-train-") and meta["namespace"] == "team-a"
    # Owned by the FineTuneJob (deleting it deletes the TrainJob), labelled as its step, queued by Kueue.
    assert meta["ownerReferences"] == [OWNER.reference()]
    assert meta["labels"]["embedops.dev/step"] == "train" and meta["labels"]["embedops.dev/owner-uid"] == OWNER.uid
    assert meta["labels"]["kueue.x-k8s.io/queue-name"] == "team-a-gpus"
    assert spec["runtimeRef"] == {
        "name": "torch-distributed",
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
    }
    assert spec["suspend"] is True and "labels" not in spec
    trainer = spec["trainer"]
    assert trainer["image"] == SETTINGS.worker_image and trainer["numNodes"] == 4 and trainer["numProcPerNode"] == 8
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    # torchrun takes its nodes, processes, rank and master from the runtime's PET_* variables.
    cmd = trainer["command"]
    assert cmd[:5] == ["torchrun", "--no-python", "embedops", "worker", "train"]
    assert steps.parse("train", json.loads(cmd[cmd.index("--spec-json") + 1])) == _step().config
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in trainer["env"]
    assert spec["activeDeadlineSeconds"] == 7200
    # One runtime patch, embedops's, on the pods of the runtime's trainer job.
    (patch,) = spec["runtimePatches"]
    assert patch["manager"] == "embedops.dev/operator"
    (job_patch,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert job_patch["name"] == "node"
    pod = job_patch["template"]["spec"]["template"]["spec"]
    assert {"name": "workspace", "persistentVolumeClaim": {"claimName": "ws"}} in pod["volumes"]
    (container,) = pod["containers"]
    assert container["name"] == "node" and container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/workspace", "/tmp", "/dev/shm"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["nodeSelector"] == {"gpu": "h100"} and pod["serviceAccountName"] == "trainer"
    assert pod["affinity"] == scheduling.affinity
    assert [t["key"] for t in pod["tolerations"]] == ["dedicated", "nvidia.com/gpu"]
    assert "priorityClassName" not in pod  # a runtime patch has no field for it (the runtime's template sets it)


def test_the_runtime_its_job_and_container_are_the_specs():
    launcher = {"runtimeRef": {"name": "team-torch", "kind": "TrainingRuntime"}, "job": "trainer", "container": "t"}
    spec = train_job(_step({"trainJob": launcher}), SETTINGS)["spec"]
    assert spec["runtimeRef"]["name"] == "team-torch" and spec["runtimeRef"]["kind"] == "TrainingRuntime"
    (job_patch,) = spec["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert job_patch["name"] == "trainer"
    assert job_patch["template"]["spec"]["template"]["spec"]["containers"][0]["name"] == "t"


def test_only_a_train_step_is_a_trainjob():
    with pytest.raises(ValueError, match="only a train step"):
        train_job(_embed_step(gpus=1, launcher="TrainJob"), SETTINGS)
