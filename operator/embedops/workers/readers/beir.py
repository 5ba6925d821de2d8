"""The BEIR reader: a folder of `corpus.jsonl`, `queries.jsonl` and `qrels/<split>.tsv`.

BEIR is the format of public retrieval benchmarks and of many exported domain datasets.
Its ids are the user's own, so repeats are found by id (an id defined twice with different
content is reported, not silently resolved), and judgements (qrels) are only kept when both
their query and their document survived validation. Only the files the format names are
read: a folder is never listed, so a wrong path costs nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from embedops.api.dataset import BeirSource, ValidationSpec
from embedops.prepared import Doc
from embedops.results import SourceNotThere
from embedops.workers.readers.rows import (
    BadRow,
    Issues,
    Qrels,
    Source,
    checked_id,
    checked_text,
    display_name,
    jsonl_rows,
    lines,
    require_rows,
    resolve,
    valid_utf8,
)

log = logging.getLogger(__name__)
T = TypeVar("T", Doc, str)  # a corpus document or a query


def read(
    src: BeirSource, base_dir: Path, rules: ValidationSpec, issues: Issues, *, corpus_only: bool = False
) -> Source:
    """The folder's corpus and judged queries. corpus_only (spec.generate): queries.jsonl and the qrels may be
    missing or empty, and those there are kept (as few-shot examples, validation and test queries)."""
    folder = resolve(src.path, base_dir)
    if not folder.exists():
        raise SourceNotThere(f"source.beir.path {display_name(src.path)!r} does not exist")
    if not folder.is_dir():
        raise FileNotFoundError(f"source.beir.path {display_name(src.path)!r} is not a folder")
    # The expected files only, all checked before any is read: the folder is never listed.
    for name in file_names(src, corpus_only=corpus_only):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"source.beir.path {display_name(src.path)!r}: {name} not found "
                "(a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/<split>.tsv)"
            )
    corpus, dup_docs = read_by_id(folder / "corpus.jsonl", "corpus.jsonl", lambda row: parse_doc(row, rules), issues)
    if corpus_only:
        return labelled_if_any(src, folder, corpus, dup_docs, rules, issues)
    queries, dup_queries = read_by_id(
        folder / "queries.jsonl", "queries.jsonl", lambda row: parse_query(row, rules), issues
    )
    train, dup_train = read_qrels(folder, src.train_split, queries, corpus, issues)
    require_relevant(qrels_name(src.train_split), train, "query")
    test, dup_test = read_qrels(folder, src.test_split, queries, corpus, issues) if src.test_split else (None, 0)
    if test is not None:
        require_relevant(qrels_name(src.test_split), test, "test query")
    return Source(
        corpus=corpus,
        queries=queries,
        train_qrels=train,
        test_qrels=test,
        duplicates=dup_docs + dup_queries + dup_train + dup_test,
    )


def labelled_if_any(
    src: BeirSource, folder: Path, corpus: dict[str, Doc], duplicates: int, rules: ValidationSpec, issues: Issues
) -> Source:
    """A corpus with whatever judged queries the folder has: none, or some that generation adds to."""
    queries: dict[str, str] = {}
    if (folder / "queries.jsonl").is_file() and (folder / "queries.jsonl").stat().st_size:
        queries, dup = read_by_id(
            folder / "queries.jsonl", "queries.jsonl", lambda row: parse_query(row, rules), issues
        )
        duplicates += dup
    qrels: dict[str, Qrels | None] = {}
    for split in (src.train_split, src.test_split):
        path = folder / qrels_name(split) if split else None
        if path is None or not path.is_file() or not queries or not any(t.strip() for _, t in lines(path)):
            qrels[split] = None
            continue
        qrels[split], dup = read_qrels(folder, split, queries, corpus, issues)
        duplicates += dup
    return Source(
        corpus=corpus,
        queries=queries,
        train_qrels=qrels[src.train_split] or {},
        test_qrels=qrels[src.test_split] if src.test_split else None,
        duplicates=duplicates,
    )


def parse_query(row: dict, rules: ValidationSpec) -> tuple[str, str]:
    # Only `_id` and `text` of a query are read: other fields (SciFact's `metadata`) may hold the answers.
    return checked_id(row, "_id"), checked_text(row, "text", rules)


def file_names(src: BeirSource, *, corpus_only: bool = False) -> list[str]:
    """The files a BEIR source is read from, relative to its folder (only the corpus is required when corpus_only)."""
    splits = [src.train_split, *([src.test_split] if src.test_split else [])]
    names = ["corpus.jsonl", "queries.jsonl", *(qrels_name(s) for s in splits)]
    return names[:1] if corpus_only else names


def qrels_name(split: str) -> str:
    return f"qrels/{split}.tsv"


def parse_doc(row: dict, rules: ValidationSpec) -> tuple[str, Doc]:
    doc = Doc(
        id=checked_id(row, "_id"),
        text=checked_text(row, "text", rules),
        title=checked_text(row, "title", rules, required=False),
    )
    return doc.id, doc


def read_by_id(
    path: Path, name: str, parse: Callable[[dict], tuple[str, T]], issues: Issues
) -> tuple[dict[str, T], int]:
    """The valid rows of a JSONL file by id, and how many repeated an earlier row exactly.

    The first definition of an id is kept. A repeat that differs from it is reported: one of
    the two is wrong, and silently keeping the first would hide which.
    """
    kept: dict[str, T] = {}
    first_line: dict[str, int] = {}
    duplicates = 0
    for lineno, row in jsonl_rows(path, name, issues):
        try:
            key, value = parse(row)
        except BadRow as err:
            issues.add(name, lineno, str(err))
            continue
        if key not in kept:
            kept[key], first_line[key] = value, lineno
        elif kept[key] == value:
            duplicates += 1
            log.warning("%s:%d: duplicate of line %d (id %r), skipped", name, lineno, first_line[key], key)
        else:
            issues.add(
                name,
                lineno,
                f"id {key!r} was already defined at line {first_line[key]} with a different "
                f"{difference(kept[key], value)}; the first is kept",
            )
    return kept, duplicates


def difference(first: Doc | str, again: Doc | str) -> str:
    return "title" if isinstance(first, Doc) and isinstance(again, Doc) and first.text == again.text else "text"


def read_qrels(
    folder: Path, split: str, queries: dict[str, str], corpus: dict[str, Doc], issues: Issues
) -> tuple[Qrels, int]:
    name = qrels_name(split)
    qrels: Qrels = {}
    rows = duplicates = 0
    # Undecodable bytes are reported by line (see rows.lines) rather than replaced by U+FFFD, which
    # would only show up as an unknown id.
    for lineno, line in lines(folder / name):
        if not line.strip():
            continue
        if lineno == 1 and line.split("\t", 1)[0].strip().lower() == "query-id":
            continue
        rows += 1
        issues.seen[name] += 1
        try:
            qid, did, rel = parse_qrel(line, queries, corpus)
        except BadRow as err:
            issues.add(name, lineno, str(err))
            continue
        if did in qrels.setdefault(qid, {}):
            duplicates += 1
            continue
        qrels[qid][did] = rel
    require_rows(name, rows)
    return qrels, duplicates


def require_relevant(name: str, qrels: Qrels, what: str) -> None:
    """A qrels file whose valid rows all score 0 judges every document irrelevant: nothing to train or test on."""
    if qrels and not any(rel > 0 for docs in qrels.values() for rel in docs.values()):
        raise ValueError(
            f"{name}: no {what} has a relevant document (every score is 0 or less; relevant is a score above 0)"
        )


def parse_qrel(line: str, queries: dict[str, str], corpus: dict[str, Doc]) -> tuple[str, str, int]:
    if not valid_utf8(line):  # bytes the decoder escaped
        raise BadRow("not valid UTF-8")
    cells = line.split("\t")
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
