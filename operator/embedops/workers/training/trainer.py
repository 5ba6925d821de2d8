"""The trainer: how many steps it takes, its arguments, its progress callback, and the Trainer class.

How long training runs is planned from the data (a step budget), so that small data gets enough
steps and large data a bounded time. Nothing in a step should wait for the GPU (no blocking copies,
no loss read back except when logging), so that the host stays ahead of the device; the arguments
below say where each of those waits was taken out.
"""

from __future__ import annotations

import logging
import math
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from transformers import TrainerCallback

from embedops import progress
from embedops.api.finetune import FineTuneJobSpec, TrainingSpec
from embedops.workers.training.data import steps_per_epoch
from embedops.workers.training.loss import RANKING_LOSSES
from embedops.workers.training.validation import BEST_METRIC

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict
    from sentence_transformers import SentenceTransformerTrainingArguments

log = logging.getLogger(__name__)

# Checkpoints (each scored on the validation queries) a run takes unless checkpointSteps says otherwise.
CHECKPOINTS_PER_RUN = 5


def plan_steps(per_epoch: int, training: TrainingSpec) -> int:
    """The optimizer steps training will take: maxSteps; else epochs passes; else the budget's, within its bounds."""
    if training.max_steps:
        return training.max_steps
    if training.epochs is not None:
        return training.epochs * per_epoch
    budget = training.budget
    return min(max(budget.epochs * per_epoch, budget.min_steps), budget.max_steps)


def planned_steps(dataset: Dataset | DatasetDict, training: TrainingSpec, processes: int = 1) -> int:
    """plan_steps for this dataset on `processes` training processes, whose step (a global step) takes
    batchSize rows each; a test holds it together with the steps the trainer takes."""
    return plan_steps(steps_per_epoch(dataset, training.batch_size * processes), training)


def checkpoint_interval(planned: int, training: TrainingSpec) -> int:
    """checkpointSteps, or the plan cut in CHECKPOINTS_PER_RUN (the last step is always saved and scored too)."""
    return training.checkpoint_steps or max(1, math.ceil(planned / CHECKPOINTS_PER_RUN))


class PrecisionFlags(TypedDict):
    """The trainer's arguments for its arithmetic; typed per key, as the arguments they are spread into."""

    bf16: bool
    fp16: bool


def precision_flags(precision: str, device: str) -> PrecisionFlags:
    import torch

    cuda = device.startswith("cuda")
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and not cuda:
        raise ValueError("training.precision fp16 needs a CUDA GPU; use fp32 or bf16 on CPU")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def training_args(
    spec: FineTuneJobSpec,
    checkpoints: Path,
    device: str,
    total_steps: int,
    *,
    validate: bool = False,
    processes: int = 1,
) -> SentenceTransformerTrainingArguments:
    """The trainer's arguments for `total_steps` steps; with `validate`, each checkpoint is scored and the best kept.
    `processes` is the number of training processes (torchrun's world size)."""
    from sentence_transformers import SentenceTransformerTrainingArguments

    t: TrainingSpec = spec.training
    every = checkpoint_interval(total_steps, t)
    cuda = device.startswith("cuda")
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
        dataloader_pin_memory=cuda,
        # Batches go to the GPU without blocking (a blocking copy waits for the previous step to finish): the
        # trainer's DataLoader, prepared by accelerate, moves them itself, from the pinned memory above.
        accelerator_config={"non_blocking": cuda},
        use_cpu=device == "cpu",
        # Several processes on CPU (tests, benchmarks) talk over gloo; on GPUs the default, NCCL.
        ddp_backend="gloo" if processes > 1 and not cuda else None,
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
            log.info(
                "step %d/%d: loss %.4f, learning rate %.2e",
                state.global_step,
                state.max_steps,
                logs["loss"],
                logs.get("learning_rate", 0.0),
            )
        if logs and BEST_METRIC in logs:
            log.info(
                "step %d/%d: validation nDCG@10 %.4f (best so far %.4f)",
                state.global_step,
                state.max_steps,
                logs[BEST_METRIC],
                max(logs[BEST_METRIC], state.best_metric or -1.0),
            )

    def on_train_end(self, args, state, control, **kwargs):
        self._stack.close()
        self._task = None


def trainer_class() -> type:
    """SentenceTransformerTrainer without a model card: it quotes training rows, and domain data must not leak."""
    from sentence_transformers import SentenceTransformerTrainer

    class Trainer(SentenceTransformerTrainer):
        def add_model_card_callback(self, default_args_dict: dict) -> None:
            """No model card callback, so that no card is written into checkpoints or the saved model."""

    return Trainer
