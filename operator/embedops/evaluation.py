"""Retrieval metrics (nDCG@10, MRR@10, Recall@k) shared by training evaluation and probes.

Definitions follow BEIR/pytrec_eval: graded relevance for nDCG (gain = relevance,
log2 discount), binary relevance (> 0) for MRR and recall; recall@k divides by the
number of relevant documents of the query. Queries without relevant documents are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from embedops.api.scores import RetrievalScores

Qrels = Mapping[str, Mapping[str, int]]  # query id -> doc id -> relevance
Run = Mapping[str, Sequence[str]]  # query id -> ranked doc ids


def ndcg_at(ranked: Sequence[str], rels: Mapping[str, int], k: int = 10) -> float:
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mrr_at(ranked: Sequence[str], rels: Mapping[str, int], k: int = 10) -> float:
    for i, d in enumerate(ranked[:k]):
        if rels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def recall_at(ranked: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    relevant = {d for d, r in rels.items() if r > 0}
    return len(relevant.intersection(ranked[:k])) / len(relevant) if relevant else 0.0


def score(run: Run, qrels: Qrels, *, depths: Sequence[int] = (10, 100), k: int | None = None) -> RetrievalScores:
    """Mean metrics over the queries of `qrels` that have a relevant document (missing runs score 0): nDCG@10,
    MRR@10, recall at each of `depths` (10 and 100 are the ones RetrievalScores holds) and at `k` if given."""
    qids = [q for q, rels in qrels.items() if any(r > 0 for r in rels.values())]
    if not qids:
        raise ValueError("no query has a relevant document")
    n = len(qids)

    def recall(depth: int) -> float:
        return sum(recall_at(run.get(q, ()), qrels[q], depth) for q in qids) / n

    return RetrievalScores(
        ndcg_at_10=sum(ndcg_at(run.get(q, ()), qrels[q]) for q in qids) / n,
        mrr_at_10=sum(mrr_at(run.get(q, ()), qrels[q]) for q in qids) / n,
        recall_at_10=recall(10) if 10 in depths else None,
        recall_at_100=recall(100) if 100 in depths else None,
        k=k,
        recall_at_k=recall(k) if k is not None else None,
        queries=n,
    )
