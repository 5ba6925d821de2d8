"""Exact search: chunked top-k equals a full sort, and search/evaluate rank identical texts first."""

from __future__ import annotations

import itertools

import pytest
import torch

from embedops import modelzoo, retrieval


def test_chunked_top_k_matches_a_full_sort(monkeypatch):
    monkeypatch.setattr(retrieval, "QUERY_CHUNK", 3)
    monkeypatch.setattr(retrieval, "CORPUS_CHUNK", 7)
    gen = torch.Generator().manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(10, 8, generator=gen), dim=1)
    corpus = torch.nn.functional.normalize(torch.randn(40, 8, generator=gen), dim=1)

    scores, indices = retrieval.top_k(queries, corpus, 5)

    full = queries @ corpus.T
    expected_scores, expected_indices = full.sort(dim=1, descending=True)
    assert torch.allclose(scores, expected_scores[:, :5])
    assert torch.equal(indices, expected_indices[:, :5])


def test_top_k_larger_than_the_corpus_returns_every_row():
    scores, indices = retrieval.top_k(torch.eye(2), torch.eye(2), 10)
    assert indices.tolist() == [[0, 1], [1, 0]]
    assert scores[:, 0].tolist() == [1.0, 1.0]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return modelzoo.load(str(tiny_model_dir), device="cpu")


def test_search_keeps_input_order_and_ranks_the_same_text_first(tiny):
    corpus = {f"d{i}": f"document number {i} about topic {'abcdefgh'[i]}" for i in range(8)}
    queries = {"q3": corpus["d3"], "q0": corpus["d0"]}

    hits = retrieval.search(tiny, queries, corpus, 3, batch_size=2)

    assert list(hits) == ["q3", "q0"]
    assert hits["q3"][0][0] == "d3" and hits["q3"][0][1] == pytest.approx(1.0, abs=1e-5)
    assert hits["q0"][0][0] == "d0"
    assert all(a[1] >= b[1] for a, b in itertools.pairwise(hits["q3"]))


def test_encode_is_independent_of_the_length_sorting(tiny):
    texts = ["short", "a much longer text than the others here", "medium length text"]
    together = retrieval.encode(tiny, texts, kind="document", batch_size=2)
    alone = torch.cat([retrieval.encode(tiny, [t], kind="document") for t in texts])
    assert torch.allclose(together, alone, atol=1e-5)
    assert torch.allclose(together.norm(dim=1), torch.ones(3), atol=1e-5)


def test_evaluate_scores_a_perfect_ranking(tiny):
    corpus = {f"d{i}": f"text {i} {'xyzuvw'[i]} words" for i in range(6)}
    queries = {f"q{i}": corpus[f"d{i}"] for i in range(3)}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(3)}

    scores = retrieval.evaluate(tiny, queries, corpus, qrels)

    assert scores.queries == 3
    assert scores.ndcg_at_10 == pytest.approx(1.0)
    assert scores.recall_at_100 == pytest.approx(1.0)
