"""The generation cache: every reply kept on the workspace, so a killed or repeated prepare never pays twice.

A reply is keyed by (document hash, sample number, prompt hash, generator and its sampling
settings): a changed document, prompt, model or temperature asks again; anything else reads the
cache. Entries are appended one line at a time and flushed, so a pod killed mid-run keeps every
reply it had. Failed requests are not cached: a rerun asks again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reply:
    text: str
    tokens_in: int = 0
    tokens_out: int = 0


def entry_key(*parts: object) -> str:
    return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()


class Cache:
    """Replies by key, read from `folder/replies.jsonl` and appended to as they arrive."""

    def __init__(self, folder: Path | None):
        self.path = folder / "replies.jsonl" if folder is not None else None
        self.replies: dict[str, Reply] = {}
        if self.path is not None and self.path.is_file():
            with self.path.open(encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                        self.replies[row["key"]] = Reply(row["text"], row["tokensIn"], row["tokensOut"])
                    except (ValueError, KeyError, TypeError):
                        continue  # the last line of a killed run may be cut short
        self._file: TextIO | None = None

    def get(self, key: str) -> Reply | None:
        return self.replies.get(key)

    def put(self, key: str, reply: Reply) -> None:
        self.replies[key] = reply
        if self.path is None:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        row = {"key": key, "text": reply.text, "tokensIn": reply.tokens_in, "tokensOut": reply.tokens_out}
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
