"""A published model folder that serves queries as it is: sentence-transformers and Hugging Face TEI load it.

An index's vectors are only useful to an application that embeds its queries with the same
model, so the folder the train worker publishes is also what the query side serves
(`embedops serve`, or Text Embeddings Inference pointed at the folder). TEI reads a folder
more narrowly than sentence-transformers does:

- `config.json` with `architectures`, `model_type` and `max_position_embeddings`;
- `tokenizer.json`: a fast tokenizer only (a model with only a slow one is converted here);
- safetensors weights;
- `1_Pooling/config.json` with CLS or mean pooling, as the `pooling_mode_*` flags TEI parses
  (sentence-transformers 6 writes one `pooling_mode` key instead, and still reads the flags);
- `sentence_bert_config.json` with `max_seq_length` (sentence-transformers 6 keeps it in the
  tokenizer's config only; TEI refuses the file without it);
- `modules.json`, whose module types TEI parses by the library's historical names
  (`sentence_transformers.models.Dense`, ...). sentence-transformers 6 writes its new module
  paths (`sentence_transformers.base.modules.dense.Dense`), which TEI refuses, so they are
  written back under the historical names, which sentence-transformers still loads.

`config_sentence_transformers.json` carries the query and document prompts; both servers
apply the query prompt when asked for it (TEI: `--default-prompt-name query`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

REQUIRED_FILES = (
    "config.json",
    "tokenizer.json",
    "modules.json",
    "1_Pooling/config.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
)
# The module types TEI knows, by the names it parses them under.
TEI_MODULES = ("Transformer", "Pooling", "Dense", "Normalize")
_LEGACY = "sentence_transformers.models."
# The pooling flags of sentence-transformers before version 6, in its order.
POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def save(model: SentenceTransformer, folder: Path) -> list[str]:
    """Save `model` into `folder` for serving; the reasons TEI could not serve it (empty: it can).

    A model TEI cannot serve (a module or pooling it lacks) is still published: `embedops serve`
    loads anything sentence-transformers loads. No model card: it would quote training rows.
    """
    model.save(str(folder), create_model_card=False, safe_serialization=True)
    if not (folder / "tokenizer.json").is_file():
        _write_fast_tokenizer(folder)
    _legacy_module_types(folder)
    _legacy_pooling(folder)
    if model.max_seq_length is not None:
        _update(folder / "sentence_bert_config.json", max_seq_length=model.max_seq_length)
    problems = tei_problems(folder)
    for problem in problems:
        log.warning("the published model cannot be served by TEI: %s (embedops serve can serve it)", problem)
    return problems


def _write_fast_tokenizer(folder: Path) -> None:
    """tokenizer.json from a slow tokenizer's files (transformers converts the vocabulary)."""
    from transformers import AutoTokenizer

    try:
        AutoTokenizer.from_pretrained(str(folder), use_fast=True, local_files_only=True).save_pretrained(str(folder))
    except (ValueError, OSError, ImportError) as err:
        log.warning("no fast tokenizer for the published model: %s", err)


def _legacy_module_types(folder: Path) -> None:
    """modules.json's types under the names TEI parses (sentence-transformers loads both)."""
    path = folder / "modules.json"
    modules = json.loads(path.read_text(encoding="utf-8"))
    for module in modules:
        name = str(module.get("type", "")).rsplit(".", 1)[-1]
        if name in TEI_MODULES and module["type"].startswith("sentence_transformers."):
            module["type"] = _LEGACY + name
    path.write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")


def _legacy_pooling(folder: Path) -> None:
    """1_Pooling/config.json as `word_embedding_dimension` and one flag per pooling mode, as TEI parses it."""
    path = folder / "1_Pooling" / "config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    if "pooling_mode" not in config:
        return
    mode = config.pop("pooling_mode")
    modes = {mode} if isinstance(mode, str) else set(mode)
    width = config.pop("embedding_dimension", None)
    legacy = {"word_embedding_dimension": config.pop("word_embedding_dimension", width)}
    legacy |= {flag: name in modes for flag, name in POOLING_FLAGS.items()}
    path.write_text(json.dumps(legacy | config, indent=2) + "\n", encoding="utf-8")


def _update(path: Path, **values: Any) -> None:
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    path.write_text(json.dumps(config | values, indent=2) + "\n", encoding="utf-8")


def tei_problems(folder: Path) -> list[str]:
    """What keeps Text Embeddings Inference from serving `folder` as it is (empty: nothing)."""
    problems = [f"{name} is missing" for name in REQUIRED_FILES if not (folder / name).is_file()]
    if not any(folder.glob("*.safetensors")):
        problems.append("no safetensors weights at the top of the folder")
    for name, check in _CHECKS.items():
        if (folder / name).is_file():
            problems += check(json.loads((folder / name).read_text(encoding="utf-8")))
    return problems


def _config_problems(config: dict[str, Any]) -> list[str]:
    keys = ("architectures", "model_type", "max_position_embeddings")
    return [f"config.json has no {key}" for key in keys if key not in config]


def _length_problems(config: dict[str, Any]) -> list[str]:
    return [] if "max_seq_length" in config else ["sentence_bert_config.json has no max_seq_length"]


def _pooling_problems(config: dict[str, Any]) -> list[str]:
    if config.get("pooling_mode_cls_token") or config.get("pooling_mode_mean_tokens"):
        return []
    return ["1_Pooling/config.json sets neither CLS nor mean pooling"]


def _module_problems(modules: list[dict[str, Any]]) -> list[str]:
    known = {_LEGACY + name for name in TEI_MODULES}
    return [
        f"modules.json: module {m.get('path') or m.get('name')!r} is a {m.get('type')}, which TEI does not know"
        for m in modules
        if m.get("type") not in known
    ]


_CHECKS: dict[str, Callable[[Any], list[str]]] = {
    "config.json": _config_problems,
    "sentence_bert_config.json": _length_problems,
    "1_Pooling/config.json": _pooling_problems,
    "modules.json": _module_problems,
}
