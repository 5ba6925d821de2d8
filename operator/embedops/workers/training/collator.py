"""The trainer's collator on training texts tokenized once, in threads, before the first step.

A GPU trains MiniLM faster than one host thread tokenizes its batches: tokenizing inside the
training loop kept the GPU waiting at every step, and every epoch tokenized the same texts again.
So every distinct training text is tokenized up front by the fast tokenizer the encoder uses
(workers/tokenizer.py), and a step only pads ids into tensors. The collator is swapped in only
where its batches come out the same as the trainer's own, checked on a few rows of each group.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from embedops.workers import tokenizer as tokenizers
from embedops.workers.training.data import groups_of

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

PROBE_ROWS = 8  # rows of each group collated both ways before the pre-tokenized collator is trusted


class PretokenizedTexts:
    """The collator's `preprocess` for the training texts, from token ids computed once, in threads, before step one.

    Texts it has no ids for, a prompt or a max_length go to the model's own `preprocess`.
    """

    def __init__(self, tokenizer: tokenizers.FastTokenizer, texts: Iterable[str], preprocess: Callable, workers: int):
        import numpy as np

        unique = list(dict.fromkeys(texts))
        pieces = [unique[i : i + tokenizers.PIECE] for i in range(0, len(unique), tokenizers.PIECE)]
        with ThreadPoolExecutor(workers, thread_name_prefix="embedops-tokenize") as pool:
            tokenized = list(pool.map(tokenizer.ids, pieces))
        self._ids = {
            text: ids
            for piece, (tokens, lengths) in zip(pieces, tokenized, strict=True)
            for text, ids in zip(piece, np.split(tokens, np.cumsum(lengths)[:-1]), strict=True)
        }
        self._tokenizer, self._preprocess = tokenizer, preprocess

    def __len__(self) -> int:
        return len(self._ids)

    def __call__(self, inputs: list[str], prompt: str | None = None, **kwargs: Any) -> dict[str, Any]:
        import numpy as np

        if prompt or kwargs.get("max_length") is not None or not all(t in self._ids for t in inputs):
            return self._preprocess(inputs, prompt=prompt, **kwargs)
        rows = [self._ids[t] for t in inputs]
        # Not pinned here: the trainer's DataLoader pins batches (dataloader_pin_memory) on a GPU.
        return self._tokenizer.features(
            [(np.concatenate(rows), np.fromiter(map(len, rows), np.int64, len(rows)))], pin=False
        )


def same_batch(a: dict[str, Any], b: dict[str, Any]) -> bool:
    import torch

    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a
    )


def pretokenized_collator(collator: Any, model: SentenceTransformer, dataset: Dataset | DatasetDict) -> Any:
    """The trainer's collator on texts tokenized up front, where its batches come out the same; else the collator."""
    if (tokenizer := tokenizers.fast_tokenizer(model)) is None:
        return collator
    field = "preprocess_fn" if hasattr(collator, "preprocess_fn") else "tokenize_fn"  # sentence-transformers 6, 5
    groups = groups_of(dataset)
    texts = (text for group in groups for column in group.column_names for text in group[column])
    texts_ids = PretokenizedTexts(tokenizer, texts, getattr(collator, field), tokenizers.cpu_limit())
    fast = dataclasses.replace(collator, **{field: texts_ids})
    probes = [[group[i] for i in range(min(len(group), PROBE_ROWS))] for group in groups]
    if not all(same_batch(collator(rows), fast(rows)) for rows in probes):
        log.info("the model's batches differ from pre-tokenized ones: tokenizing at every step")
        return collator
    log.info("%d distinct training texts tokenized before the first step", len(texts_ids))
    return fast
