"""The train worker end to end: a tiny run, kill and resume, losses, warm-up, the published checkpoint."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pytest
from transformers import TrainerCallback

from embedops import modelzoo, steps
from embedops.api.finetune import FineTuneJobSpec
from embedops.prepared import Doc, PreparedDataset, TrainExample, write_prepared
from embedops.workers import train
from embedops.workers.training import checkpoints, data, trainer, validation

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart"
TOPICS = [
    "protein",
    "galaxy",
    "river",
    "taxes",
    "jazz",
    "soil",
    "volcano",
    "neuron",
    "coral",
    "bonds",
    "glacier",
    "virus",
    "enzyme",
    "comet",
    "delta",
    "tariff",
    "blues",
    "fungi",
    "magma",
    "synapse",
    "kelp",
    "equity",
    "tundra",
    "plasmid",
    "quasar",
    "canyon",
    "budget",
    "opera",
    "lichen",
    "geyser",
]


def synthetic_dataset(folder: Path, *, negatives: int = 2, uneven: bool = False) -> Path:
    """Thirty topics: a query and a document each, ten held out for testing."""
    corpus = [
        Doc(id=f"d{i}", title=t.title(), text=f"notes on {t} and related {t} findings") for i, t in enumerate(TOPICS)
    ]
    examples = []
    for i, t in enumerate(TOPICS[:20]):
        n = negatives if not uneven else i % (negatives + 1)
        negs = tuple(corpus[(i + k + 1) % len(corpus)].full_text for k in range(n))
        examples.append(TrainExample(query=f"what is known about {t}?", positive=corpus[i].full_text, negatives=negs))
    write_prepared(
        folder,
        corpus=corpus,
        train=examples,
        test_queries={f"q{i}": f"what is known about {t}?" for i, t in enumerate(TOPICS) if i >= 20},
        test_qrels={f"q{i}": {f"d{i}": 1} for i in range(20, 30)},
    )
    return folder


def job(model: Path | str, **training) -> FineTuneJobSpec:
    loss = training.pop("loss", {})
    evaluation = training.pop("evaluation", {})
    return FineTuneJobSpec.model_validate(
        {
            "datasetRef": {"name": "d"},
            "baseModel": str(model),
            "loss": loss,
            "evaluation": evaluation,
            "training": {"batchSize": 8, "maxSteps": 4, "maxSeqLength": 32, "learningRate": 1e-3, **training},
        }
    )


NO_VALIDATION = {"validation": {"fraction": 0}}


def run_job(tmp_path: Path, spec: FineTuneJobSpec, dataset: Path, **kwargs) -> train.Result:
    config = steps.TrainStep(spec=spec, dataset_dir=dataset, output_dir=tmp_path / "job", device="cpu")
    return train.run(config, **kwargs)


@pytest.fixture
def dataset(tmp_path) -> Path:
    return synthetic_dataset(tmp_path / "dataset")


def test_tiny_training_run_produces_a_loadable_model_and_metrics(tmp_path, tiny_model_dir, dataset):
    result = run_job(tmp_path, job(tiny_model_dir, evaluation={"requireImprovement": False}), dataset)

    # Two of the twenty training queries are held out for validation (10 %).
    assert result.steps == result.planned_steps == 4 and result.train_pairs == 18 and result.resumed_from_step is None
    assert result.validation.queries == 2 and result.validation.documents == 30 and result.validation.evaluations >= 1
    assert result.base_metrics.queries == result.tuned_metrics.queries == 10
    assert result.ndcg_gain == pytest.approx(result.tuned_metrics.ndcg_at_10 - result.base_metrics.ndcg_at_10)
    assert result.model.dimensions == 32 and result.model.base_model == str(tiny_model_dir)
    assert result.model.fingerprint != modelzoo.fingerprint(tiny_model_dir)
    model = modelzoo.load(result.model.location, device="cpu")
    assert model.encode(["a sentence"]).shape == (1, 32)
    saved = json.loads((tmp_path / "job" / "evaluation.json").read_text())
    assert saved["tuned"]["ndcgAt10"] == result.tuned_metrics.ndcg_at_10 and saved["steps"] == 4
    assert result.to_wire()["tunedMetrics"]["recallAt100"] == result.tuned_metrics.recall_at_100
    # No model card: sentence-transformers' would quote training rows inside the published model.
    assert not (Path(result.model.location) / "README.md").exists()


class KillAfterCheckpoint(TrainerCallback):
    """Stands in for a pod killed mid-training, right after a checkpoint reached the disk."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"killed after the checkpoint of step {self.step}")


class CountSteps(TrainerCallback):
    """The global step at the end of each step this run took."""

    def __init__(self):
        self.steps: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path, tiny_model_dir, dataset):
    spec = job(tiny_model_dir, maxSteps=6, checkpointSteps=2)
    with pytest.raises(KeyboardInterrupt, match="step 4"):
        run_job(tmp_path, spec, dataset, callbacks=[KillAfterCheckpoint(4)])
    saved = sorted(p.name for p in (tmp_path / "job" / "checkpoints").glob("checkpoint-*"))
    assert saved == ["checkpoint-2", "checkpoint-4"] and not (tmp_path / "job" / "model").exists()

    counted = CountSteps()
    result = run_job(tmp_path, spec, dataset, callbacks=[counted])

    assert result.resumed_from_step == 4 and result.steps == 6
    assert counted.steps == [5, 6]
    # save_total_limit keeps the last two checkpoints.
    assert not (tmp_path / "job" / "checkpoints").exists(), "a finished run leaves no checkpoints behind"


def test_a_save_cut_short_is_skipped_and_the_run_resumes_from_the_complete_one_before(
    tmp_path, tiny_model_dir, dataset
):
    spec = job(tiny_model_dir, maxSteps=6, checkpointSteps=2)
    with pytest.raises(KeyboardInterrupt):
        run_job(tmp_path, spec, dataset, callbacks=[KillAfterCheckpoint(4)])
    # What a kill during the save of step 4 leaves: config files and weights still under a temporary name.
    partial = tmp_path / "job" / "checkpoints" / "checkpoint-4"
    for name in ("trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (partial / name).unlink(missing_ok=True)
    (partial / "model.safetensors").rename(partial / "model.safetensors.tmp")
    assert checkpoints.checkpoint_step(partial) is None
    assert checkpoints.checkpoint_step(partial.with_name("checkpoint-2")) == 2

    counted = CountSteps()
    result = run_job(tmp_path, spec, dataset, callbacks=[counted])
    assert result.resumed_from_step == 2 and result.steps == 6 and counted.steps == [3, 4, 5, 6]


def test_warm_up_is_a_count_of_the_planned_steps(tmp_path, tiny_model_dir):
    dataset = synthetic_dataset(tmp_path / "dataset", negatives=2, uneven=True)
    spec = job(tiny_model_dir, batchSize=4, maxSteps=None, epochs=1, warmupRatio=0.5, evaluation=NO_VALIDATION)
    examples = PreparedDataset(dataset).train_examples()
    planned = trainer.planned_steps(data.build_train_dataset(examples, spec)[0], spec.training)
    assert planned == 6  # three groups of 6 or 7 pairs, two batches of 4 each
    args = trainer.training_args(spec, tmp_path / "checkpoints", "cpu", planned)
    assert args.warmup_steps == 3 and isinstance(args.warmup_steps, int)
    assert trainer.training_args(spec, tmp_path / "c", "cpu", 7).warmup_steps == math.ceil(0.5 * 7)

    rates = []

    class LearningRates(TrainerCallback):
        def on_step_end(self, args, state, control, lr_scheduler=None, **kwargs):
            rates.append(lr_scheduler.get_last_lr()[0])

    result = run_job(tmp_path, spec, dataset, callbacks=[LearningRates()])
    assert result.steps == planned
    peak = spec.training.learning_rate
    assert rates == pytest.approx([peak / 3, peak * 2 / 3, peak, peak * 2 / 3, peak / 3, 0.0])


def test_triplet_loss_without_negatives_fails_clearly(tmp_path, tiny_model_dir):
    dataset = synthetic_dataset(tmp_path / "dataset", negatives=0)
    with pytest.raises(ValueError, match="TripletLoss needs hard negatives"):
        run_job(tmp_path, job(tiny_model_dir, loss={"type": "TripletLoss"}), dataset)


@pytest.mark.parametrize(
    "loss",
    [
        {"type": "TripletLoss"},
        {"type": "CachedMultipleNegativesRankingLoss", "miniBatchSize": 4},
        {"type": "MultipleNegativesRankingLoss", "matryoshkaDims": [32, 16, 8]},
        {"type": "GISTEmbedLoss"},
        {"type": "CachedGISTEmbedLoss", "miniBatchSize": 4, "guideMarginStrategy": "relative", "guideMargin": 0.05},
    ],
)
def test_other_losses_and_the_matryoshka_wrapper_train(tmp_path, tiny_model_dir, dataset, loss):
    result = run_job(
        tmp_path, job(tiny_model_dir, maxSteps=2, loss=loss, evaluation={"requireImprovement": False}), dataset
    )
    assert result.steps == 2 and result.tuned_metrics.queries == 10


def test_matryoshka_dims_larger_than_the_model_fail_clearly(tmp_path, tiny_model_dir, dataset):
    with pytest.raises(ValueError, match=r"matryoshkaDims \[64\] exceed the model's 32 dimensions"):
        run_job(tmp_path, job(tiny_model_dir, loss={"matryoshkaDims": [64, 16]}), dataset)


def test_uneven_negatives_train_in_groups_without_padding(tmp_path, tiny_model_dir):
    dataset = synthetic_dataset(tmp_path / "dataset", negatives=2, uneven=True)
    result = run_job(tmp_path, job(tiny_model_dir, batchSize=4, evaluation=NO_VALIDATION), dataset)
    assert result.steps == 4 and result.train_pairs == 20


@pytest.mark.slow
def test_minilm_on_a_scifact_sample_beats_the_base_model(tmp_path):
    from embedops.api.dataset import EmbeddingDatasetSpec
    from embedops.workers import prepare

    spec = EmbeddingDatasetSpec.model_validate(
        {
            "source": {"beir": {"path": "data/scifact-sample"}},
            "hardNegatives": {"count": 1},
            "augment": {"maxTitlePairs": 200},
        }
    )
    prepare.run(steps.PrepareStep(spec=spec, base_dir=QUICKSTART, output_dir=tmp_path / "dataset"))
    assert PreparedDataset(tmp_path / "dataset").manifest.counts["test_queries"] == 100

    result = run_job(
        tmp_path,
        FineTuneJobSpec.model_validate(
            {
                "datasetRef": {"name": "scifact-sample"},
                "training": {"epochs": 1, "batchSize": 16, "maxSeqLength": 128},
            }
        ),
        tmp_path / "dataset",
    )

    assert result.tuned_metrics.ndcg_at_10 > result.base_metrics.ndcg_at_10


# -- checkpoint selection on validation queries -----------------------------------------------------


def scripted_validation(monkeypatch, ndcgs: list[float]) -> list[float]:
    """Validation scores in call order (the base model first, then each checkpoint); test scores stay real."""
    real, left = validation.score, list(ndcgs)

    def score(model, queries, corpus, qrels, batch_size):
        metrics = real(model, queries, corpus, qrels, batch_size)
        if all(q.startswith("v") for q in queries):  # validation query ids are v0, v1, ...
            return metrics.model_copy(update={"ndcg_at_10": left.pop(0)})
        return metrics

    monkeypatch.setattr(validation, "score", score)
    return left


class Weights(TrainerCallback):
    """The model's weights as each checkpoint was saved."""

    def __init__(self):
        self.at: dict[int, dict] = {}

    def on_save(self, args, state, control, model=None, **kwargs):
        self.at[state.global_step] = {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_weights(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_best_checkpoint_on_validation_is_published(tmp_path, tiny_model_dir, dataset, monkeypatch):
    left = scripted_validation(monkeypatch, [0.60, 0.55, 0.90, 0.70])  # base, then steps 2, 4, 6
    weights = Weights()
    result = run_job(tmp_path, job(tiny_model_dir, maxSteps=6, checkpointSteps=2), dataset, callbacks=[weights])

    assert left == [] and result.steps == 6 and result.planned_steps == 6
    assert result.validation.model_dump() == {
        "queries": 2,
        "documents": 30,
        "base_ndcg_at_10": 0.60,
        "best_ndcg_at_10": 0.90,
        "best_step": 4,
        "evaluations": 3,
    }
    published = modelzoo.load(result.model.location, device="cpu")
    assert same_weights(published.state_dict(), weights.at[4]) and not same_weights(weights.at[4], weights.at[6])
    # Test scores are those of the published (step 4) model; they never chose it.
    assert result.tuned_metrics.queries == 10
    saved = json.loads((tmp_path / "job" / "evaluation.json").read_text())
    assert saved["published"] and saved["validation"]["bestStep"] == 4


def test_no_checkpoint_above_the_base_model_publishes_nothing(tmp_path, tiny_model_dir, dataset, monkeypatch):
    from embedops import status as statuses
    from embedops.api.conditions import Reason

    scripted_validation(monkeypatch, [0.60, 0.60, 0.58, 0.41])
    spec = job(tiny_model_dir, maxSteps=6, checkpointSteps=2)
    result = run_job(tmp_path, spec, dataset)

    assert result.model is None and result.tuned_metrics is None and result.ndcg_gain is None
    assert result.validation.best_ndcg_at_10 == 0.60 and result.validation.best_step == 2  # a tie is no improvement
    assert not (tmp_path / "job" / "model").exists() and not (tmp_path / "job" / "checkpoints").exists()
    assert json.loads((tmp_path / "job" / "evaluation.json").read_text())["published"] is False
    # What the resource then says: NoImprovement, and no model an index could follow.
    status = statuses.finetune_finished(
        train.Result.model_validate(result.to_wire()),
        spec,
        statuses.At(3, dt.datetime(2026, 12, 3, tzinfo=dt.UTC)),
    )
    ready = status.condition("Ready")
    assert (status.phase, ready.status, ready.reason) == ("Failed", "False", Reason.NO_IMPROVEMENT)
    assert status.model is None and "no model published" in ready.message and "2 validation queries" in ready.message
    assert status.planned_steps == status.steps == 6 and status.validation.best_step == 2


def test_without_required_improvement_the_best_checkpoint_is_published_anyway(
    tmp_path, tiny_model_dir, dataset, monkeypatch
):
    scripted_validation(monkeypatch, [0.60, 0.50, 0.40, 0.55])
    weights = Weights()
    result = run_job(
        tmp_path,
        job(tiny_model_dir, maxSteps=6, checkpointSteps=2, evaluation={"requireImprovement": False}),
        dataset,
        callbacks=[weights],
    )
    assert result.validation.best_step == 6 and result.model is not None
    assert same_weights(modelzoo.load(result.model.location, device="cpu").state_dict(), weights.at[6])


def test_a_killed_and_resumed_run_ends_exactly_as_an_uninterrupted_one(tmp_path, tiny_model_dir, dataset):
    spec = job(tiny_model_dir, maxSteps=6, checkpointSteps=2, evaluation={"requireImprovement": False})
    whole = train.run(steps.TrainStep(spec=spec, dataset_dir=dataset, output_dir=tmp_path / "whole", device="cpu"))

    config = steps.TrainStep(spec=spec, dataset_dir=dataset, output_dir=tmp_path / "killed", device="cpu")
    with pytest.raises(KeyboardInterrupt):
        train.run(config, callbacks=[KillAfterCheckpoint(4)])
    resumed = train.run(config)

    assert resumed.resumed_from_step == 4 and whole.resumed_from_step is None
    assert resumed.validation == whole.validation and resumed.tuned_metrics == whole.tuned_metrics
    assert resumed.model.fingerprint == whole.model.fingerprint


def test_the_exports_asked_for_are_checked_and_recorded_before_the_fingerprint(tmp_path, tiny_model_dir, dataset):
    pytest.importorskip("onnxruntime", reason="spec.export.onnx needs the `onnx` extra (embedops[onnx])")
    wire = job(tiny_model_dir, evaluation={"requireImprovement": False}).to_wire()
    spec = FineTuneJobSpec.model_validate(wire | {"export": {"onnx": {"quantize": "int8"}}})
    result = run_job(tmp_path, spec, dataset)

    folder = Path(result.model.location)
    assert [(e.file, e.texts) for e in result.model.exports] == [
        ("onnx/model.onnx", 40),  # the ten test queries and the thirty documents
        ("onnx/model_qint8.onnx", 40),
    ]
    assert all((folder / e.file).is_file() and e.min_cosine >= e.bound for e in result.model.exports)
    assert result.model.fingerprint == modelzoo.fingerprint(folder)
    assert result.to_wire()["model"]["exports"][1]["variant"] == "int8"
