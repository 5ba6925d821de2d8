"""The pairs reader: JSON Lines of query–positive(–negatives) pairs, and what turns pairs into a `Source`.

Pairs are the simplest thing a team can export (a search log, a FAQ, tickets and their
answers), so they need no ids: queries and documents get content-hash ids, which makes
duplicates collapse and keeps ids stable across runs. The Postgres reader reads pairs too
and shares `parse_pair` and `pairs_to_source` with this one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from embedops.api.dataset import PairsSource, ValidationSpec
from embedops.prepared import Doc
from embedops.results import SourceNotThere
from embedops.workers.readers.rows import (
    BadRow,
    Issues,
    Qrels,
    Source,
    checked_text,
    content_id,
    display_name,
    jsonl_rows,
    resolve,
)


@dataclass(frozen=True)
class Pair:
    query: str
    positive: str
    negatives: tuple[str, ...] = ()
    test: bool = False


def read(src: PairsSource, base_dir: Path, rules: ValidationSpec, issues: Issues) -> Source:
    pairs = read_file(src.path, base_dir, rules, issues, test=False)
    if src.test_path:
        pairs += read_file(src.test_path, base_dir, rules, issues, test=True)
    return pairs_to_source(pairs, has_test=bool(src.test_path))


def read_file(path_as_written: str, base_dir: Path, rules: ValidationSpec, issues: Issues, *, test: bool) -> list[Pair]:
    path, name = resolve(path_as_written, base_dir), display_name(path_as_written)
    if not path.exists():
        raise SourceNotThere(f"pairs file {name!r} does not exist")
    if not path.is_file():
        raise FileNotFoundError(f"pairs file {name!r} is not a file")
    pairs = []
    for lineno, row in jsonl_rows(path, name, issues):
        try:
            pairs.append(parse_pair(row, rules, test=test))
        except BadRow as err:
            issues.add(name, lineno, str(err))
    return pairs


def parse_pair(
    row: dict, rules: ValidationSpec, *, test: bool = False, query_key: str = "query", positive_key: str = "positive"
) -> Pair:
    query, positive = checked_text(row, query_key, rules), checked_text(row, positive_key, rules)
    negatives = row.get("negatives")
    if negatives is None:
        negatives = []
    if not isinstance(negatives, list):
        raise BadRow(f"field 'negatives' must be a list of strings, got {type(negatives).__name__}")
    checked = (checked_text({f"negatives[{i}]": n}, f"negatives[{i}]", rules) for i, n in enumerate(negatives))
    return Pair(query=query, positive=positive, negatives=tuple(checked), test=test)


def pairs_to_source(pairs: list[Pair], *, has_test: bool) -> Source:
    """Give texts content-hash ids: the corpus is every distinct positive and negative."""
    corpus: dict[str, Doc] = {}
    queries: dict[str, str] = {}
    train: Qrels = {}
    test: Qrels = {}
    negatives: dict[tuple[str, str], tuple[str, ...]] = {}
    duplicates = 0
    for pair in pairs:
        qid = content_id("q", pair.query)
        queries.setdefault(qid, pair.query)
        ids = [content_id("d", t) for t in (pair.positive, *pair.negatives)]
        for did, text in zip(ids, (pair.positive, *pair.negatives), strict=True):
            corpus.setdefault(did, Doc(id=did, text=text))
        qrels = (test if pair.test else train).setdefault(qid, {})
        if ids[0] in qrels:
            duplicates += 1
            continue
        qrels[ids[0]] = 1
        negatives[(qid, ids[0])] = tuple(dict.fromkeys(ids[1:]))
    return Source(
        corpus=corpus,
        queries=queries,
        train_qrels=train,
        test_qrels=test if has_test else None,
        given_negatives=negatives,
        duplicates=duplicates,
    )
