"""The training world: which of torchrun's processes this one is, and what only the first of them does.

A FineTuneJob on several GPUs runs the same train worker once per GPU under torchrun
(`torchrun --standalone --nproc_per_node=N` in one pod; Kubeflow Trainer's torch runtime across
nodes), which tells each process its place through the environment (RANK, LOCAL_RANK, WORLD_SIZE).
The trainer (transformers, through accelerate) reads the same variables and wraps the model in
DistributedDataParallel; each process takes `training.batchSize` rows a step, so a step trains
on `batchSize x world size` rows, and the ranking losses gather every process's embeddings so
that each query sees the whole global batch as negatives. Everything that is said once (the base
model's scores, the validation corpus, which checkpoint to publish, the saved model, the result)
is done by rank 0; the sentence-transformers trainer runs the validation evaluator on rank 0 and
broadcasts its scores, so every process keeps the same best checkpoint.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class World:
    """This process's place among the training processes: rank 0 of 1 when not launched by torchrun."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that evaluates, chooses, saves and reports."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def device(self, device: str) -> str:
        """`device` for this process: on CUDA, the GPU of its local rank (torchrun starts one process per GPU)."""
        if self.distributed and device == "cuda":
            return f"cuda:{self.local_rank}"
        return device


def world(environ: os._Environ[str] | dict[str, str] = os.environ) -> World:
    """The world torchrun describes in the environment (RANK, LOCAL_RANK, WORLD_SIZE); one process without it."""

    def number(name: str, default: int) -> int:
        value = environ.get(name, "")
        return int(value) if value.isdigit() else default

    return World(rank=number("RANK", 0), local_rank=number("LOCAL_RANK", 0), size=max(1, number("WORLD_SIZE", 1)))


def torchrun(argv: list[str]) -> int:
    """torchrun (the same arguments, PET_* variables and rendezvous), exiting as its training processes did.

    torchrun itself exits 1 whatever its processes exited with, so a Job's podFailurePolicy would retry an
    invalid config or input (exit 2) up to backoffLimit on GPUs. This exits 2 when a process exited 2 (every
    process reads the same config and data), else 3 when one exited 3 (the database unreachable), else 1.
    """
    from torch.distributed import run
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from embedops.builders.jobs import EXIT_FAILED, EXIT_INVALID, EXIT_TRANSIENT

    try:
        run.run(run.parse_args(argv))
    except ChildFailedError as err:
        codes = {failure.exitcode for failure in err.failures.values()}
        ranks = ", ".join(f"rank {rank}: exit {failure.exitcode}" for rank, failure in sorted(err.failures.items()))
        print(f"error: training processes failed ({ranks})", file=sys.stderr)
        return next((code for code in (EXIT_INVALID, EXIT_TRANSIENT) if code in codes), EXIT_FAILED)
    return 0
