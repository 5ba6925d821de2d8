"""Cut the quickstart's SciFact sample out of the full BEIR SciFact folder.

The sample keeps the BEIR layout so the quickstart exercises the same reader as a full
dataset. Queries keep only `_id` and `text`: SciFact's `metadata` field names the
relevant documents and must never reach a model. Sampling is seeded, so re-running
this script reproduces the committed files byte for byte.

    python hack/make_quickstart_sample.py ../shared/datasets/scifact examples/quickstart/data/scifact-sample
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        next(reader)
        for q, d, s in reader:
            qrels.setdefault(q, {})[d] = int(s)
    return qrels


def write_qrels(path: Path, qrels: dict[str, dict[str, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["query-id", "corpus-id", "score"])
        for q in sorted(qrels, key=int):
            for d, s in sorted(qrels[q].items()):
                w.writerow([q, d, s])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--train-queries", type=int, default=200)
    ap.add_argument("--test-queries", type=int, default=100)
    ap.add_argument("--corpus", type=int, default=600, help="documents in the sample, relevant ones included")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()

    rng = random.Random(args.seed)
    train = read_qrels(args.source / "qrels" / "train.tsv")
    test = read_qrels(args.source / "qrels" / "test.tsv")
    train = {q: train[q] for q in sorted(rng.sample(sorted(train), args.train_queries), key=int)}
    test = {q: test[q] for q in sorted(rng.sample(sorted(test), args.test_queries), key=int)}

    corpus = [json.loads(line) for line in (args.source / "corpus.jsonl").open(encoding="utf-8")]
    relevant = {d for qrels in (train, test) for rels in qrels.values() for d in rels}
    others = [doc["_id"] for doc in corpus if doc["_id"] not in relevant]
    keep = relevant | set(rng.sample(others, max(0, args.corpus - len(relevant))))

    args.dest.mkdir(parents=True, exist_ok=True)
    with (args.dest / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for doc in corpus:
            if doc["_id"] in keep:
                f.write(json.dumps({"_id": doc["_id"], "title": doc["title"], "text": doc["text"]}) + "\n")
    wanted = set(train) | set(test)
    with (args.dest / "queries.jsonl").open("w", encoding="utf-8") as f:
        for line in (args.source / "queries.jsonl").open(encoding="utf-8"):
            query = json.loads(line)
            if query["_id"] in wanted:
                f.write(json.dumps({"_id": query["_id"], "text": query["text"]}) + "\n")
    write_qrels(args.dest / "qrels" / "train.tsv", train)
    write_qrels(args.dest / "qrels" / "test.tsv", test)
    print(f"{len(keep)} documents, {len(train)} train and {len(test)} test queries -> {args.dest}")


if __name__ == "__main__":
    main()
