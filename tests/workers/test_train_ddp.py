"""The train worker on two processes for real: DDP on CPU over gloo, launched as the training pod launches it.

The pod of a FineTuneJob with `resources.gpus: N > 1` runs `embedops torchrun --standalone --nproc_per_node=N`
(torchrun, exiting as its processes did) around the train worker (builders.jobs.launcher_command); here N is 2
and the device is the CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from embedops import steps
from embedops.api.common import Resources
from embedops.builders.jobs import TERMINATION_LOG, Owner, WorkerStep, worker_command
from tests.workers.test_train import job, synthetic_dataset

BIN = Path(sys.executable).parent
WORLD = 2
STEPS = 32


def _torchrun_argv(config: steps.TrainStep, result: Path) -> list[str]:
    """The training pod's command for two GPUs, with this environment's programs and a file as termination log."""
    owner = Owner("FineTuneJob", "ft", "ns", "uid")
    step = WorkerStep(owner=owner, key="k", config=config, resources=Resources(gpus=WORLD), gpus=WORLD)
    argv = worker_command(step)
    assert argv[:5] == ["embedops", "torchrun", "--standalone", f"--nproc_per_node={WORLD}", "--no-python"]
    programs = {"embedops": str(BIN / "embedops"), TERMINATION_LOG: str(result)}
    return [programs.get(arg, arg) for arg in argv]


def _env() -> dict[str, str]:
    # One thread a process: the two ranks share the machine's cores.
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def _documents(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _config(root: Path, model: Path, dataset: Path, out: str) -> steps.TrainStep:
    # 4 rows a process a step (8 a global step); a checkpoint every 4 steps, each scored on validation. Enough
    # steps that a kill after the first checkpoint lands before the end, however busy the machine.
    spec = job(model, maxSteps=STEPS, checkpointSteps=4, batchSize=4, evaluation={"requireImprovement": False})
    return steps.TrainStep(spec=spec, dataset_dir=dataset, output_dir=root / out, device="cpu")


def _train(config: steps.TrainStep, result: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        _torchrun_argv(config, result), env=_env(), capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def ddp(tmp_path_factory, tiny_model_dir):
    """One uninterrupted two-process run: its folder, its config, the documents its ranks printed, its result."""
    root = tmp_path_factory.mktemp("ddp")
    dataset = synthetic_dataset(root / "dataset")
    config = _config(root, tiny_model_dir, dataset, "whole")
    done = _train(config, root / "whole.result")
    return root, dataset, _documents(done.stdout), json.loads((root / "whole.result").read_text())


def test_both_ranks_train_and_rank_0_alone_reports(ddp):
    root, _, documents, result = ddp
    # Rank 1 trained every step and reported only on its stdout; rank 0's result is the job's.
    ranks = [d for d in documents if "rank" in d]
    assert ranks == [{"rank": 1, "steps": STEPS, "worldSize": WORLD}]
    (reported,) = [d for d in documents if "rank" not in d]
    assert reported == result
    assert result["worldSize"] == WORLD and result["globalBatchSize"] == 4 * WORLD
    assert result["steps"] == result["plannedSteps"] == STEPS
    assert result["validation"]["evaluations"] == STEPS // 4
    assert result["model"]["location"] == str(root / "whole" / "model")
    saved = json.loads((root / "whole" / "evaluation.json").read_text())
    assert saved["steps"] == STEPS and saved["published"] is True
    assert not (root / "whole" / "checkpoints").exists(), "rank 0 removes the checkpoints once the model is saved"


def test_invalid_input_on_two_processes_exits_2_so_the_job_fails_at_once(tiny_model_dir, tmp_path):
    """torchrun exits 1 whatever its processes exit with (the Job would retry on GPUs up to backoffLimit): the pod's
    `embedops torchrun` exits 2, which the Job's podFailurePolicy fails at once, and the failing rank's reason
    reaches the termination message."""
    from embedops.builders.jobs import EXIT_INVALID

    config = _config(tmp_path, tiny_model_dir, tmp_path / "no-dataset", "out")
    result = tmp_path / "result"
    done = subprocess.run(
        _torchrun_argv(config, result), env=_env(), capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == EXIT_INVALID, done.stderr[-3000:]
    # The rank that fails first stops the other (SIGTERM: exit -15), which may not get to say why: either's
    # reason is the termination message.
    assert "exit 2" in done.stderr.split("training processes failed")[-1]
    failure = json.loads(result.read_text())
    assert failure["error"]["reason"] == "InvalidInput" and "no-dataset" in failure["error"]["message"]


def test_the_step_budget_counts_global_steps(tiny_model_dir, tmp_path):
    from datasets import Dataset

    from embedops.workers.training.trainer import planned_steps

    rows = Dataset.from_dict({"anchor": [f"q{i}" for i in range(64)], "positive": [f"d{i}" for i in range(64)]})
    training = job(tiny_model_dir, maxSteps=None, epochs=3, batchSize=8).training
    # 64 rows: 8 steps a pass on one process, 4 on two (each step takes 8 rows on each).
    assert planned_steps(rows, training) == 24 and planned_steps(rows, training, processes=2) == 12


def _rank_loss(rank: int, model_dir: str, folder: str) -> None:
    """One of two gloo processes: the default loss on this rank's half of a batch of 8 rows, with what it scored."""
    import torch.distributed as dist

    from embedops import modelzoo
    from embedops.api.finetune import LossSpec
    from embedops.workers.training.loss import build_loss

    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=WORLD)
    loss = build_loss(modelzoo.load(model_dir, device="cpu"), LossSpec(), gather_across_devices=True)
    scored: list[list[int]] = []
    similarity = loss.similarity_fct
    loss.similarity_fct = lambda a, b: scored.append([*a.shape[:1], *b.shape[:1]]) or similarity(a, b)
    anchors, positives, negatives = _batch()
    half = slice(rank * 4, rank * 4 + 4)
    value = loss.compute_loss_from_embeddings([anchors[half], positives[half], negatives[half]], labels=None)
    Path(folder, f"rank{rank}.json").write_text(json.dumps({"loss": value.item(), "scored": scored}))
    dist.destroy_process_group()


def _batch():
    import torch

    generator = torch.Generator().manual_seed(0)
    return [torch.nn.functional.normalize(torch.randn(8, 32, generator=generator), dim=-1) for _ in range(3)]


def test_the_loss_of_each_process_sees_the_global_batch(tmp_path, tiny_model_dir):
    import torch.multiprocessing as mp

    from embedops import modelzoo
    from embedops.api.finetune import LossSpec
    from embedops.workers.training.loss import build_loss

    mp.spawn(_rank_loss, args=(str(tiny_model_dir), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    # Each rank's 4 queries are scored against the 16 documents of the global batch (8 positives, 8 negatives).
    assert [r["scored"] for r in ranks] == [[[4, 16]], [[4, 16]]]
    # And the ranks' mean loss (what DDP's averaged gradients descend) is the loss of the whole batch on one process.
    whole = build_loss(modelzoo.load(str(tiny_model_dir), device="cpu"), LossSpec())
    assert sum(r["loss"] for r in ranks) / WORLD == pytest.approx(
        whole.compute_loss_from_embeddings(_batch(), labels=None).item(), rel=1e-5
    )


def _kill_pod(process: subprocess.Popen[str]) -> None:
    """SIGKILL to torchrun and the ranks it started (each in a session of its own), as a pod's end kills them all."""
    import psutil

    for child in [*psutil.Process(process.pid).children(recursive=True), psutil.Process(process.pid)]:
        child.kill()
    process.wait()


def _wait_for_checkpoint(folder: Path, process: subprocess.Popen[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not (folder / "trainer_state.json").is_file():
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, f"no {folder.name} within {timeout} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_and_ends_as_the_uninterrupted_one(ddp, tiny_model_dir):
    root, dataset, _, whole = ddp
    config = _config(root, tiny_model_dir, dataset, "killed")
    result = root / "killed.result"
    # The whole pod is killed (torchrun and both ranks) once the first checkpoint is complete.
    process = subprocess.Popen(
        _torchrun_argv(config, result),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        _wait_for_checkpoint(root / "killed" / "checkpoints" / "checkpoint-4", process)
    finally:
        _kill_pod(process)
    assert not result.exists()

    _train(config, result)
    resumed = json.loads(result.read_text())
    assert resumed["resumedFromStep"] in range(4, STEPS, 4) and resumed["steps"] == STEPS
    assert resumed["worldSize"] == WORLD
    assert resumed["validation"] == whole["validation"] and resumed["tunedMetrics"] == whole["tunedMetrics"]
    assert resumed["model"]["fingerprint"] == whole["model"]["fingerprint"]
