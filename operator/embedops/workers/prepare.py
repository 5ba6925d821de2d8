"""The prepare worker: turn an EmbeddingDataset's source into the prepared-dataset folder.

Real domain data is messy, and one bad line must not cost a user their whole dataset, nor
may a wrong format pass silently. So every row is validated and bad rows are reported by
file and line and skipped, while a file whose invalid share is too high fails the step.
The result is deterministic (same input and spec, same fingerprint) so that unchanged data
is never trained on twice: the split is a seeded hash of query ids, samples are seeded,
and every output is written in a fixed order.

Pair sources (JSONL, Postgres) have no ids: queries and documents get content-hash ids,
which makes duplicates collapse and keeps ids stable across runs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field

from embedops import prepared, progress
from embedops.api.common import ApiModel
from embedops.api.dataset import (
    AugmentSpec,
    BeirSource,
    DatasetCounts,
    EmbeddingDatasetSpec,
    HardNegativesSpec,
    PairsSource,
    PostgresSource,
    SplitSpec,
    ValidationSpec,
)
from embedops.prepared import Doc, TrainExample
from embedops.results import PrepareResult as Result

log = logging.getLogger(__name__)

INVALID_SAMPLES = 10
Qrels = dict[str, dict[str, int]]


class Config(ApiModel):
    spec: EmbeddingDatasetSpec = Field(description="The EmbeddingDataset spec.")
    base_dir: Path = Field(description="Relative paths in the spec resolve against this folder.")
    output_dir: Path = Field(description="Where the prepared dataset is written.")


class BadRow(ValueError):
    """A row that fails validation; its message is the reason shown to the user."""


@dataclass
class Issues:
    """Invalid rows by file, to report them and to judge whether a file is wrong as a whole."""

    rows: list[dict[str, object]] = field(default_factory=list)
    seen: Counter[str] = field(default_factory=Counter)
    bad: Counter[str] = field(default_factory=Counter)

    def add(self, file: str, line: int, reason: str) -> None:
        self.rows.append({"file": file, "line": line, "reason": reason})
        self.bad[file] += 1

    def samples(self) -> list[str]:
        return [f"{r['file']}:{r['line']}: {r['reason']}" for r in self.rows[:INVALID_SAMPLES]]

    def check(self, max_fraction: float) -> None:
        for file, total in self.seen.items():
            if total and self.bad[file] / total > max_fraction:
                first = "; ".join(s for s in self.samples() if s.startswith(f"{file}:"))[:600]
                raise ValueError(
                    f"{file}: {self.bad[file]} of {total} rows are invalid, more than "
                    f"validation.maxInvalidFraction={max_fraction} (a wrong format?); first problems: {first}"
                )


@dataclass
class Source:
    """What a reader found, in one shape for all source kinds."""

    corpus: dict[str, Doc]
    queries: dict[str, str]
    train_qrels: Qrels
    test_qrels: Qrels | None  # None: split the train queries
    given_negatives: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)  # (query, doc) -> doc ids
    duplicates: int = 0


@dataclass(frozen=True)
class Candidate:
    """A training pair before mining: its query, positive document and the documents it must not get as negatives."""

    query: str
    positive_id: str
    exclude: frozenset[str]
    origin: str  # "pair" or "title"
    given: tuple[str, ...] = ()


# -- validation -----------------------------------------------------------------------------


def checked_text(row: dict, key: str, rules: ValidationSpec, *, required: bool = True) -> str:
    value = row.get(key)
    if value is None and not required:
        return ""
    if value is None:
        raise BadRow(f"missing field {key!r}")
    if not isinstance(value, str):
        raise BadRow(f"field {key!r} must be a string, got {type(value).__name__}")
    n = len(value.strip())
    if n < rules.min_chars and (required or n):
        raise BadRow(f"field {key!r} is empty" if n == 0
                     else f"field {key!r} is shorter than {rules.min_chars} characters")
    if n > rules.max_chars:
        raise BadRow(f"field {key!r} is longer than validation.maxChars={rules.max_chars} ({n} characters)")
    return value


def checked_id(row: dict, key: str) -> str:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadRow(f"missing field {key!r}" if value is None else f"field {key!r} must be a string")
    if not str(value).strip():
        raise BadRow(f"field {key!r} is empty")
    return str(value)


def jsonl_rows(path: Path, name: str, issues: Issues) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank line that is a JSON object; the others are reported."""
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            issues.seen[name] += 1
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                issues.add(name, lineno, "not valid UTF-8")
                continue
            except json.JSONDecodeError as err:
                issues.add(name, lineno, f"not valid JSON ({err.msg} at column {err.colno})")
                continue
            if not isinstance(row, dict):
                issues.add(name, lineno, "not a JSON object")
                continue
            yield lineno, row


def display_name(path_as_written: str) -> str:
    """How a user file is named in messages: as the user wrote it, never as an absolute path."""
    path = Path(path_as_written)
    return path.name if path.is_absolute() else path_as_written


def resolve(path_as_written: str, base_dir: Path) -> Path:
    path = Path(path_as_written)
    return path if path.is_absolute() else base_dir / path


def content_id(prefix: str, text: str) -> str:
    return prefix + hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def seeded_unit(seed: int, key: str) -> float:
    """A number in [0, 1) fixed by seed and key: the same on every run and machine."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


# -- BEIR -----------------------------------------------------------------------------------


def read_beir(src: BeirSource, base_dir: Path, rules: ValidationSpec, issues: Issues) -> Source:
    folder = resolve(src.path, base_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"source.beir.path {display_name(src.path)!r} is not a folder")
    corpus, dup_docs = read_beir_corpus(folder / "corpus.jsonl", rules, issues)
    queries, dup_queries = read_beir_queries(folder / "queries.jsonl", rules, issues)
    train, dup_train = read_qrels(folder, src.train_split, queries, corpus, issues)
    test, dup_test = read_qrels(folder, src.test_split, queries, corpus, issues) if src.test_split else (None, 0)
    return Source(corpus=corpus, queries=queries, train_qrels=train, test_qrels=test,
                  duplicates=dup_docs + dup_queries + dup_train + dup_test)


def require_file(path: Path, name: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{name} not found in the BEIR folder")


def read_beir_corpus(path: Path, rules: ValidationSpec, issues: Issues) -> tuple[dict[str, Doc], int]:
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


def read_beir_queries(path: Path, rules: ValidationSpec, issues: Issues) -> tuple[dict[str, str], int]:
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
    with path.open(encoding="utf-8", errors="replace", newline="") as f:
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


# -- pairs (JSONL and Postgres) ---------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    query: str
    positive: str
    negatives: tuple[str, ...] = ()
    test: bool = False


def parse_pair(row: dict, rules: ValidationSpec, *, test: bool = False, query_key: str = "query",
               positive_key: str = "positive") -> Pair:
    query, positive = checked_text(row, query_key, rules), checked_text(row, positive_key, rules)
    negatives = row.get("negatives")
    if negatives is None:
        negatives = []
    if not isinstance(negatives, list):
        raise BadRow(f"field 'negatives' must be a list of strings, got {type(negatives).__name__}")
    checked = (checked_text({f"negatives[{i}]": n}, f"negatives[{i}]", rules) for i, n in enumerate(negatives))
    return Pair(query=query, positive=positive, negatives=tuple(checked), test=test)


def read_pairs_file(path_as_written: str, base_dir: Path, rules: ValidationSpec, issues: Issues,
                    *, test: bool) -> list[Pair]:
    path, name = resolve(path_as_written, base_dir), display_name(path_as_written)
    if not path.is_file():
        raise FileNotFoundError(f"pairs file {name!r} not found")
    pairs = []
    for lineno, row in jsonl_rows(path, name, issues):
        try:
            pairs.append(parse_pair(row, rules, test=test))
        except BadRow as err:
            issues.add(name, lineno, str(err))
    return pairs


def read_pairs(src: PairsSource, base_dir: Path, rules: ValidationSpec, issues: Issues) -> Source:
    pairs = read_pairs_file(src.path, base_dir, rules, issues, test=False)
    if src.test_path:
        pairs += read_pairs_file(src.test_path, base_dir, rules, issues, test=True)
    return pairs_to_source(pairs, has_test=bool(src.test_path))


def read_postgres(src: PostgresSource, dsn: str | None, rules: ValidationSpec, issues: Issues) -> Source:
    import psycopg
    from psycopg import sql

    if not dsn:
        raise ValueError("source.postgres needs a database connection, and none was given")
    name = f"{src.schema_name}.{src.table}"
    columns = [src.query_column, src.positive_column, *([src.split_column] if src.split_column else [])]
    query = sql.SQL("SELECT {} FROM {}.{}").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        sql.Identifier(src.schema_name),
        sql.Identifier(src.table),
    )
    try:
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(query).fetchall()
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn, psycopg.errors.InvalidSchemaName) as err:
        raise ValueError(f"source.postgres: {err.diag.message_primary}") from None
    # Tables have no row order; sorting makes the output (and the row numbers in reports) stable.
    rows.sort(key=lambda r: tuple("" if v is None else str(v) for v in r))
    pairs = []
    for n, values in enumerate(rows, 1):
        issues.seen[name] += 1
        row = {src.query_column: values[0], src.positive_column: values[1]}
        try:
            pairs.append(parse_pair(row, rules, test=bool(src.split_column) and values[2] == "test",
                                    query_key=src.query_column, positive_key=src.positive_column))
        except BadRow as err:
            issues.add(name, n, str(err))
    return pairs_to_source(pairs, has_test=bool(src.split_column))


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
    return Source(corpus=corpus, queries=queries, train_qrels=train, test_qrels=test if has_test else None,
                  given_negatives=negatives, duplicates=duplicates)


# -- split, pairs, mining ----------------------------------------------------------------------


def positives(qrels: Qrels) -> Qrels:
    """The judged-relevant (score > 0) documents of each query that has one."""
    kept = {q: {d: r for d, r in docs.items() if r > 0} for q, docs in qrels.items()}
    return {q: docs for q, docs in kept.items() if docs}


def split(source: Source, spec: SplitSpec) -> tuple[Qrels, Qrels]:
    """Train and test qrels with no query in both; test capped by maxTestQueries (a seeded sample)."""
    train = positives(source.train_qrels)
    if source.test_qrels is None:
        ranked = sorted(train, key=lambda q: (seeded_unit(spec.seed, q), q))
        n_test = min(max(round(spec.test_fraction * len(ranked)), 1), len(ranked) - 1)
        held_out = set(ranked[:n_test])
        test = {q: source.train_qrels[q] for q in ranked[:n_test]}
    else:
        test = {q: docs for q, docs in source.test_qrels.items() if q in positives(source.test_qrels)}
        held_out = set(test)
        if overlap := held_out & set(train):
            log.warning("%d queries are in both the train and the test split; they are used for testing only",
                        len(overlap))
    if spec.max_test_queries is not None and len(test) > spec.max_test_queries:
        kept = sorted(test, key=lambda q: (seeded_unit(spec.seed, q), q))[:spec.max_test_queries]
        test = {q: test[q] for q in sorted(kept)}
        if source.test_qrels is None:
            # Queries the cap leaves out of a derived test split are ordinary training data.
            held_out = set(kept)
    return {q: docs for q, docs in train.items() if q not in held_out}, test


def pair_candidates(source: Source, train: Qrels) -> list[Candidate]:
    return [
        Candidate(query=source.queries[q], positive_id=d, exclude=frozenset(docs), origin="pair",
                  given=tuple(n for n in source.given_negatives.get((q, d), ()) if n not in docs))
        for q, docs in train.items()
        for d in docs
    ]


def title_candidates(corpus: dict[str, Doc], augment: AugmentSpec, rules: ValidationSpec, seed: int) -> list[Candidate]:
    """(title -> text) pairs of titled documents; a seeded sample when capped."""
    if not augment.title_pairs:
        return []
    titled = [d for d in corpus.values() if rules.min_chars <= len(d.title.strip()) <= rules.max_chars]
    if augment.max_title_pairs is not None and len(titled) > augment.max_title_pairs:
        keep = set(sorted((d.id for d in titled), key=lambda i: (seeded_unit(seed, "title\0" + i), i))
                   [:augment.max_title_pairs])
        titled = [d for d in titled if d.id in keep]
    return [Candidate(query=d.title, positive_id=d.id, exclude=frozenset({d.id}), origin="title") for d in titled]


def mine(candidates: list[Candidate], corpus: dict[str, Doc], spec: HardNegativesSpec,
         base_dir: Path) -> list[tuple[str, ...]]:
    """Hard-negative doc ids for each candidate, in candidate order.

    Ranks are positions in the full ranking of the corpus for the query (positives included).
    A candidate is kept when it is not a positive of the query and scores at most
    (1 - relativeMargin) x the pair's positive, as it is then unlikely to be an unlabelled positive.
    """
    from embedops import modelzoo, retrieval

    model = modelzoo.load(spec.model, base_dir=base_dir)
    doc_ids = list(corpus)
    row_of = {d: i for i, d in enumerate(doc_ids)}
    docs_emb = retrieval.encode(model, [corpus[d].full_text for d in doc_ids], kind="document",
                                batch_size=spec.batch_size, description="Mining: encoding corpus")
    texts = list(dict.fromkeys(c.query for c in candidates))
    query_row = {t: i for i, t in enumerate(texts)}
    queries_emb = retrieval.encode(model, texts, kind="query", batch_size=spec.batch_size,
                                   description="Mining: encoding queries")
    scores, indices = retrieval.top_k(queries_emb, docs_emb, spec.range_max)
    q_rows = [query_row[c.query] for c in candidates]
    p_rows = [row_of[c.positive_id] for c in candidates]
    positive_scores = (queries_emb[q_rows] * docs_emb[p_rows]).sum(dim=1).tolist()
    mined = []
    with progress.task("Mining hard negatives", total=len(candidates)) as task:
        for c, q_row, pos_score in zip(candidates, q_rows, positive_scores, strict=True):
            ceiling = (1.0 - spec.relative_margin) * pos_score
            picks = list(c.given)
            for i, s in zip(indices[q_row, spec.range_min:].tolist(), scores[q_row, spec.range_min:].tolist(),
                            strict=True):
                if len(picks) >= spec.count:
                    break
                if s <= ceiling and doc_ids[i] not in c.exclude and doc_ids[i] not in picks:
                    picks.append(doc_ids[i])
            mined.append(tuple(picks))
            task.advance()
    return mined


def to_examples(candidates: list[Candidate], negatives: list[tuple[str, ...]],
                corpus: dict[str, Doc]) -> list[TrainExample]:
    # Within a title pair the positive has no title, so its negatives are shown without theirs too:
    # otherwise "has a title" alone would tell positives from negatives.
    def render(doc_id: str, origin: str) -> str:
        return corpus[doc_id].text if origin == "title" else corpus[doc_id].full_text

    return [
        TrainExample(query=c.query, positive=render(c.positive_id, c.origin),
                     negatives=tuple(render(n, c.origin) for n in negs), origin=c.origin)
        for c, negs in zip(candidates, negatives, strict=True)
    ]


# -- the step ------------------------------------------------------------------------------------


def read_source(config: Config, dsn: str | None, issues: Issues) -> Source:
    spec = config.spec
    if spec.source.beir is not None:
        return read_beir(spec.source.beir, config.base_dir, spec.validation, issues)
    if spec.source.pairs is not None:
        return read_pairs(spec.source.pairs, config.base_dir, spec.validation, issues)
    return read_postgres(spec.source.postgres, dsn, spec.validation, issues)


def require_some(source: Source, train: Qrels, test: Qrels) -> None:
    if not source.corpus:
        raise ValueError("no valid documents remain after validation")
    if not train:
        raise ValueError("no valid training pairs remain after validation and the split")
    if not test:
        raise ValueError("no held-out test queries: give a test split, or more queries to split from")


def run(config: Config, *, dsn: str | None = None) -> Result:
    spec = config.spec
    issues = Issues()
    source = read_source(config, dsn, issues)
    issues.check(spec.validation.max_invalid_fraction)
    train, test = split(source, spec.split)
    require_some(source, train, test)

    candidates = pair_candidates(source, train) + title_candidates(source.corpus, spec.augment, spec.validation,
                                                                   spec.split.seed)
    negatives = (mine(candidates, source.corpus, spec.hard_negatives, config.base_dir) if spec.hard_negatives.enabled
                 else [c.given for c in candidates])
    examples = to_examples(candidates, negatives, source.corpus)

    counts = DatasetCounts(
        corpus=len(source.corpus),
        train_pairs=len(examples),
        title_pairs=sum(e.origin == "title" for e in examples),
        train_queries=len(train),
        test_queries=len(test),
        invalid_rows=len(issues.rows),
        duplicates=source.duplicates,
        with_negatives=sum(bool(e.negatives) for e in examples),
    )
    prepared_at = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest = prepared.write_prepared(
        config.output_dir,
        corpus=source.corpus.values(),
        train=examples,
        test_queries={q: source.queries[q] for q in test},
        test_qrels=test,
        invalid_rows=issues.rows,
        counts=counts.model_dump(),
        source=spec.source.to_wire(),
        settings=spec.model_copy(update={"source": None}).to_wire(),
        created_at=prepared_at,
    )
    log.info("prepared %d training pairs (%d from titles), %d test queries, %d documents; %d invalid rows, "
             "%d duplicates", counts.train_pairs, counts.title_pairs, counts.test_queries, counts.corpus,
             counts.invalid_rows, counts.duplicates)
    return Result(counts=counts, fingerprint=manifest.fingerprint, location=str(config.output_dir),
                  invalid_samples=issues.samples(), prepared_at=prepared_at)
