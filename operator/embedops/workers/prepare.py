"""The prepare worker: turn an EmbeddingDataset's source into the prepared-dataset folder.

The source is read and validated by `readers` (one module per source kind); this step does
what follows for every kind: the split, training pairs, hard-negative mining, and writing.
Mining is sentence-transformers' own (`util.mine_hard_negatives`); what embedops adds around it is
which positives a query has, given negatives first, and title pairs.
The result is deterministic (same input and spec, same fingerprint) so that unchanged data
is never trained on twice: the split is a seeded hash of query ids, samples are seeded,
and every output is written in a fixed order.
"""

from __future__ import annotations

import contextlib
import io
import logging
import random
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from embedops import prepared, progress, steps
from embedops.api import times
from embedops.api.dataset import (
    AugmentSpec,
    DatasetCounts,
    HardNegativesSpec,
    SplitSpec,
    ValidationSpec,
)
from embedops.prepared import Doc, TrainExample
from embedops.results import PrepareResult as Result
from embedops.workers import readers
from embedops.workers.generate import run as generation
from embedops.workers.generate.run import Generated
from embedops.workers.readers.rows import Issues, Qrels, Source, seeded_unit

log = logging.getLogger(__name__)


# -- the split ------------------------------------------------------------------------------------


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
            log.warning(
                "%d queries are in both the train and the test split; they are used for testing only", len(overlap)
            )
    if spec.max_test_queries is not None and len(test) > spec.max_test_queries:
        kept = sorted(test, key=lambda q: (seeded_unit(spec.seed, q), q))[: spec.max_test_queries]
        test = {q: test[q] for q in sorted(kept)}
        if source.test_qrels is None:
            # Queries the cap leaves out of a derived test split are ordinary training data.
            held_out = set(kept)
    return {q: docs for q, docs in train.items() if q not in held_out}, test


# -- training pairs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A training pair before mining: its query, positive document and the documents it must not get as negatives."""

    query: str
    positive_id: str
    exclude: frozenset[str]
    origin: str  # "pair" or "title"
    given: tuple[str, ...] = ()


def pair_candidates(source: Source, train: Qrels) -> list[Candidate]:
    return [
        Candidate(
            query=source.queries[q],
            positive_id=d,
            exclude=frozenset(docs),
            origin="pair",
            given=tuple(n for n in source.given_negatives.get((q, d), ()) if n not in docs),
        )
        for q, docs in train.items()
        for d in docs
    ]


def title_candidates(corpus: dict[str, Doc], augment: AugmentSpec, rules: ValidationSpec, seed: int) -> list[Candidate]:
    """(title -> text) pairs of titled documents; a seeded sample when capped."""
    if not augment.title_pairs:
        return []
    titled = [d for d in corpus.values() if rules.min_chars <= len(d.title.strip()) <= rules.max_chars]
    if augment.max_title_pairs is not None and len(titled) > augment.max_title_pairs:
        keep = set(
            sorted((d.id for d in titled), key=lambda i: (seeded_unit(seed, "title\0" + i), i))[
                : augment.max_title_pairs
            ]
        )
        titled = [d for d in titled if d.id in keep]
    return [Candidate(query=d.title, positive_id=d.id, exclude=frozenset({d.id}), origin="title") for d in titled]


# -- mining, then examples ------------------------------------------------------------------------


def mining_rows(candidates: list[Candidate], corpus: dict[str, Doc]) -> dict[str, list[str]]:
    """The (anchor, positive) rows `mine_hard_negatives` takes: every positive of each query, none twice.

    The library excludes from a query's candidates every positive that appears with it, and sets
    the margin by the lowest-scoring one; so a query gets all of its positives, not only the
    pair being mined.
    """
    positives: dict[str, dict[str, None]] = {}
    for c in candidates:
        texts = positives.setdefault(c.query, {})
        for doc_id in sorted(c.exclude):
            texts.setdefault(corpus[doc_id].full_text)
    return {
        "anchor": [q for q, texts in positives.items() for _ in texts],
        "positive": [t for texts in positives.values() for t in texts],
    }


@contextlib.contextmanager
def seeded_random(seed: int) -> Iterator[None]:
    """`random`'s global state seeded for the library's random sampling, and given back afterwards."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def mine(
    candidates: list[Candidate], corpus: dict[str, Doc], spec: HardNegativesSpec, base_dir: Path, seed: int
) -> list[tuple[str, ...]]:
    """Hard-negative doc ids for each candidate, in candidate order: its given negatives, then mined ones.

    The search and the sampling are `sentence_transformers.util.mine_hard_negatives` with the spec's
    settings, over the corpus as texts (documents with the same text are one candidate, and a
    document with a positive's text is a positive). Queries are encoded with the model's query
    prompt and documents with its document prompt, as the library does.
    """
    from datasets import Dataset
    from sentence_transformers import util

    from embedops import modelzoo

    model = modelzoo.load(spec.model, base_dir=base_dir)
    doc_of: dict[str, str] = {}
    for d in corpus.values():
        doc_of.setdefault(d.full_text, d.id)
    absolute, relative = spec.margins()
    report = io.StringIO()
    with (
        progress.task("Mining hard negatives", total=1) as task,
        seeded_random(seed),
        warnings.catch_warnings(),
        contextlib.redirect_stdout(report),
    ):  # the library prints its statistics; a worker's stdout is its result
        # Its statistics take the std of the scores found, which warns when a single negative was.
        warnings.filterwarnings("ignore", message=r"std\(\): degrees of freedom", category=UserWarning)
        mined = util.mine_hard_negatives(
            Dataset.from_dict(mining_rows(candidates, corpus)),
            model,
            corpus=list(doc_of),
            range_min=spec.range_min,
            range_max=spec.range_max,
            absolute_margin=absolute,
            relative_margin=relative,
            num_negatives=spec.count,
            sampling_strategy=spec.sampling_strategy,
            output_format="labeled-list",
            batch_size=spec.batch_size,
            verbose=True,
        )
        task.advance()
    for line in report.getvalue().splitlines():
        log.info("mining: %s", line)
    # labeled-list rows: (anchor, [positive, negatives...]); every row of a query has the same negatives.
    negatives: dict[str, tuple[str, ...]] = {}
    for anchor, texts in zip(mined["anchor"], mined["positive"], strict=True):
        negatives.setdefault(anchor, tuple(doc_of[t] for t in texts[1:]))
    picks = []
    for c in candidates:
        fill = [d for d in negatives.get(c.query, ()) if d not in c.given]
        picks.append((*c.given, *fill)[: max(spec.count, len(c.given))])
    return picks


def to_examples(
    candidates: list[Candidate], negatives: list[tuple[str, ...]], corpus: dict[str, Doc], output_format: str
) -> list[TrainExample]:
    """Training rows: one per pair (n-tuple), or one per (pair, negative) (triplet); a pair never disappears."""

    # Within a title pair the positive has no title, so its negatives are shown without theirs too:
    # otherwise "has a title" alone would tell positives from negatives.
    def render(doc_id: str, origin: str) -> str:
        return corpus[doc_id].text if origin == "title" else corpus[doc_id].full_text

    rows = []
    for c, negs in zip(candidates, negatives, strict=True):
        positive, shown = render(c.positive_id, c.origin), tuple(render(n, c.origin) for n in negs)
        groups = [(n,) for n in shown] if output_format == "triplet" and len(shown) > 1 else [shown]
        rows += [TrainExample(query=c.query, positive=positive, negatives=g, origin=c.origin) for g in groups]
    return rows


# -- the step -------------------------------------------------------------------------------------


def generated_candidates(generated: Generated | None) -> list[Candidate]:
    """Generated (query, document) pairs: trained on like title pairs, never chosen for validation."""
    if generated is None:
        return []
    return [Candidate(query=q, positive_id=d, exclude=frozenset({d}), origin="generated") for q, d in generated.train]


def validation_examples(generated: Generated | None, corpus: dict[str, Doc]) -> list[TrainExample]:
    """Held-out generated queries the train worker validates on (no labelled pairs were given)."""
    if generated is None:
        return []
    return [TrainExample(query=q, positive=corpus[d].full_text, origin="validation") for q, d in generated.validation]


def split_with(source: Source, spec: SplitSpec, generated: Generated | None) -> tuple[Qrels, Qrels]:
    """The labelled split; with nothing labelled, no labelled training queries and the generated test split."""
    if generated is not None and not positives(source.train_qrels) and source.test_qrels is None:
        source.queries |= generated.test_queries
        return {}, generated.test_qrels
    return split(source, spec)


def require_some(source: Source, train: Qrels, test: Qrels, generated: Generated | None = None) -> None:
    if not source.corpus:
        raise ValueError("no valid documents remain after validation")
    if not train and not (generated and generated.train):
        raise ValueError("no valid training pairs remain after validation and the split")
    if not test:
        raise ValueError("no held-out test queries: give a test split, or more queries to split from")


def run(config: steps.PrepareStep, *, dsn: str | None = None) -> Result:
    spec = config.spec
    issues = Issues()
    source = readers.read(
        spec.source,
        base_dir=config.base_dir,
        rules=spec.validation,
        issues=issues,
        dsn=dsn,
        corpus_only=spec.generate is not None,
        corpus_dir=config.corpus_dir,
    )
    issues.check(spec.validation.max_invalid_fraction)
    generated = (
        generation.run(spec, source, base_dir=config.base_dir, cache_dir=config.cache_dir, output_dir=config.output_dir)
        if spec.generate is not None
        else None
    )
    train, test = split_with(source, spec.split, generated)
    require_some(source, train, test, generated)

    candidates = (
        pair_candidates(source, train)
        + generated_candidates(generated)
        + title_candidates(source.corpus, spec.augment, spec.validation, spec.split.seed)
    )
    mining = spec.hard_negatives
    negatives = (
        mine(candidates, source.corpus, mining, config.base_dir, spec.split.seed)
        if mining.enabled
        else [c.given for c in candidates]
    )
    examples = to_examples(candidates, negatives, source.corpus, mining.output_format)
    examples += validation_examples(generated, source.corpus)

    counts = DatasetCounts(
        corpus=len(source.corpus),
        train_pairs=len(candidates),
        train_rows=len(examples),
        title_pairs=sum(c.origin == "title" for c in candidates),
        train_queries=len(train) + len({c.query for c in candidates if c.origin == "generated"}),
        test_queries=len(test),
        invalid_rows=len(issues.rows),
        duplicates=source.duplicates,
        with_negatives=sum(bool(n) for n in negatives),
    )
    prepared_at = times.now()
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
    log.info(
        "prepared %d training pairs (%d from titles) in %d rows, %d test queries, %d documents; "
        "%d invalid rows, %d duplicates",
        counts.train_pairs,
        counts.title_pairs,
        counts.train_rows,
        counts.test_queries,
        counts.corpus,
        counts.invalid_rows,
        counts.duplicates,
    )
    return Result(
        counts=counts,
        fingerprint=manifest.fingerprint,
        location=str(config.output_dir),
        invalid_samples=issues.samples(),
        prepared_at=prepared_at,
        generation=generated.counts if generated else None,
    )
