"""Exports of the published model for other runtimes (spec.export), each checked before it is published.

An application may serve the tuned model with ONNX Runtime or OpenVINO rather than PyTorch. An
export that embeds differently from the model the index was built with ranks wrongly without
any error, so every file written is run on held-out texts beside the PyTorch model, and the
step fails, naming the file and its worst row, when a row's cosine similarity is below the
file's bound (spec.export.*.minCosine, else api.finetune.EXPORT_BOUNDS). The files go where
sentence-transformers' backends look for them: `onnx/` and `openvino/` in the model folder.

ONNX Runtime and OpenVINO are extras of the package (`embedops[onnx]`, `embedops[openvino]`):
without them the spec still validates, and the worker fails saying which to install.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, assert_never

from embedops.api.finetune import EXPORT_BOUNDS, ExportFormat, ExportSpec, ExportVariant, ModelExport
from embedops.workers.exports.parity import Agreement, HeldOut, Runtime, Texts, agreement, held_out

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["ExportFailed", "Texts", "run"]

log = logging.getLogger(__name__)

ONNX_FILE = "onnx/model.onnx"
OPENVINO_FILE = "openvino/openvino_model.xml"
# The packages each export imports, and the extra that installs them.
_EXTRAS = {"onnx": ("onnx", "onnxruntime"), "openvino": ("onnx", "openvino")}


class ExportFailed(ValueError):
    """An export cannot be made here, or embeds too differently from the model; nothing is published."""


def run(model: SentenceTransformer, folder: Path, spec: ExportSpec, texts: Texts) -> list[ModelExport]:
    """Write the exports `spec` asks for into `folder` (the saved model), each checked on `texts`."""
    _check_extras(spec)
    if not texts:
        raise ExportFailed("spec.export: no held-out texts to check the exports on")
    exports = []
    held = held_out(model, texts)  # the PyTorch model's embeddings, once for every file
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = folder / ONNX_FILE if spec.onnx is not None else Path(scratch) / "model.onnx"
        _export_onnx(model, fp32)
        if spec.onnx is not None:
            exports += _onnx_files(model, folder, fp32, held, spec)
        if spec.openvino is not None:
            from embedops.workers.exports import openvino

            xml = folder / OPENVINO_FILE
            openvino.convert(fp32, xml)
            exports.append(_check(model, "openvino", "fp32", xml, folder, held, spec.openvino.min_cosine))
    return exports


def _check_extras(spec: ExportSpec) -> None:
    for name, modules in _EXTRAS.items():
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if getattr(spec, name) is not None and missing:
            raise ExportFailed(
                f"spec.export.{name} needs the `{name}` extra ({', '.join(missing)} missing): "
                f"pip install 'embedops[{name}]' (in a cluster: a worker image built with EMBEDOPS_EXTRAS=true)"
            )
    if spec.onnx is not None and spec.onnx.optimization == "O4":
        from embedops.workers.exports import onnx

        if not onnx.has_gpu():
            raise ExportFailed(
                "spec.export.onnx.optimization O4 (fp16) runs on a GPU only: it needs onnxruntime-gpu and a CUDA "
                "device; O3 is the highest level for CPUs"
            )


def _export_onnx(model: SentenceTransformer, path: Path) -> None:
    from embedops.workers.exports import onnx

    if not hasattr(model[0], "auto_model"):
        raise ExportFailed(f"spec.export: the model's first module, a {type(model[0]).__name__}, is no transformer")
    onnx.export(model, path)


def _onnx_files(
    model: SentenceTransformer, folder: Path, fp32: Path, held: HeldOut, spec: ExportSpec
) -> list[ModelExport]:
    from embedops.workers.exports import onnx

    assert spec.onnx is not None
    bound = spec.onnx.min_cosine
    exports = [_check(model, "onnx", "fp32", fp32, folder, held, bound)]
    if (level := spec.onnx.optimization) != "none":
        optimized = fp32.with_name(f"model_{level}.onnx")
        onnx.optimize(model, fp32, optimized, level)
        exports.append(_check(model, "onnx", level, optimized, folder, held, bound))
    if spec.onnx.quantize == "int8":
        quantized = fp32.with_name("model_qint8.onnx")
        onnx.quantize_int8(fp32, quantized)
        exports.append(_check(model, "onnx", "int8", quantized, folder, held, bound))
    return exports


def _check(
    model: SentenceTransformer,
    fmt: ExportFormat,
    variant: ExportVariant,
    path: Path,
    folder: Path,
    held: HeldOut,
    min_cosine: float | None,
) -> ModelExport:
    """The export at `path` compared with `model` on the held-out texts; ExportFailed below its bound."""
    bound = min_cosine if min_cosine is not None else EXPORT_BOUNDS[(fmt, variant)]
    found = agreement(model, _runtime(fmt, path), held)
    file = str(path.relative_to(folder))
    log.info(
        "%s %s (%s): per-row cosine to the PyTorch model min %.6f, mean %.6f on %d texts (bound %g)",
        fmt,
        variant,
        file,
        found.min_cosine,
        found.mean_cosine,
        len(held.texts),
        bound,
    )
    if found.min_cosine < bound:
        raise ExportFailed(_too_far(fmt, variant, file, found, bound))
    return ModelExport(
        format=fmt,
        variant=variant,
        file=file,
        texts=len(held.texts),
        min_cosine=round(found.min_cosine, 7),
        mean_cosine=round(found.mean_cosine, 7),
        bound=bound,
    )


def _runtime(fmt: ExportFormat, path: Path) -> Runtime:
    match fmt:
        case "onnx":
            from embedops.workers.exports import onnx

            return onnx.runtime(path)
        case "openvino":
            from embedops.workers.exports import openvino

            return openvino.runtime(path)
        case _:
            assert_never(fmt)


def _too_far(fmt: ExportFormat, variant: ExportVariant, file: str, found: Agreement, bound: float) -> str:
    setting = f"spec.export.{fmt}.minCosine"
    return (
        f"the {fmt} export {variant} ({file}) embeds too differently from the PyTorch model: the worst held-out "
        f"text's cosine similarity is {found.min_cosine:.8f} (mean {found.mean_cosine:.8f}), below the bound "
        f"{bound:g} ({setting}), on {found.rows} held-out texts. Nothing is published"
    )
