"""The published model as OpenVINO IR, as sentence-transformers' OpenVINO backend loads it.

Optimum Intel (sentence-transformers' exporter) pins transformers below 5.25, so the IR is
converted by OpenVINO itself from the fp32 ONNX graph (embedops.workers.exports.onnx), into
`openvino/openvino_model.xml` and `.bin`, with the same input and output names; fp32 weights
(not OpenVINO's default fp16 compression). On a CPU with bf16 units OpenVINO computes in
bf16 by default, as it would when serving: the check runs with the runtime's defaults.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedops.workers.exports.onnx import OUTPUT
from embedops.workers.exports.parity import Runtime


def convert(onnx_path: Path, xml_path: Path) -> None:
    import openvino

    xml_path.parent.mkdir(parents=True, exist_ok=True)
    openvino.save_model(openvino.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)


def runtime(xml_path: Path) -> Runtime:
    """A function running the IR at `xml_path` on the CPU with OpenVINO's default settings."""
    import openvino

    compiled = openvino.Core().compile_model(str(xml_path), "CPU")
    names = [port.get_any_name() for port in compiled.inputs]
    output = compiled.output(OUTPUT)

    def run(arrays: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(compiled({name: arrays[name] for name in names})[output])

    return run
