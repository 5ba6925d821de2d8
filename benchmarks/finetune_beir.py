"""Fine-tune with the operator's default recipe on a BEIR folder and print base vs tuned scores.

This is what a FineTuneJob does with an all-defaults spec (prepare with default mining and
title pairs, then train with the default loss, step budget and checkpoint selection on
validation queries carved from the training queries), run in-process so the figures can be
compared across machines:

    python benchmarks/finetune_beir.py ../shared/datasets/scifact            # defaults
    python benchmarks/finetune_beir.py ../shared/datasets/scifact --set training.epochs=1 --set hardNegatives.count=1

Several recipes side by side, in parallel on one GPU: benchmarks/recipe_sweep.py.

`--set` overrides a spec field (dotted camelCase path, into the dataset spec for
`source`/`validation`/`split`/`hardNegatives`/`augment`, else into the FineTuneJob spec).
Test queries are never used for training: they only score the base and the tuned model.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

DATASET_FIELDS = {"source", "validation", "split", "hardNegatives", "augment"}


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def specs(beir: Path, overrides: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The EmbeddingDataset and FineTuneJob specs (wire form) of a BEIR folder with `PATH=VALUE` overrides."""
    dataset: dict[str, Any] = {"source": {"beir": {"path": str(beir.resolve())}}}
    job: dict[str, Any] = {"datasetRef": {"name": "bench"}}
    for item in overrides:
        path, sep, raw = item.partition("=")
        if not sep or not path:
            raise SystemExit(f"--set {item!r}: expected PATH=VALUE")
        _set(dataset if path.split(".")[0] in DATASET_FIELDS else job, path, yaml.safe_load(raw))
    return dataset, job


def device_name(device: str) -> str:
    """The GPU's name, or the CPU's model and the threads torch uses."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    cpu = platform.processor() or platform.machine() or "cpu"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu} x{torch.get_num_threads()} threads"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("beir", type=Path, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    ap.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="override a spec field")
    ap.add_argument("--device", help="torch device (default: cuda if available)")
    ap.add_argument("--work", type=Path, help="keep outputs here (default: a temporary folder)")
    args = ap.parse_args()

    from embedops import steps
    from embedops.api.dataset import EmbeddingDatasetSpec
    from embedops.api.finetune import FineTuneJobSpec
    from embedops.workers import prepare, train

    dataset, job = specs(args.beir, args.set)

    work = args.work or Path(tempfile.mkdtemp(prefix="embedops-bench-"))
    t0 = time.monotonic()
    prepared = prepare.run(
        steps.PrepareStep(
            spec=EmbeddingDatasetSpec.model_validate(dataset), base_dir=Path.cwd(), output_dir=work / "dataset"
        )
    )
    t1 = time.monotonic()
    result = train.run(
        steps.TrainStep(
            spec=FineTuneJobSpec.model_validate(job),
            dataset_dir=work / "dataset",
            output_dir=work / "job",
            device=args.device,
        )
    )
    t2 = time.monotonic()

    import torch

    from embedops import modelzoo

    hw = device_name(args.device or modelzoo.default_device())
    counts = prepared.counts
    print(f"\nmachine: {hw}; torch {torch.__version__}")
    print(
        f"dataset: {args.beir} -> {counts.train_pairs} pairs ({counts.title_pairs} from titles) in "
        f"{counts.train_rows} rows, {counts.test_queries} test queries; overrides: {args.set or 'none'}"
    )
    v = result.validation
    if v is not None:
        best = f"{v.best_ndcg_at_10:.4f} at step {v.best_step}" if v.best_ndcg_at_10 is not None else "none"
        print(
            f"validation: {v.queries} queries over {v.documents} documents, nDCG@10 base {v.base_ndcg_at_10:.4f}, "
            f"best {best} ({v.evaluations} checkpoints scored)"
        )
    if result.tuned_metrics is None:
        print("no checkpoint beat the base model on validation: no model published (NoImprovement)")
    print(f"{'metric':<12}{'base':>10}{'tuned':>10}{'change':>10}")
    for label, attr in (
        ("nDCG@10", "ndcg_at_10"),
        ("MRR@10", "mrr_at_10"),
        ("Recall@10", "recall_at_10"),
        ("Recall@100", "recall_at_100"),
    ):
        a = getattr(result.base_metrics, attr)
        b = getattr(result.tuned_metrics, attr) if result.tuned_metrics else float("nan")
        print(f"{label:<12}{a:>10.4f}{b:>10.4f}{b - a:>+10.4f}")
    print(
        f"prepare {t1 - t0:.0f}s, train+evaluate {t2 - t1:.0f}s, {result.steps} of {result.planned_steps} planned steps"
    )
    print(
        json.dumps(
            {
                "base": result.base_metrics.to_wire(),
                "tuned": result.tuned_metrics.to_wire() if result.tuned_metrics else None,
                "validation": v.to_wire() if v else None,
                "steps": result.steps,
                "prepare_s": round(t1 - t0, 1),
                "train_s": round(t2 - t1, 1),
                "device": hw,
            }
        )
    )


if __name__ == "__main__":
    main()
