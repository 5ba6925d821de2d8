"""The sync worker: keep a version in step with its source table, embedding only the rows that changed.

`run` is the scheduled (or asked-for) sync of the live version: store.sync's diff finds the
rows that are new, changed or gone, and only those are embedded, with the model, sequence
length, precision and batch size the version was built with, and upserted or deleted. A sync
that finds nothing loads no model: its cost is the diff, one scan of the table's (id, hash).

With `sync.mode: trigger`, the rows to embed are those the source table's triggers queued
(store.triggers), drained by the same worker; `pending` is then the rows queued while it ran.

`catch_up` is the same sync run by a cut-over (the probe worker's, inside its lock): the
version about to serve is brought up to date with the table first, so a cut-over never serves
rows older than the version it replaces.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, assert_never

import numpy as np
import psycopg

from embedops import modelzoo, steps
from embedops.api import times
from embedops.api.index import IVFFLAT_STALE_FRACTION, EmbedSpec, TableSource
from embedops.results import SyncResult
from embedops.store import pgvector, sources, sync, triggers
from embedops.store.catalog import VersionRecord
from embedops.workers.readers.rows import BLANK, INVALID_SAMPLES

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)


def encoder(
    load: Callable[[], SentenceTransformer], rec: VersionRecord, embedding: EmbedSpec
) -> Callable[[list[str]], np.ndarray]:
    """Texts to vectors as `rec` was built; the model is loaded by the first call that has texts."""
    from embedops.workers.encoder import Encoder  # torch: only where a pod embeds

    built: list[Encoder] = []

    def embed(texts: list[str]) -> np.ndarray:
        if not built:
            built.append(
                Encoder(
                    load(),
                    batch_size=embedding.batch_size,
                    normalize=pgvector.normalizes(rec.metric),
                    precision=embedding.precision,
                )
            )
        return built[0].encode(texts)

    return embed


def run(config: steps.SyncStep, *, dsn: str | None = None) -> SyncResult:
    started = time.monotonic()
    with pgvector.connect(dsn) as conn:
        if config.owner is not None:
            pgvector.claim_target(conn, config.target, config.owner)
        id_type = sources.inspect(conn, config.table)  # the table and its columns are still what the spec names
        rec = pgvector.version_record(conn, config.target, config.version)
        if rec.state not in sync.SYNCED_STATES:
            raise ValueError(f"{rec.schema}.{rec.table} is {rec.state}; only a finished version is synced")

        def load() -> SentenceTransformer:
            return modelzoo.load(config.model, device=config.device, max_seq_length=config.embedding.max_seq_length)

        counts = _sync(conn, config, rec, id_type, encoder(load, rec, config.embedding))
        skipped, skipped_ids = sources.skipped(conn, config.table, 0, 1, blank=BLANK, limit=INVALID_SAMPLES)
        after = pgvector.version_record(conn, config.target, config.version)
    fraction = after.changed_rows / max(after.rows, 1)
    result = SyncResult(
        version=rec.version,
        state=after.state,
        synced_at=None if counts.stopped else times.format_time(counts.started_at),
        found=counts.found,
        inserted=counts.inserted,
        updated=counts.updated,
        deleted=counts.deleted,
        pending=counts.pending,
        rows=after.rows,
        changed_fraction=round(fraction, 6),
        ann_stale=config.ann.method == "ivfflat" and fraction > IVFFLAT_STALE_FRACTION,
        rehashed=counts.rehashed,
        skipped_rows=skipped,
        skipped_ids=[str(i) for i in skipped_ids],
        diff_seconds=counts.diff_seconds,
        seconds=round(time.monotonic() - started, 3),
    )
    log.info(
        "synced %s: %d embedded (%d new), %d deleted, %d rows; diff %.3fs",
        rec.table,
        result.embedded,
        result.inserted,
        result.deleted,
        result.rows,
        result.diff_seconds,
    )
    return result


def _sync(
    conn: psycopg.Connection, config: steps.SyncStep, rec: VersionRecord, id_type: str, embed: sync.Embed
) -> sync.SyncCounts:
    """The sync of `rec` by the index's mode. Trigger mode installs its triggers (when missing or outdated: its
    first drain is then a full diff) and drains their queue; diff mode first removes what trigger mode installed
    (the mode changed back), so no trigger keeps filling a queue nobody drains."""
    match config.sync.mode:
        case "trigger":
            triggers.install(conn, config.target, config.table, id_type)
            return triggers.drain(conn, rec, config.table, embed, blank=BLANK, chunk_rows=config.embedding.commit_rows)
        case "diff":
            triggers.remove(conn, config.target, config.owner)
            return sync.sync_version(
                conn, rec, config.table, embed, blank=BLANK, chunk_rows=config.embedding.commit_rows
            )
        case _:
            assert_never(config.sync.mode)


def catch_up(
    model: SentenceTransformer, table: TableSource, embedding: EmbedSpec
) -> Callable[[psycopg.Connection, VersionRecord], None]:
    """The hook a cut-over runs in its transaction, before the view moves: sync the version it is about to serve."""

    def hook(conn: psycopg.Connection, rec: VersionRecord) -> None:
        counts = sync.sync_version(
            conn, rec, table, encoder(lambda: model, rec, embedding), blank=BLANK, chunk_rows=embedding.commit_rows
        )
        if counts.found:
            log.info(
                "caught %s up before its cut-over: %d embedded, %d deleted", rec.table, counts.embedded, counts.deleted
            )

    return hook
