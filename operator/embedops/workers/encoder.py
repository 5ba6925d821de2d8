"""Document encoding for the embed and drift workers: `encode_document`'s embeddings, at the device's speed.

On a GPU the host, not the model, bounds re-embedding: transformers' tokenizer call on one thread
gives a MiniLM forward pass a fiftieth of the documents it could take (docs/performance.md has the
figures). So the host work is cut down and spread out:

- Tokenizing calls the Rust tokenizer directly (`encode_batch_fast`: no character offsets, no
  per-token Python objects) on a private copy set up as the model's own call sets it up; padding is
  done with numpy. The copy is checked against the model's `preprocess` on probe texts when an
  encoder is made: a tokenizer that differs sends the model to `encode_document` itself.
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
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import chain, islice
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers import models as st_models
from tokenizers import Tokenizer

from embedops.api.index import Precision

Workers = int | Literal["auto"]

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


def preprocess(model: SentenceTransformer, texts: list[str]) -> dict[str, Any]:
    """The model's own features for texts, as `encode_document` makes them."""
    # sentence-transformers 6 renamed tokenize to preprocess (the old name warns) and added tasks.
    if (own := getattr(model, "preprocess", None)) is not None:
        return own(texts, task="document")
    return model.tokenize(texts)


def bf16_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of module with bfloat16 weights, made without a second float32 copy on the device."""
    cast = {id(p): torch.nn.Parameter(p.detach().to(torch.bfloat16), requires_grad=False) for p in module.parameters()}
    cast |= {id(b): b.to(torch.bfloat16) for b in module.buffers() if b.is_floating_point()}
    return copy.deepcopy(module, memo=cast)


class FastTokenizer:
    """A model's tokenizer reduced to what encoding needs: token ids, then padded batches of them."""

    def __init__(self, model: SentenceTransformer):
        hf = model[0].tokenizer
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
            torch.equal(got, want[k]) for k, got in self.features([self.ids(_PROBE)], pin=False).items()
            if k in self._names)

    def ids(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The texts' token ids end to end, and each text's count. Thread-safe: the Rust call releases the GIL."""
        encodings = self._rust.encode_batch_fast(texts)
        return (np.fromiter(chain.from_iterable(e.ids for e in encodings), np.int64),
                np.fromiter(map(len, encodings), np.int64, len(encodings)))

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


class Encoder:
    """Embeds lists of documents with one model; create once per worker run."""

    def __init__(self, model: SentenceTransformer, *, batch_size: int, normalize: bool,
                 precision: Precision = "auto", workers: Workers = "auto"):
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
            return np.zeros((0, self.model.get_embedding_dimension()), np.float32)
        if (tokenizer := self._tokenizer) is None:
            return self.model.encode_document(texts, batch_size=self.batch_size, normalize_embeddings=self.normalize,
                                              convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        by_length = torch.empty((len(texts), self.model.get_embedding_dimension()), dtype=torch.float32,
                                pin_memory=self._cuda)
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="embedops-tokenize")
        try:
            with torch.inference_mode():
                done = 0
                for features in self._batches(tokenizer, [texts[i] for i in order], pool):
                    embeddings = self.forward({k: v.to(self.model.device, non_blocking=True)
                                               if isinstance(v, torch.Tensor) else v for k, v in features.items()})
                    by_length[done:done + len(embeddings)].copy_(embeddings, non_blocking=True)
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

    def _batches(self, tokenizer: FastTokenizer, texts: list[str],
                 pool: ThreadPoolExecutor) -> Iterator[dict[str, Any]]:
        """Model inputs of texts, `batch_size` at a time, tokenized in pieces by the pool a few batches ahead."""
        bounds = [(lo, min(lo + self.batch_size, len(texts))) for lo in range(0, len(texts), self.batch_size)]
        futures = (pool.submit(tokenizer.ids, texts[p:min(p + PIECE, hi)])
                   for lo, hi in bounds for p in range(lo, hi, PIECE))
        window = deque(islice(futures, max(2 * self.workers, 2 * math.ceil(self.batch_size / PIECE))))
        for lo, hi in bounds:
            pieces = []
            for _ in range(lo, hi, PIECE):
                pieces.append(window.popleft().result())
                window.extend(islice(futures, 1))
            yield tokenizer.features(pieces, pin=self._cuda)
