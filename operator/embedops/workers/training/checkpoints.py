"""Checkpoints: the one a killed run resumes from, and the one a finished run publishes.

Pods are preempted or evicted (Kueue re-suspends evicted Jobs), and a restart must not start over:
training checkpoints regularly and a new run resumes from the newest complete checkpoint. A kill
can cut a save short, so a checkpoint counts only once transformers wrote its state file, last.
When training ends, the checkpoint best on the validation queries is published, and only if it
beats the base model (unless the job says improvement is not required).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def checkpoint_step(folder: Path) -> int | None:
    """The step of a complete checkpoint, None for the remains of a save that a kill cut short.

    transformers writes trainer_state.json last, after the weights, optimizer and scheduler.
    """
    try:
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return int(state["global_step"]) if any((folder / name).is_file() for name in _WEIGHTS) else None


def last_checkpoint(checkpoints: Path, *, clean: bool = True) -> tuple[str | None, int | None]:
    """The newest complete checkpoint a previous (killed) run left, and its step.

    With `clean`, incomplete ones newer than it are removed, so that the run's next save does not
    land among their leftovers (a weights file under a temporary name, a missing optimizer state);
    of several training processes, rank 0 alone cleans, and every one finds the same checkpoint.
    """
    if not checkpoints.is_dir():
        return None, None
    numbered = ((int(m[1]), p) for p in checkpoints.iterdir() if p.is_dir() and (m := _CHECKPOINT.fullmatch(p.name)))
    for _, folder in sorted(numbered, reverse=True):
        if (step := checkpoint_step(folder)) is not None:
            return str(folder), step
        if clean:
            log.warning("removing %s: its save was cut short", folder.name)
            shutil.rmtree(folder, ignore_errors=True)
    return None, None


def select_checkpoint(state: Any, base: float, require_improvement: bool) -> str | None:
    """The checkpoint to publish: the best on validation, when it beats the base model (or regardless, when asked).

    None means no model is published: nothing beat the base model (or, improvement not required, nothing was scored).
    """
    best = state.best_model_checkpoint
    if best is None or (require_improvement and not state.best_metric > base):
        return None
    return best
