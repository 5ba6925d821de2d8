"""The train worker: fine-tune a sentence-transformers model on a prepared dataset and score it.

A FineTuneJob is only worth publishing if it beats its base model on the domain's own queries:
every checkpoint is scored on validation queries carved from the training queries, the best one
is kept, and when none beats the base model nothing is published. The test split is only
reported. Training resumes from its last checkpoint, because pods are preempted or evicted and a
restart must not start over. On several GPUs, torchrun starts this worker once per GPU
(embedops.workers.training.distributed): every process trains, rank 0 alone evaluates, chooses,
saves and reports.

`run` reads top to bottom as sentence-transformers training scripts do:
model -> dataset -> loss -> evaluator -> training args -> trainer -> evaluate -> save.
Each step's parts live in embedops.workers.training, one idea a module.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from embedops import modelzoo, steps
from embedops.api import times
from embedops.api.finetune import (
    ModelArtifact,
    ValidationScores,
)
from embedops.api.scores import RetrievalScores
from embedops.prepared import PreparedDataset
from embedops.results import RankResult
from embedops.results import TrainResult as Result
from embedops.workers import exports, servable
from embedops.workers.training.checkpoints import last_checkpoint, select_checkpoint
from embedops.workers.training.collator import pretokenized_collator
from embedops.workers.training.data import build_train_dataset, steps_per_epoch
from embedops.workers.training.distributed import world as training_world
from embedops.workers.training.divergence import StopOnNonFiniteLoss, check_finite_weights
from embedops.workers.training.loss import build_loss
from embedops.workers.training.trainer import (
    ProgressCallback,
    checkpoint_interval,
    plan_steps,
    planned_steps,
    precision_flags,
    trainer_class,
    training_args,
)
from embedops.workers.training.validation import (
    BEST_METRIC,
    carve_validation,
    held_out_evaluator,
    sample_validation_corpus,
    score_validation,
    validation_evaluator,
)

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

# The worker's names; the step plan and precision_flags are read from here by tests/test_recipe.py and benchmarks/.
__all__ = ["Result", "checkpoint_interval", "plan_steps", "precision_flags", "run", "steps_per_epoch"]

log = logging.getLogger(__name__)


def run(
    config: steps.TrainStep, *, dsn: str | None = None, callbacks: Sequence[TrainerCallback] = ()
) -> Result | RankResult:
    """Train, select, evaluate and save. `callbacks` are extra transformers TrainerCallbacks (progress, tests).

    Under torchrun, ranks other than 0 train their share and return a RankResult: rank 0's Result is the job's.
    """
    from transformers import PrinterCallback

    spec, out, world = config.spec, config.output_dir, training_world()
    device = world.device(config.device or modelzoo.default_device())
    started, clock = times.now(), time.monotonic()

    # Model: the base model, from a local folder or a bundled package.
    def load(name: str) -> SentenceTransformer:
        return modelzoo.load(name, base_dir=config.base_dir, device=device, max_seq_length=spec.training.max_seq_length)

    model = load(spec.base_model)

    # Dataset: the prepared training rows with their hard negatives, less the validation queries' rows.
    data = PreparedDataset(config.dataset_dir)
    examples, validation = carve_validation(
        data.train_examples(), data.corpus(), spec.evaluation.validation, spec.training.seed
    )
    train_dataset, train_rows = build_train_dataset(examples, spec)

    # Loss: in-batch plus hard negatives (or triplets), optionally guided (GIST) or at several Matryoshka sizes;
    # on several processes, every query sees the whole global batch's documents as negatives.
    loss = build_loss(
        model,
        spec.loss,
        guide=lambda: load(spec.loss.guide_model or spec.base_model),
        gather_across_devices=world.distributed,
    )

    # Evaluators: test queries (reported only) and validation queries (which checkpoint to publish), the base
    # model scored on both before it changes, by rank 0 (the trainer runs the validation evaluator there only).
    evaluate = held_out_evaluator(data, spec.evaluation, spec.training.seed)
    batch = spec.evaluation.batch_size
    if world.main:
        base_metrics = evaluate(model)
        log.info("base model: nDCG@10 %.4f on %d test queries", base_metrics.ndcg_at_10, base_metrics.queries)
    if validation is not None and world.main:
        validation = sample_validation_corpus(
            model, validation, spec.evaluation.validation.max_corpus, spec.training.seed, batch
        )
        base_validation = score_validation(model, validation, batch).ndcg_at_10
        log.info("base model: nDCG@10 %.4f on %d validation queries", base_validation, len(validation.queries))

    # Training arguments: the planned steps (of the global batch), a checkpoint (scored on validation) every fifth.
    checkpoints = out / "checkpoints"
    planned = planned_steps(train_dataset, spec.training, world.size)
    args = training_args(spec, checkpoints, device, planned, validate=validation is not None, processes=world.size)
    log.info(
        "training %d rows for %d steps of %d rows (%d per process, %d processes), a checkpoint every %d",
        train_rows,
        planned,
        spec.training.batch_size * world.size,
        spec.training.batch_size,
        world.size,
        args.save_steps,
    )

    # Trainer: collates texts tokenized up front; resumes from the last checkpoint when a previous run was killed;
    # stops when the loss stops being a number.
    trainer = trainer_class()(
        model=model,
        args=args,
        train_dataset=train_dataset,
        loss=loss,
        evaluator=validation_evaluator(validation, batch) if validation else None,
        callbacks=[ProgressCallback(), StopOnNonFiniteLoss(spec), *callbacks],
    )
    trainer.remove_callback(PrinterCallback)  # it prints raw dicts to stdout, which carries the worker's result
    trainer.data_collator = pretokenized_collator(trainer.data_collator, model, train_dataset)
    resume_from, resumed_from_step = last_checkpoint(checkpoints, clean=world.main)
    if resume_from is not None:
        log.info("resuming from the checkpoint of step %d", resumed_from_step)
    trainer.train(resume_from_checkpoint=resume_from)
    if not world.main:
        return RankResult(rank=world.rank, world_size=world.size, steps=trainer.state.global_step)

    # Select: the best checkpoint on validation, if it beats the base model; else nothing is published.
    scores = None
    if validation is not None:
        state = trainer.state
        chosen = select_checkpoint(state, base_validation, spec.evaluation.require_improvement)
        scores = ValidationScores(
            queries=len(validation.queries),
            documents=len(validation.corpus),
            base_ndcg_at_10=base_validation,
            best_ndcg_at_10=state.best_metric,
            best_step=state.best_global_step or None,
            evaluations=sum(BEST_METRIC in h for h in state.log_history),
        )
        if chosen is None:
            log.warning(
                "no checkpoint beat the base model on validation (nDCG@10 %.4f, best %s): no model published",
                base_validation,
                state.best_metric,
            )
            return _finish(
                config,
                started,
                clock,
                base_metrics=base_metrics,
                validation=scores,
                train_rows=train_rows,
                planned=planned,
                trainer=trainer,
                resumed_from_step=resumed_from_step,
            )
        log.info(
            "publishing the checkpoint of step %d: validation nDCG@10 %.4f (base %.4f)",
            scores.best_step,
            state.best_metric,
            base_validation,
        )
        model = load(chosen)

    # Evaluate: the model to publish (finite weights only) on the test queries, as the base model was.
    check_finite_weights(model, spec)
    tuned_metrics = evaluate(model)
    log.info("tuned model: nDCG@10 %.4f (base %.4f)", tuned_metrics.ndcg_at_10, base_metrics.ndcg_at_10)

    # Save: the model folder, as TEI and sentence-transformers serve it, and the evaluation next to it.
    model_dir = out / "model"
    servable.save(model, model_dir)

    # Export: ONNX and OpenVINO copies into the folder (spec.export), each checked against the model on held-out
    # texts before the fingerprint is taken of the folder as published.
    exported = exports.run(model, model_dir, spec.export, _export_texts(data)) if spec.export else []
    artifact = ModelArtifact(
        location=str(model_dir),
        base_model=spec.base_model,
        dimensions=modelzoo.embedding_dimension(model),
        fingerprint=modelzoo.fingerprint(model_dir),
        exports=exported,
    )
    return _finish(
        config,
        started,
        clock,
        base_metrics=base_metrics,
        validation=scores,
        train_rows=train_rows,
        planned=planned,
        trainer=trainer,
        resumed_from_step=resumed_from_step,
        model=artifact,
        tuned_metrics=tuned_metrics,
    )


EXPORT_TEXTS = 128  # queries, and as many documents, that each export is checked on


def _export_texts(data: PreparedDataset) -> exports.Texts:
    """The held-out (test) queries and the documents they are to find, then others, in a stable order."""
    queries, qrels, corpus = data.test_queries(), data.test_qrels(), data.corpus()
    chosen = sorted(queries)[:EXPORT_TEXTS]
    relevant = dict.fromkeys(d for q in chosen for d in sorted(qrels.get(q, {})) if d in corpus)
    ids = list(dict.fromkeys([*relevant, *sorted(corpus)]))[:EXPORT_TEXTS]
    return exports.Texts([queries[q] for q in chosen], [corpus[d].full_text for d in ids])


def _finish(
    config: steps.TrainStep,
    started: str,
    clock: float,
    *,
    base_metrics: RetrievalScores,
    validation: ValidationScores | None,
    train_rows: int,
    planned: int,
    trainer: Any,
    resumed_from_step: int | None,
    model: ModelArtifact | None = None,
    tuned_metrics: RetrievalScores | None = None,
) -> Result:
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
        world_size=trainer.args.world_size,
        global_batch_size=config.spec.training.batch_size * trainer.args.world_size,
        resumed_from_step=resumed_from_step,
        start_time=started,
        completion_time=times.now(),
        duration_seconds=round(time.monotonic() - clock, 1),
    )
    evaluation = {
        "base": base_metrics.to_wire(),
        "tuned": tuned_metrics.to_wire() if tuned_metrics else None,
        "ndcgGain": result.ndcg_gain,
        "validation": validation.to_wire() if validation else None,
        "baseModel": config.spec.base_model,
        "published": model is not None,
        "plannedSteps": planned,
        "steps": result.steps,
        "trainPairs": train_rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(evaluation, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return result
