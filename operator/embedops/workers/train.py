"""The train worker: fine-tune a sentence-transformers model on a prepared dataset and score it.

A FineTuneJob is only worth publishing if it beats its base model on the domain's own
held-out queries, so both models are scored the same way (exact search over the whole
corpus). Training checkpoints regularly and resumes from the last checkpoint, because pods
are preempted or evicted (Kueue re-suspends evicted Jobs) and a restart must not start over.

A GPU trains MiniLM faster than one host thread tokenizes its batches, so the training texts are
tokenized once, in threads, before the first step, and nothing in a step waits for the GPU (no
blocking copies, no loss read back except when logging): the host stays ahead of the device.

`run` reads top to bottom as sentence-transformers training scripts do:
model -> dataset -> loss -> evaluator -> training args -> trainer -> evaluate -> save.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
import re
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, assert_never

from pydantic import Field
from transformers import TrainerCallback

from embedops import modelzoo, progress, retrieval
from embedops.api.common import ApiModel
from embedops.api.finetune import (
    EvaluationSpec,
    FineTuneJobSpec,
    IRMetrics,
    LossSpec,
    ModelArtifact,
    TrainingSpec,
)
from embedops.prepared import PreparedDataset, TrainExample
from embedops.results import TrainResult as Result

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict
    from sentence_transformers import SentenceTransformer
    from torch import nn

    from embedops.workers.encoder import FastTokenizer

log = logging.getLogger(__name__)

RANKING_LOSSES = {"MultipleNegativesRankingLoss", "CachedMultipleNegativesRankingLoss"}
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


class Config(ApiModel):
    spec: FineTuneJobSpec = Field(description="The FineTuneJob spec.")
    dataset_dir: Path = Field(description="The prepared dataset (the EmbeddingDataset's location).")
    output_dir: Path = Field(description="Where checkpoints/, model/ and evaluation.json are written.")
    base_dir: Path | None = Field(default=None, description="Relative model paths resolve against this folder.")
    device: str | None = Field(default=None, description="`cpu` or `cuda`; default cuda when available.")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- dataset --------------------------------------------------------------------------------


def negative_groups(examples: list[TrainExample], cap: int, min_group: int) -> dict[int, list[TrainExample]]:
    """Examples grouped by how many negatives they will use (at most `cap`), every group but the last >= min_group.

    A dataset needs one column count, so each group becomes its own dataset and every batch is
    drawn from one group: no example is padded with made-up negatives and none is dropped.
    A group too small for a batch is merged into the next smaller one, its examples keeping
    only that many negatives.
    """
    by_count: dict[int, list[TrainExample]] = {}
    for e in examples:
        by_count.setdefault(min(len(e.negatives), cap), []).append(e)
    groups: dict[int, list[TrainExample]] = {}
    carried: list[TrainExample] = []
    counts = sorted(by_count, reverse=True)
    for i, n in enumerate(counts):
        members = carried + by_count[n]
        if len(members) < min_group and i + 1 < len(counts):
            carried = members
            continue
        groups[n], carried = members, []
    return groups


def to_columns(examples: list[TrainExample], n: int) -> dict[str, list[str]]:
    columns = {"anchor": [e.query for e in examples], "positive": [e.positive for e in examples]}
    for k in range(n):
        columns[f"negative_{k + 1}"] = [e.negatives[k] for e in examples]
    return columns


def build_train_dataset(examples: list[TrainExample], spec: FineTuneJobSpec) -> tuple[Dataset | DatasetDict, int]:
    """The training dataset (anchor, positive, negative_1..n) and the number of pairs in it."""
    from datasets import Dataset, DatasetDict

    cap = spec.training.negatives_per_pair if spec.training.negatives_per_pair is not None else 1 << 30
    if spec.loss.type == "TripletLoss":
        # TripletLoss takes exactly one negative: the first, the hardest that mining kept.
        examples = [e for e in examples if e.negatives]
        if not examples or cap == 0:
            raise ValueError(
                "loss TripletLoss needs hard negatives, and the prepared dataset has none for this job: enable "
                "hardNegatives on the EmbeddingDataset (or set training.negativesPerPair >= 1), or use "
                "MultipleNegativesRankingLoss"
            )
        cap = 1
    if not examples:
        raise ValueError("the prepared dataset has no training pairs")
    groups = negative_groups(examples, cap, spec.training.batch_size)
    datasets = {f"negatives_{n}": Dataset.from_dict(to_columns(members, n)) for n, members in sorted(groups.items())}
    dataset = next(iter(datasets.values())) if len(datasets) == 1 else DatasetDict(datasets)
    return dataset, len(examples)


def groups_of(dataset: Dataset | DatasetDict) -> list[Dataset]:
    from datasets import DatasetDict

    return list(dataset.values()) if isinstance(dataset, DatasetDict) else [dataset]


def planned_steps(dataset: Dataset | DatasetDict, training: TrainingSpec) -> int:
    """The optimizer steps training will take: maxSteps, or epochs of one step per batchSize pairs of each group.

    The trainer counts the same way (each group's last batch may be smaller); a test holds the two together.
    """
    if training.max_steps:
        return training.max_steps
    return training.epochs * sum(math.ceil(len(group) / training.batch_size) for group in groups_of(dataset))


# -- collation ------------------------------------------------------------------------------


class PretokenizedTexts:
    """The collator's `preprocess` for the training texts, from token ids computed once, in threads, before step one.

    Tokenizing inside the training loop kept the GPU waiting for one host thread at every step, and
    every epoch tokenized the same texts again; now a step only pads ids into tensors.
    """

    def __init__(self, tokenizer: FastTokenizer, texts: Iterable[str], preprocess: Callable, workers: int):
        import numpy as np

        from embedops.workers.encoder import PIECE

        unique = list(dict.fromkeys(texts))
        pieces = [unique[i:i + PIECE] for i in range(0, len(unique), PIECE)]
        with ThreadPoolExecutor(workers, thread_name_prefix="embedops-tokenize") as pool:
            tokenized = list(pool.map(tokenizer.ids, pieces))
        self._ids = {text: ids for piece, (tokens, lengths) in zip(pieces, tokenized)
                     for text, ids in zip(piece, np.split(tokens, np.cumsum(lengths)[:-1]))}
        self._tokenizer, self._preprocess = tokenizer, preprocess

    def __len__(self) -> int:
        return len(self._ids)

    def __call__(self, inputs: list[str], prompt: str | None = None, **kwargs: Any) -> dict[str, Any]:
        import numpy as np

        if prompt or kwargs.get("max_length") is not None or not all(t in self._ids for t in inputs):
            return self._preprocess(inputs, prompt=prompt, **kwargs)
        rows = [self._ids[t] for t in inputs]
        return self._tokenizer.features([(np.concatenate(rows), np.fromiter(map(len, rows), np.int64, len(rows)))],
                                        pin=False)


def same_batch(a: dict[str, Any], b: dict[str, Any]) -> bool:
    import torch

    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)


def pretokenized_collator(collator: Any, model: SentenceTransformer, dataset: Dataset | DatasetDict) -> Any:
    """The trainer's collator on texts tokenized up front, where its batches come out the same; else the collator."""
    from embedops.workers.encoder import cpu_limit, fast_tokenizer

    if (tokenizer := fast_tokenizer(model)) is None:
        return collator
    field = "preprocess_fn" if hasattr(collator, "preprocess_fn") else "tokenize_fn"  # sentence-transformers 6, 5
    groups = groups_of(dataset)
    texts = (text for group in groups for column in group.column_names for text in group[column])
    texts_ids = PretokenizedTexts(tokenizer, texts, getattr(collator, field), cpu_limit())
    fast = dataclasses.replace(collator, **{field: texts_ids})
    probes = [[group[i] for i in range(min(len(group), 8))] for group in groups]
    if not all(same_batch(collator(rows), fast(rows)) for rows in probes):
        log.info("the model's batches differ from pre-tokenized ones: tokenizing at every step")
        return collator
    log.info("%d distinct training texts tokenized before the first step", len(texts_ids))
    return fast


# -- loss -----------------------------------------------------------------------------------


def embedding_dimension(model: SentenceTransformer) -> int:
    # sentence-transformers 6 renamed the method; the declared range still includes 5.x.
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


def build_loss(model: SentenceTransformer, spec: LossSpec) -> nn.Module:
    from sentence_transformers.losses import (
        CachedMultipleNegativesRankingLoss,
        MatryoshkaLoss,
        MultipleNegativesRankingLoss,
        TripletLoss,
    )

    loss: nn.Module
    match spec.type:
        case "MultipleNegativesRankingLoss":
            loss = MultipleNegativesRankingLoss(model, scale=spec.scale)
        case "CachedMultipleNegativesRankingLoss":
            loss = CachedMultipleNegativesRankingLoss(model, scale=spec.scale, mini_batch_size=spec.mini_batch_size)
        case "TripletLoss":
            loss = TripletLoss(model, triplet_margin=spec.triplet_margin)
        case _:
            assert_never(spec.type)
    if not spec.matryoshka_dims:
        return loss
    size = embedding_dimension(model)
    if too_big := [d for d in spec.matryoshka_dims if d > size]:
        raise ValueError(f"loss.matryoshkaDims {too_big} exceed the model's {size} dimensions")
    return MatryoshkaLoss(model, loss, matryoshka_dims=sorted(set(spec.matryoshka_dims), reverse=True))


# -- evaluator ------------------------------------------------------------------------------


def held_out_evaluator(data: PreparedDataset, spec: EvaluationSpec,
                       seed: int) -> Callable[[SentenceTransformer], IRMetrics]:
    """Scores a model by exact search over the whole corpus for the test queries (a seeded sample when capped)."""
    corpus = {d.id: d.full_text for d in data.corpus().values()}
    queries, qrels = data.test_queries(), data.test_qrels()
    if spec.max_queries is not None and len(qrels) > spec.max_queries:
        ranked = sorted(qrels, key=lambda q: hashlib.sha256(f"{seed}\0{q}".encode()).hexdigest())
        qrels = {q: qrels[q] for q in ranked[:spec.max_queries]}

    def evaluate(model: SentenceTransformer) -> IRMetrics:
        s = retrieval.evaluate(model, queries, corpus, qrels, batch_size=spec.batch_size)
        return IRMetrics(ndcg_at_10=s.ndcg_at_10, mrr_at_10=s.mrr_at_10, recall_at_10=s.recall[10],
                         recall_at_100=s.recall[100], queries=s.queries)

    return evaluate


# -- training arguments and trainer ---------------------------------------------------------------


def precision_flags(precision: str, device: str) -> dict[str, bool]:
    import torch

    cuda = device.startswith("cuda")
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and not cuda:
        raise ValueError("training.precision fp16 needs a CUDA GPU; use fp32 or bf16 on CPU")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def training_args(spec: FineTuneJobSpec, checkpoints: Path, device: str, total_steps: int):
    from sentence_transformers import SentenceTransformerTrainingArguments

    t: TrainingSpec = spec.training
    return SentenceTransformerTrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        per_device_train_batch_size=t.batch_size,
        learning_rate=t.learning_rate,
        # A count of steps: transformers 5 reads a float below 1 as a ratio, transformers 4 as a count.
        warmup_steps=math.ceil(t.warmup_ratio * total_steps),
        weight_decay=t.weight_decay,
        optim="adamw_torch_fused",
        seed=t.seed,
        data_seed=t.seed,
        **precision_flags(t.precision, device),
        # Duplicate texts in a batch would be in-batch "negatives" of themselves.
        batch_sampler="no_duplicates" if spec.loss.type in RANKING_LOSSES else "batch_sampler",
        save_strategy="steps",
        save_steps=t.checkpoint_steps,
        save_total_limit=2,
        logging_steps=max(1, min(50, t.checkpoint_steps)),
        # The filter reads every step's loss on the host: a wait for the GPU at each step.
        logging_nan_inf_filter=False,
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        # Collating in the main process: the texts are tokenized before the first step (pretokenized_collator),
        # and forked workers deadlock with tokenizers' threads.
        dataloader_num_workers=0,
        dataloader_pin_memory=device.startswith("cuda"),
        use_cpu=device == "cpu",
    )


class ProgressCallback(TrainerCallback):
    """Training steps through embedops.progress (bars on a terminal, log lines in a pod), and the loss as logs."""

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._task: progress.Task | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._task = self._stack.enter_context(progress.task("Training steps", total=state.max_steps))
        self._task.advance(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self._task is not None:
            self._task.advance()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            log.info("step %d/%d: loss %.4f, learning rate %.2e", state.global_step, state.max_steps,
                     logs["loss"], logs.get("learning_rate", 0.0))

    def on_train_end(self, args, state, control, **kwargs):
        self._stack.close()
        self._task = None


def checkpoint_step(folder: Path) -> int | None:
    """The step of a complete checkpoint, None for the remains of a save that a kill cut short.

    transformers writes trainer_state.json last, after the weights, optimizer and scheduler.
    """
    try:
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return int(state["global_step"]) if any((folder / name).is_file() for name in _WEIGHTS) else None


def last_checkpoint(checkpoints: Path) -> tuple[str | None, int | None]:
    """The newest complete checkpoint a previous (killed) run left, and its step.

    Incomplete ones newer than it are removed, so that the run's next save does not land among
    their leftovers (a weights file under a temporary name, a missing optimizer state).
    """
    if not checkpoints.is_dir():
        return None, None
    numbered = ((int(m[1]), p) for p in checkpoints.iterdir() if p.is_dir() and (m := _CHECKPOINT.fullmatch(p.name)))
    for _, folder in sorted(numbered, reverse=True):
        if (step := checkpoint_step(folder)) is not None:
            return str(folder), step
        log.warning("removing %s: its save was cut short", folder.name)
        shutil.rmtree(folder)
    return None, None


# -- the step -------------------------------------------------------------------------------------


def _trainer_class() -> type:
    import torch
    from sentence_transformers import SentenceTransformerTrainer

    class Trainer(SentenceTransformerTrainer):
        def add_model_card_callback(self, default_args_dict: dict) -> None:
            """No model card: it quotes training rows, and domain data must not leak into a published model."""

        def _prepare_input(self, data: Any) -> Any:
            """Batches go to the GPU without blocking: a blocking copy waits for the previous step to finish."""
            if isinstance(data, torch.Tensor):
                return data.to(self.args.device, non_blocking=True)
            return super()._prepare_input(data)

    return Trainer


def run(config: Config, *, dsn: str | None = None, callbacks: Sequence[TrainerCallback] = ()) -> Result:
    """Train, evaluate and save. `callbacks` are extra transformers TrainerCallbacks (progress, tests)."""
    from transformers import PrinterCallback

    spec, out = config.spec, config.output_dir
    device = config.device or modelzoo.default_device()
    started, clock = _now(), time.monotonic()

    # Model: the base model, from a local folder or a bundled package.
    model = modelzoo.load(spec.base_model, base_dir=config.base_dir, device=device,
                          max_seq_length=spec.training.max_seq_length)

    # Dataset: the prepared training pairs with their hard negatives.
    data = PreparedDataset(config.dataset_dir)
    train_dataset, train_pairs = build_train_dataset(data.train_examples(), spec)

    # Loss: in-batch plus hard negatives (or triplets), optionally at several Matryoshka sizes.
    loss = build_loss(model, spec.loss)

    # Evaluator: held-out queries against the full corpus; the base model is scored before it changes.
    evaluate = held_out_evaluator(data, spec.evaluation, spec.training.seed)
    base_metrics = evaluate(model)
    log.info("base model: nDCG@10 %.4f on %d test queries", base_metrics.ndcg_at_10, base_metrics.queries)

    # Training arguments: checkpoints every checkpointSteps, the last two kept.
    checkpoints = out / "checkpoints"
    args = training_args(spec, checkpoints, device, planned_steps(train_dataset, spec.training))

    # Trainer: collates texts tokenized up front; resumes from the last checkpoint when a previous run was killed.
    trainer = _trainer_class()(model=model, args=args, train_dataset=train_dataset, loss=loss,
                                 callbacks=[ProgressCallback(), *callbacks])
    trainer.remove_callback(PrinterCallback)  # it prints raw dicts to stdout, which carries the worker's result
    trainer.data_collator = pretokenized_collator(trainer.data_collator, model, train_dataset)
    resume_from, resumed_from_step = last_checkpoint(checkpoints)
    if resume_from is not None:
        log.info("resuming from the checkpoint of step %d", resumed_from_step)
    trainer.train(resume_from_checkpoint=resume_from)

    # Evaluate: the tuned model on the same queries.
    tuned_metrics = evaluate(model)
    log.info("tuned model: nDCG@10 %.4f (base %.4f)", tuned_metrics.ndcg_at_10, base_metrics.ndcg_at_10)

    # Save: the model folder and the evaluation next to it.
    model_dir = out / "model"
    model.save(str(model_dir), create_model_card=False)
    shutil.rmtree(checkpoints, ignore_errors=True)  # the run is complete: nothing left to resume
    result = Result(
        model=ModelArtifact(location=str(model_dir), base_model=spec.base_model,
                            dimensions=embedding_dimension(model), fingerprint=modelzoo.fingerprint(model_dir)),
        base_metrics=base_metrics,
        tuned_metrics=tuned_metrics,
        ndcg_gain=tuned_metrics.ndcg_at_10 - base_metrics.ndcg_at_10,
        train_pairs=train_pairs,
        steps=trainer.state.global_step,
        resumed_from_step=resumed_from_step,
        start_time=started,
        completion_time=_now(),
        duration_seconds=round(time.monotonic() - clock, 1),
    )
    evaluation = {"base": base_metrics.to_wire(), "tuned": tuned_metrics.to_wire(), "ndcgGain": result.ndcg_gain,
                  "baseModel": spec.base_model, "steps": result.steps, "trainPairs": train_pairs}
    (out / "evaluation.json").write_text(json.dumps(evaluation, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return result
