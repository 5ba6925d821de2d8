"""Trigger mode (`spec.sync.mode: trigger`): row triggers on the source table fill a queue that each sync drains.

The diff (store.sync) scans the whole table's (id, hash) on every sync; trigger mode trades one
DDL on the user's table for a sync whose cost is the rows that changed, scan included:

- a queue table per target in the `embedops` schema, `(seq, id, queued_at)`: `seq` increases,
  and an `id` of NULL is a marker that a full diff is needed (a TRUNCATE, or the install itself:
  what changed before the triggers existed is not in the queue);
- row triggers on the source table, AFTER INSERT, AFTER DELETE and AFTER UPDATE OF the embedded
  columns (text, title; the id too: a changed key is a delete and an insert), the update one with
  a WHEN clause, so an update of any other column, or one that sets a column to its own value,
  fires nothing; a statement trigger AFTER TRUNCATE enqueues the marker;
- the trigger functions, in the `embedops` schema, SECURITY DEFINER: the roles that write the
  table need no privilege on the queue.

Installing is idempotent (what is installed is recorded in the queue table's comment and checked
together with the triggers' presence); a change of the source (another table, other columns)
installs afresh, with a marker. The triggers are ordinary ones: a subscriber's logical
replication apply worker runs with `session_replication_role = replica`, which skips them, so a
table fed by replication needs `ALTER TABLE ... ENABLE ALWAYS TRIGGER <name>` for each of them
(done here when the table is in a subscription at install time, kept when someone did it by
hand and the triggers are installed again).

Draining claims queued rows with `FOR UPDATE SKIP LOCKED`, `commit_rows` at a time, in seq
order, reads their text and hash now, embeds those whose hash differs from the version's, and
upserts, deletes and removes the claimed queue rows in one transaction: a drain killed at any
point loses nothing (its claims roll back) and run again ends with exactly the source's rows. A
marker falls back to one store.sync diff: the queue's other rows are cleared first (the diff,
which starts after, sees what they recorded), the markers only once the diff has finished.

Removal (the index deleted, whatever its deletionPolicy; the mode back to `diff`) drops the
functions with CASCADE, which takes their triggers with them: a role that was granted only the
TRIGGER privilege may create a trigger but not DROP TRIGGER one on a table it does not own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from embedops.api.index import TableSource, Target
from embedops.steps import TargetOwner
from embedops.store import catalog, fetch, names, sources
from embedops.store import sync as store_sync
from embedops.store.catalog import VersionRecord

log = logging.getLogger(__name__)

_EVENTS = ("insert", "delete", "update")


@dataclass(frozen=True)
class Names:
    """What trigger mode installs for one target, every name derived from the target's schema and name."""

    queue: str
    row_function: str
    truncate_function: str
    trigger_prefix: str  # the triggers on the source table: <prefix>_insert, _delete, _update, _truncate

    @property
    def triggers(self) -> list[str]:
        return [f"{self.trigger_prefix}_{event}" for event in (*_EVENTS, "truncate")]


def names_for(target: Target) -> Names:
    """`<view>_<digest>_queue` (the view's first 38 characters and a digest of schema and view: two targets of one
    name in two schemas get two queues, and every name fits Postgres's 63 bytes)."""
    names.check(target.schema_name, "target.schema")
    names.check(target.name, "target.name")
    digest = hashlib.md5(f"{target.schema_name}.{target.name}".encode()).hexdigest()[:10]
    base = f"{target.name[:38]}_{digest}"
    return Names(
        queue=f"{base}_queue",
        row_function=f"{base}_enqueue",
        truncate_function=f"{base}_truncated",
        trigger_prefix=f"embedops_sync_{digest}",
    )


def _target_of(rec: VersionRecord) -> Target:
    return Target.model_validate({"schema": rec.schema, "name": rec.view})


def _queue(n: Names) -> sql.Identifier:
    return sql.Identifier(catalog.SCHEMA, n.queue)


def _function(name: str) -> sql.Identifier:
    return sql.Identifier(catalog.SCHEMA, name)


def _signature(src: TableSource, id_type: str) -> str:
    """What an install is for, as the queue table's comment records it."""
    return json.dumps(
        {
            "source": f"{src.schema_name}.{src.table}",
            "id": src.id_column,
            "idType": id_type,
            "columns": [src.text_column, *([src.title_column] if src.title_column else [])],
        },
        sort_keys=True,
    )


def _lock(conn: psycopg.Connection, target: Target) -> None:
    """Serialise installs and removals of one target's trigger objects until the transaction ends."""
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
        (f"embedops-triggers:{target.schema_name}.{target.name}",),
    )


def _installed_triggers(conn: psycopg.Connection, n: Names) -> list[tuple[str, str, str, str]]:
    """(table schema, table, trigger, tgenabled) of every trigger that calls this target's functions."""
    functions = [f"{_function(f).as_string(conn)}()" for f in (n.row_function, n.truncate_function)]
    return conn.execute(
        "SELECT s.nspname::text, c.relname::text, t.tgname::text, t.tgenabled::text "
        "FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace s ON s.oid = c.relnamespace "
        "WHERE t.tgfoid IN (SELECT to_regprocedure(f) FROM unnest(%s::text[]) f)",
        (functions,),
    ).fetchall()


def installed(conn: psycopg.Connection, target: Target) -> bool:
    """Whether anything trigger mode installs for `target` is there (the queue table or a function)."""
    n = names_for(target)
    return bool(
        fetch.value(
            conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL OR to_regprocedure(%s) IS NOT NULL "
                "OR to_regprocedure(%s) IS NOT NULL",
                (
                    _queue(n).as_string(conn),
                    f"{_function(n.row_function).as_string(conn)}()",
                    f"{_function(n.truncate_function).as_string(conn)}()",
                ),
            )
        )
    )


def _current(conn: psycopg.Connection, n: Names, src: TableSource, id_type: str) -> bool:
    """The queue was installed for this source, and its four triggers are on the source table."""
    comment = fetch.value(
        conn.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", (_queue(n).as_string(conn),))
    )
    if comment != _signature(src, id_type):
        return False
    on_source = {t for s, table, t, _ in _installed_triggers(conn, n) if (s, table) == (src.schema_name, src.table)}
    return on_source == set(n.triggers)


def install(conn: psycopg.Connection, target: Target, src: TableSource, id_type: str) -> bool:
    """Install the queue, functions and triggers for `target` over `src` unless they are there as they should be;
    True when it installed them (the queue then holds a marker: the first drain runs a full diff)."""
    n = names_for(target)
    with conn.transaction():
        _lock(conn, target)
        if _current(conn, n, src, id_type):
            return False
        always = any(enabled == "A" for *_, enabled in _installed_triggers(conn, n)) or _replicated(conn, src)
        _drop(conn, n)
        _create(conn, n, src, id_type)
        if always:
            always = _enable_always(conn, n, src)
        conn.execute(sql.SQL("INSERT INTO {} (id) VALUES (NULL)").format(_queue(n)))
    log.info(
        "installed sync triggers on %s.%s (queue %s.%s%s)",
        src.schema_name,
        src.table,
        catalog.SCHEMA,
        n.queue,
        ", enabled always" if always else "",
    )
    return True


def _enable_always(conn: psycopg.Connection, n: Names, src: TableSource) -> bool:
    """ENABLE ALWAYS the triggers, when this role owns the table (ALTER TABLE needs it; TRIGGER does not)."""
    table = sql.Identifier(src.schema_name, src.table)
    owner = fetch.value(
        conn.execute(
            "SELECT pg_has_role(relowner, 'USAGE') FROM pg_class WHERE oid = to_regclass(%s)", (table.as_string(conn),)
        )
    )
    if not owner:
        log.warning(
            "%s.%s is fed by logical replication, which skips ordinary triggers, and this role does not own it: "
            "its owner must run ALTER TABLE ... ENABLE ALWAYS TRIGGER for %s",
            src.schema_name,
            src.table,
            ", ".join(n.triggers),
        )
        return False
    for trigger in n.triggers:
        conn.execute(sql.SQL("ALTER TABLE {} ENABLE ALWAYS TRIGGER {}").format(table, sql.Identifier(trigger)))
    return True


def _replicated(conn: psycopg.Connection, src: TableSource) -> bool:
    """The table is fed by a subscription of this database (logical replication skips ordinary triggers)."""
    qualified = sql.Identifier(src.schema_name, src.table).as_string(conn)
    try:
        with conn.transaction():
            return bool(
                fetch.value(
                    conn.execute(
                        "SELECT EXISTS (SELECT 1 FROM pg_subscription_rel WHERE srrelid = to_regclass(%s))",
                        (qualified,),
                    )
                )
            )
    except psycopg.errors.InsufficientPrivilege:
        return False


def _create(conn: psycopg.Connection, n: Names, src: TableSource, id_type: str) -> None:
    queue, table, key = _queue(n), sql.Identifier(src.schema_name, src.table), sql.Identifier(src.id_column)
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, id {}, "
            "queued_at timestamptz NOT NULL DEFAULT now())"
        ).format(queue, sql.SQL(id_type))
    )
    conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(queue, sql.Literal(_signature(src, id_type))))
    # A changed key is the old id gone and the new one new; any other event enqueues the row's id once.
    body = sql.SQL(
        "BEGIN\n"
        "  IF TG_OP <> 'INSERT' THEN INSERT INTO {queue} (id) VALUES (OLD.{key}); END IF;\n"
        "  IF TG_OP = 'INSERT' THEN INSERT INTO {queue} (id) VALUES (NEW.{key});\n"
        "  ELSIF TG_OP = 'UPDATE' THEN\n"
        "    IF NEW.{key} IS DISTINCT FROM OLD.{key} THEN INSERT INTO {queue} (id) VALUES (NEW.{key}); END IF;\n"
        "  END IF;\n"
        "  RETURN NULL;\n"
        "END"
    ).format(queue=queue, key=key)
    marker = sql.SQL("BEGIN INSERT INTO {} (id) VALUES (NULL); RETURN NULL; END").format(queue)
    for function, code in ((n.row_function, body), (n.truncate_function, marker)):
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
                "SET search_path = pg_catalog, pg_temp AS {}"
            ).format(_function(function), sql.Literal(code.as_string(conn)))
        )
    columns = [src.id_column, src.text_column, *([src.title_column] if src.title_column else [])]
    changed = sql.SQL(" OR ").join(
        sql.SQL("OLD.{c} IS DISTINCT FROM NEW.{c}").format(c=sql.Identifier(c)) for c in columns
    )
    insert, delete, update, truncate = (sql.Identifier(t) for t in n.triggers)
    row = _function(n.row_function)
    for statement in (
        sql.SQL("CREATE TRIGGER {} AFTER INSERT ON {} FOR EACH ROW EXECUTE FUNCTION {}()").format(insert, table, row),
        sql.SQL("CREATE TRIGGER {} AFTER DELETE ON {} FOR EACH ROW EXECUTE FUNCTION {}()").format(delete, table, row),
        sql.SQL("CREATE TRIGGER {} AFTER UPDATE OF {} ON {} FOR EACH ROW WHEN ({}) EXECUTE FUNCTION {}()").format(
            update, sql.SQL(", ").join(map(sql.Identifier, columns)), table, changed, row
        ),
        sql.SQL("CREATE TRIGGER {} AFTER TRUNCATE ON {} FOR EACH STATEMENT EXECUTE FUNCTION {}()").format(
            truncate, table, _function(n.truncate_function)
        ),
    ):
        conn.execute(statement)


def _drop(conn: psycopg.Connection, n: Names) -> None:
    # CASCADE drops the triggers wherever they are (the table may have been renamed since), which needs only
    # the functions' ownership, where DROP TRIGGER needs the table's.
    for function in (n.row_function, n.truncate_function):
        conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}() CASCADE").format(_function(function)))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_queue(n)))


def remove(conn: psycopg.Connection, target: Target, owner: TargetOwner | None = None) -> list[str]:
    """Drop the triggers, functions and queue table trigger mode installed for `target`; the queue's name when
    there was anything to drop. For `owner` only: a target another index owns keeps its triggers."""
    n = names_for(target)
    with conn.transaction():
        _lock(conn, target)
        recorded = catalog.owner(conn, target.schema_name, target.name)
        if owner is not None and recorded is not None and not recorded.same_index(owner):
            return []
        if not installed(conn, target):
            return []
        tables = sorted({f"{s}.{t}" for s, t, *_ in _installed_triggers(conn, n)})
        _drop(conn, n)
    log.info("removed sync triggers from %s and their queue %s.%s", ", ".join(tables) or "-", catalog.SCHEMA, n.queue)
    return [f"{catalog.SCHEMA}.{n.queue}"]


def drain(
    conn: psycopg.Connection,
    rec: VersionRecord,
    src: TableSource,
    embed: store_sync.Embed,
    *,
    blank: str,
    chunk_rows: int = 2048,
) -> store_sync.SyncCounts:
    """Apply what the queue holds to `rec` (a marker: one full diff instead), `chunk_rows` queued rows at a time.

    Rows queued while the drain runs are left for the next one (its `pending`, with the markers); the version's
    synced time is the drain's start once everything queued before it was applied. Two drains at once share
    the work (SKIP LOCKED). Runs on an autocommit connection.
    """
    started = time.monotonic()
    queue = _queue(names_for(_target_of(rec)))
    counts = _resync(conn, rec, src, embed, queue, blank=blank, chunk_rows=chunk_rows)
    if counts is None:
        counts = store_sync.SyncCounts(version=rec.version, started_at=fetch.value(conn.execute("SELECT now()")))
        last = fetch.value(conn.execute(sql.SQL("SELECT max(seq) FROM {}").format(queue)))
        writer = store_sync._Writer(conn, rec)
        while last is not None and (done := _drain_chunk(conn, writer, src, embed, queue, last, blank, chunk_rows)):
            if done is _STOPPED:
                log.warning(
                    "%s.%s is no longer a version to sync (dropped or failed); drain stopped", rec.schema, rec.table
                )
                counts.stopped = True
                break
            counts.found += done.found
            counts.inserted, counts.updated, counts.deleted = (
                counts.inserted + done.inserted,
                counts.updated + done.updated,
                counts.deleted + done.deleted,
            )
        if not counts.stopped:
            with conn.transaction():
                catalog.set_synced(conn, rec, counts.started_at)
    counts.pending = int(fetch.value(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(queue))))
    counts.seconds = round(time.monotonic() - started, 3)
    return counts


def _resync(
    conn: psycopg.Connection,
    rec: VersionRecord,
    src: TableSource,
    embed: store_sync.Embed,
    queue: sql.Identifier,
    *,
    blank: str,
    chunk_rows: int,
) -> store_sync.SyncCounts | None:
    """With a marker queued: clear the queue's rows, diff, then clear the markers seen; None without one."""
    # One statement, one snapshot: the rows cleared are those the diff (which starts after) sees the changes of.
    markers = fetch.value(
        conn.execute(
            sql.SQL(
                "WITH markers AS (SELECT seq FROM {q} WHERE id IS NULL), "
                "cleared AS (DELETE FROM {q} WHERE id IS NOT NULL AND EXISTS (SELECT FROM markers)) "
                "SELECT array_agg(seq) FROM markers"
            ).format(q=queue)
        )
    )
    if not markers:
        return None
    log.info("%s.%s: a full diff is needed (a TRUNCATE, or the triggers are new)", rec.schema, rec.table)
    counts = store_sync.sync_version(conn, rec, src, embed, blank=blank, chunk_rows=chunk_rows)
    if not counts.stopped:
        conn.execute(sql.SQL("DELETE FROM {} WHERE seq = ANY(%s)").format(queue), (markers,))
    return counts


@dataclass(frozen=True)
class _Chunk:
    found: int
    inserted: int
    updated: int
    deleted: int


_STOPPED = _Chunk(0, 0, 0, 0)  # the version is gone (dropped by retention, failed): its claims stay queued


def _drain_chunk(
    conn: psycopg.Connection,
    writer: store_sync._Writer,
    src: TableSource,
    embed: store_sync.Embed,
    queue: sql.Identifier,
    last: int,
    blank: str,
    chunk_rows: int,
) -> _Chunk | None:
    """Claim, embed and apply one chunk of the queue (up to seq `last`) and delete the claims, in one transaction;
    None when nothing is left to claim."""
    rec = writer.rec
    with conn.transaction() as tx:
        claimed = conn.execute(
            sql.SQL(
                "SELECT seq, id FROM {} WHERE id IS NOT NULL AND seq <= %s ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED"
            ).format(queue),
            (last, chunk_rows),
        ).fetchall()
        if not claimed:
            return None
        ids = list(dict.fromkeys(i for _, i in claimed))
        rows, stored = _read(conn, rec, src, ids, blank=blank)
        changed = [r for r in rows if stored.get(r.id) != r.hash]  # not: an id queued twice, a text set to itself
        present = {r.id for r in rows}
        gone = [i for i in ids if i not in present and i in stored]
        vectors = embed([r.text for r in changed]) if changed else np.empty((0, rec.dimensions), np.float32)
        done = writer.apply([r.id for r in changed], vectors, [r.hash for r in changed], gone)
        if done is None:
            raise psycopg.Rollback(tx)
        conn.execute(sql.SQL("DELETE FROM {} WHERE seq = ANY(%s)").format(queue), ([s for s, _ in claimed],))
        return _Chunk(len(changed) + len(gone), *done)
    return _STOPPED


def _read(
    conn: psycopg.Connection, rec: VersionRecord, src: TableSource, ids: list[Any], *, blank: str
) -> tuple[list[sources.Row], dict[Any, Any]]:
    """The ids' rows now and the hashes the version holds, read in a savepoint that is then rolled back: the
    locks the reads took on the source and the version table go with it, so while the chunk embeds, its
    transaction holds only the queue rows it claimed (a TRUNCATE or ALTER of the source, retention dropping
    the version, need not wait for the model)."""
    read: list[tuple[list[sources.Row], dict[Any, Any]]] = []
    with conn.transaction() as savepoint:
        stored = conn.execute(
            sql.SQL("SELECT id, content_hash FROM {} WHERE id = ANY(%s)").format(sql.Identifier(rec.schema, rec.table)),
            (ids,),
        ).fetchall()
        read.append((sources.rows(conn, src, ids, blank=blank), dict(stored)))
        raise psycopg.Rollback(savepoint)
    return read[0]
