"""Fine-tuning throughput of the default recipe's shape, and what bounds it: the model step, or the rest.

On a GPU, one command per shape (the default recipe: 64 pairs a step, 3 hard negatives each,
256 tokens at most; 150 and 100 steps):

    python benchmarks/train_throughput.py --shape minilm --pairs 9600 --repeat 3
    python benchmarks/train_throughput.py --shape bge-base --pairs 6400 --repeat 2

On CPU, a smaller shape of step: `python benchmarks/train_throughput.py --pairs 160 --batch-size 16
--max-seq-length 128 --tokens 100`.

`--gpus N` adds the train worker on N processes as a FineTuneJob with `resources.gpus: N` runs it
(`torchrun --standalone --nproc_per_node=N`, DDP, negatives gathered across processes; NCCL on GPUs,
gloo on CPU), each process taking `--batch-size` pairs a step, so one pass takes 1/N of the steps:
on a machine with N GPUs, the scaling; on CPU, where the processes share the cores, the
correctness and the cost of the processes and their all-reduce. For example
`python benchmarks/train_throughput.py --shape minilm --pairs 19200 --gpus 8` on 8 GPUs.

Both lines run in this process on the same model shape, pairs and device, in pairs/s and as a
share of the first:

  - model step limit: forward, MultipleNegativesRankingLoss, backward and a fused AdamW step, on
                      batches tokenized and moved to the device beforehand, with the precision
                      the worker picks (bf16 autocast on a GPU that has it);
  - train worker:     `embedops worker train` (embedops.workers.train.run) on a prepared dataset
                      of the same pairs, from the trainer's set-up to its last step (pre-tokenizing
                      and any checkpoint included; the base and tuned evaluations left out).

The model has random weights of the `--shape` architecture (benchmarks/embed_throughput.py builds
it); pairs are synthetic: a query of ~16 tokens, a positive and 3 negatives of ~`--tokens` tokens
each, all different. `--repeat N` runs each line N times and prints the best and the median.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from itertools import cycle, islice
from pathlib import Path

from embed_throughput import SHAPES, build_model, synthetic_docs  # same folder

NEGATIVES = 3


def prepared_dataset(model_path: str, folder: Path, pairs: int, tokens: int) -> Path:
    """pairs × (query, positive, 3 negatives), and a small corpus and test set for the worker's evaluations."""
    from embedops.prepared import Doc, TrainExample, write_prepared

    queries = synthetic_docs(model_path, pairs, 16)
    docs = iter(synthetic_docs(model_path, pairs * (1 + NEGATIVES), tokens))
    examples = [TrainExample(query=q, positive=next(docs), negatives=tuple(islice(docs, NEGATIVES))) for q in queries]
    corpus = [Doc(id=f"d{i}", text=e.positive) for i, e in enumerate(examples[:20])]
    write_prepared(
        folder,
        corpus=corpus,
        train=examples,
        test_queries={f"q{i}": e.query for i, e in enumerate(examples[:10])},
        test_qrels={f"q{i}": {f"d{i}": 1} for i in range(10)},
    )
    return folder


def step_limit(model_path: str, dataset: Path, args, device: str) -> list[float]:
    """Pairs/s of forward, loss, backward and optimizer step alone, on batches already on the device."""
    import torch
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    from embedops import modelzoo
    from embedops.prepared import PreparedDataset
    from embedops.workers import train

    model = modelzoo.load(model_path, device=device, max_seq_length=args.max_seq_length)
    examples = PreparedDataset(dataset).train_examples()
    # sentence-transformers 6 renamed tokenize to preprocess.
    tokenize = getattr(model, "preprocess", None) or model.tokenize
    batches = []
    for start in range(0, min(len(examples), 8 * args.batch_size), args.batch_size):
        rows = examples[start : start + args.batch_size]
        columns = [
            [e.query for e in rows],
            [e.positive for e in rows],
            *([e.negatives[k] for e in rows] for k in range(NEGATIVES)),
        ]
        batches.append(
            [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in tokenize(c).items()} for c in columns]
        )
    model.train()  # dropout on, as the trainer has it
    loss = MultipleNegativesRankingLoss(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, fused=True)
    bf16 = train.precision_flags("auto", device)["bf16"]

    def steps(count: int) -> None:
        for features in islice(cycle(batches), count):
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
                value = loss([dict(f) for f in features], None)
            value.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()

    steps(2)  # warm-up: kernels, allocator, optimizer state
    count = args.pairs // args.batch_size
    found = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        steps(count)
        found.append(count * args.batch_size / (time.perf_counter() - started))
    return found


def worker(model_path: str, dataset: Path, args, device: str) -> list[float]:
    """Pairs/s of the train worker, from the trainer's set-up to its last step (of all processes, under torchrun)."""
    from transformers import TrainerCallback

    from embedops import steps
    from embedops.api.finetune import FineTuneJobSpec
    from embedops.workers import train

    class Clock(TrainerCallback):
        def on_init_end(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            self.seconds, self.steps = time.perf_counter() - self.started, state.global_step
            self.processes = args.world_size

    spec = FineTuneJobSpec.model_validate(
        {
            "datasetRef": {"name": "bench"},
            "baseModel": model_path,
            "training": {"epochs": 1, "batchSize": args.batch_size, "maxSeqLength": args.max_seq_length},
            # No validation split: the throughput of training is measured, not the choice of a checkpoint.
            "evaluation": {"maxQueries": 10, "validation": {"fraction": 0}},
        }
    )
    found = []
    for run in range(args.repeat):
        clock = Clock()
        output = Path(tempfile.mkdtemp(prefix=f"embedops-bench-train-{run}-"))
        train.run(steps.TrainStep(spec=spec, dataset_dir=dataset, output_dir=output, device=device), callbacks=[clock])
        found.append(clock.steps * args.batch_size * clock.processes / clock.seconds)
    return found


def processes(count: int, model_path: str, dataset: Path, args, device: str) -> list[float]:
    """Pairs/s of the train worker on `count` processes under torchrun, as the training pod runs it."""
    import json
    import subprocess
    import sys

    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={count}"),
        *(__file__, "--rank", model_path, str(dataset), "--batch-size", str(args.batch_size)),
        *("--max-seq-length", str(args.max_seq_length), "--repeat", str(args.repeat), "--device", device),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"torchrun failed:\n{done.stderr[-3000:]}")
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return json.loads(line)["pairsPerSecond"]


def rank_main(args) -> None:
    """One process of `processes`: rank 0 prints the pairs/s of every run."""
    import json

    model_path, dataset = args.rank
    found = worker(model_path, Path(dataset), args, args.device)
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps({"pairsPerSecond": found}))


def report(name: str, found: list[float], limit: float, note: str) -> None:
    best, median = max(found), statistics.median(found)
    runs = f"  (median {median:,.1f} of {len(found)})" if len(found) > 1 else ""
    print(f"{name:<20}{best:12,.1f} pairs/s {best / limit:8.1%}{runs} {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["bundled", *SHAPES], default="minilm")
    parser.add_argument("--pairs", type=int, default=1920, help="training pairs: one epoch, pairs / batch-size steps")
    parser.add_argument("--batch-size", type=int, default=64, help="the FineTuneJob's training.batchSize")
    parser.add_argument("--max-seq-length", type=int, default=256, help="the FineTuneJob's training.maxSeqLength")
    parser.add_argument("--tokens", type=int, default=200, help="tokens of a positive or negative (±25 %%)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each line: best and median are printed")
    parser.add_argument("--gpus", type=int, default=1, help="also the train worker on this many processes (torchrun)")
    parser.add_argument("--rank", nargs=2, metavar=("MODEL", "DATASET"), help=argparse.SUPPRESS)  # one of --gpus'
    args = parser.parse_args()
    if args.rank:
        return rank_main(args)
    args.pairs -= args.pairs % (args.batch_size * args.gpus)

    import sentence_transformers
    import torch
    import transformers

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    work = Path(tempfile.mkdtemp(prefix="embedops-bench-train-"))
    model_path = build_model(args.shape, work, args.max_seq_length)
    dataset = prepared_dataset(model_path, work / "dataset", args.pairs, args.tokens)
    what = torch.cuda.get_device_name() if device == "cuda" else f"{platform.machine()} CPU"
    print(
        f"{args.shape} on {what} ({len(os.sched_getaffinity(0))} CPUs); {args.pairs} pairs of a ~16-token query, "
        f"a positive and {NEGATIVES} negatives of ~{args.tokens} tokens, batch {args.batch_size}, max length "
        f"{args.max_seq_length}; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"sentence-transformers {sentence_transformers.__version__}"
    )

    limit = step_limit(model_path, dataset, args, device)
    report("model step limit", limit, max(limit), "(forward, loss, backward, AdamW; pre-tokenized, on the device)")
    report(
        "train worker",
        worker(model_path, dataset, args, device),
        max(limit),
        f"({args.pairs // args.batch_size} steps, set-up included)",
    )
    if args.gpus > 1:
        backend = "NCCL" if device == "cuda" else "gloo, sharing the CPUs"
        report(
            f"train worker x{args.gpus}",
            processes(args.gpus, model_path, dataset, args, device),
            max(limit),
            f"({args.gpus} processes, {backend}; {args.pairs // (args.batch_size * args.gpus)} steps of "
            f"{args.batch_size * args.gpus} pairs)",
        )


if __name__ == "__main__":
    main()
