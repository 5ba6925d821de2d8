"""The train worker: a tiny training run, kill and resume, losses, collation, warm-up, one slow real fine-tune."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from transformers import TrainerCallback

from embedops import modelzoo
from embedops.api.finetune import FineTuneJobSpec, LossSpec
from embedops.prepared import Doc, PreparedDataset, TrainExample, write_prepared
from embedops.workers import train

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart"
TOPICS = ["protein", "galaxy", "river", "taxes", "jazz", "soil", "volcano", "neuron", "coral", "bonds",
          "glacier", "virus", "enzyme", "comet", "delta", "tariff", "blues", "fungi", "magma", "synapse",
          "kelp", "equity", "tundra", "plasmid", "quasar", "canyon", "budget", "opera", "lichen", "geyser"]


def synthetic_dataset(folder: Path, *, negatives: int = 2, uneven: bool = False) -> Path:
    """Thirty topics: a query and a document each, ten held out for testing."""
    corpus = [Doc(id=f"d{i}", title=t.title(), text=f"notes on {t} and related {t} findings")
              for i, t in enumerate(TOPICS)]
    examples = []
    for i, t in enumerate(TOPICS[:20]):
        n = negatives if not uneven else i % (negatives + 1)
        negs = tuple(corpus[(i + k + 1) % len(corpus)].full_text for k in range(n))
        examples.append(TrainExample(query=f"what is known about {t}?", positive=corpus[i].full_text, negatives=negs))
    write_prepared(
        folder, corpus=corpus, train=examples,
        test_queries={f"q{i}": f"what is known about {t}?" for i, t in enumerate(TOPICS) if i >= 20},
        test_qrels={f"q{i}": {f"d{i}": 1} for i in range(20, 30)},
    )
    return folder


def job(model: Path | str, **training) -> FineTuneJobSpec:
    loss = training.pop("loss", {})
    return FineTuneJobSpec.model_validate({
        "datasetRef": {"name": "d"}, "baseModel": str(model), "loss": loss,
        "training": {"batchSize": 8, "maxSteps": 4, "maxSeqLength": 32, "learningRate": 1e-3, **training},
    })


def run_job(tmp_path: Path, spec: FineTuneJobSpec, dataset: Path, **kwargs) -> train.Result:
    config = train.Config(spec=spec, dataset_dir=dataset, output_dir=tmp_path / "job", device="cpu")
    return train.run(config, **kwargs)


@pytest.fixture
def dataset(tmp_path) -> Path:
    return synthetic_dataset(tmp_path / "dataset")


def test_tiny_training_run_produces_a_loadable_model_and_metrics(tmp_path, tiny_model_dir, dataset):
    result = run_job(tmp_path, job(tiny_model_dir), dataset)

    assert result.steps == 4 and result.train_pairs == 20 and result.resumed_from_step is None
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


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path, tiny_model_dir, dataset):
    spec = job(tiny_model_dir, maxSteps=6, checkpointSteps=2)
    with pytest.raises(KeyboardInterrupt, match="step 4"):
        run_job(tmp_path, spec, dataset, callbacks=[KillAfterCheckpoint(4)])
    checkpoints = sorted(p.name for p in (tmp_path / "job" / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-2", "checkpoint-4"] and not (tmp_path / "job" / "model").exists()

    steps_taken = []

    class CountSteps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            steps_taken.append(state.global_step)

    result = run_job(tmp_path, spec, dataset, callbacks=[CountSteps()])

    assert result.resumed_from_step == 4 and result.steps == 6
    assert steps_taken == [5, 6]
    # save_total_limit keeps the last two checkpoints.
    assert not (tmp_path / "job" / "checkpoints").exists(), "a finished run leaves no checkpoints behind"


def test_a_save_cut_short_is_skipped_and_the_run_resumes_from_the_complete_one_before(tmp_path, tiny_model_dir,
                                                                                     dataset):
    spec = job(tiny_model_dir, maxSteps=6, checkpointSteps=2)
    with pytest.raises(KeyboardInterrupt):
        run_job(tmp_path, spec, dataset, callbacks=[KillAfterCheckpoint(4)])
    # What a kill during the save of step 4 leaves: config files and weights still under a temporary name.
    partial = tmp_path / "job" / "checkpoints" / "checkpoint-4"
    for name in ("trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (partial / name).unlink(missing_ok=True)
    (partial / "model.safetensors").rename(partial / "model.safetensors.tmp")
    assert train.checkpoint_step(partial) is None and train.checkpoint_step(partial.with_name("checkpoint-2")) == 2

    steps_taken = []

    class CountSteps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            steps_taken.append(state.global_step)

    result = run_job(tmp_path, spec, dataset, callbacks=[CountSteps()])
    assert result.resumed_from_step == 2 and result.steps == 6 and steps_taken == [3, 4, 5, 6]


def test_a_checkpoint_whose_state_file_was_cut_short_is_incomplete(tmp_path):
    folder = tmp_path / "checkpoint-8"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "trainer_state.json").write_text('{"global_step": 8, "log_hist')
    assert train.checkpoint_step(folder) is None
    (folder / "trainer_state.json").write_text('{"global_step": 8}')
    assert train.checkpoint_step(folder) == 8
    assert train.last_checkpoint(tmp_path) == (str(folder), 8)


def test_warm_up_is_a_count_of_the_planned_steps(tmp_path, tiny_model_dir):
    dataset = synthetic_dataset(tmp_path / "dataset", negatives=2, uneven=True)
    spec = job(tiny_model_dir, batchSize=4, maxSteps=None, epochs=1, warmupRatio=0.5)
    examples = PreparedDataset(dataset).train_examples()
    planned = train.planned_steps(train.build_train_dataset(examples, spec)[0], spec.training)
    assert planned == 6  # three groups of 6 or 7 pairs, two batches of 4 each
    args = train.training_args(spec, tmp_path / "checkpoints", "cpu", planned)
    assert args.warmup_steps == 3 and isinstance(args.warmup_steps, int)
    assert train.training_args(spec, tmp_path / "c", "cpu", 7).warmup_steps == math.ceil(0.5 * 7)

    rates = []

    class LearningRates(TrainerCallback):
        def on_step_end(self, args, state, control, lr_scheduler=None, **kwargs):
            rates.append(lr_scheduler.get_last_lr()[0])

    result = run_job(tmp_path, spec, dataset, callbacks=[LearningRates()])
    assert result.steps == planned
    peak = spec.training.learning_rate
    assert rates == pytest.approx([peak / 3, peak * 2 / 3, peak, peak * 2 / 3, peak / 3, 0.0])


def test_an_unknown_loss_type_is_not_trained_as_another(tiny_model_dir):
    model = modelzoo.load(str(tiny_model_dir), device="cpu")
    with pytest.raises(AssertionError):
        train.build_loss(model, LossSpec.model_construct(type="AngleLoss"))


def test_steps_collate_from_texts_tokenized_up_front(tmp_path, tiny_model_dir):
    from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator

    model = modelzoo.load(str(tiny_model_dir), device="cpu", max_seq_length=32)
    folder = synthetic_dataset(tmp_path / "dataset", negatives=2, uneven=True)
    dataset, _ = train.build_train_dataset(PreparedDataset(folder).train_examples(), job(tiny_model_dir, batchSize=4))
    calls = []

    def preprocess(inputs, **kwargs):
        calls.append(len(inputs))
        return model.preprocess(inputs, **kwargs)

    collator = SentenceTransformerDataCollator(preprocess_fn=preprocess)
    fast = train.pretokenized_collator(collator, model, dataset)
    assert fast is not collator
    for group in dataset.values():
        rows = [group[i] for i in range(len(group))]
        want = collator(rows)
        calls.clear()
        assert train.same_batch(fast(rows), want) and not calls, "collated from ids computed up front"
    assert fast.preprocess_fn(["a text never seen"])["input_ids"].shape[0] == 1 and calls == [1]


def test_a_tokenizer_the_fast_path_does_not_reproduce_keeps_the_trainers_collator(tmp_path, tiny_model_dir,
                                                                                  monkeypatch):
    from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator

    from embedops.workers import encoder

    model = modelzoo.load(str(tiny_model_dir), device="cpu")
    monkeypatch.setattr(encoder, "fast_tokenizer", lambda model: None)
    collator = SentenceTransformerDataCollator(preprocess_fn=model.preprocess)
    dataset, _ = train.build_train_dataset(PreparedDataset(synthetic_dataset(tmp_path / "d")).train_examples(),
                                           job(tiny_model_dir))
    assert train.pretokenized_collator(collator, model, dataset) is collator


def test_triplet_loss_without_negatives_fails_clearly(tmp_path, tiny_model_dir):
    dataset = synthetic_dataset(tmp_path / "dataset", negatives=0)
    with pytest.raises(ValueError, match="TripletLoss needs hard negatives"):
        run_job(tmp_path, job(tiny_model_dir, loss={"type": "TripletLoss"}), dataset)


@pytest.mark.parametrize("loss", [
    {"type": "TripletLoss"},
    {"type": "CachedMultipleNegativesRankingLoss", "miniBatchSize": 4},
    {"type": "MultipleNegativesRankingLoss", "matryoshkaDims": [32, 16, 8]},
])
def test_other_losses_and_the_matryoshka_wrapper_train(tmp_path, tiny_model_dir, dataset, loss):
    result = run_job(tmp_path, job(tiny_model_dir, maxSteps=2, loss=loss), dataset)
    assert result.steps == 2 and result.tuned_metrics.queries == 10


def test_matryoshka_dims_larger_than_the_model_fail_clearly(tmp_path, tiny_model_dir, dataset):
    with pytest.raises(ValueError, match=r"matryoshkaDims \[64\] exceed the model's 32 dimensions"):
        run_job(tmp_path, job(tiny_model_dir, loss={"matryoshkaDims": [64, 16]}), dataset)


def test_uneven_negatives_train_in_groups_without_padding(tmp_path, tiny_model_dir):
    dataset = synthetic_dataset(tmp_path / "dataset", negatives=2, uneven=True)
    result = run_job(tmp_path, job(tiny_model_dir, batchSize=4), dataset)
    assert result.steps == 4 and result.train_pairs == 20


def test_negative_groups_merge_small_groups_downwards():
    def ex(n: int) -> TrainExample:
        return TrainExample(query="q", positive="p", negatives=tuple(f"n{k}" for k in range(n)))

    examples = [ex(3)] * 10 + [ex(2)] * 2 + [ex(1)] * 3 + [ex(0)] * 2
    groups = train.negative_groups(examples, cap=8, min_group=4)
    assert {n: len(g) for n, g in groups.items()} == {3: 10, 1: 5, 0: 2}
    assert {n: len(g) for n, g in train.negative_groups(examples, cap=1, min_group=4).items()} == {1: 15, 0: 2}
    columns = train.to_columns(groups[1], 1)
    assert list(columns) == ["anchor", "positive", "negative_1"] and len(columns["negative_1"]) == 5


def test_fp16_on_cpu_is_refused():
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        train.precision_flags("fp16", "cpu")
    assert train.precision_flags("auto", "cpu") == {"bf16": False, "fp16": False}


@pytest.mark.slow
def test_minilm_on_a_scifact_sample_beats_the_base_model(tmp_path):
    from embedops.api.dataset import EmbeddingDatasetSpec
    from embedops.workers import prepare

    spec = EmbeddingDatasetSpec.model_validate({
        "source": {"beir": {"path": "data/scifact-sample"}},
        "hardNegatives": {"count": 1}, "augment": {"maxTitlePairs": 200},
    })
    prepare.run(prepare.Config(spec=spec, base_dir=QUICKSTART, output_dir=tmp_path / "dataset"))
    assert PreparedDataset(tmp_path / "dataset").manifest.counts["test_queries"] == 100

    result = run_job(tmp_path, FineTuneJobSpec.model_validate({
        "datasetRef": {"name": "scifact-sample"},
        "training": {"epochs": 1, "batchSize": 16, "maxSeqLength": 128},
    }), tmp_path / "dataset")

    assert result.tuned_metrics.ndcg_at_10 > result.base_metrics.ndcg_at_10
