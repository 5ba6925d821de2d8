"""The prepared-dataset format: what the prepare worker writes and training, indexing and probes read.

A prepared dataset is a folder:

    manifest.json        format version, counts, content fingerprint, provenance
    corpus.jsonl         {"_id", "title", "text"} one document a line (BEIR's corpus format)
    train.jsonl          {"query", "positive", "negatives": [...], "origin": "pair" | "title"}
    test_queries.jsonl   {"_id", "text"} held-out queries
    test_qrels.tsv       query-id, corpus-id, score (with a header line), for the held-out queries
    invalid_rows.jsonl   {"file", "line", "reason"} every row rejected by validation

Every file is plain JSONL/TSV so a person can read it, and the fingerprint is a sha256
over the content files so two preparations of the same data compare equal.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
CONTENT_FILES = ("corpus.jsonl", "train.jsonl", "test_queries.jsonl", "test_qrels.tsv")


@dataclass(frozen=True)
class Doc:
    id: str
    text: str
    title: str = ""

    @property
    def full_text(self) -> str:
        """The text a model embeds: title and body, as sentence-transformers' BEIR scripts join them."""
        return f"{self.title} {self.text}".strip() if self.title else self.text


@dataclass(frozen=True)
class TrainExample:
    query: str
    positive: str
    negatives: tuple[str, ...] = ()
    origin: str = "pair"


@dataclass
class Manifest:
    format: int
    fingerprint: str
    counts: dict[str, int]
    source: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    return n


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def fingerprint(folder: Path) -> str:
    h = hashlib.sha256()
    for name in CONTENT_FILES:
        h.update(name.encode() + b"\0")
        with (folder / name).open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return "sha256:" + h.hexdigest()


def write_prepared(
    folder: Path,
    *,
    corpus: Iterable[Doc],
    train: Iterable[TrainExample],
    test_queries: dict[str, str],
    test_qrels: dict[str, dict[str, int]],
    invalid_rows: Iterable[dict[str, Any]] = (),
    counts: dict[str, int] | None = None,
    source: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    created_at: str = "",
) -> Manifest:
    """Write a prepared dataset atomically enough: content first, manifest (the completion mark) last."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").unlink(missing_ok=True)
    n_corpus = write_jsonl(folder / "corpus.jsonl", ({"_id": d.id, "title": d.title, "text": d.text} for d in corpus))
    n_train = write_jsonl(
        folder / "train.jsonl",
        ({"query": e.query, "positive": e.positive, "negatives": list(e.negatives), "origin": e.origin} for e in train),
    )
    write_jsonl(folder / "test_queries.jsonl", ({"_id": q, "text": t} for q, t in sorted(test_queries.items())))
    with (folder / "test_qrels.tsv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["query-id", "corpus-id", "score"])
        for q in sorted(test_qrels):
            for d, r in sorted(test_qrels[q].items()):
                w.writerow([q, d, r])
    write_jsonl(folder / "invalid_rows.jsonl", invalid_rows)
    all_counts = {"corpus": n_corpus, "train_pairs": n_train, "test_queries": len(test_queries), **(counts or {})}
    manifest = Manifest(
        format=FORMAT_VERSION,
        fingerprint=fingerprint(folder),
        counts=all_counts,
        source=source or {},
        settings=settings or {},
        created_at=created_at,
    )
    tmp = folder / "manifest.json.tmp"
    tmp.write_text(json.dumps(asdict(manifest), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(folder / "manifest.json")
    return manifest


class PreparedDataset:
    """Read access to a prepared dataset folder."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        path = self.folder / "manifest.json"
        if not path.is_file():
            raise FileNotFoundError(f"{self.folder} is not a prepared dataset (no manifest.json; was prepare run?)")
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported prepared-dataset format {raw.get('format')!r}")
        self.manifest = Manifest(**raw)

    def corpus(self) -> dict[str, Doc]:
        return {
            r["_id"]: Doc(id=r["_id"], text=r["text"], title=r.get("title", ""))
            for r in read_jsonl(self.folder / "corpus.jsonl")
        }

    def train_examples(self) -> list[TrainExample]:
        return [
            TrainExample(
                query=r["query"],
                positive=r["positive"],
                negatives=tuple(r.get("negatives", ())),
                origin=r.get("origin", "pair"),
            )
            for r in read_jsonl(self.folder / "train.jsonl")
        ]

    def test_queries(self) -> dict[str, str]:
        return {r["_id"]: r["text"] for r in read_jsonl(self.folder / "test_queries.jsonl")}

    def test_qrels(self) -> dict[str, dict[str, int]]:
        qrels: dict[str, dict[str, int]] = {}
        with (self.folder / "test_qrels.tsv").open(encoding="utf-8", newline="") as f:
            reader = csv.reader(f, delimiter="\t")
            next(reader, None)
            for q, d, r in reader:
                qrels.setdefault(q, {})[d] = int(r)
        return qrels
