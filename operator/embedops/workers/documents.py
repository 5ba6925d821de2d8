"""The documents of an index's source, as the embed and drift workers read them.

Both workers see one interface, `Documents`: the embed worker pages through a shard in id
order (and resumes after the last committed id), the drift worker looks up the current text
of stored ids or draws a seeded sample. A new kind of source is its API model in
`IndexSource`, one reader class here and one `case` in `open_documents`; nothing else changes.

A row belongs to one of `shards` pods by a stable hash of its id (Postgres' hashtext for
tables, CRC-32 for dataset corpora), so the shards of an Indexed Job split the corpus
without talking to each other.

A document with no text (NULL, empty, or only whitespace and zero-width characters) is never
embedded: its vector would sit where every query finds it. The rule is the dataset readers'
(`readers.rows.BLANK`), so a table source skips exactly the rows a dataset would reject; the
skipped rows are counted and a few ids reported (`skipped_rows`), as the readers report theirs.
"""

from __future__ import annotations

import logging
import random
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, assert_never

from embedops.api.index import IndexSource, TableSource
from embedops.prepared import PreparedDataset
from embedops.store import sources
from embedops.workers.readers.rows import BLANK, INVALID_SAMPLES

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)


class Documents(Protocol):
    id_type: str  # SQL type of the ids, for the version table
    description: str  # the source as the catalog records it: a build only resumes into the same source

    def total(self) -> int:
        """Documents in this shard."""

    def chunks(self, after: Any | None, size: int) -> Iterator[list[sources.Row]]:
        """The rows (id, text to embed, its content hash) of this shard after id `after`, in id order, `size` at
        a time."""

    def texts(self, ids: Sequence[Any]) -> dict[Any, str]:
        """The current text to embed of each of `ids` still in the source."""

    def sample(self, n: int, seed: str) -> list[str]:
        """The texts of `n` documents drawn at random, the same ones for the same seed."""

    def skipped(self, limit: int) -> tuple[int, list[Any]]:
        """Rows of this shard left out for having no text to embed, and the ids of the first `limit`."""


class TableDocuments:
    """One shard of a source table, read in id order on its own connection."""

    def __init__(self, conn: psycopg.Connection, src: TableSource, shard: int, shards: int):
        self._conn, self._src, self._shard, self._shards = conn, src, shard, shards
        self.id_type = sources.inspect(conn, src)
        self.description = sources.describe(src)

    def total(self) -> int:
        return sources.count(self._conn, self._src, self._shard, self._shards, blank=BLANK)

    def chunks(self, after: Any | None, size: int) -> Iterator[list[sources.Row]]:
        shard = (self._shard, self._shards)
        while rows := sources.page(self._conn, self._src, self.id_type, *shard, after, size, blank=BLANK):
            yield rows
            after = rows[-1].id

    def texts(self, ids: Sequence[Any]) -> dict[Any, str]:
        return sources.texts(self._conn, self._src, ids, blank=BLANK)

    def sample(self, n: int, seed: str) -> list[str]:
        return [text for _, text in sources.sample(self._conn, self._src, n, seed, blank=BLANK)]

    def skipped(self, limit: int) -> tuple[int, list[Any]]:
        return sources.skipped(self._conn, self._src, self._shard, self._shards, blank=BLANK, limit=limit)


def in_shard(doc_id: str, shard: int, shards: int) -> bool:
    """Dataset ids are sharded by CRC-32: stable across processes, unlike Python's salted hash()."""
    return shards == 1 or zlib.crc32(doc_id.encode()) % shards == shard


class DatasetDocuments:
    """One shard of a prepared dataset's corpus, in id order."""

    id_type = sources.TEXT_ID

    def __init__(self, folder: Path, shard: int, shards: int):
        dataset = PreparedDataset(folder)
        self._texts = {i: doc.full_text for i, doc in sorted(dataset.corpus().items()) if in_shard(i, shard, shards)}
        self.description = f"dataset {dataset.manifest.fingerprint}"

    def total(self) -> int:
        return len(self._texts)

    def chunks(self, after: str | None, size: int) -> Iterator[list[sources.Row]]:
        remaining = [
            sources.Row(i, text, sources.content_hash(text))
            for i, text in self._texts.items()
            if after is None or i > after
        ]
        for start in range(0, len(remaining), size):
            yield remaining[start : start + size]

    def texts(self, ids: Sequence[Any]) -> dict[Any, str]:
        return {i: self._texts[i] for i in ids if i in self._texts}

    def sample(self, n: int, seed: str) -> list[str]:
        picked = random.Random(seed).sample(sorted(self._texts), min(n, len(self._texts)))
        return [self._texts[i] for i in picked]

    def skipped(self, limit: int) -> tuple[int, list[Any]]:
        # The prepare worker rejected such rows already, by the same rule (readers.rows).
        return 0, []


def skipped_rows(docs: Documents) -> tuple[int, list[str]]:
    """How many rows of `docs` have no text to embed, and the first few ids, logged as a warning when any:
    what the embed worker's result reports as skippedRows and skippedIds."""
    n, ids = docs.skipped(INVALID_SAMPLES)
    shown = [str(i) for i in ids]
    if n:
        more = f" and {n - len(shown)} more" if n > len(shown) else ""
        log.warning(
            "%s: %d rows have no text to embed (NULL, empty, or only whitespace or zero-width characters) and are "
            "skipped: ids %s%s",
            docs.description,
            n,
            ", ".join(shown),
            more,
        )
    return n, shown


def open_documents(
    source: IndexSource, *, conn: psycopg.Connection, dataset_dir: Path | None, shard: int = 0, shards: int = 1
) -> Documents:
    """The reader of `source`'s documents (one shard of them)."""
    match source.kind:
        case "table":
            # `kind` names the field that is set; the assert says so to the type checker.
            assert source.table is not None
            return TableDocuments(conn, source.table, shard, shards)
        case "dataset":
            if dataset_dir is None:
                raise ValueError("dataset_dir is required for a source.datasetRef")
            return DatasetDocuments(dataset_dir, shard, shards)
        case unknown:
            assert_never(unknown)
