"""The loss a spec names, the GIST guide frozen, and Matryoshka sizes the model can give."""

from __future__ import annotations

import pytest

from embedops import modelzoo
from embedops.api.finetune import LossSpec
from embedops.prepared import PreparedDataset
from embedops.workers.training import data, loss
from tests.workers.test_train import job, synthetic_dataset


@pytest.fixture
def model(tiny_model_dir):
    return modelzoo.load(str(tiny_model_dir), device="cpu")


def test_an_unknown_loss_type_is_not_trained_as_another(model):
    with pytest.raises(AssertionError):
        loss.build_loss(model, LossSpec.model_construct(type="AngleLoss"))


def test_matryoshka_wraps_the_loss_at_each_size_largest_first(model):
    from sentence_transformers.losses import (
        MatryoshkaLoss,
        MultipleNegativesRankingLoss,
    )

    wrapped = loss.build_loss(model, LossSpec(matryoshkaDims=[8, 32, 16, 8]))
    assert isinstance(wrapped, MatryoshkaLoss) and isinstance(wrapped.loss, MultipleNegativesRankingLoss)
    assert list(wrapped.matryoshka_dims) == [32, 16, 8]
    with pytest.raises(ValueError, match=r"matryoshkaDims \[64\] exceed the model's 32 dimensions"):
        loss.build_loss(model, LossSpec(matryoshkaDims=[64, 16]))


def test_gist_losses_are_guided_by_a_frozen_copy_of_the_base_model_at_the_ranking_scale(
    tmp_path, tiny_model_dir, model
):
    import torch

    gist = loss.build_loss(model, LossSpec(type="GISTEmbedLoss", scale=25))
    assert gist.temperature == pytest.approx(0.04) and gist.guide is not model
    assert not any(p.requires_grad for p in gist.guide.parameters()) and not gist.guide.training
    assert all(
        torch.equal(a, b) for a, b in zip(gist.guide.state_dict().values(), model.state_dict().values(), strict=True)
    )
    cached = loss.build_loss(
        model,
        LossSpec(type="CachedGISTEmbedLoss", miniBatchSize=4),
        guide=lambda: modelzoo.load(str(tiny_model_dir), device="cpu"),
    )
    assert cached.mini_batch_size == 4 and cached.temperature == pytest.approx(0.05)
    # GISTEmbedLoss takes one hard negative a row, CachedGISTEmbedLoss all of them.
    examples = PreparedDataset(synthetic_dataset(tmp_path / "d", negatives=2)).train_examples()
    one, _ = data.build_train_dataset(examples, job(tiny_model_dir, loss={"type": "GISTEmbedLoss"}))
    both, _ = data.build_train_dataset(
        examples, job(tiny_model_dir, loss={"type": "CachedGISTEmbedLoss", "miniBatchSize": 4})
    )
    assert one.column_names == ["anchor", "positive", "negative_1"] and len(both.column_names) == 4
