"""The published model's transformer as ONNX files, as sentence-transformers' ONNX backend loads them.

Optimum (sentence-transformers' own exporter) pins transformers below 5, so the graph is
exported with `torch.onnx.export` and optimised and quantised with ONNX Runtime's own tools,
the ones Optimum calls: the file has Optimum's inputs (`input_ids`, `attention_mask`, and
`token_type_ids` where the model takes them) and output (`last_hidden_state`), so
`SentenceTransformer(folder, backend="onnx", model_kwargs={"file_name": "onnx/model.onnx"})`
loads it where Optimum is installed, and `onnxruntime` runs it without.

Optimum's optimisation levels, mirrored: O1 basic graph optimisations; O2 also the
transformer fusions (attention, layer norm, GELU); O3 also GELU approximation; O4 also fp16
(GPU only).
"""

from __future__ import annotations

import copy
import inspect
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedops.workers.exports.parity import Runtime

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

OUTPUT = "last_hidden_state"
OPSET = 17


def export(model: SentenceTransformer, path: Path) -> None:
    """`model`'s transformer as an fp32 ONNX graph with dynamic batch and sequence sizes."""
    import torch

    transformer: Any = model[0]
    hf = copy.deepcopy(transformer.auto_model).to("cpu").float().eval()
    names = input_names(model)
    # Two texts of different lengths: the trace then keeps the attention mask's padding path.
    sample = model.preprocess(["a", "a longer text, so that the batch is padded"])
    args = tuple(sample[name].to("cpu") for name in names)
    axes = {name: {0: "batch_size", 1: "sequence_length"} for name in [*names, OUTPUT]}
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's warnings about Python values in the graph
        torch.onnx.export(
            _last_hidden_state(hf, names),
            args,
            str(path),
            input_names=names,
            output_names=[OUTPUT],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def input_names(model: SentenceTransformer) -> list[str]:
    """The tokenizer's outputs that the transformer's forward takes, in the tokenizer's order."""
    transformer: Any = model[0]
    params = inspect.signature(transformer.auto_model.forward).parameters
    return [n for n in transformer.tokenizer.model_input_names if n in params]


def _last_hidden_state(hf: Any, names: list[str]) -> Any:
    """A module taking the inputs positionally and returning only the token embeddings, for the tracer."""
    import torch

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hf = hf

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.hf(**dict(zip(names, inputs, strict=True))).last_hidden_state

    return LastHiddenState()


def optimize(model: SentenceTransformer, source: Path, target: Path, level: str) -> None:
    """`source` at Optimum's optimisation `level` (O1-O4) into `target`, with ONNX Runtime's transformer optimizer."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    transformer: Any = model[0]
    config = transformer.auto_model.config
    options = FusionOptions("bert")
    options.enable_gelu_approximation = level in ("O3", "O4")
    optimized = optimize_model(
        str(source),
        model_type="bert",
        num_heads=getattr(config, "num_attention_heads", 0),
        hidden_size=getattr(config, "hidden_size", 0),
        opt_level=1 if level == "O1" else 2,
        optimization_options=options,
        use_gpu=level == "O4",
        only_onnxruntime=level == "O1",
    )
    if level == "O4":
        optimized.convert_float_to_float16(keep_io_types=True)
    optimized.save_model_to_file(str(target))


def quantize_int8(source: Path, target: Path) -> None:
    """`source` with its weights quantised to int8, activations at run time (dynamic quantisation)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)


def has_gpu() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def runtime(path: Path) -> Runtime:
    """A function running the ONNX graph at `path` with ONNX Runtime (on a GPU when it has one)."""
    import onnxruntime

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if has_gpu() else ["CPUExecutionProvider"]
    session = onnxruntime.InferenceSession(str(path), providers=providers)
    names = [i.name for i in session.get_inputs()]

    def run(arrays: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(session.run([OUTPUT], {name: arrays[name] for name in names})[0])

    return run
