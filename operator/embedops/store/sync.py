"""Keeping a version in step with its source table: embed only the rows that changed.

Every version table stores, beside each row's embedding, the content hash of the exact text it
was embedded from (store.sources: `md5(text)::uuid`, composed as the model reads it). So which
rows a version lacks, holds stale, or holds although they are gone is one query inside
Postgres, a scan of the source's (id, hash) against the version's (`diff`), and a sync embeds
exactly those rows:

- rows new in the source, or whose embedded text changed, are embedded (the build's encoder
  and batching) and upserted; a change to a column that is not embedded changes no hash and
  costs nothing;
- rows gone from the source, or whose text became empty, are deleted;
- the user's table gets no DDL: no trigger, no column, no queue (the trigger mode, sync.mode
  `trigger`, is the opt-in that adds them).

What a diff finds is written to a temporary table and applied `chunk_rows` rows at a time, each
chunk one transaction with the catalog's counts, so a sync killed at any point and run again
finds only what it had not committed yet: the version ends with exactly the source's rows and
their hashes. Two syncs of one version take turns (a session lock); a sync's writes take the
target lock shared, so retention (which takes it exclusively) never drops a table under them,
and the cut-over's catch-up (`sync_version` inside `pgvector.cutover`'s transaction) runs in
the same lock as the cut-over itself.

A version built before the hash column existed gets the column on its first sync, empty: it
cannot tell which of its rows changed since it was built, so that first sync embeds every row
again (in place, the view serving throughout), rather than trusting stale vectors.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from embedops.api.index import RETAINED_STATES, TableSource
from embedops.store import catalog, fetch, sources
from embedops.store.catalog import VersionRecord
from embedops.store.pgvector import RowCopier

log = logging.getLogger(__name__)

Embed = Callable[[list[str]], np.ndarray]
# The versions a sync writes into: those that serve or may serve (a Building one is brought up to
# date by the catch-up at its cut-over, and its shards' COPY must not meet rows a sync put first).
SYNCED_STATES = RETAINED_STATES
_DIFF = "embedops_sync_diff"
_STAGE = "embedops_sync_stage"


@dataclass
class SyncCounts:
    """What one sync of one version did."""

    version: int
    found: int = 0  # rows the diff found new, changed or gone
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    pending: int = 0  # rows found and not applied (the sync stopped: its version was dropped)
    rehashed: bool = False  # the version had no hash column: every row was embedded again
    stopped: bool = False  # its version was dropped or failed while it ran
    diff_seconds: float = 0.0
    seconds: float = 0.0
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @property
    def embedded(self) -> int:
        return self.inserted + self.updated


def has_hashes(conn: psycopg.Connection, rec: VersionRecord) -> bool:
    return bool(
        fetch.value(
            conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) "
                "AND attname = 'content_hash' AND NOT attisdropped)",
                (sql.Identifier(rec.schema, rec.table).as_string(conn),),
            )
        )
    )


def ensure_hashes(conn: psycopg.Connection, rec: VersionRecord) -> bool:
    """Give a version of an earlier release its (empty) hash column; True when it had none."""
    if has_hashes(conn, rec):
        return False
    conn.execute(
        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS content_hash uuid").format(
            sql.Identifier(rec.schema, rec.table)
        )
    )
    log.warning("%s.%s was built without content hashes: its first sync embeds every row again", rec.schema, rec.table)
    return True


def diff_query(src: TableSource, rec: VersionRecord, blank: str) -> sql.Composed:
    """`(id, gone)` of every row the version lacks, holds with another hash, or holds but the source does not:
    one scan of each side's (id, hash), joined on the id."""
    return sql.SQL(
        "SELECT coalesce(d.id, v.id) AS id, d.id IS NULL AS gone FROM (SELECT id, hash FROM {documents}) d "
        "FULL JOIN {version} v ON v.id = d.id "
        "WHERE d.id IS NULL OR v.id IS NULL OR v.content_hash IS DISTINCT FROM d.hash"
    ).format(documents=sources.documents(src, blank), version=sql.Identifier(rec.schema, rec.table))


def diff(conn: psycopg.Connection, src: TableSource, rec: VersionRecord, *, blank: str) -> tuple[int, int]:
    """Write the diff of `rec` against `src` into this session's temporary table; (changed or new, gone)."""
    conn.execute(
        sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (id {} PRIMARY KEY, gone boolean NOT NULL)").format(
            sql.Identifier(_DIFF), sql.SQL(rec.id_type)
        )
    )
    conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(_DIFF)))
    conn.execute(sql.SQL("INSERT INTO {} {}").format(sql.Identifier(_DIFF), diff_query(src, rec, blank)))
    changed, gone = fetch.row(
        conn.execute(
            sql.SQL("SELECT count(*) FILTER (WHERE NOT gone), count(*) FILTER (WHERE gone) FROM {}").format(
                sql.Identifier(_DIFF)
            )
        )
    )
    return int(changed), int(gone)


def _changed_ids(conn: psycopg.Connection, rec: VersionRecord, size: int) -> Iterator[list[Any]]:
    """The ids of the diff to embed, in id order, `size` at a time (keyset pages of the temporary table)."""
    after: Any = None
    while True:
        where = sql.SQL("NOT gone") if after is None else sql.SQL("NOT gone AND id > %s")
        ids = [
            i
            for (i,) in conn.execute(
                sql.SQL("SELECT id FROM {} WHERE {} ORDER BY id LIMIT {}").format(
                    sql.Identifier(_DIFF), where, sql.Literal(size)
                ),
                () if after is None else (after,),
            )
        ]
        if not ids:
            return
        yield ids
        after = ids[-1]


class _Writer:
    """Applies chunks of a sync to one version, each in its own transaction with the catalog's counts."""

    def __init__(self, conn: psycopg.Connection, rec: VersionRecord):
        self.conn, self.rec = conn, rec
        self.table = sql.Identifier(rec.schema, rec.table)
        conn.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {})").format(sql.Identifier(_STAGE), self.table))
        self._copier = RowCopier(conn, rec, sql.Identifier(_STAGE))

    def alive(self) -> bool:
        """Still a version a sync writes into (retention may have dropped it, a build failed it)."""
        now = catalog.record(self.conn, self.rec.schema, self.rec.view, self.rec.version)
        return now is not None and now.state in SYNCED_STATES

    def apply(
        self, ids: Sequence[Any], vectors: np.ndarray, hashes: Sequence[uuid.UUID], gone: Sequence[Any]
    ) -> tuple[int, int, int] | None:
        """Upsert `ids` and delete `gone`, committed together; (inserted, updated, deleted), None when the version
        is no longer there to write into."""
        with self.conn.transaction():
            catalog.lock_target_shared(self.conn, self.rec.schema, self.rec.view)
            if not self.alive():
                return None
            inserted = updated = deleted = 0
            if ids:
                self.conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(_STAGE)))
                self._copier.copy(ids, vectors, hashes)
                flags = self.conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (id, embedding, content_hash) SELECT id, embedding, content_hash FROM {} "
                        "ON CONFLICT (id) DO UPDATE SET embedding = excluded.embedding, "
                        "content_hash = excluded.content_hash RETURNING (xmax = 0)"
                    ).format(self.table, sql.Identifier(_STAGE))
                ).fetchall()
                inserted = sum(1 for (new,) in flags if new)
                updated = len(flags) - inserted
            if gone:
                deleted = self.conn.execute(
                    sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(self.table), (list(gone),)
                ).rowcount
            catalog.count_sync(self.conn, self.rec, rows_delta=inserted - deleted, changed=inserted + updated + deleted)
        return inserted, updated, deleted

    def delete_gone(self) -> int | None:
        """Delete every row the diff found gone, in one transaction; None when the version is no longer there."""
        with self.conn.transaction():
            catalog.lock_target_shared(self.conn, self.rec.schema, self.rec.view)
            if not self.alive():
                return None
            deleted = self.conn.execute(
                sql.SQL("DELETE FROM {} v USING {} d WHERE d.gone AND v.id = d.id").format(
                    self.table, sql.Identifier(_DIFF)
                )
            ).rowcount
            catalog.count_sync(self.conn, self.rec, rows_delta=-deleted, changed=deleted)
        return deleted


def _session_lock(conn: psycopg.Connection, rec: VersionRecord, take: bool) -> None:
    key = f"embedops-sync:{rec.schema}.{rec.view}:v{rec.version}"
    function = "pg_advisory_lock" if take else "pg_advisory_unlock"
    conn.execute(f"SELECT {function}(hashtextextended(%s, 0))", (key,))


def sync_version(
    conn: psycopg.Connection,
    rec: VersionRecord,
    src: TableSource,
    embed: Embed,
    *,
    blank: str,
    chunk_rows: int = 2048,
) -> SyncCounts:
    """Bring one version in step with its source table: the diff, then its rows embedded and applied by chunks.

    `embed` encodes texts as the version was built (its model, sequence length, normalisation).
    Runs on an autocommit connection, or inside the caller's transaction (the cut-over's).
    """
    started = time.monotonic()
    counts = SyncCounts(version=rec.version)
    _session_lock(conn, rec, True)
    try:
        counts.rehashed = ensure_hashes(conn, rec)
        counts.started_at = fetch.value(conn.execute("SELECT now()"))
        changed, gone = diff(conn, src, rec, blank=blank)
        counts.found = counts.pending = changed + gone
        counts.diff_seconds = round(time.monotonic() - started, 3)
        log.info("%s.%s: %d rows to embed, %d gone", rec.schema, rec.table, changed, gone)
        writer = _Writer(conn, rec)
        if gone:
            if (deleted := writer.delete_gone()) is None:
                return _stopped(counts, rec, started)
            counts.deleted += deleted
            counts.pending -= gone
        for ids in _changed_ids(conn, rec, chunk_rows):
            rows = sources.rows(conn, src, ids, blank=blank)  # the text now: it may have changed again
            present = {row.id for row in rows}
            vanished = [i for i in ids if i not in present]
            vectors = embed([row.text for row in rows]) if rows else np.empty((0, rec.dimensions), np.float32)
            done = writer.apply([r.id for r in rows], vectors, [r.hash for r in rows], vanished)
            if done is None:
                return _stopped(counts, rec, started)
            counts.inserted, counts.updated, counts.deleted = (
                counts.inserted + done[0],
                counts.updated + done[1],
                counts.deleted + done[2],
            )
            counts.pending -= len(ids)
        with conn.transaction():
            catalog.set_synced(conn, rec, counts.started_at)
    finally:
        _session_lock(conn, rec, False)
    counts.seconds = round(time.monotonic() - started, 3)
    return counts


def _stopped(counts: SyncCounts, rec: VersionRecord, started: float) -> SyncCounts:
    log.warning("%s.%s is no longer a version to sync (dropped or failed); sync stopped", rec.schema, rec.table)
    counts.stopped = True
    counts.seconds = round(time.monotonic() - started, 3)
    return counts
