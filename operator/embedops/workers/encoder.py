"""Document encoding for the embed worker: `SentenceTransformer.encode_document`'s result, faster.

What it changes, and why (docs/performance.md has the measurements):

- Tokenizing runs in a background thread, a few batches ahead of the model, so the device does
  not wait for the host between batches (the fast tokenizer releases the GIL).
- Texts are ordered by length before batching, so a batch carries little padding; results come
  back in input order.
- On CUDA the forward pass runs under bf16 autocast where the GPU supports it (`precision:
  auto`), with pinned host memory and non-blocking copies. On CPU it stays float32.

Only the plain module stack (Transformer, Pooling, optional Normalize) without prompts takes
this path; any other model is encoded by `encode_document` itself, so the result never depends
on which path ran.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers import models as st_models

Precision = Literal["auto", "fp32", "bf16"]
_PREFETCH = 4  # tokenized batches waiting for the model


def use_bf16(model: SentenceTransformer, precision: Precision) -> bool:
    if precision == "fp32":
        return False
    on_cuda = model.device.type == "cuda"
    if precision == "bf16":
        if not on_cuda:
            raise ValueError("precision bf16 needs a CUDA device (CPUs here compute it slower than float32)")
        return True
    return on_cuda and torch.cuda.is_bf16_supported()


def plain_stack(model: SentenceTransformer) -> bool:
    """Transformer → Pooling (→ Normalize), with no document prompt: what the fast path reproduces exactly."""
    modules = list(model)
    prompted = bool((getattr(model, "prompts", None) or {}).get("document")) or getattr(
        model, "default_prompt_name", None) is not None
    return (not prompted and len(modules) in (2, 3)
            and isinstance(modules[0], st_models.Transformer) and isinstance(modules[1], st_models.Pooling)
            and (len(modules) == 2 or isinstance(modules[2], st_models.Normalize)))


class Encoder:
    """Embeds lists of documents with one model; create once per worker run."""

    def __init__(self, model: SentenceTransformer, *, batch_size: int, normalize: bool,
                 precision: Precision = "auto"):
        self.model = model
        self.batch_size = batch_size
        self.normalize = normalize
        self.bf16 = use_bf16(model, precision)
        self.fast = plain_stack(model)

    def encode(self, texts: list[str]) -> np.ndarray:
        """float32 embeddings, one row per text, in input order."""
        if not texts:
            return np.zeros((0, self.model.get_embedding_dimension()), np.float32)
        if not self.fast:
            return self.model.encode_document(texts, batch_size=self.batch_size, normalize_embeddings=self.normalize,
                                              convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.model.get_embedding_dimension()), np.float32)
        device = self.model.device
        autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=self.bf16)
        with torch.inference_mode(), autocast:
            for rows, features in self._tokenized(texts, order):
                features = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                            for k, v in features.items()}
                embeddings = self.model.forward(features)["sentence_embedding"].float()
                if self.normalize:
                    embeddings = torch.nn.functional.normalize(embeddings, p=2, dim=1)
                out[rows] = embeddings.cpu().numpy()
        return out

    def _tokenized(self, texts: list[str], order: np.ndarray) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
        """(input rows, tokenized batch) in length order, tokenized by a thread ahead of the caller."""
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        pin = self.model.device.type == "cuda"
        # sentence-transformers 6 renamed tokenize to preprocess (the old name warns).
        tokenize = getattr(self.model, "preprocess", None) or self.model.tokenize
        ready: queue.Queue = queue.Queue(maxsize=_PREFETCH)
        stop = threading.Event()

        def produce() -> None:
            try:
                for rows in batches:
                    features = tokenize([texts[i] for i in rows])
                    if pin:
                        features = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v
                                    for k, v in features.items()}
                    while not stop.is_set():
                        try:
                            ready.put((rows, features), timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                ready.put(None)
            except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
                ready.put(err)

        thread = threading.Thread(target=produce, name="embedops-tokenize", daemon=True)
        thread.start()
        try:
            while (item := ready.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join()
