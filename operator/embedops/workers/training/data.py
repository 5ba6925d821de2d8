"""The training dataset: prepared rows as (anchor, positive, negative_1..n) columns, grouped by negatives.

Mining keeps a different number of hard negatives for each query, and a dataset needs one column
count. Padding a row with made-up negatives would teach the model wrong pairs, dropping it would
waste data; so rows are grouped by how many negatives they use and every batch is drawn from one
group (a DatasetDict the trainer samples group by group).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from embedops.api.finetune import FineTuneJobSpec
from embedops.prepared import TrainExample

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict


def negative_groups(examples: list[TrainExample], cap: int, min_group: int) -> dict[int, list[TrainExample]]:
    """Examples grouped by how many negatives they will use (at most `cap`), every group but the last >= min_group.

    A group too small for a batch is merged into the next smaller one, its examples keeping only
    that many negatives.
    """
    by_count: dict[int, list[TrainExample]] = {}
    for e in examples:
        by_count.setdefault(min(len(e.negatives), cap), []).append(e)
    groups: dict[int, list[TrainExample]] = {}
    carried: list[TrainExample] = []
    counts = sorted(by_count, reverse=True)
    for i, n in enumerate(counts):
        members = carried + by_count[n]
        if len(members) < min_group and i + 1 < len(counts):
            carried = members
            continue
        groups[n], carried = members, []
    return groups


def to_columns(examples: list[TrainExample], n: int) -> dict[str, list[str]]:
    columns = {"anchor": [e.query for e in examples], "positive": [e.positive for e in examples]}
    for k in range(n):
        columns[f"negative_{k + 1}"] = [e.negatives[k] for e in examples]
    return columns


def negatives_cap(examples: list[TrainExample], spec: FineTuneJobSpec) -> tuple[list[TrainExample], int]:
    """The rows the loss can take and the most negatives a row keeps: what negativesPerPair and the loss allow."""
    cap = spec.training.negatives_per_pair if spec.training.negatives_per_pair is not None else 1 << 30
    if spec.loss.type == "TripletLoss":
        # TripletLoss takes exactly one negative: the first, the hardest that mining kept.
        examples = [e for e in examples if e.negatives]
        if not examples or cap == 0:
            raise ValueError(
                "loss TripletLoss needs hard negatives, and the prepared dataset has none for this job: enable "
                "hardNegatives on the EmbeddingDataset (or set training.negativesPerPair >= 1), or use "
                "MultipleNegativesRankingLoss"
            )
        cap = 1
    if spec.loss.type == "GISTEmbedLoss":
        cap = min(cap, 1)  # it takes (anchor, positive[, negative]); CachedGISTEmbedLoss takes several
    return examples, cap


def build_train_dataset(examples: list[TrainExample], spec: FineTuneJobSpec) -> tuple[Dataset | DatasetDict, int]:
    """The training dataset (anchor, positive, negative_1..n) and the number of rows in it."""
    from datasets import Dataset, DatasetDict

    examples, cap = negatives_cap(examples, spec)
    if not examples:
        raise ValueError("the prepared dataset has no training pairs")
    groups = negative_groups(examples, cap, spec.training.batch_size)
    datasets = {f"negatives_{n}": Dataset.from_dict(to_columns(members, n)) for n, members in sorted(groups.items())}
    dataset = next(iter(datasets.values())) if len(datasets) == 1 else DatasetDict(datasets)
    return dataset, len(examples)


def groups_of(dataset: Dataset | DatasetDict) -> list[Dataset]:
    from datasets import DatasetDict

    return list(dataset.values()) if isinstance(dataset, DatasetDict) else [dataset]


def steps_per_epoch(dataset: Dataset | DatasetDict, batch_size: int) -> int:
    """One step per batchSize rows of each group, as the trainer counts (a group's last batch may be smaller)."""
    return sum(math.ceil(len(group) / batch_size) for group in groups_of(dataset))
