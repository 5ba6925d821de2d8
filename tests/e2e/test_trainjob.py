"""A FineTuneJob across nodes on the control plane: the Kubeflow Trainer TrainJob embedops creates and reads.

The Trainer CRDs come from the released kubeflow/trainer module (hack/trainer_crds.sh); no Trainer controller
runs, so a test writes the TrainJob's status as Trainer would and checks what the operator makes of it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import ROOT, running_operator, wait_for
from tests.e2e.test_operator import DATASET, TRAINED, _prepare

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"


def _finetune(name: str, **spec) -> dict:
    return {
        "apiVersion": "embedops.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {"datasetRef": {"name": "ds"}, **spec},
    }


def _crds() -> list[dict]:
    folder = Path(
        subprocess.run([str(ROOT / "hack/trainer_crds.sh")], capture_output=True, text=True, check=True).stdout.strip()
    )
    return [yaml.safe_load(p.read_text()) for p in sorted(folder.glob("*.yaml"))]


def _delete_trainer_crds(api) -> None:
    """The Trainer CRDs deleted, and gone (an operator started meanwhile would see a CRD still terminating)."""
    from kubernetes import client

    ext = client.ApiextensionsV1Api(api)
    names = [d["metadata"]["name"] for d in _crds()]
    for name in names:
        try:
            ext.delete_custom_resource_definition(name)
        except client.ApiException as err:
            if err.status != 404:
                raise
    wait_for(
        "Trainer CRDs gone",
        lambda: not {c.metadata.name for c in ext.list_custom_resource_definition().items} & set(names),
        timeout=60,
    )


@pytest.fixture
def without_trainer(api):
    """No TrainJob API served (the Trainer CRDs deleted, if a test installed them)."""
    _delete_trainer_crds(api)


@pytest.fixture
def trainer(api):
    """The TrainJob API served: Trainer's CRDs applied and Established, deleted again afterwards."""
    from kubernetes import client

    ext = client.ApiextensionsV1Api(api)
    docs = _crds()
    for doc in docs:
        try:
            ext.create_custom_resource_definition(doc)
        except client.ApiException as err:
            if err.status != 409:
                raise

    def established():
        return all(
            any(
                c.type == "Established" and c.status == "True"
                for c in ext.read_custom_resource_definition(d["metadata"]["name"]).status.conditions or []
            )
            for d in docs
        )

    wait_for("Trainer CRDs Established", established, timeout=30)
    yield
    _delete_trainer_crds(api)


def test_without_the_trainjob_api_auto_falls_back_to_a_job_and_several_nodes_are_an_error(kube, without_trainer):
    with running_operator(kube.ns):
        kube.apply(DATASET)
        _prepare(kube)
        kube.apply(_finetune("one", resources={"gpus": 2}))
        kube.apply(_finetune("many", resources={"gpus": 2, "nodes": 2}))
        job = kube.wait_job("train")
        assert job.spec.template.spec.containers[0].command[:4] == [
            "embedops",
            "torchrun",
            "--standalone",
            "--nproc_per_node=2",
        ]
        launcher = wait_for("status.launcher", lambda: kube.get("FineTuneJob", "one")["status"].get("launcher"))
        assert launcher["kind"] == "Job" and launcher["processesPerNode"] == 2 and "nodes is 1" in launcher["reason"]
        failed = wait_for(
            "InvalidSpec", lambda: (c := kube.condition("FineTuneJob", "many")) and c["reason"] == "InvalidSpec" and c
        )
        assert "trainer.kubeflow.org/v1alpha1 TrainJob API" in failed["message"]
        assert len(kube.jobs("train")) == 1
        # The Job's pod holds both GPUs of the one GPU node: it ends as a worker would, freeing them.
        # It needs both GPUs: an earlier test's GPU pod, its namespace being deleted, holds one until kwok
        # deletes it (its job-tracking finalizer cleared: hack/k8s/kwok/stages.yaml), a while on a loaded machine.
        (pod,) = kube.wait_running_pods(job.metadata.name, timeout=240)
        kube.finish(pod.metadata.name, json.dumps({**TRAINED, "worldSize": 2, "globalBatchSize": 128}))
        done = kube.wait_ready("FineTuneJob", "one")["status"]
        assert (done["worldSize"], done["globalBatchSize"], done["launcher"]["kind"]) == (2, 128, "Job")


def _trainjob(kube, name: str) -> dict:
    return kube.custom.get_namespaced_custom_object(GROUP, VERSION, kube.ns, PLURAL, name)


def _write_status(kube, name: str, status: dict) -> None:
    kube.custom.patch_namespaced_custom_object_status(GROUP, VERSION, kube.ns, PLURAL, name, {"status": status})


def test_a_finetunejob_across_nodes_is_a_trainjob_whose_status_is_mirrored_and_which_goes_with_it(kube, trainer):
    from kubernetes import client

    with running_operator(kube.ns):
        kube.apply(DATASET)
        _prepare(kube)
        kube.apply(_finetune("ft", resources={"gpus": 2, "nodes": 2}, scheduling={"queueName": "gpu-queue"}))
        launcher = wait_for("status.launcher", lambda: kube.get("FineTuneJob", "ft")["status"].get("launcher"))
        assert (
            launcher["kind"] == "TrainJob" and launcher["nodes"] == 2 and "a TrainJob spans nodes" in launcher["reason"]
        )
        name = launcher["name"]
        trainjob = _trainjob(kube, name)
        ft = kube.get("FineTuneJob", "ft")
        # Owned by the FineTuneJob, queued by Kueue's label, on the torch runtime with 2 nodes of 2 processes.
        assert trainjob["metadata"]["ownerReferences"][0]["uid"] == ft["metadata"]["uid"]
        assert trainjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
        assert trainjob["spec"]["runtimeRef"]["name"] == "torch-distributed"
        trainer_spec = trainjob["spec"]["trainer"]
        assert (trainer_spec["numNodes"], trainer_spec["numProcPerNode"]) == (2, 2)
        assert trainer_spec["command"][:5] == ["torchrun", "--no-python", "embedops", "worker", "train"]
        assert kube.jobs("train") == [], "no batch Job besides the TrainJob"

        # Trainer's conditions and its Jobs' counts, as its controller would write them, reach the FineTuneJob.
        _write_status(kube, name, {"conditions": [_true("Suspended", "Suspended", "queued")]})
        wait_for("Queued", lambda: kube.get("FineTuneJob", "ft")["status"]["phase"] == "Queued")
        counts = {"name": "node", "ready": 2, "active": 2, "succeeded": 0, "failed": 0, "suspended": 0}
        # Trainer 2.2's trainerStatus (progress, remaining time) shows as the Job's progress.
        progress = {
            "progressPercentage": 40,
            "estimatedRemainingSeconds": 600,
            "lastUpdatedTime": "2026-12-03T12:00:00Z",
        }
        resumed = {"conditions": [_false("Suspended", "Resumed")], "jobsStatus": [counts], "trainerStatus": progress}
        _write_status(kube, name, resumed)
        running = wait_for(
            "Running", lambda: (s := kube.get("FineTuneJob", "ft")["status"])["phase"] == "Running" and s
        )
        assert running["job"]["active"] == 2 and running["activeJob"] == name
        assert running["job"]["progress"] == {"task": "Training (%)", "done": 40, "total": 100, "etaSeconds": 600}
        _write_status(kube, name, {"conditions": [_true("Failed", "JobSetFailed", "node-1 exited with 137")]})
        failed = wait_for(
            "JobFailed", lambda: (c := kube.condition("FineTuneJob", "ft")) and c["reason"] == "JobFailed" and c
        )
        assert failed["message"] == f"TrainJob {name} failed: node-1 exited with 137"

        # Deleting the FineTuneJob deletes its TrainJob (owner reference, garbage collector).
        kube.custom.delete_namespaced_custom_object("embedops.dev", "v1alpha1", kube.ns, "finetunejobs", "ft")

        def gone():
            try:
                _trainjob(kube, name)
            except client.ApiException as err:
                return err.status == 404
            return False

        wait_for("TrainJob deleted with its FineTuneJob", gone, timeout=60)


def _true(type_: str, reason: str, message: str = "") -> dict:
    return {
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-12-03T12:00:00Z",
    }


def _false(type_: str, reason: str) -> dict:
    return {
        "type": type_,
        "status": "False",
        "reason": reason,
        "message": "",
        "lastTransitionTime": "2026-12-03T12:00:00Z",
    }
