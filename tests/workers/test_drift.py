"""Drift: the statistics on synthetic samples, and the worker against a live version."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from embedops import steps
from embedops.store import pgvector
from embedops.workers import drift, embed


def gaussian(n: int, shift: float = 0.0, seed: int = 0, dims: int = 16) -> np.ndarray:
    # A non-zero mean, as real embeddings have, so centroid directions are meaningful.
    return np.random.default_rng(seed).normal(loc=1.0 + shift, size=(n, dims))


def test_same_distribution_scores_low():
    scores = drift.drift_scores(gaussian(400, seed=1), gaussian(400, seed=2))
    assert scores.score < 0.015
    assert scores.centroid_distance < 0.01


def test_a_shifted_distribution_scores_high():
    scores = drift.drift_scores(gaussian(400, seed=1), gaussian(400, shift=0.5, seed=2))
    assert scores.score > 0.05
    assert scores.drifted_components == 1.0


def test_identical_samples_score_zero():
    sample = gaussian(50)
    scores = drift.drift_scores(sample, sample)
    assert (scores.score, scores.centroid_distance, scores.drifted_components) == (0.0, 0.0, 0.0)


def test_score_grows_with_the_shift():
    reference = gaussian(300, seed=1)
    scores = [drift.drift_scores(reference, gaussian(300, shift=s, seed=2)).score for s in (0.0, 0.2, 0.5, 1.0)]
    assert scores == sorted(scores) and scores[-1] > 10 * max(scores[0], 1e-3)


def test_mmd_matches_the_quadratic_formula():
    x, y = gaussian(30, seed=3, dims=4), gaussian(20, shift=0.3, seed=4, dims=4)
    d_xy = ((x[:, None] - y[None]) ** 2).sum(-1)
    gamma = 1 / np.median(np.sqrt(d_xy)) ** 2
    k = lambda a, b: np.exp(-gamma * ((a[:, None] - b[None]) ** 2).sum(-1))  # noqa: E731
    kxx, kyy = k(x, x), k(y, y)
    expected = (kxx.sum() - 30) / (30 * 29) + (kyy.sum() - 20) / (20 * 19) - 2 * k(x, y).mean()
    assert drift.mmd2_unbiased(x, y) == pytest.approx(expected, rel=1e-9)


def test_wasserstein_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(5)
    u, v = rng.normal(size=137), rng.normal(0.3, 2.0, size=91)
    assert drift.wasserstein_1d(u, v) == pytest.approx(stats.wasserstein_distance(u, v), rel=1e-12)


def test_mismatched_widths_are_rejected():
    with pytest.raises(ValueError, match="equal widths"):
        drift.drift_scores(np.zeros((5, 3)), np.zeros((5, 4)))


TOPICS = [
    "weather forecast rain wind",
    "football match goal referee",
    "stock market shares bank",
    "recipe oven flour sugar",
    "guitar concert melody drums",
]


def test_the_worker_sees_no_drift_on_unchanged_text_and_drift_on_rewritten_text(dsn, tiny_model_dir):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.posts (id int PRIMARY KEY, text text)")
        for i in range(200):
            conn.execute("INSERT INTO public.posts VALUES (%s, %s)", (i, f"{TOPICS[i % 5]} item {i}"))
    target, source = {"name": "posts_index"}, {"table": {"table": "posts"}}
    built = embed.run(steps.EmbedStep(target=target, source=source, model=str(tiny_model_dir), device="cpu"), dsn=dsn)
    with pgvector.connect(dsn) as conn:
        pgvector.cutover(conn, steps.EmbedStep(target=target, source=source, model="m").target, built.version)
    config = steps.DriftStep(
        target=target, source=source, model=str(tiny_model_dir), drift={"sampleSize": 120}, seed=7, device="cpu"
    )

    unchanged = drift.run(config, dsn=dsn)
    assert (unchanged.version, unchanged.reference_rows, unchanged.current_rows) == (built.version, 120, 120)
    assert unchanged.score < 1e-6 and not unchanged.drifted and unchanged.centroid_distance < 1e-6

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE public.posts SET text = 'ancient history empire ' || id::text || ' war treaty dynasty'")
        conn.execute("DELETE FROM public.posts WHERE id < 20")
    rewritten = drift.run(config, dsn=dsn)
    assert rewritten.drifted and rewritten.score > 0.015
    assert rewritten.current_rows < 120 and rewritten.centroid_distance > unchanged.centroid_distance

    sampled = drift.run(config.model_copy(update={"current": "random"}), dsn=dsn)
    assert sampled.drifted and sampled.current_rows == 120


def test_drift_encodes_with_the_index_embedding_settings(dsn, tiny_model_dir, tmp_path, monkeypatch):
    """An index whose batch size was lowered to fit a small GPU must not run out of memory in drift."""
    from embedops.prepared import Doc, write_prepared
    from embedops.workers import encoder

    corpus = [Doc(id=f"d{i}", text=f"{TOPICS[i % 5]} note {i}") for i in range(60)]
    write_prepared(tmp_path / "ds", corpus=corpus, train=[], test_queries={}, test_qrels={})
    target, source = {"name": "notes_index"}, {"datasetRef": {"name": "ds"}}
    embedding = {"batchSize": 7, "maxSeqLength": 24}
    built = embed.run(
        steps.EmbedStep(
            target=target,
            source=source,
            dataset_dir=tmp_path / "ds",
            embedding=embedding,
            model=str(tiny_model_dir),
            device="cpu",
        ),
        dsn=dsn,
    )
    seen = []

    class Spy(encoder.Encoder):
        def __init__(self, model, **kwargs):
            seen.append((kwargs["batch_size"], model.max_seq_length))
            super().__init__(model, **kwargs)

    monkeypatch.setattr(encoder, "Encoder", Spy)
    config = steps.DriftStep(
        target=target,
        version=built.version,
        source=source,
        dataset_dir=tmp_path / "ds",
        model=str(tiny_model_dir),
        drift={"sampleSize": 40},
        embedding=embedding,
        seed=3,
        device="cpu",
    )
    unchanged = drift.run(config, dsn=dsn)
    assert seen == [(7, 24)]
    # The corpus as it was embedded: the same vectors, whichever sample is drawn.
    assert unchanged.current_rows == 40 and unchanged.score < 1e-6
    assert drift.run(config.model_copy(update={"current": "random"}), dsn=dsn).current_rows == 40
