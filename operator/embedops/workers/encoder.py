"""Document encoding for the embed and drift workers: `encode_document`'s embeddings, at the device's speed.

On a GPU the host, not the model, bounds re-embedding: transformers' tokenizer call on one thread
gives a MiniLM forward pass a fiftieth of the documents it could take (docs/performance.md has the
figures). So the host work is cut down and spread out:

- Tokenizing calls the Rust tokenizer directly and pads with numpy (workers/tokenizer.py, shared
  with the trainer's collator). Its output is checked against the model's `preprocess` on probe
  texts when an encoder is made: a tokenizer that differs sends the model to `encode_document` itself.
- It runs in a pool of threads (the Rust call releases the GIL), in pieces of `PIECE` texts so that
  one batch spreads over every thread, a few batches ahead of the model. The pool's size is the
  CPUs this process may use (affinity, capped by the cgroup's quota: a pod's CPU limit), whatever
  TOKENIZERS_PARALLELISM says.
- Texts are ordered by length before batching, so a batch carries little padding; results come
  back in input order.
- On CUDA the transformer runs on a bf16 copy of its weights where the GPU supports it
  (`precision: auto`; pooling and normalization stay float32), batches are collated straight into
  pinned memory and copied without blocking, and embeddings come back into pinned memory the same
  way: the host waits for the device once per `encode` call, not once per batch. The copies are
  about 1 MB a batch, under 1 % of the forward pass's time, so they share its stream. On CPU it
  stays float32.

Only the plain module stack (Transformer, Pooling, optional Normalize) without a document prompt
takes this path; any other model is encoded by `encode_document` itself, so the result never
depends on which path ran.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Any, Literal

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from embedops import modelzoo
from embedops.api.index import Precision
from embedops.workers.tokenizer import PIECE, FastTokenizer, cpu_limit, fast_tokenizer

Workers = int | Literal["auto"]


def use_bf16(model: SentenceTransformer, precision: Precision) -> bool:
    if precision == "fp32":
        return False
    on_cuda = model.device.type == "cuda"
    if precision == "bf16":
        if not on_cuda:
            raise ValueError("precision bf16 needs a CUDA device (CPUs here compute it slower than float32)")
        return True
    return on_cuda and torch.cuda.is_bf16_supported()


def bf16_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of module with bfloat16 weights, made without a second float32 copy on the device."""
    # deepcopy takes these in place of the originals: Parameters and buffers alike are tensors.
    cast: dict[int, torch.Tensor] = {
        id(p): torch.nn.Parameter(p.detach().to(torch.bfloat16), requires_grad=False) for p in module.parameters()
    }
    cast |= {id(b): b.to(torch.bfloat16) for b in module.buffers() if b.is_floating_point()}
    return copy.deepcopy(module, memo=cast)


class Encoder:
    """Embeds lists of documents with one model; create once per worker run."""

    def __init__(
        self,
        model: SentenceTransformer,
        *,
        batch_size: int,
        normalize: bool,
        precision: Precision = "auto",
        workers: Workers = "auto",
    ):
        self.model = model
        self.batch_size = batch_size
        self.normalize = normalize
        self.workers = cpu_limit() if workers == "auto" else workers
        self.bf16 = use_bf16(model, precision)
        self._tokenizer = fast_tokenizer(model)
        self._cuda = model.device.type == "cuda"
        self._transformer = bf16_copy(model[0]) if self.fast and self.bf16 else model[0]
        self._tail = list(model)[1:]

    @property
    def fast(self) -> bool:
        """Whether this model takes the fast path (otherwise `encode_document` encodes)."""
        return self._tokenizer is not None

    def encode(self, texts: list[str]) -> np.ndarray:
        """float32 embeddings, one row per text, in input order."""
        if not texts:
            return np.zeros((0, modelzoo.embedding_dimension(self.model)), np.float32)
        if (tokenizer := self._tokenizer) is None:
            return self.model.encode_document(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=self.normalize,
                convert_to_numpy=True,
                show_progress_bar=False,
            ).astype(np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        by_length = torch.empty(
            (len(texts), modelzoo.embedding_dimension(self.model)), dtype=torch.float32, pin_memory=self._cuda
        )
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="embedops-tokenize")
        try:
            with torch.inference_mode():
                done = 0
                for features in self._batches(tokenizer, [texts[i] for i in order], pool):
                    embeddings = self.forward(
                        {
                            k: v.to(self.model.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                            for k, v in features.items()
                        }
                    )
                    by_length[done : done + len(embeddings)].copy_(embeddings, non_blocking=True)
                    done += len(embeddings)
        finally:
            pool.shutdown(cancel_futures=True)
        if self._cuda:
            torch.cuda.current_stream(self.model.device).synchronize()
        out = np.empty(by_length.shape, np.float32)
        out[order] = by_length.numpy()
        return out

    def forward(self, features: dict[str, Any]) -> torch.Tensor:
        """float32 sentence embeddings, on the device, of one tokenized batch already there."""
        features = self._transformer(features)
        features["token_embeddings"] = features["token_embeddings"].float()
        for module in self._tail:
            features = module(features)
        embeddings = features["sentence_embedding"]
        return torch.nn.functional.normalize(embeddings, p=2, dim=1) if self.normalize else embeddings

    def _batches(
        self, tokenizer: FastTokenizer, texts: list[str], pool: ThreadPoolExecutor
    ) -> Iterator[dict[str, Any]]:
        """Model inputs of texts, `batch_size` at a time, tokenized in pieces by the pool a few batches ahead."""
        bounds = [(lo, min(lo + self.batch_size, len(texts))) for lo in range(0, len(texts), self.batch_size)]
        futures = (
            pool.submit(tokenizer.ids, texts[p : min(p + PIECE, hi)]) for lo, hi in bounds for p in range(lo, hi, PIECE)
        )
        window = deque(islice(futures, max(2 * self.workers, 2 * math.ceil(self.batch_size / PIECE))))
        for lo, hi in bounds:
            pieces = []
            for _ in range(lo, hi, PIECE):
                pieces.append(window.popleft().result())
                window.extend(islice(futures, 1))
            yield tokenizer.features(pieces, pin=self._cuda)
