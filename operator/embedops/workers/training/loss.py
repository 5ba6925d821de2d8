"""The training loss a FineTuneJob's `loss` names: in-batch plus hard negatives, triplets, or guided (GIST).

Ranking losses treat every other positive in the batch as a negative, so their batches must not
hold a text twice (the trainer's no-duplicates sampler, `RANKING_LOSSES`). The GIST losses are
guided by a frozen model, by default a copy of the base model, to drop in-batch "negatives" that
are really positives. Any of them can be wrapped in MatryoshkaLoss, to train truncated embeddings too.
On several processes (DDP), the ranking losses gather the other processes' embeddings
(`gather_across_devices`), so that a query's negatives are the global batch, not its process's share.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, TypedDict, assert_never

from embedops import modelzoo
from embedops.api.finetune import GIST_LOSSES, LossSpec

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from torch import nn

RANKING_LOSSES = {"MultipleNegativesRankingLoss", "CachedMultipleNegativesRankingLoss", *GIST_LOSSES}


class GistArgs(TypedDict):
    """The GIST losses' arguments taken from the spec, typed per key as the arguments they are spread into."""

    temperature: float
    margin_strategy: Literal["absolute", "relative"]
    margin: float


def build_loss(
    model: SentenceTransformer,
    spec: LossSpec,
    guide: Callable[[], SentenceTransformer] | None = None,
    *,
    gather_across_devices: bool = False,
) -> nn.Module:
    """The loss; `guide` loads the GIST losses' guide model (by default a frozen copy of the base model);
    `gather_across_devices` shares the ranking losses' negatives across the training processes."""
    from sentence_transformers.sentence_transformer.losses import (
        CachedGISTEmbedLoss,
        CachedMultipleNegativesRankingLoss,
        GISTEmbedLoss,
        MultipleNegativesRankingLoss,
        TripletLoss,
    )

    def guide_model() -> SentenceTransformer:
        loaded = guide() if guide is not None else copy.deepcopy(model)
        return loaded.eval().requires_grad_(False)

    # The library's GIST default temperature, 0.01 (scale 100), made all-MiniLM-L6-v2 worse than its base on the
    # SciFact sample, where 1/scale (0.05) did not (docs/performance.md): one scale for every ranking loss.
    gist = GistArgs(temperature=1 / spec.scale, margin_strategy=spec.guide_margin_strategy, margin=spec.guide_margin)
    gather = gather_across_devices
    loss: nn.Module
    match spec.type:
        case "MultipleNegativesRankingLoss":
            loss = MultipleNegativesRankingLoss(model, scale=spec.scale, gather_across_devices=gather)
        case "CachedMultipleNegativesRankingLoss":
            loss = CachedMultipleNegativesRankingLoss(
                model, scale=spec.scale, mini_batch_size=spec.mini_batch_size, gather_across_devices=gather
            )
        case "GISTEmbedLoss":
            loss = GISTEmbedLoss(model, guide_model(), gather_across_devices=gather, **gist)
        case "CachedGISTEmbedLoss":
            loss = CachedGISTEmbedLoss(
                model, guide_model(), mini_batch_size=spec.mini_batch_size, gather_across_devices=gather, **gist
            )
        case "TripletLoss":
            loss = TripletLoss(model, triplet_margin=spec.triplet_margin)
        case _:
            assert_never(spec.type)
    return matryoshka(model, loss, spec.matryoshka_dims) if spec.matryoshka_dims else loss


def matryoshka(model: SentenceTransformer, loss: nn.Module, dims: list[int]) -> nn.Module:
    """The loss applied at each of `dims` leading dimensions too, none larger than the model's."""
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

    size = modelzoo.embedding_dimension(model)
    if too_big := [d for d in dims if d > size]:
        raise ValueError(f"loss.matryoshkaDims {too_big} exceed the model's {size} dimensions")
    return MatryoshkaLoss(model, loss, matryoshka_dims=sorted(set(dims), reverse=True))
