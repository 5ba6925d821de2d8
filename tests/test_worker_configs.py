"""Every step the planner can create reaches its worker's pod intact: the two sides never drift apart."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from embedops.builders.jobs import WorkerStep, worker_job
from embedops.reconcile import Observed, plan
from embedops.workers import runner
from tests.test_reconcile import (
    INDEX_SPEC,
    NOW,
    SETTINGS,
    _run_dataset_to_ready,
    _trained_status,
    body,
    drive_to_serving,
)


def _command(job: WorkerStep) -> tuple[str, dict]:
    """What the Job's pod runs: its worker and the step as the pod's argv carries it."""
    command = worker_job(job, SETTINGS)["spec"]["template"]["spec"]["containers"][0]["command"]
    return command[command.index("worker") + 1], json.loads(command[command.index("--spec-json") + 1])


def _index_jobs(spec: dict, related: dict) -> list[WorkerStep]:
    """The embed, publish, probe and drift Jobs of one index, driven through its lifecycle."""
    ix, created = drive_to_serving(spec, related)
    return created + plan(Observed(ix, related=related, now=NOW + dt.timedelta(hours=2)), SETTINGS).create


def test_every_planned_job_config_parses_with_its_workers_config():
    ds, _ = _run_dataset_to_ready()
    related = {("EmbeddingDataset", "ds"): ds["status"], ("FineTuneJob", "ft"): _trained_status()}
    jobs = [
        plan(
            Observed(body("EmbeddingDataset", "a", {"source": {"beir": {"path": "data/x"}}}), now=NOW), SETTINGS
        ).create[0],
        plan(
            Observed(
                body(
                    "EmbeddingDataset",
                    "b",
                    {"source": {"postgres": {"table": "pairs", "database": {"dsnSecretRef": {"name": "pg"}}}}},
                ),
                now=NOW,
            ),
            SETTINGS,
        ).create[0],
        plan(
            Observed(body("FineTuneJob", "ft", {"datasetRef": {"name": "ds"}}), related=related, now=NOW), SETTINGS
        ).create[0],
        *_index_jobs(INDEX_SPEC, related),
        *_index_jobs(
            {
                **INDEX_SPEC,
                "model": {"name": "all-MiniLM-L6-v2"},
                "source": {"table": {"table": "docs"}},
                "probe": {"path": "probes/docs.jsonl", "k": 5},
                "embedding": {"batchSize": 8},
                "pinnedVersion": 1,
            },
            related,
        ),
    ]
    assert sorted({j.step for j in jobs}) == ["drift", "embed", "prepare", "probe", "publish", "sync", "train"]
    for job in jobs:
        worker, raw = _command(job)
        assert worker == job.step
        # The pod reads back exactly the step the planner made (unknown keys are rejected, so nothing is dropped).
        assert runner.parse_config(worker, raw, shard=0) == job.config
        if worker in ("probe", "publish") and job.config.probe.path is not None:
            assert job.config.probe.path == "/workspace/probes/docs.jsonl"


def test_a_pods_completion_index_and_device_fill_in_the_step():
    from pydantic import ValidationError

    from embedops import steps

    raw = {"target": {"name": "docs"}, "source": {"table": {"table": "docs"}}, "model": "m"}
    raw["embedding"] = {"shards": 2}
    step = steps.parse("embed", {**raw, "shard": 0, "device": "cpu"}, shard=1, device="cuda")
    assert (step.shard, step.device) == (1, "cpu"), "the index overrides, a device already named stays"
    assert steps.parse("embed", raw, device="cuda").device == "cuda"
    assert steps.for_pod(step, shard=0) == step.model_copy(update={"shard": 0})
    with pytest.raises(ValidationError, match="shard 2 is not below the 2 shards"):
        steps.parse("embed", raw, shard=2)
