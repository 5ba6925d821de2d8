"""Training that diverged: a loss or a weight that is no longer a finite number ends the run, unpublished.

A learning rate or a loss scale too large (or fp16 overflowing) turns the loss into inf or NaN and
the weights with it. The trainer goes on regardless, the evaluators score NaN embeddings as if they
meant something, and a NaN model reaches an index, whose database then refuses the vectors. So the
loss is checked whenever the trainer logs it (reading it every step would wait for the GPU at every
step; the logged loss is the mean since the last log, so one non-finite step shows), and the weights
once more before the model is saved.

`Diverged` is a ValueError: the worker fails as invalid input (exit 2, not retried), since the same
spec diverges again.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from embedops.api.finetune import FineTuneJobSpec

if TYPE_CHECKING:
    from torch import nn

# The trainer logs the loss of the steps since its last log as `loss`, and the whole run's as `train_loss`.
_LOSS_KEYS = ("loss", "train_loss")


class Diverged(ValueError):
    """Training produced a non-finite loss or weight; nothing is published."""


def _advice(spec: FineTuneJobSpec) -> str:
    t = spec.training
    fp16 = ", or precision other than fp16" if t.precision == "fp16" else ""
    return (
        f"nothing is published; lower training.learningRate ({t.learning_rate:g}) or loss.scale "
        f"({spec.loss.scale:g}){fp16}"
    )


class StopOnNonFiniteLoss(TrainerCallback):
    """Raises Diverged when a logged loss is inf or NaN, which ends `trainer.train`."""

    def __init__(self, spec: FineTuneJobSpec) -> None:
        self._spec = spec

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        for key in _LOSS_KEYS:
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(value):
                raise Diverged(
                    f"training diverged: the loss is {value} at step {state.global_step} of {state.max_steps}; "
                    + _advice(self._spec)
                )


def check_finite_weights(model: nn.Module, spec: FineTuneJobSpec) -> None:
    """Diverged naming the first weight that holds an inf or NaN, if any does."""
    import torch

    for name, weight in model.named_parameters():
        if not bool(torch.isfinite(weight).all()):
            raise Diverged(f"training diverged: the model's weight {name} is not finite; " + _advice(spec))
