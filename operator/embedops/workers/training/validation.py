"""The queries a fine-tuned model is scored on: validation queries choose the checkpoint, test queries report it.

A FineTuneJob is only worth publishing if it beats its base model on the domain's own queries, and
a checkpoint chosen on the test queries would report a score it was picked for. So a seeded
sample of the training queries is held out as a validation set, every checkpoint is scored on it
(the trainer's evaluator), and the test split is only reported: base and published model scored
the same way, by exact search over the whole corpus (`score`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from embedops import retrieval
from embedops.api.finetune import EvaluationSpec, ValidationSplitSpec
from embedops.api.scores import RetrievalScores
from embedops.prepared import Doc, PreparedDataset, TrainExample

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

# The evaluator's primary metric; the trainer prefixes it with "eval_" in its logs and best_metric.
PRIMARY_METRIC = "validation_ndcg@10"
# The metric the trainer keeps the best checkpoint by.
BEST_METRIC = f"eval_{PRIMARY_METRIC}"
# Depth of the base model's ranking kept when a large corpus is sampled for validation.
VALIDATION_DEPTH = 50


@dataclasses.dataclass(frozen=True)
class ValidationSet:
    """Training queries held out for checkpoint selection, their positives and the documents searched."""

    queries: dict[str, str]  # id -> text
    qrels: dict[str, dict[str, int]]  # id -> doc id -> 1
    corpus: dict[str, str]  # doc id -> full text


def _seeded_order(seed: int, keys: Iterable[str]) -> list[str]:
    return sorted(keys, key=lambda k: (hashlib.sha256(f"{seed}\0{k}".encode()).hexdigest(), k))


def carve_validation(
    examples: list[TrainExample], corpus: dict[str, Doc], spec: ValidationSplitSpec, seed: int
) -> tuple[list[TrainExample], ValidationSet | None]:
    """Training rows without the held-out queries, and those queries with their positives (by text, as rows hold them).

    A seeded sample of the queries of the (query, positive) rows; title pairs always stay in training.
    None when the fraction is 0 or there are too few queries to hold one out and still train on one.
    """
    if any(e.origin == "validation" for e in examples):
        return held_out_validation(examples, corpus)
    pair_queries = sorted({e.query for e in examples if e.origin == "pair"})
    n = min(spec.max_queries, round(spec.fraction * len(pair_queries)))
    if spec.fraction > 0 and (n < 1 or n >= len(pair_queries)):
        log.warning(
            "validation off: %d training queries are too few to hold %.0f%% out", len(pair_queries), 100 * spec.fraction
        )
    if n < 1 or n >= len(pair_queries):
        return examples, None
    held = _seeded_order(seed, pair_queries)[:n]
    query_id = {text: f"v{i}" for i, text in enumerate(held)}
    ids_of: dict[str, list[str]] = {}
    for d in corpus.values():
        ids_of.setdefault(d.full_text, []).append(d.id)
    qrels: dict[str, dict[str, int]] = {}
    for e in examples:
        if e.origin == "pair" and e.query in query_id:
            qrels.setdefault(query_id[e.query], {}).update(dict.fromkeys(ids_of.get(e.positive, ()), 1))
    queries = {q: text for text, q in query_id.items() if qrels.get(q)}
    rows = [e for e in examples if e.origin != "pair" or e.query not in query_id]
    documents = {d.id: d.full_text for d in corpus.values()}
    return rows, ValidationSet(queries=queries, qrels={q: qrels[q] for q in queries}, corpus=documents)


def held_out_validation(
    examples: list[TrainExample], corpus: dict[str, Doc]
) -> tuple[list[TrainExample], ValidationSet | None]:
    """The validation queries a prepared dataset holds out itself (generated ones, which skipped the round-trip
    filter so the gate is not biased toward the base model): never trained on."""
    ids_of: dict[str, list[str]] = {}
    for d in corpus.values():
        ids_of.setdefault(d.full_text, []).append(d.id)
    query_id: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for e in examples:
        if e.origin == "validation":
            q = query_id.setdefault(e.query, f"v{len(query_id)}")
            qrels.setdefault(q, {}).update(dict.fromkeys(ids_of.get(e.positive, ()), 1))
    queries = {q: text for text, q in query_id.items() if qrels.get(q)}
    rows = [e for e in examples if e.origin != "validation"]
    documents = {d.id: d.full_text for d in corpus.values()}
    return rows, ValidationSet(queries=queries, qrels={q: qrels[q] for q in queries}, corpus=documents)


def sample_validation_corpus(
    model: SentenceTransformer, validation: ValidationSet, max_corpus: int, seed: int, batch_size: int
) -> ValidationSet:
    """The validation set searched over at most max_corpus documents (when the corpus is larger).

    Every positive and the base model's top VALIDATION_DEPTH of each validation query are kept (the
    documents that decide nDCG@10), then a seeded random sample fills up to max_corpus.
    """
    corpus = validation.corpus
    if len(corpus) <= max_corpus:
        return validation
    ranking = retrieval.search(model, validation.queries, corpus, VALIDATION_DEPTH, batch_size=batch_size)
    keep = dict.fromkeys(d for docs in validation.qrels.values() for d in docs)
    keep.update(dict.fromkeys(d for hits in ranking.values() for d, _ in hits))
    for d in _seeded_order(seed, corpus):
        if len(keep) >= max_corpus:
            break
        keep.setdefault(d)
    log.info("validation searches %d of the corpus's %d documents", len(keep), len(corpus))
    return dataclasses.replace(validation, corpus={d: corpus[d] for d in sorted(keep)})


def score(
    model: SentenceTransformer, queries: dict[str, str], corpus: dict[str, str], qrels: dict, batch_size: int
) -> RetrievalScores:
    return retrieval.evaluate(model, queries, corpus, qrels, batch_size=batch_size)


def score_validation(model: SentenceTransformer, validation: ValidationSet, batch_size: int) -> RetrievalScores:
    return score(model, validation.queries, validation.corpus, validation.qrels, batch_size)


def validation_evaluator(validation: ValidationSet, batch_size: int) -> Any:
    """A sentence-transformers evaluator the trainer runs at every checkpoint: nDCG@10 on the validation set."""
    from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

    class ValidationEvaluator(SentenceEvaluator):
        def __init__(self) -> None:
            super().__init__()
            self.primary_metric = PRIMARY_METRIC

        # The base class takes any sentence-transformers model; the trainer of a SentenceTransformer passes its own.
        def __call__(  # type: ignore[override]
            self, model: SentenceTransformer, output_path: str | None = None, epoch: float = -1, steps: int = -1
        ) -> dict[str, float]:
            m = score_validation(model, validation, batch_size)
            scores = {PRIMARY_METRIC: m.ndcg_at_10, "validation_mrr@10": m.mrr_at_10}
            if m.recall_at_10 is not None:  # retrieval.evaluate measures it; the type allows its absence
                scores["validation_recall@10"] = m.recall_at_10
            return scores

    return ValidationEvaluator()


def held_out_evaluator(
    data: PreparedDataset, spec: EvaluationSpec, seed: int
) -> Callable[[SentenceTransformer], RetrievalScores]:
    """Scores a model by exact search over the whole corpus for the test queries (a seeded sample when capped)."""
    corpus = {d.id: d.full_text for d in data.corpus().values()}
    queries, qrels = data.test_queries(), data.test_qrels()
    if spec.max_queries is not None and len(qrels) > spec.max_queries:
        ranked = sorted(qrels, key=lambda q: hashlib.sha256(f"{seed}\0{q}".encode()).hexdigest())
        qrels = {q: qrels[q] for q in ranked[: spec.max_queries]}

    def evaluate(model: SentenceTransformer) -> RetrievalScores:
        return score(model, queries, corpus, qrels, spec.batch_size)

    return evaluate
