"""The training dataset: rows grouped by how many negatives they use, each group its own columns."""

from __future__ import annotations

import pytest

from embedops.prepared import PreparedDataset, TrainExample
from embedops.workers.training import data
from tests.workers.test_train import job, synthetic_dataset


def ex(n: int) -> TrainExample:
    return TrainExample(query="q", positive="p", negatives=tuple(f"n{k}" for k in range(n)))


def test_negative_groups_merge_small_groups_downwards():
    examples = [ex(3)] * 10 + [ex(2)] * 2 + [ex(1)] * 3 + [ex(0)] * 2
    groups = data.negative_groups(examples, cap=8, min_group=4)
    assert {n: len(g) for n, g in groups.items()} == {3: 10, 1: 5, 0: 2}
    assert {n: len(g) for n, g in data.negative_groups(examples, cap=1, min_group=4).items()} == {1: 15, 0: 2}
    columns = data.to_columns(groups[1], 1)
    assert list(columns) == ["anchor", "positive", "negative_1"] and len(columns["negative_1"]) == 5


def test_every_row_is_kept_in_a_group_whose_columns_it_fills(tmp_path, tiny_model_dir):
    examples = PreparedDataset(synthetic_dataset(tmp_path / "d", negatives=2, uneven=True)).train_examples()
    dataset, rows = data.build_train_dataset(examples, job(tiny_model_dir, batchSize=4))
    assert rows == 20 and sum(len(g) for g in data.groups_of(dataset)) == 20
    assert {name: len(group.column_names) for name, group in dataset.items()} == {
        "negatives_0": 2,
        "negatives_1": 3,
        "negatives_2": 4,
    }
    assert data.steps_per_epoch(dataset, 4) == 2 + 2 + 2  # 7, 7 and 6 rows


def test_negatives_per_pair_and_the_loss_cap_the_columns(tmp_path, tiny_model_dir):
    examples = PreparedDataset(synthetic_dataset(tmp_path / "d", negatives=3)).train_examples()
    one, _ = data.build_train_dataset(examples, job(tiny_model_dir, negativesPerPair=1))
    none, _ = data.build_train_dataset(examples, job(tiny_model_dir, negativesPerPair=0))
    triplets, _ = data.build_train_dataset(examples, job(tiny_model_dir, loss={"type": "TripletLoss"}))
    assert one.column_names == triplets.column_names == ["anchor", "positive", "negative_1"]
    assert none.column_names == ["anchor", "positive"]
    with pytest.raises(ValueError, match="TripletLoss needs hard negatives"):
        data.build_train_dataset(examples, job(tiny_model_dir, negativesPerPair=0, loss={"type": "TripletLoss"}))
    with pytest.raises(ValueError, match="no training pairs"):
        data.build_train_dataset([], job(tiny_model_dir))
