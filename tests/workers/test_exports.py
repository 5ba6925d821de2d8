"""spec.export: ONNX and OpenVINO copies of the published model, each checked against the PyTorch model."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from embedops import modelzoo
from embedops.api.finetune import EXPORT_BOUNDS, ExportSpec
from embedops.workers import exports, servable

onnxruntime = pytest.importorskip("onnxruntime", reason="spec.export.onnx needs the `onnx` extra (embedops[onnx])")

TEXTS = exports.Texts(
    queries=["what causes fever", "how do glaciers move", "ö unicode and a rather longer query about many things"],
    documents=["Fever is a rise in body temperature. " * 8, "Glaciers flow under their own weight.", "short"],
)


@pytest.fixture
def published(tiny_model_dir, tmp_path):
    model = modelzoo.load(str(tiny_model_dir), device="cpu")
    model.prompts = {"query": "query: ", "document": ""}
    folder = tmp_path / "model"
    servable.save(model, folder)
    return model, folder


def export(model, folder, **spec):
    return exports.run(model, folder, ExportSpec.model_validate(spec), TEXTS)


def mean_pooled(session, model, texts: list[str]) -> np.ndarray:
    """The ONNX graph's token embeddings mean-pooled and normalised by hand, outside embedops' parity check."""
    encoded = model[0].tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="np")
    feeds = {i.name: encoded[i.name].astype(np.int64) for i in session.get_inputs()}
    tokens = session.run(["last_hidden_state"], feeds)[0]
    mask = encoded["attention_mask"][..., None]
    pooled = (tokens * mask).sum(axis=1) / mask.sum(axis=1)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def test_fp32_optimised_and_int8_onnx_files_embed_as_the_model(published):
    model, folder = published
    found = export(model, folder, onnx={"optimization": "O2", "quantize": "int8"})

    assert [(e.format, e.variant, e.file) for e in found] == [
        ("onnx", "fp32", "onnx/model.onnx"),
        ("onnx", "O2", "onnx/model_O2.onnx"),
        ("onnx", "int8", "onnx/model_qint8.onnx"),
    ]
    for e in found:
        assert (folder / e.file).is_file()
        assert e.texts == 6 and e.bound == EXPORT_BOUNDS[(e.format, e.variant)]
        assert e.bound <= e.min_cosine <= e.mean_cosine <= 1 + 1e-6
    # Each file, run by ONNX Runtime alone, embeds documents as the PyTorch model does (no prompt on documents).
    docs = list(TEXTS.documents)
    reference = model.encode_document(docs)
    for e in found:
        session = onnxruntime.InferenceSession(str(folder / e.file), providers=["CPUExecutionProvider"])
        cosines = np.sum(mean_pooled(session, model, docs) * reference, axis=1)
        assert cosines.min() >= e.bound, e.variant
    # Quantised weights are smaller; the optimised graph has fused nodes.
    assert (folder / "onnx/model_qint8.onnx").stat().st_size < (folder / "onnx/model.onnx").stat().st_size
    import onnx

    def nodes(name: str) -> int:
        return len(onnx.load(str(folder / "onnx" / name)).graph.node)

    assert nodes("model_O2.onnx") < nodes("model.onnx")
    # The folder still loads and serves with PyTorch, and the model is unchanged.
    assert servable.tei_problems(folder) == []


def test_sentence_transformers_loads_the_onnx_file_with_its_onnx_backend(published):
    pytest.importorskip(
        "optimum.onnxruntime",
        reason="sentence-transformers' ONNX backend needs Optimum, which pins transformers below 5 (not installed)",
    )
    from sentence_transformers import SentenceTransformer

    model, folder = published
    found = export(model, folder, onnx={"quantize": "int8"})
    for e in found:
        loaded = SentenceTransformer(str(folder), backend="onnx", model_kwargs={"file_name": e.file})
        cosines = np.sum(loaded.encode_query(list(TEXTS.queries)) * model.encode_query(list(TEXTS.queries)), axis=1)
        assert cosines.min() >= e.bound


def test_an_export_below_its_bound_fails_naming_the_format_and_the_worst_cosine(published, monkeypatch):
    model, folder = published
    monkeypatch.setitem(EXPORT_BOUNDS, ("onnx", "int8"), 1.0)  # int8 weights never embed exactly as fp32 ones
    with pytest.raises(exports.ExportFailed) as err:
        export(model, folder, onnx={"quantize": "int8"})
    message = str(err.value)
    assert message.startswith("the onnx export int8 (onnx/model_qint8.onnx) embeds too differently")
    assert "the worst held-out text's cosine similarity is 0.9" in message
    assert "below the bound 1 (spec.export.onnx.minCosine), on 6 held-out texts" in message


def test_min_cosine_overrides_the_documented_bound(published):
    model, folder = published
    with pytest.raises(exports.ExportFailed, match=r"the onnx export int8 .* below the bound 0.999999 "):
        export(model, folder, onnx={"quantize": "int8", "minCosine": 0.999999})


def test_openvino_ir_embeds_as_the_model(published):
    pytest.importorskip("openvino", reason="spec.export.openvino needs the `openvino` extra (embedops[openvino])")
    model, folder = published
    (found,) = export(model, folder, openvino={})
    assert (found.format, found.variant, found.file) == ("openvino", "fp32", "openvino/openvino_model.xml")
    assert (folder / "openvino/openvino_model.bin").is_file() and not (folder / "onnx").exists()
    assert found.min_cosine >= EXPORT_BOUNDS[("openvino", "fp32")]


def test_a_missing_extra_fails_saying_what_to_install(published, monkeypatch):
    model, folder = published
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    expected = (
        r"spec.export.openvino needs the `openvino` extra \(openvino missing\): pip install 'embedops\[openvino\]'"
    )
    with pytest.raises(exports.ExportFailed, match=expected):
        export(model, folder, openvino={})


def test_o4_is_fp16_for_gpus_only(published, monkeypatch):
    from embedops.workers.exports import onnx

    model, folder = published
    monkeypatch.setattr(onnx, "has_gpu", lambda: False)
    with pytest.raises(exports.ExportFailed, match="O4 \\(fp16\\) runs on a GPU only"):
        export(model, folder, onnx={"optimization": "O4"})
    assert not (folder / "onnx").exists()
