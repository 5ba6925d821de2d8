"""The collator on texts tokenized up front gives the trainer's own batches, or is not used."""

from __future__ import annotations

import pytest
from sentence_transformers.sentence_transformer.data_collator import (
    SentenceTransformerDataCollator,
)

from embedops import modelzoo
from embedops.prepared import PreparedDataset
from embedops.workers import tokenizer
from embedops.workers.training import collator, data
from tests.workers.test_train import job, synthetic_dataset


@pytest.fixture
def model(tiny_model_dir):
    return modelzoo.load(str(tiny_model_dir), device="cpu", max_seq_length=32)


def test_steps_collate_from_texts_tokenized_up_front(tmp_path, tiny_model_dir, model):
    folder = synthetic_dataset(tmp_path / "dataset", negatives=2, uneven=True)
    dataset, _ = data.build_train_dataset(PreparedDataset(folder).train_examples(), job(tiny_model_dir, batchSize=4))
    calls = []

    def preprocess(inputs, **kwargs):
        calls.append(len(inputs))
        return model.preprocess(inputs, **kwargs)

    trainers = SentenceTransformerDataCollator(preprocess_fn=preprocess)
    fast = collator.pretokenized_collator(trainers, model, dataset)
    assert fast is not trainers
    for group in dataset.values():
        rows = [group[i] for i in range(len(group))]
        want = trainers(rows)
        calls.clear()
        assert collator.same_batch(fast(rows), want) and not calls, "collated from ids computed up front"
    assert fast.preprocess_fn(["a text never seen"])["input_ids"].shape[0] == 1 and calls == [1]


def test_each_distinct_text_is_tokenized_once_and_prompts_go_to_the_model(model):
    calls = []

    def preprocess(inputs, prompt=None, **kwargs):
        calls.append((len(inputs), prompt))
        return model.preprocess(inputs, prompt=prompt, **kwargs)

    texts = collator.PretokenizedTexts(
        tokenizer.fast_tokenizer(model), ["a", "b", "a", "c " * 40, "b"], preprocess, workers=2
    )
    assert len(texts) == 3
    got = texts(["c " * 40, "a"])
    assert not calls and got["input_ids"].shape == model.preprocess(["c " * 40, "a"])["input_ids"].shape
    texts(["a"], prompt="query: ")
    texts(["a"], max_length=4)
    assert calls == [(1, "query: "), (1, None)]


def test_a_tokenizer_the_fast_path_does_not_reproduce_keeps_the_trainers_collator(
    tmp_path, tiny_model_dir, model, monkeypatch
):
    monkeypatch.setattr(tokenizer, "fast_tokenizer", lambda model: None)
    trainers = SentenceTransformerDataCollator(preprocess_fn=model.preprocess)
    dataset, _ = data.build_train_dataset(
        PreparedDataset(synthetic_dataset(tmp_path / "d")).train_examples(), job(tiny_model_dir)
    )
    assert collator.pretokenized_collator(trainers, model, dataset) is trainers


def test_batches_that_differ_from_the_trainers_keep_the_trainers_collator(tmp_path, tiny_model_dir, model, monkeypatch):
    dataset, _ = data.build_train_dataset(
        PreparedDataset(synthetic_dataset(tmp_path / "d")).train_examples(), job(tiny_model_dir)
    )
    monkeypatch.setattr(collator, "same_batch", lambda a, b: False)
    trainers = SentenceTransformerDataCollator(preprocess_fn=model.preprocess)
    assert collator.pretokenized_collator(trainers, model, dataset) is trainers
