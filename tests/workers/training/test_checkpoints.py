"""Checkpoints: a save cut short does not count; the one published is the best, when it beats the base."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from embedops.workers.training import checkpoints


def complete(folder, step: int):
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
    return folder


def test_a_checkpoint_whose_state_file_was_cut_short_is_incomplete(tmp_path):
    folder = tmp_path / "checkpoint-8"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "trainer_state.json").write_text('{"global_step": 8, "log_hist')
    assert checkpoints.checkpoint_step(folder) is None
    (folder / "trainer_state.json").write_text('{"global_step": 8}')
    assert checkpoints.checkpoint_step(folder) == 8
    assert checkpoints.last_checkpoint(tmp_path) == (str(folder), 8)


def test_the_newest_complete_checkpoint_is_resumed_and_newer_remains_removed(tmp_path):
    complete(tmp_path / "checkpoint-2", 2)
    complete(tmp_path / "checkpoint-10", 10)
    (tmp_path / "checkpoint-12").mkdir()  # weights never written: the kill came first
    (tmp_path / "checkpoint-12" / "model.safetensors.tmp").write_bytes(b"half")
    (tmp_path / "runs").mkdir()
    assert checkpoints.last_checkpoint(tmp_path) == (str(tmp_path / "checkpoint-10"), 10)  # 10 > 2 as numbers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-2", "runs"]
    assert checkpoints.last_checkpoint(tmp_path / "none yet") == (None, None)


@pytest.mark.parametrize(
    "best, metric, require, chosen",
    [
        ("checkpoint-4", 0.70, True, "checkpoint-4"),  # beats the base
        ("checkpoint-4", 0.60, True, None),  # a tie is no improvement
        ("checkpoint-4", 0.50, True, None),
        ("checkpoint-4", 0.50, False, "checkpoint-4"),  # published anyway when improvement is not required
        (None, None, False, None),  # nothing was scored
    ],
)
def test_the_published_checkpoint_is_the_best_when_it_beats_the_base(best, metric, require, chosen):
    state = SimpleNamespace(best_model_checkpoint=best, best_metric=metric)
    assert checkpoints.select_checkpoint(state, 0.60, require) == chosen
