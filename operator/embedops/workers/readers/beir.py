"""The BEIR reader: a folder of `corpus.jsonl`, `queries.jsonl` and `qrels/<split>.tsv`.

BEIR is the format of public retrieval benchmarks and of many exported domain datasets;
its ids are the user's own, so duplicates are found by id, and judgements (qrels) are only
kept when both their query and their document survived validation.
"""

from __future__ import annotations

import logging
from pathlib import Path

from embedops.api.dataset import BeirSource, ValidationSpec
from embedops.prepared import Doc
from embedops.workers.readers.rows import (
    BadRow,
    Issues,
    Qrels,
    Source,
    checked_id,
    checked_text,
    display_name,
    jsonl_rows,
    resolve,
)

log = logging.getLogger(__name__)


def read(src: BeirSource, base_dir: Path, rules: ValidationSpec, issues: Issues) -> Source:
    folder = resolve(src.path, base_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"source.beir.path {display_name(src.path)!r} is not a folder")
    corpus, dup_docs = read_corpus(folder / "corpus.jsonl", rules, issues)
    queries, dup_queries = read_queries(folder / "queries.jsonl", rules, issues)
    train, dup_train = read_qrels(folder, src.train_split, queries, corpus, issues)
    test, dup_test = read_qrels(folder, src.test_split, queries, corpus, issues) if src.test_split else (None, 0)
    return Source(corpus=corpus, queries=queries, train_qrels=train, test_qrels=test,
                  duplicates=dup_docs + dup_queries + dup_train + dup_test)


def require_file(path: Path, name: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{name} not found in the BEIR folder")


def read_corpus(path: Path, rules: ValidationSpec, issues: Issues) -> tuple[dict[str, Doc], int]:
    require_file(path, "corpus.jsonl")
    corpus: dict[str, Doc] = {}
    first_line: dict[str, int] = {}
    duplicates = 0
    for lineno, row in jsonl_rows(path, "corpus.jsonl", issues):
        try:
            doc = Doc(id=checked_id(row, "_id"), text=checked_text(row, "text", rules),
                      title=checked_text(row, "title", rules, required=False))
        except BadRow as err:
            issues.add("corpus.jsonl", lineno, str(err))
            continue
        if doc.id in corpus:
            duplicates += 1
            log.warning("corpus.jsonl:%d: duplicate document id %r (first at line %d), skipped",
                        lineno, doc.id, first_line[doc.id])
            continue
        corpus[doc.id] = doc
        first_line[doc.id] = lineno
    return corpus, duplicates


def read_queries(path: Path, rules: ValidationSpec, issues: Issues) -> tuple[dict[str, str], int]:
    # Only `_id` and `text` are read: other fields (SciFact's `metadata`) may hold the answers.
    require_file(path, "queries.jsonl")
    queries: dict[str, str] = {}
    duplicates = 0
    for lineno, row in jsonl_rows(path, "queries.jsonl", issues):
        try:
            qid, text = checked_id(row, "_id"), checked_text(row, "text", rules)
        except BadRow as err:
            issues.add("queries.jsonl", lineno, str(err))
            continue
        if qid in queries:
            duplicates += 1
            log.warning("queries.jsonl:%d: duplicate query id %r, skipped", lineno, qid)
            continue
        queries[qid] = text
    return queries, duplicates


def read_qrels(folder: Path, split: str, queries: dict[str, str], corpus: dict[str, Doc],
               issues: Issues) -> tuple[Qrels, int]:
    name = f"qrels/{split}.tsv"
    path = folder / name
    require_file(path, name)
    qrels: Qrels = {}
    duplicates = 0
    # utf-8-sig: a BOM is not part of the header.
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            cells = line.rstrip("\r\n").split("\t")
            if lineno == 1 and cells[0].strip().lower() == "query-id":
                continue
            issues.seen[name] += 1
            try:
                qid, did, rel = parse_qrel(cells, queries, corpus)
            except BadRow as err:
                issues.add(name, lineno, str(err))
                continue
            if did in qrels.setdefault(qid, {}):
                duplicates += 1
                continue
            qrels[qid][did] = rel
    return qrels, duplicates


def parse_qrel(cells: list[str], queries: dict[str, str], corpus: dict[str, Doc]) -> tuple[str, str, int]:
    if len(cells) < 3:
        raise BadRow(f"expected 3 tab-separated columns (query-id, corpus-id, score), got {len(cells)}")
    qid, did, raw = (c.strip() for c in cells[:3])
    try:
        rel = int(raw)
    except ValueError:
        raise BadRow(f"score {raw!r} is not an integer") from None
    if qid not in queries:
        raise BadRow(f"query id {qid!r} is not in queries.jsonl (or its row is invalid)")
    if did not in corpus:
        raise BadRow(f"corpus id {did!r} is not in corpus.jsonl (or its row is invalid)")
    return qid, did, rel
