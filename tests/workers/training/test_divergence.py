"""A training run whose loss or weights stop being finite fails, names why, and publishes nothing."""

from __future__ import annotations

import pytest
from transformers import TrainerCallback

from embedops import steps
from embedops.builders.jobs import EXIT_INVALID
from embedops.workers import runner, train
from embedops.workers.training.divergence import Diverged
from tests.workers.test_train import NO_VALIDATION, job, synthetic_dataset

# Finite, so the spec validates, and large enough that the tiny model's loss is NaN by the third step.
HUGE_LEARNING_RATE = 1e10


@pytest.fixture
def dataset(tmp_path):
    return synthetic_dataset(tmp_path / "dataset")


def _step(tmp_path, spec, dataset) -> steps.TrainStep:
    return steps.TrainStep(spec=spec, dataset_dir=dataset, output_dir=tmp_path / "job", device="cpu")


@pytest.mark.parametrize(
    "evaluation",
    [NO_VALIDATION, {"requireImprovement": False}],
    ids=["the last step's model", "the best checkpoint before the loss went"],
)
def test_a_nan_loss_fails_the_run_as_invalid_input_and_publishes_nothing(tmp_path, tiny_model_dir, dataset, evaluation):
    spec = job(tiny_model_dir, learningRate=HUGE_LEARNING_RATE, evaluation=evaluation)

    with pytest.raises(runner.WorkerError) as err:
        runner.run(_step(tmp_path, spec, dataset), dsn=None)

    assert err.value.reason == "InvalidInput" and err.value.exit_code == EXIT_INVALID
    (problem,) = err.value.problems
    assert problem.startswith("training diverged: the loss is nan at step ")
    assert "nothing is published; lower training.learningRate (1e+10) or loss.scale (20)" in problem
    assert not (tmp_path / "job" / "model").exists() and not (tmp_path / "job" / "evaluation.json").exists()


class PoisonWeights(TrainerCallback):
    """A weight turned NaN after the last logged loss: only the check before saving can see it."""

    def on_train_end(self, args, state, control, model=None, **kwargs):
        import torch

        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))


def test_non_finite_weights_are_never_saved(tmp_path, tiny_model_dir, dataset):
    spec = job(tiny_model_dir, evaluation=NO_VALIDATION)

    with pytest.raises(Diverged, match=r"the model's weight \S+ is not finite; nothing is published"):
        train.run(_step(tmp_path, spec, dataset), callbacks=[PoisonWeights()])

    assert not (tmp_path / "job" / "model").exists()
