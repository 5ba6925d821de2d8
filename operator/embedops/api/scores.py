"""Retrieval scores: the one type of every measurement of search quality embedops makes.

A FineTuneJob's base and tuned scores on held-out queries, a probe of an index version, and
the evaluation code behind both (embedops.evaluation) all produce a `RetrievalScores`, so a
score means the same thing, and has the same name, wherever it shows.
"""

from __future__ import annotations

from pydantic import Field

from embedops.api.common import ApiModel


class RetrievalScores(ApiModel):
    """Retrieval quality on held-out queries (BEIR's definitions: graded nDCG, binary MRR and recall)."""

    ndcg_at_10: float = Field(alias="ndcgAt10", description="nDCG@10.")
    mrr_at_10: float = Field(alias="mrrAt10", description="MRR@10.")
    recall_at_10: float | None = Field(default=None, alias="recallAt10", description="Recall@10, where measured.")
    recall_at_100: float | None = Field(default=None, alias="recallAt100", description="Recall@100, where measured.")
    k: int | None = Field(default=None, description="Depth of recall@k, where one was asked for (a probe's `k`).")
    recall_at_k: float | None = Field(default=None, alias="recallAtK", description="Recall@k.")
    queries: int = Field(description="Queries evaluated.")
