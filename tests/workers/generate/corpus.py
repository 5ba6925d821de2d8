"""Small corpora for generation tests: real SciFact abstracts from the quickstart sample, few enough to encode fast."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

SAMPLE = Path(__file__).resolve().parents[3] / "examples" / "quickstart" / "data" / "scifact-sample"


def sample_docs(n: int, chars: int = 400) -> list[dict[str, Any]]:
    """The sample's first n abstracts, cut to their first `chars` characters (short texts encode fast)."""
    with (SAMPLE / "corpus.jsonl").open() as f:
        docs = [json.loads(line) for _, line in zip(range(n), f, strict=False)]
    return [{**d, "text": d["text"][:chars]} for d in docs]


def write_documents(path: Path, n: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(d) + "\n" for d in sample_docs(n)))
    return path


def title_query(docs: list[dict[str, Any]], body: dict[str, Any], bad_every: int = 0) -> str:
    """A scripted generator: a query made of the passage's title (one in `bad_every` generic)."""
    turn = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
    passage = re.match(r"Passage: (.*)\nWrite", turn, re.DOTALL)
    assert passage, turn
    i = next(i for i, d in enumerate(docs) if d["text"].startswith(passage.group(1)[:200]))
    if bad_every and i % bad_every == 0:
        return "What is the purpose of this passage?"
    return f"what is known about {docs[i]['title'].lower().rstrip('.')}"
