"""The catalog: which version tables embedops made for each target, their state and build progress.

It lives in its own schema, `embedops`, inside the index's database, so the database alone
says what is live, what can be rolled back to, and which tables embedops may drop: neither
the operator nor its pods keep state of their own, and only tables listed here are ever
dropped. A target is a (schema, view name) pair; its versions are numbered from 1 and never
reused, even after retention drops them, so a table name always means one build.

Functions here run inside the caller's transaction; the public API in `pgvector` owns the
transactions and the target lock.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import psycopg

from embedops.api import times
from embedops.api.index import MAX_VERSION, IndexVersion, ProbeResult, VersionState
from embedops.steps import TargetOwner
from embedops.store import fetch

SCHEMA = "embedops"

# Serialises catalog creation: concurrent CREATE ... IF NOT EXISTS can still collide in pg_type.
_DDL_LOCK = 0x656D_6265_646F_7073  # "embedops"
_DDL = (
    "CREATE EXTENSION IF NOT EXISTS vector",
    "CREATE SCHEMA IF NOT EXISTS embedops",
    """CREATE TABLE IF NOT EXISTS embedops.index_targets (
        target_schema text NOT NULL,
        target_name text NOT NULL,
        last_version integer NOT NULL,
        PRIMARY KEY (target_schema, target_name))""",
    """CREATE TABLE IF NOT EXISTS embedops.index_versions (
        target_schema text NOT NULL,
        target_name text NOT NULL,
        version integer NOT NULL,
        table_name text NOT NULL,
        model text NOT NULL,
        model_fingerprint text,
        dimensions integer NOT NULL,
        vector_type text NOT NULL,
        metric text NOT NULL,
        id_type text NOT NULL,
        source text NOT NULL,
        shards integer NOT NULL,
        row_count bigint NOT NULL DEFAULT 0,
        state text NOT NULL CHECK (state IN ('Building', 'Ready', 'Live', 'Retired', 'Failed')),
        created_at timestamptz NOT NULL DEFAULT now(),
        completed_at timestamptz,
        probe jsonb,
        probe_set text,
        PRIMARY KEY (target_schema, target_name, version))""",
    # At most one live version per target, whatever goes wrong in a caller.
    """CREATE UNIQUE INDEX IF NOT EXISTS index_versions_one_live
        ON embedops.index_versions (target_schema, target_name) WHERE state = 'Live'""",
    # One owner per target (the EmbeddingIndex whose steps may build, replace and drop its
    # objects), and per version the key of what its vectors are (the planner's embed identity).
    # Added columns, so a catalog of an earlier release is upgraded in place.
    "ALTER TABLE embedops.index_targets ADD COLUMN IF NOT EXISTS owner_namespace text",
    "ALTER TABLE embedops.index_targets ADD COLUMN IF NOT EXISTS owner_name text",
    "ALTER TABLE embedops.index_targets ADD COLUMN IF NOT EXISTS owner_uid text",
    "ALTER TABLE embedops.index_versions ADD COLUMN IF NOT EXISTS embeddings_key text",
    # The version spec.pinnedVersion made live, while a pin holds: unpinning then serves the current
    # model's version again, where a version retired by a rollback stays retired.
    "ALTER TABLE embedops.index_targets ADD COLUMN IF NOT EXISTS pinned_version integer",
    # Syncs (store.sync): when a version was last brought in step with its source (the start of the
    # diff it applied), and the rows changed in it since it was built (what an IVFFlat index's lists
    # were not trained on).
    "ALTER TABLE embedops.index_versions ADD COLUMN IF NOT EXISTS synced_at timestamptz",
    "ALTER TABLE embedops.index_versions ADD COLUMN IF NOT EXISTS changed_rows bigint NOT NULL DEFAULT 0",
    """CREATE TABLE IF NOT EXISTS embedops.index_progress (
        target_schema text NOT NULL,
        target_name text NOT NULL,
        version integer NOT NULL,
        shard integer NOT NULL,
        last_id text,
        row_count bigint NOT NULL DEFAULT 0,
        done boolean NOT NULL DEFAULT false,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (target_schema, target_name, version, shard),
        FOREIGN KEY (target_schema, target_name, version)
            REFERENCES embedops.index_versions ON DELETE CASCADE)""",
)
# A Building version's rows are what its shards have committed so far.
_SELECT = (
    "SELECT v.target_schema, v.target_name, v.version, v.table_name, v.model, v.model_fingerprint, v.dimensions, "
    "v.vector_type, v.metric, v.id_type, v.source, v.shards, "
    "CASE WHEN v.state = 'Building' THEN (SELECT coalesce(sum(p.row_count), 0) FROM embedops.index_progress p "
    "WHERE (p.target_schema, p.target_name, p.version) = (v.target_schema, v.target_name, v.version)) "
    "ELSE v.row_count END, "
    "v.state, v.created_at, v.completed_at, v.probe, v.probe_set, v.embeddings_key, v.synced_at, v.changed_rows "
    "FROM embedops.index_versions v "
    "WHERE v.target_schema = %s AND v.target_name = %s"
)


@dataclass(frozen=True)
class VersionRecord:
    """One catalog row: everything needed to write, index, search or drop a version table."""

    schema: str
    view: str
    version: int
    table: str
    model: str
    model_fingerprint: str | None
    dimensions: int
    vector_type: str
    metric: str
    id_type: str
    source: str
    shards: int
    rows: int
    state: VersionState
    created_at: dt.datetime
    completed_at: dt.datetime | None
    probe: dict[str, Any] | None
    probe_set: str | None
    embeddings_key: str | None  # None: built by a release that did not record it
    synced_at: dt.datetime | None = None  # start of the last diff applied by a sync; None: never synced
    changed_rows: int = 0  # rows inserted, updated or deleted by syncs since the version was built

    def to_api(self) -> IndexVersion:
        return IndexVersion(
            version=self.version,
            table=self.table,
            model=self.model,
            model_fingerprint=self.model_fingerprint,
            dimensions=self.dimensions,
            rows=self.rows,
            state=self.state,
            created_at=rfc3339(self.created_at),
            synced_at=rfc3339(self.synced_at) if self.synced_at else None,
            probe=ProbeResult.model_validate(self.probe) if self.probe else None,
        )


@dataclass(frozen=True)
class Build:
    """What a version is built from; a Building version with the same Build is resumed, not restarted."""

    model: str
    model_fingerprint: str
    dimensions: int
    vector_type: str
    metric: str
    id_type: str  # SQL type of the ids, as format_type() writes it
    source: str  # description of the documents, see sources.describe
    shards: int
    # What the vectors and their index are, as the planner identifies an embed step (its model,
    # source, vector type, metric, ANN build parameters, sequence length, precision): one
    # definition of "the same embeddings" for the planner and the store. None: a build run by
    # hand, which is compared by the columns below only.
    embeddings_key: str | None = None

    def same_embeddings(self, rec: VersionRecord) -> bool:
        """Whether `rec` holds what this build would write (the shard count aside).

        With a key, only a version recorded with the same key does: a version of an earlier
        release (no key) is never taken for one whose ANN index or sequence length may differ.
        """
        if self.embeddings_key is not None and rec.embeddings_key != self.embeddings_key:
            return False
        return (self.model_fingerprint, self.dimensions, self.vector_type, self.metric, self.id_type, self.source) == (
            rec.model_fingerprint,
            rec.dimensions,
            rec.vector_type,
            rec.metric,
            rec.id_type,
            rec.source,
        )

    def matches(self, rec: VersionRecord) -> bool:
        """Whether a Building `rec` is this build's (its shards find each other by it)."""
        return self.same_embeddings(rec) and self.shards == rec.shards


@dataclass(frozen=True)
class ShardProgress:
    last_id: str | None  # text form of the last id committed, in the source's order
    rows: int
    done: bool


def rfc3339(when: dt.datetime) -> str:
    return times.format_time(when)


def ensure(conn: psycopg.Connection) -> None:
    """Create the pgvector extension and the catalog once; a no-op (no privileges needed) when they exist."""
    ready = fetch.value(
        conn.execute(
            "SELECT to_regclass('embedops.index_progress') IS NOT NULL "
            "AND EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector') "
            "AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('embedops.index_versions') "
            "AND attname = 'changed_rows')"
        )
    )
    if ready:
        return
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
            for statement in _DDL:
                conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege as err:
        raise ValueError(
            "the database lacks the pgvector extension or the embedops schema, and this role may not create them "
            f"({err.diag.message_primary}); run `CREATE EXTENSION vector` and `CREATE SCHEMA embedops` as an owner"
        ) from None


def lock_target(conn: psycopg.Connection, schema: str, view: str) -> None:
    """Serialise changes to one target (allocation, cut-over, retention) until the transaction ends."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"embedops:{schema}.{view}",))


def lock_version(conn: psycopg.Connection, schema: str, view: str, version: int) -> None:
    """Serialise the finalisation of one version until the transaction ends.

    Blocking, not try-lock: a shard that finds the lock taken by another shard's check (which
    has just seen it unfinished) must wait and check again, or neither would build the index.
    """
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"embedops:{schema}.{view}:v{version}",))


def _record(row: tuple) -> VersionRecord:
    record = VersionRecord(*row)
    return dataclasses.replace(record, state=VersionState(record.state))


def records(conn: psycopg.Connection, schema: str, view: str) -> list[VersionRecord]:
    """All versions of a target, newest first."""
    rows = conn.execute(
        _SELECT + " ORDER BY v.version DESC",
        (schema, view),
    ).fetchall()
    return [_record(r) for r in rows]


def record(conn: psycopg.Connection, schema: str, view: str, version: int) -> VersionRecord | None:
    row = conn.execute(
        _SELECT + " AND v.version = %s",
        (schema, view, version),
    ).fetchone()
    return _record(row) if row else None


def next_version(conn: psycopg.Connection, schema: str, view: str) -> int:
    """The next version number of a view; numbers are never reused, and stop at MAX_VERSION."""
    version = fetch.value(
        conn.execute(
            "INSERT INTO embedops.index_targets AS t (target_schema, target_name, last_version) VALUES (%s, %s, 1) "
            "ON CONFLICT (target_schema, target_name) DO UPDATE SET last_version = t.last_version + 1 "
            "RETURNING last_version",
            (schema, view),
        )
    )
    if version > MAX_VERSION:
        raise ValueError(
            f"target {schema}.{view}: all {MAX_VERSION} version numbers are used; "
            "create a new EmbeddingIndex with another target.name"
        )
    return version


def insert_building(
    conn: psycopg.Connection, schema: str, view: str, version: int, table: str, build: Build
) -> VersionRecord:
    """Insert a Building version and one empty progress row per shard."""
    conn.execute(
        "INSERT INTO embedops.index_versions (target_schema, target_name, version, table_name, model, "
        "model_fingerprint, dimensions, vector_type, metric, id_type, source, shards, embeddings_key, state) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'Building')",
        (
            schema,
            view,
            version,
            table,
            build.model,
            build.model_fingerprint,
            build.dimensions,
            build.vector_type,
            build.metric,
            build.id_type,
            build.source,
            build.shards,
            build.embeddings_key,
        ),
    )
    conn.execute(
        "INSERT INTO embedops.index_progress (target_schema, target_name, version, shard) "
        "SELECT %s, %s, %s, s FROM generate_series(0, %s - 1) AS s",
        (schema, view, version, build.shards),
    )
    return record(conn, schema, view, version)  # type: ignore[return-value]


def set_state(conn: psycopg.Connection, rec: VersionRecord, state: VersionState, *, rows: int | None = None) -> None:
    conn.execute(
        "UPDATE embedops.index_versions SET state = %s, row_count = coalesce(%s, row_count), "
        "completed_at = CASE WHEN %s = 'Ready' THEN now() ELSE completed_at END "
        "WHERE target_schema = %s AND target_name = %s AND version = %s",
        (state.value, rows, state.value, rec.schema, rec.view, rec.version),
    )


def retire_live(conn: psycopg.Connection, schema: str, view: str) -> None:
    conn.execute(
        "UPDATE embedops.index_versions SET state = 'Retired' "
        "WHERE target_schema = %s AND target_name = %s AND state = 'Live'",
        (schema, view),
    )


def delete_version(conn: psycopg.Connection, rec: VersionRecord) -> None:
    conn.execute(
        "DELETE FROM embedops.index_versions WHERE target_schema = %s AND target_name = %s AND version = %s",
        (rec.schema, rec.view, rec.version),
    )


def owner(conn: psycopg.Connection, schema: str, view: str) -> TargetOwner | None:
    """The target's recorded owner; None when none is recorded (no build yet, or an earlier release's)."""
    row = conn.execute(
        "SELECT owner_namespace, owner_name, coalesce(owner_uid, '') FROM embedops.index_targets "
        "WHERE target_schema = %s AND target_name = %s AND owner_name IS NOT NULL",
        (schema, view),
    ).fetchone()
    return TargetOwner(namespace=row[0], name=row[1], uid=row[2]) if row else None


def claim(conn: psycopg.Connection, schema: str, view: str, claimant: TargetOwner) -> TargetOwner:
    """Record `claimant` as the target's owner unless another owns it; returns the owner now recorded.

    An unowned target (new, or built by an earlier release) is adopted by the first claimant.
    """
    row = fetch.row(
        conn.execute(
            "INSERT INTO embedops.index_targets AS t "
            "(target_schema, target_name, last_version, owner_namespace, owner_name, owner_uid) "
            "VALUES (%s, %s, 0, %s, %s, %s) ON CONFLICT (target_schema, target_name) DO UPDATE SET "
            "owner_namespace = coalesce(t.owner_namespace, excluded.owner_namespace), "
            "owner_name = coalesce(t.owner_name, excluded.owner_name), "
            "owner_uid = CASE WHEN t.owner_name IS NULL OR (t.owner_namespace, t.owner_name) = "
            "(excluded.owner_namespace, excluded.owner_name) THEN excluded.owner_uid ELSE t.owner_uid END "
            "RETURNING owner_namespace, owner_name, coalesce(owner_uid, '')",
            (schema, view, claimant.namespace, claimant.name, claimant.uid),
        )
    )
    return TargetOwner(namespace=row[0], name=row[1], uid=row[2])


def pinned(conn: psycopg.Connection, schema: str, view: str) -> int | None:
    """The version a pin holds live, if any."""
    row = conn.execute(
        "SELECT pinned_version FROM embedops.index_targets WHERE target_schema = %s AND target_name = %s",
        (schema, view),
    ).fetchone()
    return row[0] if row else None


def set_pinned(conn: psycopg.Connection, schema: str, view: str, version: int | None) -> None:
    conn.execute(
        "UPDATE embedops.index_targets SET pinned_version = %s WHERE target_schema = %s AND target_name = %s",
        (version, schema, view),
    )


def delete_target(conn: psycopg.Connection, schema: str, view: str) -> None:
    for table in ("index_versions", "index_targets"):
        conn.execute(f"DELETE FROM embedops.{table} WHERE target_schema = %s AND target_name = %s", (schema, view))


def progress(conn: psycopg.Connection, rec: VersionRecord, shard: int) -> ShardProgress:
    row = conn.execute(
        "SELECT last_id, row_count, done FROM embedops.index_progress "
        "WHERE target_schema = %s AND target_name = %s AND version = %s AND shard = %s",
        (rec.schema, rec.view, rec.version, shard),
    ).fetchone()
    if row is None:
        raise ValueError(f"shard {shard} is not one of the {rec.shards} shards of {rec.schema}.{rec.table}")
    return ShardProgress(*row)


def advance(
    conn: psycopg.Connection, rec: VersionRecord, shard: int, expected: ShardProgress, last_id: Any, rows: int
) -> ShardProgress | None:
    """Move a shard's progress past `last_id`; None when the shard moved meanwhile or the version stopped Building.

    Checking the previous position makes a second pod running the same shard (a retried pod
    whose predecessor is still alive) fail its transaction instead of double-writing.
    """
    row = conn.execute(
        "UPDATE embedops.index_progress p SET last_id = CAST(%s AS text), row_count = p.row_count + %s, "
        "updated_at = now() FROM embedops.index_versions v "
        "WHERE p.target_schema = %s AND p.target_name = %s AND p.version = %s AND p.shard = %s "
        "AND p.last_id IS NOT DISTINCT FROM %s AND NOT p.done "
        "AND v.target_schema = p.target_schema AND v.target_name = p.target_name AND v.version = p.version "
        "AND v.state = 'Building' RETURNING p.last_id, p.row_count, p.done",
        (last_id, rows, rec.schema, rec.view, rec.version, shard, expected.last_id),
    ).fetchone()
    return ShardProgress(*row) if row else None


def finish_shard(conn: psycopg.Connection, rec: VersionRecord, shard: int) -> None:
    conn.execute(
        "UPDATE embedops.index_progress SET done = true, updated_at = now() "
        "WHERE target_schema = %s AND target_name = %s AND version = %s AND shard = %s",
        (rec.schema, rec.view, rec.version, shard),
    )


def shard_totals(conn: psycopg.Connection, rec: VersionRecord) -> tuple[bool, int]:
    """Whether every shard is done, and the rows they committed together."""
    done, rows = fetch.row(
        conn.execute(
            "SELECT bool_and(done), coalesce(sum(row_count), 0) FROM embedops.index_progress "
            "WHERE target_schema = %s AND target_name = %s AND version = %s",
            (rec.schema, rec.view, rec.version),
        )
    )
    return bool(done), int(rows)


def count_sync(conn: psycopg.Connection, rec: VersionRecord, *, rows_delta: int, changed: int) -> None:
    """Add a sync's rows to a version's row count (inserted minus deleted) and changed rows."""
    conn.execute(
        "UPDATE embedops.index_versions SET row_count = row_count + %s, changed_rows = changed_rows + %s "
        "WHERE target_schema = %s AND target_name = %s AND version = %s",
        (rows_delta, changed, rec.schema, rec.view, rec.version),
    )


def set_synced(conn: psycopg.Connection, rec: VersionRecord, when: dt.datetime) -> None:
    conn.execute(
        "UPDATE embedops.index_versions SET synced_at = %s "
        "WHERE target_schema = %s AND target_name = %s AND version = %s",
        (when, rec.schema, rec.view, rec.version),
    )


def lock_target_shared(conn: psycopg.Connection, schema: str, view: str) -> None:
    """lock_target's shared form, until the transaction ends: a sync's writes into a version, which must not
    interleave with retention dropping it, but may with each other."""
    conn.execute("SELECT pg_advisory_xact_lock_shared(hashtextextended(%s, 0))", (f"embedops:{schema}.{view}",))


def save_probe(conn: psycopg.Connection, rec: VersionRecord, probe: ProbeResult, probe_set: str) -> None:
    conn.execute(
        "UPDATE embedops.index_versions SET probe = %s::jsonb, probe_set = %s "
        "WHERE target_schema = %s AND target_name = %s AND version = %s",
        (json.dumps(probe.to_wire()), probe_set, rec.schema, rec.view, rec.version),
    )
