"""Which launcher runs a FineTuneJob's training (spec.launcher, spec.resources.nodes, the TrainJob API served),
and what its status says about it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from embedops.api.finetune import FineTuneJobSpec
from embedops.reconcile import Observed, ObservedJob, plan
from tests.test_reconcile import NOW, SETTINGS, TRAINED, _run_dataset_to_ready, body, ready


def _plan(spec: dict, *, served: bool, jobs: dict | None = None):
    ds, _ = _run_dataset_to_ready()
    ft = body("FineTuneJob", "ft", {"datasetRef": {"name": "ds"}, **spec})
    related = {("EmbeddingDataset", "ds"): ds["status"]}
    return plan(Observed(ft, jobs=jobs or {}, related=related, now=NOW, trainjob_api=served), SETTINGS)


@pytest.mark.parametrize("served", [True, False])
def test_auto_on_one_node_is_a_job_with_torchrun_on_its_gpus(served):
    p = _plan({"resources": {"gpus": 4}}, served=served)
    (step,) = p.create
    assert (step.launcher, step.gpus, step.nodes) == ("Job", 4, 1)
    launcher = p.status.launcher
    assert (launcher.kind, launcher.name, launcher.nodes, launcher.processes_per_node) == ("Job", step.name, 1, 4)
    assert launcher.reason == "spec.launcher is auto and spec.resources.nodes is 1: one pod"


def test_auto_across_nodes_is_a_trainjob_where_the_api_is_served():
    p = _plan({"resources": {"gpus": 8, "nodes": 2}, "scheduling": {"queueName": "q"}}, served=True)
    (step,) = p.create
    assert (step.launcher, step.gpus, step.nodes, step.scheduling.queue_name) == ("TrainJob", 8, 2, "q")
    assert p.status.launcher.kind == "TrainJob" and "nodes is 2: a TrainJob spans nodes" in p.status.launcher.reason
    assert p.status.to_wire()["launcher"]["processesPerNode"] == 8


def test_several_nodes_without_the_trainjob_api_is_an_error_naming_it():
    p = _plan({"resources": {"nodes": 3}}, served=False)
    assert p.create == [] and ready(p) == ("False", "InvalidSpec")
    message = p.status.condition("Ready").message
    assert "spec.resources.nodes is 3" in message and "trainer.kubeflow.org/v1alpha1 TrainJob API" in message
    explicit = _plan({"launcher": "trainjob"}, served=False)
    assert ready(explicit) == ("False", "InvalidSpec")
    assert "spec.launcher is trainjob" in explicit.status.condition("Ready").message


def test_launcher_trainjob_on_one_node_and_launcher_job_where_trainjobs_are_served():
    (step,) = _plan({"launcher": "trainjob", "resources": {"gpus": 2}}, served=True).create
    assert (step.launcher, step.nodes) == ("TrainJob", 1)
    (step,) = _plan({"launcher": "job", "resources": {"gpus": 2}}, served=True).create
    assert step.launcher == "Job"


def test_launcher_job_on_several_nodes_is_refused_by_the_spec():
    with pytest.raises(ValidationError, match="launcher job runs one pod"):
        FineTuneJobSpec.model_validate({"datasetRef": {"name": "ds"}, "launcher": "job", "resources": {"nodes": 2}})
    with pytest.raises(ValidationError, match="at least 1 GPU a node"):
        FineTuneJobSpec.model_validate({"datasetRef": {"name": "ds"}, "resources": {"nodes": 2, "gpus": 0}})


def test_a_trainjob_is_followed_to_its_result_and_the_status_keeps_the_launcher():
    spec = {"resources": {"gpus": 8, "nodes": 2}}
    (step,) = _plan(spec, served=True).create
    queued = ObservedJob(step.name, "Pending", suspended=True, queue="q", kind="TrainJob", step="train")
    running = _plan(spec, served=True, jobs={step.name: queued})
    assert running.create == [] and running.status.launcher.kind == "TrainJob"
    result = {**TRAINED, "worldSize": 16, "globalBatchSize": 1024}
    done = _plan(spec, served=True, jobs={step.name: ObservedJob(step.name, "Succeeded", {0: result}, kind="TrainJob")})
    assert ready(done) == ("True", "Trained")
    assert (done.status.world_size, done.status.global_batch_size, done.status.launcher.nodes) == (16, 1024, 2)


def test_a_failed_trainjob_fails_the_finetunejob_with_its_message():
    spec = {"resources": {"gpus": 8, "nodes": 2}}
    (step,) = _plan(spec, served=True).create
    failed = ObservedJob(step.name, "Failed", error="jobset failed: node-0 exited 1", kind="TrainJob")
    p = _plan(spec, served=True, jobs={step.name: failed})
    assert ready(p) == ("False", "JobFailed")
    assert p.status.condition("Ready").message == f"TrainJob {step.name} failed: jobset failed: node-0 exited 1"


def test_a_trainjob_needs_a_name_that_is_an_rfc_1035_label():
    ds, _ = _run_dataset_to_ready()
    ft = body("FineTuneJob", "ft.v2", {"datasetRef": {"name": "ds"}, "resources": {"nodes": 2}})
    related = {("EmbeddingDataset", "ds"): ds["status"]}
    p = plan(Observed(ft, related=related, now=NOW, trainjob_api=True), SETTINGS)
    assert p.create == [] and ready(p) == ("False", "InvalidSpec")
    assert "metadata.name 'ft.v2'" in p.status.condition("Ready").message
