"""Validation queries: whole queries held out, seeded; a large corpus sampled keeping what decides the ranking."""

from __future__ import annotations

from embedops import modelzoo, retrieval
from embedops.api.finetune import ValidationSplitSpec
from embedops.prepared import Doc, TrainExample
from embedops.workers.training import validation
from tests.workers.test_train import TOPICS


def test_validation_holds_out_whole_queries_never_title_pairs_and_is_seeded():
    corpus = {d.id: d for d in [Doc("d0", "zero"), Doc("d0-copy", "zero"), Doc("d1", "one", "One"), Doc("d2", "two")]}
    rows = [
        TrainExample(f"query {i}", corpus[f"d{i % 3}"].full_text, (f"neg {k}",)) for i in range(10) for k in range(3)
    ]
    rows += [TrainExample("One", "one", ("two",), origin="title")]
    spec = ValidationSplitSpec(fraction=0.2)

    kept, held_out = validation.carve_validation(rows, corpus, spec, seed=7)
    assert len(held_out.queries) == 2 and len(kept) == len(rows) - 2 * 3
    held = set(held_out.queries.values())
    assert not held & {e.query for e in kept} and any(e.origin == "title" for e in kept)
    for q, text in held_out.queries.items():
        i = int(text.split()[1])
        # Positives are found by their text: documents with the same text are all relevant.
        assert held_out.qrels[q] == ({"d0": 1, "d0-copy": 1} if i % 3 == 0 else {f"d{i % 3}": 1})
    assert held_out.corpus == {d.id: d.full_text for d in corpus.values()}
    assert validation.carve_validation(rows, corpus, spec, seed=7) == (kept, held_out)
    assert set(validation.carve_validation(rows, corpus, spec, seed=8)[1].queries.values()) != held
    assert validation.carve_validation(rows, corpus, ValidationSplitSpec(fraction=0), seed=7) == (rows, None)
    few = [e for e in rows if e.query in ("query 1", "query 2")]  # 0.2 of two queries holds none out
    assert validation.carve_validation(few, corpus, spec, seed=7) == (few, None)
    capped = ValidationSplitSpec(fraction=0.9, maxQueries=3)
    assert len(validation.carve_validation(rows, corpus, capped, 7)[1].queries) == 3


def test_a_large_corpus_is_sampled_for_validation_keeping_what_decides_the_ranking(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(validation, "VALIDATION_DEPTH", 5)
    model = modelzoo.load(str(tiny_model_dir), device="cpu", max_seq_length=32)
    corpus = {f"d{i}": f"notes on {t} and related {t} findings" for i, t in enumerate(TOPICS)}
    held_out = validation.ValidationSet(
        queries={"v0": "what is known about jazz?"}, qrels={"v0": {"d4": 1}}, corpus=corpus
    )
    assert validation.sample_validation_corpus(model, held_out, 30, seed=1, batch_size=8) is held_out
    sampled = validation.sample_validation_corpus(model, held_out, 12, seed=1, batch_size=8)
    top = [d for d, _ in retrieval.search(model, held_out.queries, corpus, 5)["v0"]]
    assert "d4" in sampled.corpus and set(top) <= set(sampled.corpus) and len(sampled.corpus) == 12
    assert sampled.queries == held_out.queries and sampled.qrels == held_out.qrels
    assert validation.sample_validation_corpus(model, held_out, 12, seed=1, batch_size=8) == sampled
    assert validation.sample_validation_corpus(model, held_out, 12, seed=2, batch_size=8) != sampled


def test_the_evaluator_reports_the_metric_the_trainer_keeps_the_best_checkpoint_by(tiny_model_dir):
    model = modelzoo.load(str(tiny_model_dir), device="cpu", max_seq_length=32)
    held_out = validation.ValidationSet(
        queries={"v0": "what is known about jazz?"},
        qrels={"v0": {"d4": 1}},
        corpus={f"d{i}": f"notes on {t}" for i, t in enumerate(TOPICS[:8])},
    )
    evaluator = validation.validation_evaluator(held_out, batch_size=4)
    scores = evaluator(model)
    assert f"eval_{evaluator.primary_metric}" == validation.BEST_METRIC and evaluator.primary_metric in scores
    assert scores[evaluator.primary_metric] == validation.score_validation(model, held_out, 4).ndcg_at_10
