"""The train worker: fine-tune a sentence-transformers model on a prepared dataset and score it.

A FineTuneJob is only worth publishing if it beats its base model on the domain's own queries.
So a validation split is carved from the training queries, every checkpoint is scored on it, the
best one is kept, and when none beats the base model nothing is published. The test split is
only reported: base and published model scored the same way (exact search over the whole corpus).
How long training runs is planned from the data (a step budget), so that small data gets enough
steps and large data a bounded time. Training checkpoints regularly and resumes from the last
checkpoint, because pods are preempted or evicted (Kueue re-suspends evicted Jobs) and a
restart must not start over.

A GPU trains MiniLM faster than one host thread tokenizes its batches, so the training texts are
tokenized once, in threads, before the first step, and nothing in a step waits for the GPU (no
blocking copies, no loss read back except when logging): the host stays ahead of the device.

`run` reads top to bottom as sentence-transformers training scripts do:
model -> dataset -> loss -> evaluator -> training args -> trainer -> evaluate -> save.
"""

from __future__ import annotations

import copy
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
    GIST_LOSSES,
    EvaluationSpec,
    FineTuneJobSpec,
    IRMetrics,
    LossSpec,
    ModelArtifact,
    TrainingSpec,
    ValidationScores,
    ValidationSplitSpec,
)
from embedops.prepared import Doc, PreparedDataset, TrainExample
from embedops.results import TrainResult as Result

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict
    from sentence_transformers import SentenceTransformer
    from torch import nn

    from embedops.workers.encoder import FastTokenizer

log = logging.getLogger(__name__)

RANKING_LOSSES = {"MultipleNegativesRankingLoss", "CachedMultipleNegativesRankingLoss", *GIST_LOSSES}
# Checkpoints (each scored on the validation queries) a run takes unless checkpointSteps says otherwise.
CHECKPOINTS_PER_RUN = 5
# The metric the trainer keeps the best checkpoint by: ValidationEvaluator's, prefixed by the trainer.
BEST_METRIC = "eval_validation_ndcg@10"
# Depth of the base model's ranking kept when a large corpus is sampled for validation.
VALIDATION_DEPTH = 50
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
    """The training dataset (anchor, positive, negative_1..n) and the number of rows in it."""
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
    if spec.loss.type == "GISTEmbedLoss":
        cap = min(cap, 1)  # it takes (anchor, positive[, negative]); CachedGISTEmbedLoss takes several
    if not examples:
        raise ValueError("the prepared dataset has no training pairs")
    groups = negative_groups(examples, cap, spec.training.batch_size)
    datasets = {f"negatives_{n}": Dataset.from_dict(to_columns(members, n)) for n, members in sorted(groups.items())}
    dataset = next(iter(datasets.values())) if len(datasets) == 1 else DatasetDict(datasets)
    return dataset, len(examples)


def groups_of(dataset: Dataset | DatasetDict) -> list[Dataset]:
    from datasets import DatasetDict

    return list(dataset.values()) if isinstance(dataset, DatasetDict) else [dataset]


def steps_per_epoch(dataset: Dataset | DatasetDict, batch_size: int) -> int:
    """One step per batchSize rows of each group, as the trainer counts (a group's last batch may be smaller)."""
    return sum(math.ceil(len(group) / batch_size) for group in groups_of(dataset))


def plan_steps(per_epoch: int, training: TrainingSpec) -> int:
    """The optimizer steps training will take: maxSteps; else epochs passes; else the budget's, within its bounds."""
    if training.max_steps:
        return training.max_steps
    if training.epochs is not None:
        return training.epochs * per_epoch
    budget = training.budget
    return min(max(budget.epochs * per_epoch, budget.min_steps), budget.max_steps)


def planned_steps(dataset: Dataset | DatasetDict, training: TrainingSpec) -> int:
    """plan_steps for this dataset; a test holds it together with the steps the trainer takes."""
    return plan_steps(steps_per_epoch(dataset, training.batch_size), training)


def checkpoint_interval(planned: int, training: TrainingSpec) -> int:
    """checkpointSteps, or the plan cut in CHECKPOINTS_PER_RUN (the last step is always saved and scored too)."""
    return training.checkpoint_steps or max(1, math.ceil(planned / CHECKPOINTS_PER_RUN))


# -- validation split -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ValidationSet:
    """Training queries held out for checkpoint selection, their positives and the documents searched."""

    queries: dict[str, str]  # id -> text
    qrels: dict[str, dict[str, int]]  # id -> doc id -> 1
    corpus: dict[str, str]  # doc id -> full text


def _seeded_order(seed: int, keys: Iterable[str]) -> list[str]:
    return sorted(keys, key=lambda k: (hashlib.sha256(f"{seed}\0{k}".encode()).hexdigest(), k))


def carve_validation(examples: list[TrainExample], corpus: dict[str, Doc], spec: ValidationSplitSpec,
                     seed: int) -> tuple[list[TrainExample], ValidationSet | None]:
    """Training rows without the held-out queries, and those queries with their positives (by text, as rows hold them).

    A seeded sample of the queries of the (query, positive) rows; title pairs always stay in training.
    None when the fraction is 0 or there are too few queries to hold one out and still train on one.
    """
    pair_queries = sorted({e.query for e in examples if e.origin == "pair"})
    n = min(spec.max_queries, round(spec.fraction * len(pair_queries)))
    if spec.fraction > 0 and (n < 1 or n >= len(pair_queries)):
        log.warning("validation off: %d training queries are too few to hold %.0f%% out", len(pair_queries),
                    100 * spec.fraction)
    if n < 1 or n >= len(pair_queries):
        return examples, None
    held = _seeded_order(seed, pair_queries)[:n]
    query_id = {text: f"v{i}" for i, text in enumerate(held)}
    ids_of: dict[str, list[str]] = {}
    for d in corpus.values():
        ids_of.setdefault(d.full_text, []).append(d.id)
    qrels: dict[str, dict[str, int]] = {}
    for e in examples:
        if e.origin == "pair" and e.query in query_id:
            qrels.setdefault(query_id[e.query], {}).update(dict.fromkeys(ids_of.get(e.positive, ()), 1))
    queries = {q: text for text, q in query_id.items() if qrels.get(q)}
    rows = [e for e in examples if e.origin != "pair" or e.query not in query_id]
    documents = {d.id: d.full_text for d in corpus.values()}
    return rows, ValidationSet(queries=queries, qrels={q: qrels[q] for q in queries}, corpus=documents)


def sample_validation_corpus(model: SentenceTransformer, validation: ValidationSet, max_corpus: int, seed: int,
                             batch_size: int) -> ValidationSet:
    """The validation set searched over at most max_corpus documents (when the corpus is larger).

    Every positive and the base model's top VALIDATION_DEPTH of each validation query are kept (the
    documents that decide nDCG@10), then a seeded random sample fills up to max_corpus.
    """
    corpus = validation.corpus
    if len(corpus) <= max_corpus:
        return validation
    ranking = retrieval.search(model, validation.queries, corpus, VALIDATION_DEPTH, batch_size=batch_size)
    keep = dict.fromkeys(d for docs in validation.qrels.values() for d in docs)
    keep.update(dict.fromkeys(d for hits in ranking.values() for d, _ in hits))
    for d in _seeded_order(seed, corpus):
        if len(keep) >= max_corpus:
            break
        keep.setdefault(d)
    log.info("validation searches %d of the corpus's %d documents", len(keep), len(corpus))
    return dataclasses.replace(validation, corpus={d: corpus[d] for d in sorted(keep)})


def score(model: SentenceTransformer, queries: dict[str, str], corpus: dict[str, str], qrels: dict,
          batch_size: int) -> IRMetrics:
    s = retrieval.evaluate(model, queries, corpus, qrels, batch_size=batch_size)
    return IRMetrics(ndcg_at_10=s.ndcg_at_10, mrr_at_10=s.mrr_at_10, recall_at_10=s.recall[10],
                     recall_at_100=s.recall[100], queries=s.queries)


def validation_evaluator(validation: ValidationSet, batch_size: int) -> Any:
    """A sentence-transformers evaluator the trainer runs at every checkpoint: nDCG@10 on the validation set."""
    from sentence_transformers.evaluation import SentenceEvaluator

    class ValidationEvaluator(SentenceEvaluator):
        def __init__(self) -> None:
            super().__init__()
            self.primary_metric = "validation_ndcg@10"

        def __call__(self, model: SentenceTransformer, output_path: str | None = None, epoch: float = -1,
                     steps: int = -1) -> dict[str, float]:
            m = score(model, validation.queries, validation.corpus, validation.qrels, batch_size)
            return {"validation_ndcg@10": m.ndcg_at_10, "validation_mrr@10": m.mrr_at_10,
                    "validation_recall@10": m.recall_at_10}

    return ValidationEvaluator()


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


def build_loss(model: SentenceTransformer, spec: LossSpec, guide: Callable[[], SentenceTransformer] | None = None
               ) -> nn.Module:
    """The loss; `guide` loads the GIST losses' guide model (by default a frozen copy of the base model)."""
    from sentence_transformers.losses import (
        CachedGISTEmbedLoss,
        CachedMultipleNegativesRankingLoss,
        GISTEmbedLoss,
        MatryoshkaLoss,
        MultipleNegativesRankingLoss,
        TripletLoss,
    )

    def guide_model() -> SentenceTransformer:
        loaded = guide() if guide is not None else copy.deepcopy(model)
        return loaded.eval().requires_grad_(False)

    # The library's GIST default temperature, 0.01 (scale 100), made all-MiniLM-L6-v2 worse than its base on the
    # SciFact sample, where 1/scale (0.05) did not (docs/performance.md): one scale for every ranking loss.
    gist = {"temperature": 1 / spec.scale, "margin_strategy": spec.guide_margin_strategy, "margin": spec.guide_margin}
    loss: nn.Module
    match spec.type:
        case "MultipleNegativesRankingLoss":
            loss = MultipleNegativesRankingLoss(model, scale=spec.scale)
        case "CachedMultipleNegativesRankingLoss":
            loss = CachedMultipleNegativesRankingLoss(model, scale=spec.scale, mini_batch_size=spec.mini_batch_size)
        case "GISTEmbedLoss":
            loss = GISTEmbedLoss(model, guide_model(), **gist)
        case "CachedGISTEmbedLoss":
            loss = CachedGISTEmbedLoss(model, guide_model(), mini_batch_size=spec.mini_batch_size, **gist)
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
        return score(model, queries, corpus, qrels, spec.batch_size)

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


def training_args(spec: FineTuneJobSpec, checkpoints: Path, device: str, total_steps: int, *,
                  validate: bool = False):
    """The trainer's arguments for `total_steps` steps; with `validate`, each checkpoint is scored and the best kept."""
    from sentence_transformers import SentenceTransformerTrainingArguments

    t: TrainingSpec = spec.training
    every = checkpoint_interval(total_steps, t)
    return SentenceTransformerTrainingArguments(
        output_dir=str(checkpoints),
        # The plan in steps (plan_steps): the trainer runs as many passes as it takes.
        max_steps=total_steps,
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
        save_steps=every,
        # The newest and the best checkpoint are kept (the trainer never rotates the best one out).
        save_total_limit=2,
        logging_steps=max(1, min(50, every)),
        # The filter reads every step's loss on the host: a wait for the GPU at each step.
        logging_nan_inf_filter=False,
        # Scored at each checkpoint (the trainer also scores the last step); the best is kept, not loaded:
        # run() loads it, so that a failed load is an error rather than a log line.
        eval_strategy="steps" if validate else "no",
        eval_steps=every if validate else None,
        metric_for_best_model=BEST_METRIC if validate else None,
        greater_is_better=True if validate else None,
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
        if logs and BEST_METRIC in logs:
            log.info("step %d/%d: validation nDCG@10 %.4f (best so far %.4f)", state.global_step, state.max_steps,
                     logs[BEST_METRIC], max(logs[BEST_METRIC], state.best_metric or -1.0))

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


def select_checkpoint(state: Any, base: float, require_improvement: bool) -> str | None:
    """The checkpoint to publish: the best on validation, when it beats the base model (or regardless, when asked).

    None means no model is published: nothing beat the base model (or, improvement not required, nothing was scored).
    """
    best = state.best_model_checkpoint
    if best is None or (require_improvement and not state.best_metric > base):
        return None
    return best


def run(config: Config, *, dsn: str | None = None, callbacks: Sequence[TrainerCallback] = ()) -> Result:
    """Train, select, evaluate and save. `callbacks` are extra transformers TrainerCallbacks (progress, tests)."""
    from transformers import PrinterCallback

    spec, out = config.spec, config.output_dir
    device = config.device or modelzoo.default_device()
    started, clock = _now(), time.monotonic()

    # Model: the base model, from a local folder or a bundled package.
    def load(name: str) -> SentenceTransformer:
        return modelzoo.load(name, base_dir=config.base_dir, device=device,
                             max_seq_length=spec.training.max_seq_length)

    model = load(spec.base_model)

    # Dataset: the prepared training rows with their hard negatives, less the validation queries' rows.
    data = PreparedDataset(config.dataset_dir)
    examples, validation = carve_validation(data.train_examples(), data.corpus(), spec.evaluation.validation,
                                            spec.training.seed)
    train_dataset, train_rows = build_train_dataset(examples, spec)

    # Loss: in-batch plus hard negatives (or triplets), optionally guided (GIST) or at several Matryoshka sizes.
    loss = build_loss(model, spec.loss, guide=lambda: load(spec.loss.guide_model or spec.base_model))

    # Evaluators: test queries (reported only) and validation queries (which checkpoint to publish), the base
    # model scored on both before it changes.
    evaluate = held_out_evaluator(data, spec.evaluation, spec.training.seed)
    base_metrics = evaluate(model)
    log.info("base model: nDCG@10 %.4f on %d test queries", base_metrics.ndcg_at_10, base_metrics.queries)
    batch = spec.evaluation.batch_size
    if validation is not None:
        validation = sample_validation_corpus(model, validation, spec.evaluation.validation.max_corpus,
                                              spec.training.seed, batch)
        base_validation = score(model, validation.queries, validation.corpus, validation.qrels, batch).ndcg_at_10
        log.info("base model: nDCG@10 %.4f on %d validation queries", base_validation, len(validation.queries))

    # Training arguments: the planned steps, a checkpoint (scored on validation) every fifth of them.
    checkpoints = out / "checkpoints"
    planned = planned_steps(train_dataset, spec.training)
    args = training_args(spec, checkpoints, device, planned, validate=validation is not None)
    log.info("training %d rows for %d steps, a checkpoint every %d", train_rows, planned, args.save_steps)

    # Trainer: collates texts tokenized up front; resumes from the last checkpoint when a previous run was killed.
    trainer = _trainer_class()(model=model, args=args, train_dataset=train_dataset, loss=loss,
                                 evaluator=validation_evaluator(validation, batch) if validation else None,
                                 callbacks=[ProgressCallback(), *callbacks])
    trainer.remove_callback(PrinterCallback)  # it prints raw dicts to stdout, which carries the worker's result
    trainer.data_collator = pretokenized_collator(trainer.data_collator, model, train_dataset)
    resume_from, resumed_from_step = last_checkpoint(checkpoints)
    if resume_from is not None:
        log.info("resuming from the checkpoint of step %d", resumed_from_step)
    trainer.train(resume_from_checkpoint=resume_from)

    # Select: the best checkpoint on validation, if it beats the base model; else nothing is published.
    scores = None
    if validation is not None:
        state = trainer.state
        chosen = select_checkpoint(state, base_validation, spec.evaluation.require_improvement)
        scores = ValidationScores(queries=len(validation.queries), documents=len(validation.corpus),
                                  base_ndcg_at_10=base_validation, best_ndcg_at_10=state.best_metric,
                                  best_step=state.best_global_step or None,
                                  evaluations=sum(BEST_METRIC in h for h in state.log_history))
        if chosen is None:
            log.warning("no checkpoint beat the base model on validation (nDCG@10 %.4f, best %s): no model published",
                        base_validation, state.best_metric)
            return _finish(config, started, clock, base_metrics=base_metrics, validation=scores, train_rows=train_rows,
                           planned=planned, trainer=trainer, resumed_from_step=resumed_from_step)
        log.info("publishing the checkpoint of step %d: validation nDCG@10 %.4f (base %.4f)", scores.best_step,
                 state.best_metric, base_validation)
        model = load(chosen)

    # Evaluate: the model to publish on the test queries, as the base model was.
    tuned_metrics = evaluate(model)
    log.info("tuned model: nDCG@10 %.4f (base %.4f)", tuned_metrics.ndcg_at_10, base_metrics.ndcg_at_10)

    # Save: the model folder and the evaluation next to it.
    model_dir = out / "model"
    model.save(str(model_dir), create_model_card=False)
    artifact = ModelArtifact(location=str(model_dir), base_model=spec.base_model,
                             dimensions=embedding_dimension(model), fingerprint=modelzoo.fingerprint(model_dir))
    return _finish(config, started, clock, base_metrics=base_metrics, validation=scores, train_rows=train_rows,
                   planned=planned, trainer=trainer, resumed_from_step=resumed_from_step, model=artifact,
                   tuned_metrics=tuned_metrics)


def _finish(config: Config, started: str, clock: float, *, base_metrics: IRMetrics, validation: ValidationScores | None,
            train_rows: int, planned: int, trainer: Any, resumed_from_step: int | None,
            model: ModelArtifact | None = None, tuned_metrics: IRMetrics | None = None) -> Result:
    """The result, and evaluation.json beside the model; the checkpoints go, since nothing is left to resume."""
    out = config.output_dir
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    result = Result(
        model=model,
        base_metrics=base_metrics,
        tuned_metrics=tuned_metrics,
        ndcg_gain=tuned_metrics.ndcg_at_10 - base_metrics.ndcg_at_10 if tuned_metrics else None,
        validation=validation,
        train_pairs=train_rows,
        planned_steps=planned,
        steps=trainer.state.global_step,
        resumed_from_step=resumed_from_step,
        start_time=started,
        completion_time=_now(),
        duration_seconds=round(time.monotonic() - clock, 1),
    )
    evaluation = {"base": base_metrics.to_wire(), "tuned": tuned_metrics.to_wire() if tuned_metrics else None,
                  "ndcgGain": result.ndcg_gain, "validation": validation.to_wire() if validation else None,
                  "baseModel": config.spec.base_model, "published": model is not None, "plannedSteps": planned,
                  "steps": result.steps, "trainPairs": train_rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(evaluation, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return result
