"""Does an export embed as the PyTorch model does? Per-row cosine similarity on held-out texts.

An exported graph can differ from the model it came from: an operator exported differently, a
fusion that approximates (GELU in O3), weights in fp16 or int8, a runtime that computes in bf16.
Mean agreement hides the one text that goes wrong, so the check is on the worst row. The
export runs inside the model's own pipeline (its tokenizer, prompts, pooling, normalisation):
only the transformer's forward pass is swapped for the runtime's, as sentence-transformers'
ONNX and OpenVINO backends do, so what is compared is what an application would get.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

# input arrays by name (int64, batch x tokens) -> token embeddings (batch x tokens x width)
Runtime = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class Texts:
    """Held-out texts to compare on: queries (embedded with the query prompt) and documents."""

    queries: Sequence[str]
    documents: Sequence[str]

    def __len__(self) -> int:
        return len(self.queries) + len(self.documents)


@dataclass(frozen=True)
class HeldOut:
    """Held-out texts and the PyTorch model's embeddings of them: the reference every export is compared with."""

    texts: Texts
    reference: np.ndarray


def held_out(model: SentenceTransformer, texts: Texts, batch_size: int = 32) -> HeldOut:
    """`texts` embedded once by `model` as it is, for every export's comparison."""
    return HeldOut(texts, _embed(model, texts, batch_size))


@dataclass(frozen=True)
class Agreement:
    min_cosine: float
    mean_cosine: float
    rows: int


def agreement(model: SentenceTransformer, runtime: Runtime, held: HeldOut, batch_size: int = 32) -> Agreement:
    """Per-row cosine between `model`'s embeddings of the held-out texts and the same pipeline's with `runtime`
    inside."""
    with _forward_through(model, runtime):
        exported = _embed(model, held.texts, batch_size)
    cosines = np.sum(_unit(held.reference) * _unit(exported), axis=1)
    return Agreement(float(np.min(cosines)), float(np.mean(cosines)), len(cosines))


def _embed(model: SentenceTransformer, texts: Texts, batch_size: int) -> np.ndarray:
    parts = []
    if texts.queries:
        parts.append(model.encode_query(list(texts.queries), batch_size=batch_size, convert_to_numpy=True))
    if texts.documents:
        parts.append(model.encode_document(list(texts.documents), batch_size=batch_size, convert_to_numpy=True))
    return np.concatenate(parts).astype(np.float64)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


@contextlib.contextmanager
def _forward_through(model: SentenceTransformer, runtime: Runtime) -> Iterator[None]:
    """The model's first module (its transformer) computes its token embeddings with `runtime` meanwhile."""
    import torch

    transformer = model[0]

    def forward(features: dict[str, Any], **_: Any) -> dict[str, Any]:
        arrays = {k: v.detach().cpu().numpy().astype(np.int64) for k, v in features.items() if torch.is_tensor(v)}
        out = torch.from_numpy(np.asarray(runtime(arrays), dtype=np.float32))
        features["token_embeddings"] = out.to(features["input_ids"].device)
        return features

    transformer.forward = forward
    try:
        yield
    finally:
        del transformer.forward
