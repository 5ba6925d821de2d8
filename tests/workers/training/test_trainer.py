"""The trainer's arguments: precision, and batches moved to the GPU by the trainer's own DataLoader without blocking."""

from __future__ import annotations

import pytest

from embedops import modelzoo
from embedops.prepared import PreparedDataset
from embedops.workers.training import data, loss, trainer
from tests.workers.test_train import job, synthetic_dataset


def test_fp16_on_cpu_is_refused():
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        trainer.precision_flags("fp16", "cpu")
    assert trainer.precision_flags("auto", "cpu") == {"bf16": False, "fp16": False}


def test_on_a_gpu_batches_are_pinned_and_copied_without_blocking(tmp_path, tiny_model_dir):
    spec = job(tiny_model_dir, precision="fp32")
    cuda = trainer.training_args(spec, tmp_path / "c", "cuda", 4)
    cpu = trainer.training_args(spec, tmp_path / "c", "cpu", 4)
    assert cuda.dataloader_pin_memory and cuda.accelerator_config.non_blocking
    assert not cpu.dataloader_pin_memory and not cpu.accelerator_config.non_blocking


def test_the_trainers_dataloader_moves_batches_itself_no_private_override(tmp_path, tiny_model_dir):
    """accelerate's prepared DataLoader puts batches on the device, with the copy mode the arguments ask for."""
    from sentence_transformers import SentenceTransformerTrainer

    model = modelzoo.load(str(tiny_model_dir), device="cpu", max_seq_length=32)
    spec = job(tiny_model_dir, precision="fp32")
    dataset, _ = data.build_train_dataset(PreparedDataset(synthetic_dataset(tmp_path / "d")).train_examples(), spec)
    args = trainer.training_args(spec, tmp_path / "c", "cpu", 4)
    args.accelerator_config.non_blocking = True  # what a GPU run asks for (training_args sets it for cuda only)
    built = trainer.trainer_class()(
        model=model, args=args, train_dataset=dataset, loss=loss.build_loss(model, spec.loss)
    )
    loader = built.get_train_dataloader()
    assert loader.device == args.device and loader._non_blocking
    assert type(built)._prepare_input is SentenceTransformerTrainer._prepare_input
