"""The published model folder serves as it is: sentence-transformers loads it, and it holds what TEI reads."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from embedops import modelzoo
from embedops.workers import servable

TEXTS = ["what causes fever", "a sentence about the weather", "ö unicode"]


@pytest.fixture
def published(tiny_model_dir, tmp_path):
    model = modelzoo.load(str(tiny_model_dir), device="cpu")
    model.prompts = {"query": "query: ", "document": ""}
    folder = tmp_path / "model"
    problems = servable.save(model, folder)
    return model, folder, problems


def test_the_folder_loads_in_sentence_transformers_and_encodes_as_the_model(published):
    from sentence_transformers import SentenceTransformer

    model, folder, _ = published
    loaded = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    assert np.allclose(loaded.encode_query(TEXTS), model.encode_query(TEXTS), atol=1e-6)
    assert np.allclose(loaded.encode_document(TEXTS), model.encode_document(TEXTS), atol=1e-6)
    assert loaded.prompts["query"] == "query: "


def test_the_folder_holds_what_tei_reads(published):
    _, folder, problems = published
    assert problems == []
    for name in servable.REQUIRED_FILES:
        assert (folder / name).is_file(), name
    assert (folder / "model.safetensors").is_file()
    assert not list(folder.rglob("*.bin"))
    assert not (folder / "README.md").exists()  # no model card: it would quote training rows
    # TEI parses module types by the library's historical names.
    types = [m["type"] for m in json.loads((folder / "modules.json").read_text())]
    assert types == [f"sentence_transformers.models.{n}" for n in ("Transformer", "Pooling", "Normalize")]
    pooling = json.loads((folder / "1_Pooling/config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] is True and pooling["word_embedding_dimension"] == 32
    assert not any(v for k, v in pooling.items() if k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens")
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["BertModel"] and config["max_position_embeddings"] == 512
    prompts = json.loads((folder / "config_sentence_transformers.json").read_text())["prompts"]
    assert prompts == {"query": "query: ", "document": ""}
    assert json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"] == 128


def test_the_fingerprint_is_of_the_weights_served(published, tmp_path):
    _, folder, _ = published
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert modelzoo.fingerprint(copy) == modelzoo.fingerprint(folder)
    assert modelzoo.fingerprint(folder).startswith("sha256:")


def test_a_folder_tei_cannot_serve_is_named(published):
    _, folder, _ = published
    (folder / "tokenizer.json").unlink()
    pooling = json.loads((folder / "1_Pooling/config.json").read_text())
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_max_tokens=True)
    (folder / "1_Pooling/config.json").write_text(json.dumps(pooling))
    modules = json.loads((folder / "modules.json").read_text())
    modules[2]["type"] = "mypackage.Whitening"
    (folder / "modules.json").write_text(json.dumps(modules))
    assert servable.tei_problems(folder) == [
        "tokenizer.json is missing",
        "1_Pooling/config.json sets neither CLS nor mean pooling",
        "modules.json: module '2_Normalize' is a mypackage.Whitening, which TEI does not know",
    ]


def test_a_slow_tokenizer_is_converted(tmp_path):
    """A base model with only a vocabulary (no tokenizer.json) is published with a fast tokenizer."""
    bundled = modelzoo.resolve("all-MiniLM-L6-v2")
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(bundled / name, tmp_path / name)
    servable._write_fast_tokenizer(tmp_path)
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode("what causes fever").ids
    assert ids[0] == 101 and ids[-1] == 102 and len(ids) == 5
