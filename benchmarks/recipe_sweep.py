"""Run fine-tuning recipe variants on one BEIR folder and print one table of their scores.

Each variant is the operator's all-defaults recipe (benchmarks/finetune_beir.py) with a few spec
overrides. On a GPU, the whole built-in sweep on SciFact:

    python benchmarks/recipe_sweep.py ../shared/datasets/scifact
    python benchmarks/recipe_sweep.py ../shared/datasets/scifact --variant defaults \\
        --variant 'gist: loss.type=GISTEmbedLoss' --variant 'rank0: hardNegatives.rangeMin=0'
    python benchmarks/recipe_sweep.py DATA --variants my-sweep.yaml --set training.maxSteps=500

A variant is `NAME` or `NAME: PATH=VALUE, PATH=VALUE` (dotted camelCase spec paths, YAML values:
into the EmbeddingDataset spec for source/validation/split/hardNegatives/augment, else into the
FineTuneJob spec); a `--variants` YAML file is a list of `{name: ..., set: {PATH: VALUE}}`. `--set`
applies to every variant. Variants whose dataset settings agree share one prepared dataset.

Runs go in parallel, each in its own process, as long as the GPU's free memory allows
(`--gib-per-run` each, `--parallel` at most); on a CPU one at a time. Seconds are wall time under
that sharing: for timings, `--parallel 1`. The table has, per variant, the test split's nDCG@10,
MRR@10 and Recall@10/100 of the published model (or `-` when no checkpoint beat the base model on
validation), the best validation nDCG@10 and its step, steps taken and planned, seconds of
preparation (of its dataset) and of training with evaluation, and the GPU with its peak memory.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from finetune_beir import device_name, specs  # same folder

# Recipes worth comparing against the defaults (see docs/design.md, "The default recipe").
BUILT_IN = {
    "defaults": [],
    "n-tuple": ["hardNegatives.outputFormat=n-tuple"],
    "rank-0": ["hardNegatives.rangeMin=0"],
    "no-margin": ["hardNegatives.relativeMargin=0"],
    "gist": ["loss.type=GISTEmbedLoss"],
    "batch-128-3-epochs": ["training.batchSize=128", "training.epochs=3"],
    "no-validation": ["evaluation.validation.fraction=0"],
}


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: tuple[str, ...] = ()


@dataclass
class Row:
    variant: str
    base: dict[str, Any]
    tuned: dict[str, Any] | None
    validation: dict[str, Any] | None
    steps: int
    planned_steps: int | None
    prepare_s: float
    train_s: float
    device: str
    peak_gib: float | None = None
    overrides: list[str] = field(default_factory=list)


def parse_variant(text: str) -> Variant:
    """`NAME` or `NAME: PATH=VALUE, PATH=VALUE`."""
    name, _, rest = text.partition(":")
    if not name.strip():
        raise SystemExit(f"--variant {text!r}: a variant needs a name")
    overrides = tuple(item.strip() for item in rest.split(",") if item.strip())
    return Variant(name.strip(), overrides)


def load_variants(path: Path) -> list[Variant]:
    entries = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    return [
        Variant(str(e["name"]), tuple(f"{k}={json.dumps(v)}" for k, v in (e.get("set") or {}).items())) for e in entries
    ]


# -- one run, in this process or a child --------------------------------------------------------


def _peak_reset(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 1) if device.startswith("cuda") else None


def prepare_one(dataset: dict[str, Any], folder: str, device: str) -> dict[str, Any]:
    """Prepare one dataset spec into `folder`; its seconds and peak GPU memory."""
    from embedops import steps
    from embedops.api.dataset import EmbeddingDatasetSpec
    from embedops.workers import prepare

    _peak_reset(device)
    t0 = time.monotonic()
    prepare.run(
        steps.PrepareStep(
            spec=EmbeddingDatasetSpec.model_validate(dataset), base_dir=Path.cwd(), output_dir=Path(folder)
        )
    )
    return {"seconds": round(time.monotonic() - t0, 1), "peak_gib": _peak_gib(device)}


def train_one(job: dict[str, Any], dataset_dir: str, output_dir: str, device: str) -> dict[str, Any]:
    """Train one FineTuneJob spec on a prepared dataset; its result (wire form), seconds and peak GPU memory."""
    from embedops import steps
    from embedops.api.finetune import FineTuneJobSpec
    from embedops.workers import train

    _peak_reset(device)
    t0 = time.monotonic()
    result = train.run(
        steps.TrainStep(
            spec=FineTuneJobSpec.model_validate(job),
            dataset_dir=Path(dataset_dir),
            output_dir=Path(output_dir),
            device=device,
        )
    )
    return {"result": result.to_wire(), "seconds": round(time.monotonic() - t0, 1), "peak_gib": _peak_gib(device)}


# -- the sweep ------------------------------------------------------------------------------------


def slots(device: str, runs: int, parallel: int | None, gib_per_run: float) -> int:
    """How many runs share the device at once: as many as its free memory holds, at most `parallel`."""
    if not device.startswith("cuda"):
        return max(1, min(runs, parallel or 1))
    import torch

    free, _ = torch.cuda.mem_get_info()
    fits = max(1, math.floor(free / 2**30 / gib_per_run))
    return max(1, min(runs, fits, parallel or fits))


def _map(fn, calls: list[tuple], workers: int) -> list[Any]:
    if workers == 1:
        return [fn(*c) for c in calls]
    # Each run in its own process (spawned: CUDA cannot be forked), so runs share the GPU, not a Python.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(fn, *zip(*calls, strict=True)))


def sweep(
    beir: Path,
    variants: Sequence[Variant],
    *,
    common: Sequence[str] = (),
    work: Path,
    device: str,
    parallel: int | None = None,
    gib_per_run: float = 10.0,
) -> list[Row]:
    """Prepare each distinct dataset once, train every variant, and return one row per variant."""
    planned = [(v, *specs(beir, [*common, *v.overrides])) for v in variants]
    datasets: dict[str, dict[str, Any]] = {}
    for _, dataset, _ in planned:
        datasets.setdefault(json.dumps(dataset, sort_keys=True), dataset)
    folder = {key: str(work / f"dataset-{i}") for i, key in enumerate(datasets)}

    n = slots(device, len(datasets), parallel, gib_per_run)
    prepared = dict(
        zip(datasets, _map(prepare_one, [(d, folder[k], device) for k, d in datasets.items()], n), strict=True)
    )
    n = slots(device, len(planned), parallel, gib_per_run)
    calls = [
        (job, folder[json.dumps(dataset, sort_keys=True)], str(work / f"job-{i}"), device)
        for i, (_, dataset, job) in enumerate(planned)
    ]
    trained = _map(train_one, calls, n)

    hw, rows = device_name(device), []
    for (variant, dataset, _), run in zip(planned, trained, strict=True):
        prep, result = prepared[json.dumps(dataset, sort_keys=True)], run["result"]
        peaks = [p for p in (prep["peak_gib"], run["peak_gib"]) if p is not None]
        rows.append(
            Row(
                variant=variant.name,
                base=result["baseMetrics"],
                tuned=result.get("tunedMetrics"),
                validation=result.get("validation"),
                steps=result["steps"],
                planned_steps=result.get("plannedSteps"),
                prepare_s=prep["seconds"],
                train_s=run["seconds"],
                device=hw,
                peak_gib=max(peaks) if peaks else None,
                overrides=[*common, *variant.overrides],
            )
        )
    return rows


def table(rows: Sequence[Row]) -> str:
    """One line per variant (and the base model's first), fixed-width."""
    head = (
        f"{'variant':<22}{'nDCG@10':>9}{'MRR@10':>8}{'R@10':>7}{'R@100':>7}{'val best':>15}{'steps':>11}"
        f"{'prep s':>8}{'train s':>9}  gpu"
    )

    def metrics(m: dict[str, Any] | None) -> str:
        if m is None:
            return f"{'-':>9}{'-':>8}{'-':>7}{'-':>7}"
        return f"{m['ndcgAt10']:>9.4f}{m['mrrAt10']:>8.4f}{m['recallAt10']:>7.3f}{m['recallAt100']:>7.3f}"

    lines = [head, f"{'(base model)':<22}{metrics(rows[0].base) if rows else ''}"]
    for r in rows:
        v = r.validation
        best = f"{v['bestNdcgAt10']:.4f}@{v['bestStep']}" if v and v.get("bestNdcgAt10") is not None else "-"
        gpu = r.device + (f", {r.peak_gib} GiB" if r.peak_gib is not None else "")
        lines.append(
            f"{r.variant:<22}{metrics(r.tuned)}{best:>15}{f'{r.steps}/{r.planned_steps}':>11}"
            f"{r.prepare_s:>8.0f}{r.train_s:>9.0f}  {gpu}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("beir", type=Path, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME[: PATH=VALUE, ...]",
        help=f"a variant (default: the built-in ones, {', '.join(BUILT_IN)}); a built-in name alone is it",
    )
    ap.add_argument("--variants", type=Path, help="YAML list of {name, set: {PATH: VALUE}}")
    ap.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="override for every variant")
    ap.add_argument("--device", help="torch device (default: cuda if available)")
    ap.add_argument(
        "--parallel", type=int, help="at most this many runs at once (default: as memory allows on a GPU, 1 on a CPU)"
    )
    ap.add_argument("--gib-per-run", type=float, default=10.0, help="GPU memory set aside per run (default: 10)")
    ap.add_argument("--work", type=Path, help="keep outputs here (default: a temporary folder)")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)

    from embedops import modelzoo

    variants = [
        Variant(v.name, tuple(BUILT_IN[v.name])) if v.name in BUILT_IN and not v.overrides else v
        for v in map(parse_variant, args.variant)
    ]
    if args.variants:
        variants += load_variants(args.variants)
    variants = variants or [Variant(name, tuple(o)) for name, o in BUILT_IN.items()]
    if len({v.name for v in variants}) != len(variants):
        raise SystemExit("variant names must be unique")
    work = args.work or Path(tempfile.mkdtemp(prefix="embedops-sweep-"))
    device = args.device or modelzoo.default_device()
    rows = sweep(
        args.beir,
        variants,
        common=args.set,
        work=work,
        device=device,
        parallel=args.parallel,
        gib_per_run=args.gib_per_run,
    )
    print(f"\n{args.beir}: {len(rows)} variants; overrides for all: {args.set or 'none'}; outputs in {work}")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n", encoding="utf-8")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
