"""Fine-tune with the operator's default recipe on a BEIR folder and print base vs tuned scores.

This is what a FineTuneJob does with an all-defaults spec (prepare with default mining and
title pairs, then train with default loss and settings), run in-process so the figures
can be compared across machines:

    python benchmarks/finetune_beir.py ../shared/datasets/scifact            # defaults
    python benchmarks/finetune_beir.py ../shared/datasets/scifact --set training.epochs=1 --set hardNegatives.count=1

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("beir", type=Path, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    ap.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="override a spec field")
    ap.add_argument("--device", help="torch device (default: cuda if available)")
    ap.add_argument("--work", type=Path, help="keep outputs here (default: a temporary folder)")
    args = ap.parse_args()

    from embedops.api.dataset import EmbeddingDatasetSpec
    from embedops.api.finetune import FineTuneJobSpec
    from embedops.workers import prepare, train

    dataset: dict[str, Any] = {"source": {"beir": {"path": str(args.beir.resolve())}}}
    job: dict[str, Any] = {"datasetRef": {"name": "bench"}}
    for item in args.set:
        path, _, raw = item.partition("=")
        _set(dataset if path.split(".")[0] in DATASET_FIELDS else job, path, yaml.safe_load(raw))

    work = args.work or Path(tempfile.mkdtemp(prefix="embedops-bench-"))
    t0 = time.monotonic()
    prepared = prepare.run(prepare.Config(spec=EmbeddingDatasetSpec.model_validate(dataset), base_dir=Path.cwd(),
                                          output_dir=work / "dataset"))
    t1 = time.monotonic()
    result = train.run(train.Config(spec=FineTuneJobSpec.model_validate(job), dataset_dir=work / "dataset",
                                    output_dir=work / "job", device=args.device))
    t2 = time.monotonic()

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    hw = torch.cuda.get_device_name() if device.startswith("cuda") else f"{platform.processor() or 'cpu'} x{torch.get_num_threads()} threads"
    print(f"\nmachine: {hw}; torch {torch.__version__}")
    print(f"dataset: {args.beir} -> {prepared.counts.train_pairs} pairs ({prepared.counts.title_pairs} from titles), "
          f"{prepared.counts.test_queries} test queries; overrides: {args.set or 'none'}")
    print(f"{'metric':<12}{'base':>10}{'tuned':>10}{'change':>10}")
    for label, attr in (("nDCG@10", "ndcg_at_10"), ("MRR@10", "mrr_at_10"), ("Recall@10", "recall_at_10"),
                        ("Recall@100", "recall_at_100")):
        a, b = getattr(result.base_metrics, attr), getattr(result.tuned_metrics, attr)
        print(f"{label:<12}{a:>10.4f}{b:>10.4f}{b - a:>+10.4f}")
    print(f"prepare {t1 - t0:.0f}s, train+evaluate {t2 - t1:.0f}s, {result.steps} steps")
    print(json.dumps({"base": result.base_metrics.to_wire(), "tuned": result.tuned_metrics.to_wire(),
                      "prepare_s": round(t1 - t0, 1), "train_s": round(t2 - t1, 1), "device": hw}))


if __name__ == "__main__":
    main()
