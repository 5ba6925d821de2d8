"""Exact (brute-force) dense retrieval: the ground truth that mining, evaluation and benchmarks share.

Approximate indexes are measured against this, and hard negatives are mined with it, so it
must be exact and must not depend on a database: embeddings are L2-normalised and ranked by
cosine with a chunked matrix product, keeping a running top-k so memory stays bounded by
the chunk sizes rather than by queries x corpus.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import torch

from embedops import evaluation, progress
from embedops.api.scores import RetrievalScores

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

# Texts per model.encode call: large enough to keep the device busy, small enough for progress lines.
ENCODE_BLOCK = 1024
# Queries x corpus rows scored at once: 1024 x 65536 float32 scores are 256 MiB.
QUERY_CHUNK = 1024
CORPUS_CHUNK = 65536

Ranking = dict[str, list[tuple[str, float]]]  # query id -> [(doc id, cosine)], best first


def encode(
    model: SentenceTransformer,
    texts: Sequence[str],
    *,
    kind: Literal["query", "document"],
    batch_size: int = 64,
    description: str | None = None,
) -> torch.Tensor:
    """Unit-length embeddings of `texts`, in input order, on the model's device.

    Queries and documents go through encode_query/encode_document so that models with
    query/document prompts (e5, bge) are used the way they were trained.
    """
    # Encoding the longest texts together keeps padding low across blocks, not only within one.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    fn = model.encode_query if kind == "query" else model.encode_document
    blocks = []
    with progress.task(description or f"Encoding {kind}s", total=len(texts)) as task:
        for start in range(0, len(order), ENCODE_BLOCK):
            block = [texts[i] for i in order[start : start + ENCODE_BLOCK]]
            blocks.append(
                fn(
                    block,
                    batch_size=batch_size,
                    convert_to_tensor=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )
            )
            task.advance(len(block))
    if not blocks:
        return torch.empty(0, 0)
    embeddings = torch.cat(blocks).float()
    restored = torch.empty_like(embeddings)
    restored[torch.tensor(order, device=embeddings.device)] = embeddings
    return restored


def top_k(queries: torch.Tensor, corpus: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and corpus row indices of the k best rows for each query row (dot product, best first)."""
    k = min(k, corpus.shape[0])
    all_scores, all_indices = [], []
    for q in range(0, queries.shape[0], QUERY_CHUNK):
        q_emb = queries[q : q + QUERY_CHUNK]
        best_scores = torch.empty(q_emb.shape[0], 0, device=q_emb.device)
        best_indices = torch.empty(q_emb.shape[0], 0, dtype=torch.long, device=q_emb.device)
        for c in range(0, corpus.shape[0], CORPUS_CHUNK):
            scores = q_emb @ corpus[c : c + CORPUS_CHUNK].to(q_emb.device).T
            s, i = scores.topk(min(k, scores.shape[1]), dim=1)
            merged_s, pos = torch.cat([best_scores, s], dim=1).topk(min(k, best_scores.shape[1] + s.shape[1]), dim=1)
            best_indices = torch.cat([best_indices, i + c], dim=1).gather(1, pos)
            best_scores = merged_s
        all_scores.append(best_scores.cpu())
        all_indices.append(best_indices.cpu())
    if not all_scores:
        return torch.empty(0, k), torch.empty(0, k, dtype=torch.long)
    return torch.cat(all_scores), torch.cat(all_indices)


def search(
    model: SentenceTransformer,
    queries: Mapping[str, str],
    corpus: Mapping[str, str],
    k: int,
    *,
    batch_size: int = 64,
) -> Ranking:
    """The k most similar documents of `corpus` (id -> text) for each query (id -> text)."""
    doc_ids, query_ids = list(corpus), list(queries)
    corpus_emb = encode(
        model, [corpus[d] for d in doc_ids], kind="document", batch_size=batch_size, description="Encoding corpus"
    )
    query_emb = encode(
        model, [queries[q] for q in query_ids], kind="query", batch_size=batch_size, description="Encoding queries"
    )
    scores, indices = top_k(query_emb, corpus_emb, k)
    return {
        qid: [(doc_ids[i], s) for i, s in zip(indices[row].tolist(), scores[row].tolist(), strict=True)]
        for row, qid in enumerate(query_ids)
    }


def evaluate(
    model: SentenceTransformer,
    queries: Mapping[str, str],
    corpus: Mapping[str, str],
    qrels: evaluation.Qrels,
    *,
    batch_size: int = 64,
) -> RetrievalScores:
    """nDCG@10, MRR@10 and Recall@10/100 of exact search over the whole corpus for the judged queries."""
    judged = {q: queries[q] for q in qrels if q in queries}
    ranking = search(model, judged, corpus, 100, batch_size=batch_size)
    return evaluation.score({q: [d for d, _ in hits] for q, hits in ranking.items()}, qrels)
