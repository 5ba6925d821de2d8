"""The default fine-tuning recipe: its settings, the step budget, and the API rules around them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from embedops.api import crd as crdgen
from embedops.api.dataset import EmbeddingDatasetSpec
from embedops.api.finetune import FineTuneJobSpec, TrainingSpec
from embedops.api.kinds import KINDS
from embedops.builders.naming import STEP_VERSIONS
from embedops.results import TrainResult, termination_message
from embedops.workers import train


def dataset_spec(**fields) -> EmbeddingDatasetSpec:
    return EmbeddingDatasetSpec.model_validate({"source": {"beir": {"path": "data"}}, **fields})


def job_spec(**fields) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate({"datasetRef": {"name": "d"}, **fields})


def test_the_defaults_are_the_librarys_standard_recipe_within_a_step_budget():
    mining = dataset_spec().hard_negatives
    assert (mining.count, mining.range_min, mining.range_max, mining.sampling_strategy, mining.output_format) == (
        3,
        10,
        50,
        "top",
        "triplet",
    )
    assert mining.margins() == (None, 0.05)
    job = job_spec()
    assert job.loss.type == "MultipleNegativesRankingLoss" and job.loss.scale == 20
    t = job.training
    assert (t.batch_size, t.learning_rate, t.warmup_ratio, t.max_seq_length, t.epochs, t.max_steps) == (
        64,
        3e-5,
        0.1,
        256,
        None,
        None,
    )
    assert (t.budget.epochs, t.budget.min_steps, t.budget.max_steps) == (5, 200, 2000)
    v = job.evaluation.validation
    assert (v.fraction, v.max_queries, v.max_corpus) == (0.1, 500, 20_000)
    assert job.evaluation.require_improvement


def test_changed_defaults_rerun_prepare_and_train():
    assert STEP_VERSIONS["prepare"] >= 2 and STEP_VERSIONS["train"] >= 2


# -- the step budget ------------------------------------------------------------------------------


def training(**fields) -> TrainingSpec:
    return TrainingSpec.model_validate(fields)


@pytest.mark.parametrize(
    "per_epoch, fields, steps",
    [
        (10, {}, 200),  # small data: 5 passes would be 50 steps, raised to the floor
        (40, {}, 200),  # exactly the floor
        (283, {}, 1415),  # full SciFact's shape: 5 passes of 18,100 triplet rows at 64
        (400, {}, 2000),  # exactly the cap
        (5200, {}, 2000),  # large data (110k pairs as triplets): capped
        (5200, {"budget": {"epochs": 1, "minSteps": 10, "maxSteps": 8000}}, 5200),
        (10, {"epochs": 2}, 20),  # epochs replace the budget, floor and cap included
        (5200, {"epochs": 3}, 15600),
        (5200, {"epochs": 3, "maxSteps": 7}, 7),  # maxSteps overrides both
    ],
)
def test_the_plan_is_the_budgets_passes_within_its_bounds_unless_overridden(per_epoch, fields, steps):
    assert train.plan_steps(per_epoch, training(**fields)) == steps


@pytest.mark.parametrize(
    "planned, fields, every",
    [
        (1415, {}, 283),
        (2000, {}, 400),
        (3, {}, 1),
        (6, {"checkpointSteps": 2}, 2),
        (200, {"checkpointSteps": 500}, 500),
    ],
)
def test_checkpoints_are_a_fifth_of_the_plan_unless_set(planned, fields, every):
    assert train.checkpoint_interval(planned, training(**fields)) == every


def test_steps_per_epoch_count_each_groups_last_batch():
    from datasets import Dataset, DatasetDict

    groups = DatasetDict({"a": Dataset.from_dict({"x": list(range(130))}), "b": Dataset.from_dict({"x": [1, 2]})})
    assert train.steps_per_epoch(groups, 64) == 3 + 1


# -- rules that exclude each other: CEL in the CRD, the same check in pydantic ---------------------


def _node(kind: str, path: str) -> dict:
    node = crdgen.openapi_schema(KINDS[kind])
    for name in path.split("."):
        node = node["properties"][name]
    return node


@pytest.mark.parametrize(
    "kind, path, fragment, message",
    [
        ("EmbeddingDataset", "spec.hardNegatives", {"rangeMin": 50}, "rangeMin must be below hardNegatives.rangeMax"),
        (
            "EmbeddingDataset",
            "spec.hardNegatives",
            {"rangeMin": 5, "rangeMax": 7},
            "count must fit between rangeMin and rangeMax",
        ),
        (
            "EmbeddingDataset",
            "spec.hardNegatives",
            {"absoluteMargin": 0.1, "relativeMargin": 0.1},
            "at most one of hardNegatives.absoluteMargin or hardNegatives.relativeMargin",
        ),
        (
            "FineTuneJob",
            "spec.loss",
            {"guideModel": "all-MiniLM-L6-v2"},
            "loss.guideModel is only used by loss.type GISTEmbedLoss or CachedGISTEmbedLoss",
        ),
        (
            "FineTuneJob",
            "spec.training.budget",
            {"minSteps": 3000},
            "training.budget.minSteps must not exceed training.budget.maxSteps",
        ),
    ],
)
def test_each_cel_rule_has_its_pydantic_mirror(kind, path, fragment, message):
    rules = _node(kind, path).get("x-kubernetes-validations", [])
    assert message in " ".join(r["message"] for r in rules)
    *parents, leaf = path.split(".")[1:]
    spec: dict = {leaf: fragment}
    for parent in reversed(parents):
        spec = {parent: spec}
    with pytest.raises(ValidationError, match=message):
        (dataset_spec if kind == "EmbeddingDataset" else job_spec)(**spec)


def test_what_the_rules_allow_parses():
    assert dataset_spec(
        hardNegatives={"rangeMin": 0, "rangeMax": 3, "count": 3, "absoluteMargin": 0}
    ).hard_negatives.margins() == (0, None)
    assert dataset_spec(hardNegatives={"relativeMargin": 0}).hard_negatives.margins() == (None, None)
    assert job_spec(loss={"type": "GISTEmbedLoss", "guideModel": "all-MiniLM-L6-v2"}).loss.guide_model
    assert job_spec(loss={"type": "CachedGISTEmbedLoss"}, training={"budget": {"minSteps": 5, "maxSteps": 5}})
    with pytest.raises(ValidationError, match="miniBatchSize must not exceed"):
        job_spec(loss={"type": "CachedGISTEmbedLoss", "miniBatchSize": 128})


def test_a_train_result_with_validation_fits_a_termination_message():
    metrics = {
        "ndcgAt10": 0.123456789,
        "mrrAt10": 0.123456789,
        "recallAt10": 0.123456789,
        "recallAt100": 0.123456789,
        "queries": 100000,
    }
    result = TrainResult.model_validate(
        {
            "model": {
                "location": "/workspace/" + "x" * 200,
                "baseModel": "m" * 200,
                "dimensions": 1024,
                "fingerprint": "sha256:" + "a" * 64,
            },
            "baseMetrics": metrics,
            "tunedMetrics": metrics,
            "ndcgGain": 0.1,
            "validation": {
                "queries": 500,
                "documents": 20000,
                "baseNdcgAt10": 0.123456789,
                "bestNdcgAt10": 0.123456789,
                "bestStep": 2000,
                "evaluations": 6,
            },
            "trainPairs": 330000,
            "plannedSteps": 2000,
            "steps": 2000,
            "resumedFromStep": 1600,
            "startTime": "2026-11-27T00:00:00Z",
            "completionTime": "2026-11-27T00:15:00Z",
            "durationSeconds": 900.0,
        }
    )
    assert len(termination_message(result).encode()) < 2048
