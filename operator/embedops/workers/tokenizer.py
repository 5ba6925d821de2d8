"""A model's tokenizer reduced to token ids and numpy padding, for the encoder and the trainer's collator.

Both re-embedding and fine-tuning on a GPU wait on the host's tokenizing: transformers' tokenizer
call on one thread gives a MiniLM forward pass a fiftieth of the texts it could take
(docs/performance.md has the figures). So the Rust tokenizer is called directly
(`encode_batch_fast`: no character offsets, no per-token Python objects) on a private copy set up
as the model's own call sets it up, from a pool of threads (the Rust call releases the GIL) the
size of the CPUs this process may use, and padding is done with numpy. The copy is checked
against the model's `preprocess` on probe texts: a tokenizer that differs is not used, so the
result never depends on which path ran.
"""

from __future__ import annotations

import math
import os
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer import modules as st_models
from tokenizers import Tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

PIECE = 64  # texts per tokenizer call: a 512-text batch is tokenized by eight threads at once
_UNLIMITED = 1 << 20  # a tokenizer's model_max_length beyond this is transformers' "no limit" (1e30)
_PROBE = ["", "  Hello, World!  ", "ÉLAN vital: naïve façade, 東京 — résumé", "a b " * 600]
_NEEDED, _BUILT = {"input_ids", "attention_mask"}, {"input_ids", "attention_mask", "token_type_ids"}


def cpu_limit(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPUs this process may use: its affinity, capped by its cgroup v2 quota (a pod's CPU limit)."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text(encoding="ascii").split()
    except (OSError, ValueError):
        return cpus
    return cpus if quota == "max" else max(1, min(cpus, math.ceil(int(quota) / int(period))))


def plain_stack(model: SentenceTransformer) -> bool:
    """Transformer → Pooling (→ Normalize), with no document prompt: what the fast path reproduces exactly."""
    modules = list(model)
    prompted = (
        bool((getattr(model, "prompts", None) or {}).get("document"))
        or getattr(model, "default_prompt_name", None) is not None
    )
    return (
        not prompted
        and len(modules) in (2, 3)
        and isinstance(modules[0], st_models.Transformer)
        and isinstance(modules[1], st_models.Pooling)
        and (len(modules) == 2 or isinstance(modules[2], st_models.Normalize))
    )


def preprocess(model: SentenceTransformer, texts: list[str]) -> dict[str, Any]:
    """The model's own features for texts, as `encode_document` makes them."""
    # sentence-transformers 6 renamed tokenize to preprocess (the old name warns) and added tasks.
    if (own := getattr(model, "preprocess", None)) is not None:
        return own(texts, task="document")
    return model.tokenize(texts)


class FastTokenizer:
    """A model's tokenizer reduced to what encoding needs: token ids, then padded batches of them."""

    def __init__(self, model: SentenceTransformer):
        # torch types a module's attributes as Tensor | Module; fast_tokenizer makes these for fast ones.
        hf = cast("PreTrainedTokenizerFast", model[0].tokenizer)
        self._rust = Tokenizer.from_str(hf.backend_tokenizer.to_str())  # transformers re-configures its own per call
        if hf.model_max_length < _UNLIMITED:
            self._rust.enable_truncation(hf.model_max_length, strategy="longest_first", direction=hf.truncation_side)
        else:
            self._rust.no_truncation()
        self._rust.no_padding()
        self._pad_id, self._left = hf.pad_token_id, hf.padding_side == "left"
        want = preprocess(model, _PROBE)
        self._names = [k for k, v in want.items() if isinstance(v, torch.Tensor)]
        self._extras = {k: v for k, v in want.items() if not isinstance(v, torch.Tensor)}
        self.matches = _NEEDED <= set(self._names) <= _BUILT and all(
            torch.equal(got, want[k])
            for k, got in self.features([self.ids(_PROBE)], pin=False).items()
            if k in self._names
        )

    def ids(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The texts' token ids end to end, and each text's count. Thread-safe: the Rust call releases the GIL."""
        encodings = self._rust.encode_batch_fast(texts)
        return (
            np.fromiter(chain.from_iterable(e.ids for e in encodings), np.int64),
            np.fromiter(map(len, encodings), np.int64, len(encodings)),
        )

    def features(self, pieces: list[tuple[np.ndarray, np.ndarray]], *, pin: bool) -> dict[str, Any]:
        """One batch of model inputs from consecutive pieces of `ids`, padded as the model's tokenizer pads."""
        tokens, lengths = np.concatenate([t for t, _ in pieces]), np.concatenate([n for _, n in pieces])
        width = int(lengths.max())
        positions = np.arange(width)
        real = positions >= width - lengths[:, None] if self._left else positions < lengths[:, None]
        out = {k: torch.empty(real.shape, dtype=torch.int64, pin_memory=pin) for k in self._names}
        ids = out["input_ids"].numpy()
        ids.fill(self._pad_id)
        ids[real] = tokens
        np.copyto(out["attention_mask"].numpy(), real)
        if "token_type_ids" in out:
            out["token_type_ids"].zero_()
        return out | self._extras


def fast_tokenizer(model: SentenceTransformer) -> FastTokenizer | None:
    """The fast path's tokenizer where it reproduces the model's features exactly, else None."""
    if not plain_stack(model) or not getattr(model[0].tokenizer, "is_fast", False):
        return None
    tokenizer = FastTokenizer(model)
    return tokenizer if tokenizer.matches else None
