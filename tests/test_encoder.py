"""The embed worker's encoder gives encode_document's embeddings, in input order, on every path."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from embedops import modelzoo
from embedops.workers.encoder import Encoder

TEXTS = [("word " * n).strip() + f" #{n}" for n in (3, 120, 1, 40, 7, 300, 2, 64, 9, 15, 33)] + [""]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return modelzoo.load(str(tiny_model_dir), device="cpu")


@pytest.mark.parametrize("normalize", [True, False])
def test_same_embeddings_as_encode_document_in_input_order(model, normalize):
    encoder = Encoder(model, batch_size=4, normalize=normalize)
    assert encoder.fast and not encoder.bf16
    got = encoder.encode(TEXTS)
    want = model.encode_document(TEXTS, batch_size=4, normalize_embeddings=normalize, convert_to_numpy=True)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert encoder.encode([]).shape == (0, model.get_embedding_dimension())


def test_a_model_with_a_document_prompt_is_encoded_by_sentence_transformers(model, monkeypatch):
    monkeypatch.setattr(model, "prompts", {"query": "q: ", "document": "passage: "})
    encoder = Encoder(model, batch_size=4, normalize=True)
    assert not encoder.fast
    want = model.encode_document(TEXTS, batch_size=4, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(encoder.encode(TEXTS), want, rtol=0, atol=1e-6)


def test_bf16_is_refused_without_a_gpu(model):
    with pytest.raises(ValueError, match="bf16 needs a CUDA device"):
        Encoder(model, batch_size=4, normalize=True, precision="bf16")


def test_a_tokenizer_error_reaches_the_caller_and_stops_the_thread(model, monkeypatch):
    encoder = Encoder(model, batch_size=2, normalize=True)
    calls = []

    def broken(texts, *args, **kwargs):
        calls.append(len(texts))
        if len(calls) == 3:
            raise RuntimeError("tokenizer broke")
        return original(texts, *args, **kwargs)

    original = getattr(model, "preprocess", None) or model.tokenize
    monkeypatch.setattr(model, "preprocess" if hasattr(model, "preprocess") else "tokenize", broken)
    with pytest.raises(RuntimeError, match="tokenizer broke"):
        encoder.encode(TEXTS)
    assert not [t for t in threading.enumerate() if t.name == "embedops-tokenize"]
