"""The embed worker's encoder gives encode_document's embeddings, in input order, on every path."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import torch

from embedops import modelzoo
from embedops.workers import encoder as encoder_module
from embedops.workers.encoder import Encoder, FastTokenizer, bf16_copy, cpu_limit

TEXTS = [("word " * n).strip() + f" #{n}" for n in (3, 120, 1, 40, 7, 300, 2, 64, 9, 15, 33)] + [""]
# More texts than a tokenizer piece, so one batch is collated from several pieces.
MANY = [f"Document {i}: " + " ".join(f"w{(i * 7 + k) % 97}" for k in range(i % 50)) for i in range(150)]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return modelzoo.load(str(tiny_model_dir), device="cpu")


def encode_document(model, texts, normalize=True, batch_size=4):
    return model.encode_document(texts, batch_size=batch_size, normalize_embeddings=normalize, convert_to_numpy=True)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("workers", [1, 3])
def test_same_embeddings_as_encode_document_in_input_order(model, normalize, workers):
    encoder = Encoder(model, batch_size=4, normalize=normalize, workers=workers)
    assert encoder.fast and not encoder.bf16
    got = encoder.encode(TEXTS)
    want = encode_document(model, TEXTS, normalize)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert encoder.encode([]).shape == (0, model.get_embedding_dimension())


def test_batches_larger_than_a_tokenizer_piece(model):
    assert len(MANY) > 2 * encoder_module.PIECE
    got = Encoder(model, batch_size=100, normalize=True, workers=2).encode(MANY)
    np.testing.assert_allclose(got, encode_document(model, MANY), rtol=0, atol=1e-6)


def test_the_bundled_minilm_at_256_tokens_within_1e_5():
    minilm = modelzoo.load("all-MiniLM-L6-v2", device="cpu", max_seq_length=256)
    texts = TEXTS + MANY[::10]
    got = Encoder(minilm, batch_size=5, normalize=True, workers=2).encode(texts)
    assert np.abs(got - encode_document(minilm, texts, batch_size=5)).max() <= 1e-5


def test_a_tokenizer_that_pads_on_the_left_is_reproduced(tiny_model_dir):
    left = modelzoo.load(str(tiny_model_dir), device="cpu")
    left[0].tokenizer.padding_side = "left"
    encoder = Encoder(left, batch_size=4, normalize=True)
    assert encoder.fast
    np.testing.assert_allclose(encoder.encode(TEXTS), encode_document(left, TEXTS), rtol=0, atol=1e-6)


def test_a_tokenizer_the_fast_path_does_not_reproduce_is_left_to_sentence_transformers(model, monkeypatch):
    original = FastTokenizer.ids

    def shifted(self, texts):
        ids, lengths = original(self, texts)
        return ids + 1, lengths

    monkeypatch.setattr(FastTokenizer, "ids", shifted)
    encoder = Encoder(model, batch_size=4, normalize=True)
    assert not encoder.fast
    np.testing.assert_allclose(encoder.encode(TEXTS), encode_document(model, TEXTS), rtol=0, atol=1e-6)


def test_a_model_with_a_document_prompt_is_encoded_by_sentence_transformers(model, monkeypatch):
    monkeypatch.setattr(model, "prompts", {"query": "q: ", "document": "passage: "})
    encoder = Encoder(model, batch_size=4, normalize=True)
    assert not encoder.fast
    np.testing.assert_allclose(encoder.encode(TEXTS), encode_document(model, TEXTS), rtol=0, atol=1e-6)


def test_bf16_is_refused_without_a_gpu(model):
    with pytest.raises(ValueError, match="bf16 needs a CUDA device"):
        Encoder(model, batch_size=4, normalize=True, precision="bf16")


def test_a_tokenizer_error_reaches_the_caller_and_stops_the_threads(model, monkeypatch):
    encoder = Encoder(model, batch_size=2, normalize=True, workers=2)
    calls = []
    original = FastTokenizer.ids

    def broken(self, texts):
        calls.append(len(texts))
        if len(calls) == 3:
            raise RuntimeError("tokenizer broke")
        return original(self, texts)

    monkeypatch.setattr(FastTokenizer, "ids", broken)
    with pytest.raises(RuntimeError, match="tokenizer broke"):
        encoder.encode(TEXTS)
    assert not [t for t in threading.enumerate() if t.name.startswith("embedops-tokenize")]


def test_workers_default_to_the_cpus_this_process_may_use(model, tmp_path):
    assert Encoder(model, batch_size=4, normalize=True).workers == cpu_limit()
    affinity = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    assert cpu_limit(tmp_path / "missing") == affinity
    cpu_max.write_text("max 100000\n")
    assert cpu_limit(cpu_max) == affinity
    cpu_max.write_text("150000 100000\n")  # a pod limit of 1.5 CPUs: two threads
    assert cpu_limit(cpu_max) == min(2, affinity)
    cpu_max.write_text("50000 100000\n")
    assert cpu_limit(cpu_max) == 1


def test_the_bf16_copy_leaves_the_model_alone(model):
    copied = bf16_copy(model[0])
    assert {p.dtype for p in copied.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model[0].parameters()} == {torch.float32}


@pytest.mark.gpu
def test_on_a_gpu_fp32_is_exact_and_bf16_keeps_every_row_within_cosine_0_999():
    minilm = modelzoo.load("all-MiniLM-L6-v2", device="cuda", max_seq_length=256)
    texts = TEXTS + MANY
    want = encode_document(minilm, texts, batch_size=64)
    fp32 = Encoder(minilm, batch_size=64, normalize=True, precision="fp32").encode(texts)
    assert np.abs(fp32 - want).max() <= 1e-5
    bf16 = Encoder(minilm, batch_size=64, normalize=True, precision="bf16").encode(texts)
    assert (bf16 * want).sum(axis=1).min() >= 0.999
