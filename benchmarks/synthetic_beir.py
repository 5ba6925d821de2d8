"""Fine-tune on generated queries only and score on a BEIR folder's real test queries.

The folder's training queries are dropped (never read: SciFact's queries.jsonl `metadata` lists
relevant ids, and only `_id` and `text` of the test queries are copied), queries are generated
for a seeded sample of its corpus (`spec.generate`), and four things are scored on the real test
queries: the base model, training on title pairs only, on generated queries with the text
filters, and with the round-trip filter too. One generation serves both generated arms (the
cache); the three trained arms share one validation set (held-out generated queries, which
skip the round trip).

    python benchmarks/synthetic_beir.py examples/quickstart/data/scifact-sample --documents 200   # CPU, SmolLM2
    python benchmarks/synthetic_beir.py ../shared/datasets/scifact --documents 5183 --device cuda \
        --endpoint http://vllm.llm.svc:8000/v1 --endpoint-model Qwen/Qwen2.5-7B-Instruct

Sizes are the quickstart's (1 hard negative, 200 title pairs, 3 epochs of batch 16, 128 tokens)
unless `--set` says otherwise (as in finetune_beir.py). `--arms` picks arms, in order.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ARMS = ("filtered", "generated", "titles")
QUICKSTART_JOB = {"training": {"epochs": 3, "batchSize": 16, "maxSeqLength": 128}}


def without_training_queries(beir: Path, out: Path, split: str) -> None:
    """A BEIR folder of the corpus and the test queries only (their `_id` and `text`)."""
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(beir / "corpus.jsonl", out / "corpus.jsonl")
    shutil.copyfile(beir / "qrels" / f"{split}.tsv", out / "qrels" / f"{split}.tsv")
    with (beir / "qrels" / f"{split}.tsv").open() as f:
        wanted = {row[0] for row in csv.reader(f, delimiter="\t")}
    with (beir / "queries.jsonl").open() as src, (out / "queries.jsonl").open("w") as dst:
        for line in src:
            row = json.loads(line)
            if str(row["_id"]) in wanted:
                dst.write(json.dumps({"_id": row["_id"], "text": row["text"]}) + "\n")


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def titles_only(work: Path) -> Path:
    """The generated arm's prepared folder without its generated rows: title pairs, and the same validation."""
    from embedops import prepared

    titles = work / "titles" / "dataset"
    shutil.copytree(work / "generated" / "dataset", titles, dirs_exist_ok=True)
    kept = [e for e in prepared.PreparedDataset(titles).train_examples() if e.origin != "generated"]
    prepared.write_jsonl(
        titles / "train.jsonl",
        ({"query": e.query, "positive": e.positive, "negatives": list(e.negatives), "origin": e.origin} for e in kept),
    )
    return titles


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'arm':<12}{'test nDCG@10':>14}  validation nDCG@10 base -> best   train rows  train s")
    if rows:
        print(f"{'base':<12}{rows[0]['base']:>14.4f}")
    for r in rows:
        tuned = f"{r['tuned']:.4f}" if r["tuned"] is not None else "not published"
        print(f"{r['arm']:<12}{tuned:>14}  {r['validation']:<32}{r['rows']:>11}{r['train_s']:>9}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("beir", type=Path, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/<test>.tsv)")
    ap.add_argument("--documents", type=int, default=200, help="documents sampled for generation")
    ap.add_argument("--queries-per-document", type=int, default=1)
    ap.add_argument("--model", default="smollm2-135m-instruct", help="local generator (without --endpoint)")
    ap.add_argument("--endpoint", help="OpenAI-compatible base URL (its key in EMBEDOPS_GENERATOR_API_KEY)")
    ap.add_argument("--endpoint-model", default="", help="the endpoint's model name")
    ap.add_argument("--test-split", default="test")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    ap.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="override a spec field")
    ap.add_argument("--device", help="torch device for training (default: cuda if available)")
    ap.add_argument("--work", type=Path, help="keep outputs (and the generation cache) here")
    args = ap.parse_args()

    from embedops import steps
    from embedops.api.dataset import EmbeddingDatasetSpec
    from embedops.api.finetune import FineTuneJobSpec
    from embedops.workers import prepare, train

    work = args.work or Path(tempfile.mkdtemp(prefix="embedops-synthetic-"))
    beir = work / "beir"
    without_training_queries(args.beir, beir, args.test_split)
    generator = (
        {"endpoint": {"baseURL": args.endpoint, "model": args.endpoint_model}}
        if args.endpoint
        else {"model": args.model}
    )
    dataset: dict[str, Any] = {
        "source": {"beir": {"path": str(beir), "testSplit": args.test_split}},
        "generate": {**generator, "maxDocuments": args.documents, "queriesPerDocument": args.queries_per_document},
        "hardNegatives": {"count": 1},
        "augment": {"maxTitlePairs": 200},
    }
    job: dict[str, Any] = {"datasetRef": {"name": "bench"}, **json.loads(json.dumps(QUICKSTART_JOB))}
    for item in args.set:
        path, _, raw = item.partition("=")
        _set(
            dataset if path.split(".")[0] in {"generate", "hardNegatives", "augment", "split"} else job,
            path,
            yaml.safe_load(raw),
        )

    def prepare_arm(name: str, round_trip: int) -> Any:
        spec = json.loads(json.dumps(dataset))
        spec["generate"].setdefault("filter", {})["roundTripTopK"] = round_trip
        t = time.monotonic()
        result = prepare.run(
            steps.PrepareStep(
                spec=EmbeddingDatasetSpec.model_validate(spec),
                base_dir=Path.cwd(),
                output_dir=work / name / "dataset",
                cache_dir=work / "cache",
            )
        )
        print(f"[{name}] prepared in {time.monotonic() - t:.0f}s: {result.generation.to_wire()}", flush=True)
        return result

    def train_arm(name: str, folder: Path) -> dict[str, Any]:
        t = time.monotonic()
        result = train.run(
            steps.TrainStep(
                spec=FineTuneJobSpec.model_validate(job),
                dataset_dir=folder,
                output_dir=work / name / "job",
                device=args.device,
            )
        )
        v = result.validation
        row = {
            "arm": name,
            "base": result.base_metrics.ndcg_at_10,
            "tuned": result.tuned_metrics.ndcg_at_10 if result.tuned_metrics else None,
            "validation": f"{v.base_ndcg_at_10:.4f} -> {v.best_ndcg_at_10:.4f} ({v.queries} queries)" if v else "none",
            "rows": result.train_pairs,
            "train_s": round(time.monotonic() - t),
        }
        print(f"[{name}] {json.dumps(row)}", flush=True)
        return row

    rows = []
    for arm in args.arms.split(","):
        match arm:
            case "filtered":
                prepare_arm("filtered", 10)
                rows.append(train_arm("filtered", work / "filtered" / "dataset"))
            case "generated":
                prepare_arm("generated", 0)
                rows.append(train_arm("generated", work / "generated" / "dataset"))
            case "titles":
                if not (work / "generated" / "dataset" / "manifest.json").is_file():
                    prepare_arm("generated", 0)
                rows.append(train_arm("titles", titles_only(work)))
            case other:
                raise SystemExit(f"--arms: no arm {other!r}; the arms are {', '.join(ARMS)}")

    print(f"\ngenerator: {json.dumps(generator)}; {args.documents} documents x {args.queries_per_document}")
    print_table(rows)


if __name__ == "__main__":
    main()
