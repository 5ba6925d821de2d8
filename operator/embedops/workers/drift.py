"""The drift worker: has the corpus moved away from what the live version's embeddings describe?

A version's vectors were computed when it was built. Since then documents are edited, added
and removed, and a vector that no longer matches its text silently degrades search. This
worker compares two samples of the same embedding space (drift is only meaningful within one
model, so both come from the version's own model):

- reference: `sample_size` stored vectors of the version, drawn at random;
- current: the same ids' text as it is in the source now (`current: same_ids`, the default:
  it catches edited documents), or a fresh random sample of the source (`current: random`:
  it catches a corpus whose mix of topics has changed), embedded now with the model.

`drift_scores(reference, current)` computes, on two arrays of shape (rows, dimensions):

score
    The unbiased estimate of the squared maximum mean discrepancy (MMD², Gretton et al. 2012)
    with a Gaussian (RBF) kernel k(x, y) = exp(-‖x - y‖² / σ²):

        MMD²ᵤ = Σᵢ≠ⱼ k(xᵢ, xⱼ) / (m(m-1)) + Σᵢ≠ⱼ k(yᵢ, yⱼ) / (n(n-1)) - 2 Σᵢⱼ k(xᵢ, yⱼ) / (mn)

    σ² is the squared median of the Euclidean distances between reference and current rows
    (the median heuristic, over at most 1,000 rows of each side), as Evidently's embedding
    drift does, and the estimate is clipped at 0 (the unbiased estimate is slightly negative
    when the two samples come from one distribution). 0 means no detectable difference; the
    index is Degraded when it exceeds `threshold` (Evidently's default 0.015). At most 10,000
    rows of each side enter the kernel sums (a seeded subsample), which keeps the O(rows²)
    cost bounded.
centroid_distance
    Cosine distance (1 - cosine similarity) between the two samples' mean vectors: cheap,
    readable, and blind to changes that keep the mean.
drifted_components
    The share of dimensions whose one-dimensional Wasserstein (earth mover's) distance between
    reference and current values, divided by the reference values' standard deviation (at
    least 0.001), is 0.1 or more: Evidently's per-component "ratio" method (it calls the whole
    set drifted above a share of 0.2). With small samples, sampling noise alone moves a few
    components past 0.1.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedops import modelzoo, steps
from embedops.api import times
from embedops.api.index import DriftResult
from embedops.store import pgvector
from embedops.workers import documents

log = logging.getLogger(__name__)

BANDWIDTH_ROWS = 1000
MMD_ROWS = 10_000
COMPONENT_THRESHOLD = 0.1
_BLOCK = 2048


# -- statistics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftScores:
    score: float
    centroid_distance: float
    drifted_components: float


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def _kernel_sum(a: np.ndarray, b: np.ndarray, gamma: float) -> float:
    """Σ exp(-gamma ‖aᵢ - bⱼ‖²) over all pairs, in blocks so memory stays bounded."""
    total = 0.0
    for i in range(0, len(a), _BLOCK):
        for j in range(0, len(b), _BLOCK):
            total += float(np.exp(-gamma * _sq_distances(a[i : i + _BLOCK], b[j : j + _BLOCK])).sum())
    return total


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with an RBF kernel whose bandwidth is the median reference-current distance."""
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError("MMD needs at least two rows on each side")
    median = float(np.median(np.sqrt(_sq_distances(x[:BANDWIDTH_ROWS], y[:BANDWIDTH_ROWS]))))
    gamma = 1.0 / max(median * median, 1e-12)
    # k(x, x) = 1, so removing the diagonal removes m (or n) from the within-sample sums.
    within_x = (_kernel_sum(x, x, gamma) - m) / (m * (m - 1))
    within_y = (_kernel_sum(y, y, gamma) - n) / (n * (n - 1))
    between = _kernel_sum(x, y, gamma) / (m * n)
    return max(within_x + within_y - 2.0 * between, 0.0)


def wasserstein_1d(u: np.ndarray, v: np.ndarray) -> float:
    """Earth mover's distance between two 1-D empirical distributions: ∫ |F_u - F_v|."""
    u, v = np.sort(u), np.sort(v)
    points = np.sort(np.concatenate([u, v]))
    widths = np.diff(points)
    cdf_u = np.searchsorted(u, points[:-1], side="right") / len(u)
    cdf_v = np.searchsorted(v, points[:-1], side="right") / len(v)
    return float(np.sum(np.abs(cdf_u - cdf_v) * widths))


def drifted_share(reference: np.ndarray, current: np.ndarray, threshold: float = COMPONENT_THRESHOLD) -> float:
    drifted = 0
    for d in range(reference.shape[1]):
        norm = max(float(np.std(reference[:, d])), 0.001)
        if wasserstein_1d(reference[:, d], current[:, d]) / norm >= threshold:
            drifted += 1
    return drifted / reference.shape[1]


def centroid_distance(reference: np.ndarray, current: np.ndarray) -> float:
    a, b = reference.mean(0), current.mean(0)
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    # Clipped: rounding makes identical means come out a hair below zero.
    return max(0.0, 1.0 - float(a @ b) / denominator) if denominator > 0 else 0.0


def drift_scores(reference: np.ndarray, current: np.ndarray, *, seed: int = 0) -> DriftScores:
    """MMD², centroid cosine distance and share of drifted components of two samples (see the module docstring)."""
    reference = np.asarray(reference, dtype=np.float64)
    current = np.asarray(current, dtype=np.float64)
    if reference.ndim != 2 or current.ndim != 2 or reference.shape[1] != current.shape[1]:
        raise ValueError(f"samples must be 2-D with equal widths, got {reference.shape} and {current.shape}")
    rng = np.random.default_rng(seed)
    # Shuffled, so the bandwidth rows and any MMD subsample are random rows, not the first ones.
    x = reference[rng.permutation(len(reference))[:MMD_ROWS]]
    y = current[rng.permutation(len(current))[:MMD_ROWS]]
    return DriftScores(
        score=mmd2_unbiased(x, y),
        centroid_distance=centroid_distance(reference, current),
        drifted_components=drifted_share(reference, current),
    )


# -- samples ------------------------------------------------------------------------------------


def current_texts(config: steps.DriftStep, docs: documents.Documents, ids: list[Any], seed: str) -> list[str]:
    """The current sample's texts: the reference ids' text now (those still present), or a random sample."""
    if config.current == "same_ids":
        now = docs.texts(ids)
        return [now[i] for i in ids if i in now]
    return docs.sample(config.drift.sample_size, seed)


def run(config: steps.DriftStep, *, dsn: str | None = None) -> DriftResult:
    seed = str(config.seed) if config.seed is not None else secrets.token_hex(8)
    model = modelzoo.load(config.model, device=config.device, max_seq_length=config.embedding.max_seq_length)
    model_fingerprint = modelzoo.fingerprint(modelzoo.resolve(config.model))
    with pgvector.connect(dsn) as conn:
        rec = pgvector.version_record(conn, config.target, config.version)
        if rec.model_fingerprint and rec.model_fingerprint != model_fingerprint:
            raise ValueError(f"model {config.model!r} is not the model v{rec.version} was built with ({rec.model})")
        ids, reference = pgvector.sample_embeddings(conn, rec, config.drift.sample_size, seed)
        docs = documents.open_documents(config.source, conn=conn, dataset_dir=config.dataset_dir)
        texts = current_texts(config, docs, ids, seed + ":current")
    if len(reference) < 2 or len(texts) < 2:
        raise ValueError(
            f"{rec.schema}.{rec.table}: too few rows to measure drift ({len(reference)} stored, {len(texts)} current)"
        )
    from embedops.workers.encoder import Encoder  # torch: only where a pod measures

    # The same encoder, sequence length and precision as the embed worker, so that its arithmetic is
    # no part of the drift.
    current = Encoder(
        model,
        batch_size=config.embedding.batch_size,
        normalize=pgvector.normalizes(rec.metric),
        precision=config.embedding.precision,
    ).encode(texts)
    scores = drift_scores(reference, current)
    result = DriftResult(
        version=rec.version,
        score=round(scores.score, 6),
        centroid_distance=round(scores.centroid_distance, 6),
        drifted_components=round(scores.drifted_components, 4),
        reference_rows=len(reference),
        current_rows=len(current),
        drifted=scores.score > config.drift.threshold,
        checked_at=times.now(),
    )
    log.info(
        "drift of %s: MMD² %.4f (threshold %s), centroid distance %.4f, %.0f%% components drifted",
        rec.table,
        result.score,
        config.drift.threshold,
        result.centroid_distance,
        100 * result.drifted_components,
    )
    return result
