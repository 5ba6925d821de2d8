"""FineTuneJob spec.export: its shape, its validation, and that it enters the train step's key."""

from __future__ import annotations

import pytest

from embedops.api.finetune import EXPORT_BOUNDS, FineTuneJobSpec
from embedops.api.kinds import InvalidResource, parse_manifest
from embedops.builders import naming


def manifest(spec: dict) -> dict:
    return {
        "apiVersion": "embedops.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "x"},
        "spec": {"datasetRef": {"name": "d"}, **spec},
    }


def test_no_export_by_default_and_the_shape_round_trips_in_camel_case():
    assert parse_manifest(manifest({})).spec.export is None
    job = parse_manifest(manifest({"export": {"onnx": {"optimization": "O3", "quantize": "int8"}, "openvino": {}}}))
    wire = job.spec.to_wire()["export"]
    assert wire == {"onnx": {"optimization": "O3", "quantize": "int8"}, "openvino": {}}
    assert parse_manifest(manifest({"export": {"onnx": {"minCosine": 0.98}}})).spec.export.onnx.min_cosine == 0.98


@pytest.mark.parametrize(
    "export, message",
    [
        ({"onnx": {"optimization": "O5"}}, "spec.export.onnx.optimization: Input should be 'none', 'O1', 'O2'"),
        ({"onnx": {"quantize": "int4"}}, "spec.export.onnx.quantize: Input should be 'none' or 'int8'"),
        ({"onnx": {"minCosine": 1.5}}, "spec.export.onnx.minCosine: Input should be less than or equal to 1"),
        ({"openvino": {"minCosine": 0}}, "spec.export.openvino.minCosine: Input should be greater than 0"),
        ({"openvino": True}, "spec.export.openvino: Input should be an object"),
        ({"tensorrt": {}}, "spec.export.tensorrt: unknown field"),
    ],
)
def test_a_wrong_export_is_refused_naming_the_field(export, message):
    with pytest.raises(InvalidResource) as err:
        parse_manifest(manifest({"export": export}))
    assert message in str(err.value)


def test_every_variant_has_a_documented_bound():
    assert set(EXPORT_BOUNDS) == {("onnx", v) for v in ("fp32", "O1", "O2", "O3", "O4", "int8")} | {
        ("openvino", "fp32")
    }
    assert all(0 < bound <= 1 for bound in EXPORT_BOUNDS.values())


def test_export_enters_the_train_steps_identity_only_when_set():
    plain = FineTuneJobSpec.model_validate({"datasetRef": {"name": "d"}})
    onnx = FineTuneJobSpec.model_validate({"datasetRef": {"name": "d"}, "export": {"onnx": {}}})
    int8 = FineTuneJobSpec.model_validate({"datasetRef": {"name": "d"}, "export": {"onnx": {"quantize": "int8"}}})
    assert "export" not in naming.identity(plain)  # unchanged keys for jobs without it
    keys = {naming.step_key("train", naming.identity(s), "dataset") for s in (plain, onnx, int8)}
    assert len(keys) == 3
