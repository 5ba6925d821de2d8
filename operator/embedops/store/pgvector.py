"""Versioned pgvector tables behind one stable view: build, index, cut over, roll back, retain, drop.

An EmbeddingIndex is a view `<schema>.<name>` (columns `id`, `embedding`) over one of its
version tables `<name>_v<N>`. A new model is embedded into a new table while the view keeps
serving the old one; the new table gets its ANN index and is probed, and only then does the
view move. Readers never see a half-built index, and a rollback is one statement away.

- Writes are binary COPY (the stream built with numpy, `copy_binary`), each chunk committed in the
  same transaction as its shard's progress row, so a killed pod resumes after its last commit with
  no row lost or doubled.
- Cut-over and rollback are DROP VIEW + CREATE VIEW in one transaction (not CREATE OR
  REPLACE: a model with other dimensions changes the column's type). Readers wait for that
  instant and then see the new view, never a missing one. The view's grants are carried
  over, and a short `lock_timeout` with retries keeps the cut-over from waiting behind a long
  query while every new reader queues behind the cut-over.
- ANN builds raise `maintenance_work_mem` for their own transaction only: pgvector builds an
  HNSW graph many times faster while it fits in that memory. The default is estimated from
  rows, dimensions and `m` (64 MB to 1 GB, never below the server's own setting); pass a
  value such as "4GB" to `finalize` when the database server has memory to spare.
- Only tables in the catalog are ever dropped, never with CASCADE, and every user-supplied
  name is validated before any SQL runs.

Connections come from `connect()`: autocommit, with each change in an explicit transaction.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import psycopg
from pgvector import HalfVector, Vector
from pgvector.psycopg import register_vector
from psycopg import conninfo, sql

from embedops.api.index import (
    RETAINED_STATES,
    AnnSpec,
    IndexVersion,
    ProbeResult,
    Target,
    VersionState,
)
from embedops.results import TargetConflict
from embedops.steps import TargetOwner
from embedops.store import catalog, fetch, names
from embedops.store.catalog import Build, ShardProgress, VersionRecord

log = logging.getLogger(__name__)

# pgvector indexes at most this many dimensions of each type.
MAX_INDEXED_DIMENSIONS = {"vector": 2000, "halfvec": 4000}
OPERATORS = {"cosine": "<=>", "l2": "<->", "inner_product": "<#>"}


def normalizes(metric: str) -> bool:
    """Cosine and inner product are served on unit vectors; L2 keeps the model's own lengths."""
    return metric in ("cosine", "inner_product")


_OPCLASS_METRIC = {"cosine": "cosine", "l2": "l2", "inner_product": "ip"}
_METHODS = ("hnsw", "ivfflat")
_GRANTABLE = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN"})
_MIB = 1 << 20
_BUILD_MEMORY = (64 * _MIB, 1024 * _MIB)
_LOCK_TIMEOUT = "5s"
LIVE_CHANNEL = "embedops_live"  # NOTIFY channel of cut-overs; the payload is "<schema>.<view>"
_LOCK_TRIES = 4


class BuildConflict(RuntimeError):
    """Another writer moved this shard on, or the version stopped building, while a chunk was written."""


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached now (down, restarting, unreachable): trying again later may work."""


CONNECT_TIMEOUT_SECONDS = 10


def dsn_password(dsn: str) -> str | None:
    """The password of a DSN, for cleaning messages of it; ValueError, without the DSN, when it is malformed."""
    try:
        password = conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:
        raise ValueError(
            "the database connection string (DSN) is malformed; it is not shown, as it may hold "
            "a password (libpq's format: 'postgresql://user:password@host:5432/db' or "
            "'host=... dbname=... user=...')"
        ) from None
    return str(password) if password else None


def connect(dsn: str | None, *, catalog_schema: bool = True) -> psycopg.Connection:
    """An autocommit connection with pgvector's types registered and the catalog in place
    (`catalog_schema=False`: a plain connection, for reading a user's table).

    No part of the DSN is ever put in an error: a malformed one is reported as malformed, and
    libpq's messages are cleaned of the password. Refused credentials are invalid input (a
    retry would fail the same way); anything else about reaching the server is DatabaseUnavailable.
    """
    if not dsn:
        raise ValueError("no database connection string was given (workers take it from the environment)")
    password = dsn_password(dsn)
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    except psycopg.OperationalError as err:
        message = str(err).strip().replace(password, "****") if password else str(err).strip()
        if (err.sqlstate or "").startswith("28"):  # invalid authorization: a wrong user or password
            raise ValueError(f"the database refused the login: {message}") from None
        raise DatabaseUnavailable(f"cannot connect to the database: {message}") from None
    if not catalog_schema:
        return conn
    try:
        catalog.ensure(conn)
        register_vector(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _target(conn: psycopg.Connection, target: Target) -> tuple[str, str]:
    """The target's validated (schema, view); raises before any SQL runs."""
    schema = names.check(target.schema_name, "target.schema")
    view = names.check(target.name, "target.name")
    names.version_table(view, 1)
    if not conn.autocommit:
        # Inside an implicit transaction, `conn.transaction()` is only a savepoint and nothing would commit.
        raise ValueError("the store needs an autocommit connection; open it with store.pgvector.connect()")
    return schema, view


# -- public API: what the local runner and the operator call -----------------------------------


def target_problems(conn: psycopg.Connection, target: Target, owner: TargetOwner) -> list[str]:
    """Why the target is not `owner`'s to use, in words, without writing anything (what `validate` shows);
    empty when it is. A catalog not made yet holds no owner and no version table."""
    schema, view = _target(conn, target)
    problems = []
    has_catalog = fetch.value(conn.execute("SELECT to_regclass('embedops.index_versions') IS NOT NULL"))
    if has_catalog:
        recorded = catalog.owner(conn, schema, view)
        if recorded is not None and not recorded.same_index(owner):
            problems.append(f"target {schema}.{view} belongs to {recorded}")
    if (foreign := _foreign_object(conn, schema, view, catalog_made=bool(has_catalog))) is not None:
        problems.append(foreign)
    if dependents := _dependent_views(conn, schema, view):
        problems.append(f"{', '.join(dependents)} depend on {schema}.{view}, which every cut-over drops and creates")
    return problems


def claim_target(conn: psycopg.Connection, target: Target, owner: TargetOwner) -> None:
    """Make sure the target is `owner`'s to build, cut over and drop, before anything is written.

    The catalog records one owner per target: a second index naming the same target gets
    TargetConflict, as does a view or table of that name that embedops did not create, or a
    view of a user that depends on the embedops view (a cut-over drops and creates the view,
    which Postgres refuses while another view depends on it): all found before any embedding.
    """
    schema, view = _target(conn, target)
    with conn.transaction():
        catalog.lock_target(conn, schema, view)
        _check_view_is_ours(conn, schema, view)
        recorded = catalog.claim(conn, schema, view, owner)
    if not recorded.same_index(owner):
        raise TargetConflict(
            f"target {schema}.{view} belongs to {recorded}; give this index another target.name "
            "(one index per target: the two would take turns replacing each other's view)"
        )
    if dependents := _dependent_views(conn, schema, view):
        raise TargetConflict(
            f"target {schema}.{view}: {', '.join(dependents)} depend on the view, which every cut-over drops and "
            "creates again; drop them, or point them at another object"
        )


def _check_view_is_ours(conn: psycopg.Connection, schema: str, view: str) -> None:
    if (foreign := _foreign_object(conn, schema, view)) is not None:
        raise TargetConflict(
            f"target.name: {foreign}; embedops will not replace it: give the index another target.name, or drop it"
        )


def _foreign_object(conn: psycopg.Connection, schema: str, view: str, *, catalog_made: bool = True) -> str | None:
    """What stands under the target's name that embedops did not create, in words; None when nothing does.

    A relation there is embedops' only if it is a view that reads nothing but the target's
    version tables in the catalog.
    """
    name = sql.Identifier(schema, view).as_string(conn)
    kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", (name,)).fetchone()
    if kind is None:
        return None
    if kind[0] != "v":
        return f"{schema}.{view} exists and is not a view"
    read = {
        table
        for (table,) in conn.execute(
            "SELECT DISTINCT t.relname FROM pg_rewrite r JOIN pg_depend d ON d.objid = r.oid "
            "AND d.classid = 'pg_rewrite'::regclass JOIN pg_class t ON t.oid = d.refobjid "
            "WHERE r.ev_class = to_regclass(%s) AND t.oid <> r.ev_class",
            (name,),
        ).fetchall()
    }
    ours = {r.table for r in catalog.records(conn, schema, view)} if catalog_made else set()
    if read and read <= ours:
        return None
    return f"{schema}.{view} is a view embedops did not create (it reads {', '.join(sorted(read)) or 'no table'})"


def _dependent_views(conn: psycopg.Connection, schema: str, view: str) -> list[str]:
    """The other views (and materialized views) that read the target's view."""
    rows = conn.execute(
        "SELECT DISTINCT r.ev_class::regclass::text FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid "
        "AND d.classid = 'pg_rewrite'::regclass WHERE d.refobjid = to_regclass(%s) AND r.ev_class <> d.refobjid",
        (sql.Identifier(schema, view).as_string(conn),),
    ).fetchall()
    return sorted(name for (name,) in rows)


def versions(conn: psycopg.Connection, target: Target) -> list[IndexVersion]:
    """The target's versions in the catalog, newest first."""
    schema, view = _target(conn, target)
    return [r.to_api() for r in catalog.records(conn, schema, view)]


def live_version(conn: psycopg.Connection, target: Target) -> IndexVersion | None:
    """The version the view serves, if any."""
    rec = live_record(conn, target)
    return rec.to_api() if rec else None


def live_record(conn: psycopg.Connection, target: Target) -> VersionRecord | None:
    schema, view = _target(conn, target)
    return next((r for r in catalog.records(conn, schema, view) if r.state == VersionState.LIVE), None)


def version_record(conn: psycopg.Connection, target: Target, version: int | None = None) -> VersionRecord:
    """One version's catalog row (the live one when `version` is None); ValueError when there is none."""
    schema, view = _target(conn, target)
    records = catalog.records(conn, schema, view)
    found = next(
        (r for r in records if (r.state == VersionState.LIVE if version is None else r.version == version)), None
    )
    if found is None:
        what = "no live version" if version is None else f"no version {version}"
        raise ValueError(f"{schema}.{view} has {what} in the embedops catalog")
    return found


def cutover(
    conn: psycopg.Connection,
    target: Target,
    version: int,
    *,
    before: Callable[[psycopg.Connection, VersionRecord], None] | None = None,
) -> IndexVersion:
    """Point the view at `version` (Ready, Retired or already Live); the live one becomes Retired.

    `before` runs in the cut-over's transaction, under the target lock, right before the view moves
    (the catch-up sync of the version with its source table: workers.sync.catch_up).
    """

    def choose(records: list[VersionRecord]) -> VersionRecord:
        rec = next((r for r in records if r.version == version), None)
        if rec is None:
            raise ValueError(f"{target.schema_name}.{target.name} has no version {version}")
        if rec.state not in RETAINED_STATES:
            raise ValueError(f"version {version} is {rec.state}; only a Ready or Retired version can be cut over to")
        return rec

    return _switch(conn, target, choose, before).to_api()


def rollback(conn: psycopg.Connection, target: Target, to_version: int | None = None) -> IndexVersion:
    """Point the view back at a retained version: `to_version`, or the newest Ready/Retired one before the live one."""

    def choose(records: list[VersionRecord]) -> VersionRecord:
        retained = [r for r in records if r.state in (VersionState.READY, VersionState.RETIRED)]
        if to_version is not None:
            rec = next((r for r in retained if r.version == to_version), None)
            if rec is None:
                raise ValueError(
                    f"version {to_version} of {target.schema_name}.{target.name} is not a retained version"
                )
            return rec
        live = next((r for r in records if r.state == VersionState.LIVE), None)
        earlier = [r for r in retained if live is None or r.version < live.version]
        if not earlier:
            raise ValueError(f"{target.schema_name}.{target.name} has no earlier retained version to roll back to")
        return earlier[0]

    return _switch(conn, target, choose).to_api()


def pinned(conn: psycopg.Connection, target: Target) -> int | None:
    """The version spec.pinnedVersion holds live, as the last publish recorded it (None: not pinned)."""
    schema, view = _target(conn, target)
    return catalog.pinned(conn, schema, view)


def record_pin(conn: psycopg.Connection, target: Target, version: int | None) -> None:
    """Record the pin a publish applied (None: the index follows its model)."""
    schema, view = _target(conn, target)
    with conn.transaction():
        catalog.set_pinned(conn, schema, view, version)


def apply_retention(conn: psycopg.Connection, target: Target, keep: int, *, protect: int | None = None) -> list[int]:
    """Drop the version tables beyond the `keep` newest (the live one always kept); returns the versions dropped.

    Building versions are never touched (a pod may be writing them); Failed ones are always dropped;
    `protect` (the version of the index's current model, while a pin serves another) is always kept.
    """
    schema, view = _target(conn, target)
    if keep < 1:
        raise ValueError("keepVersions: must be at least 1")
    with conn.transaction():
        catalog.lock_target(conn, schema, view)
        records = catalog.records(conn, schema, view)
        kept = _retained(records, keep) | ({protect} if protect is not None else set())
        doomed = [r for r in records if r.state != VersionState.BUILDING and r.version not in kept]
        for rec in doomed:
            _drop_version_table(conn, rec)
            catalog.delete_version(conn, rec)
    if doomed:
        log.info("retention dropped %s of %s.%s", ", ".join(r.table for r in doomed), schema, view)
    return [r.version for r in doomed]


def drop_target(conn: psycopg.Connection, target: Target, owner: TargetOwner | None = None) -> list[str]:
    """Drop the view, every version table in the catalog and the catalog rows (deletionPolicy: Delete).

    For `owner` only: a target another index owns is left as it is (nothing is dropped; a second
    index naming the same target must not take the first one's tables with it when deleted).
    """
    schema, view = _target(conn, target)
    with conn.transaction():
        catalog.lock_target(conn, schema, view)
        recorded = catalog.owner(conn, schema, view)
        if owner is not None and recorded is not None and not recorded.same_index(owner):
            log.warning("%s.%s belongs to %s; %s drops nothing", schema, view, recorded, owner)
            return []
        if _foreign_object(conn, schema, view) is None:  # a view (or table) of a user under the name stays
            conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(sql.Identifier(schema, view)))
        records = catalog.records(conn, schema, view)
        for rec in records:
            _drop_version_table(conn, rec)
        catalog.delete_target(conn, schema, view)
    return [r.table for r in records]


def _retained(records: list[VersionRecord], keep: int) -> set[int]:
    live = [r.version for r in records if r.state == VersionState.LIVE]
    others = [r.version for r in records if r.state in (VersionState.READY, VersionState.RETIRED)]  # newest first
    return set(live) | set(others[: max(keep - len(live), 0)])


def _drop_version_table(conn: psycopg.Connection, rec: VersionRecord) -> None:
    # The name is derived again rather than trusted from the catalog row, so nothing but a version table can go.
    table = names.version_table(rec.view, rec.version)
    if table != rec.table:
        raise ValueError(f"catalog row of {rec.schema}.{rec.view} v{rec.version} names table {rec.table!r}; refusing")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(rec.schema, table)))


def _switch(
    conn: psycopg.Connection,
    target: Target,
    choose: Callable[[list[VersionRecord]], VersionRecord],
    before: Callable[[psycopg.Connection, VersionRecord], None] | None = None,
) -> VersionRecord:
    """Repoint the view at the version `choose` picks, in one transaction, retrying when locks are busy."""
    schema, view = _target(conn, target)
    for attempt in range(_LOCK_TRIES):
        try:
            with conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (_LOCK_TIMEOUT,))
                catalog.lock_target(conn, schema, view)
                rec = choose(catalog.records(conn, schema, view))
                if before is not None:
                    before(conn, rec)
                _point_view(conn, rec)
            log.info("%s.%s now serves v%d (%s)", schema, view, rec.version, rec.model)
            return catalog.record(conn, schema, view, rec.version)  # type: ignore[return-value]
        except psycopg.errors.LockNotAvailable:
            if attempt + 1 == _LOCK_TRIES:
                raise
            log.warning("%s.%s is busy; retrying the cut-over", schema, view)
            time.sleep(2**attempt)
    raise AssertionError("unreachable")


def _point_view(conn: psycopg.Connection, rec: VersionRecord) -> None:
    view = sql.Identifier(rec.schema, rec.view)
    _check_view_is_ours(conn, rec.schema, rec.view)  # only a view embedops made is ever dropped
    grants = _view_grants(conn, view)
    conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(view))
    conn.execute(
        sql.SQL("CREATE VIEW {} AS SELECT id, embedding FROM {}").format(view, sql.Identifier(rec.schema, rec.table))
    )
    conn.execute(
        sql.SQL("COMMENT ON VIEW {} IS {}").format(
            view, sql.Literal(f"Managed by embedops: serves version {rec.version} ({rec.model}).")
        )
    )
    for privilege, grantee, grantable in grants:
        conn.execute(
            sql.SQL("GRANT {} ON {} TO {}{}").format(
                sql.SQL(privilege),
                view,
                sql.Identifier(grantee) if grantee else sql.SQL("PUBLIC"),
                sql.SQL(" WITH GRANT OPTION" if grantable else ""),
            )
        )
    catalog.retire_live(conn, rec.schema, rec.view)
    catalog.set_state(conn, rec, VersionState.LIVE)
    # Delivered at commit, to every session listening (a query server following the live version).
    conn.execute("SELECT pg_notify(%s, %s)", (LIVE_CHANNEL, f"{rec.schema}.{rec.view}"))


def _view_grants(conn: psycopg.Connection, view: sql.Identifier) -> list[tuple[str, str | None, bool]]:
    """(privilege, grantee or None for PUBLIC, grantable) of the existing view, which DROP VIEW would lose."""
    rows = conn.execute(
        "SELECT a.privilege_type, CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, "
        "a.is_grantable FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a "
        "WHERE c.oid = to_regclass(%s) AND c.relkind = 'v' AND a.grantee <> c.relowner",
        (view.as_string(conn),),
    ).fetchall()
    return [(p, g, bool(o)) for p, g, o in rows if p in _GRANTABLE]


# -- building a version -------------------------------------------------------------------------


def find_built(conn: psycopg.Connection, target: Target, build: Build) -> VersionRecord | None:
    """The newest finished (Ready, Live or Retired) version built like `build`, whatever its shard count."""
    schema, view = _target(conn, target)
    for rec in catalog.records(conn, schema, view):
        if rec.state in RETAINED_STATES and build.same_embeddings(rec):
            return rec
    return None


def begin_build(conn: psycopg.Connection, target: Target, build: Build) -> tuple[VersionRecord, bool]:
    """The Building version to write into, and whether it was resumed.

    The newest version is resumed when it is still Building the same Build (this is also how
    the shards of one build find each other); a Building version of anything else is marked
    Failed, because it would never be finished, and a new version is allocated. So one build
    runs per target at a time: whoever starts a new one stops the Jobs of the old.
    """
    schema, view = _target(conn, target)
    _check_build(build)
    _check_view_is_ours(conn, schema, view)
    with conn.transaction():
        catalog.lock_target(conn, schema, view)
        records = catalog.records(conn, schema, view)
        newest = records[0] if records else None
        if newest is not None and newest.state == VersionState.BUILDING:
            if build.matches(newest):
                return newest, True
            log.warning(
                "%s.%s v%d was still building from %s; superseded, marked Failed",
                schema,
                view,
                newest.version,
                newest.model,
            )
            catalog.set_state(conn, newest, VersionState.FAILED)
        version = catalog.next_version(conn, schema, view)
        table = names.version_table(view, version)
        _create_version_table(conn, schema, table, build)
        rec = catalog.insert_building(conn, schema, view, version, table, build)
    log.info("building %s.%s v%d into %s with %s", schema, view, version, table, build.model)
    return rec, False


def _check_build(build: Build) -> None:
    limit = MAX_INDEXED_DIMENSIONS.get(build.vector_type)
    if limit is None:
        raise ValueError(f"ann.vectorType: {build.vector_type!r} is not one of {', '.join(MAX_INDEXED_DIMENSIONS)}")
    if build.metric not in OPERATORS:
        raise ValueError(f"ann.metric: {build.metric!r} is not one of {', '.join(OPERATORS)}")
    if build.dimensions > limit:
        fits_halfvec = build.vector_type == "vector" and build.dimensions <= MAX_INDEXED_DIMENSIONS["halfvec"]
        hint = "; use halfvec" if fits_halfvec else ""
        raise ValueError(
            f"ann.vectorType: pgvector indexes {build.vector_type} columns of up to {limit} dimensions and "
            f"the model has {build.dimensions}{hint}"
        )
    if build.shards < 1:
        raise ValueError("embedding.shards: must be at least 1")


def _create_version_table(conn: psycopg.Connection, schema: str, table: str, build: Build) -> None:
    if fetch.value(conn.execute("SELECT to_regnamespace(%s)", (sql.Identifier(schema).as_string(conn),))) is None:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        # id_type is format_type()'s output for the source column, written by Postgres itself.
        conn.execute(
            # content_hash: the md5 of the text each row was embedded from (sources.content_hash), what a sync diffs.
            sql.SQL("CREATE TABLE {} (id {} PRIMARY KEY, embedding {}({}) NOT NULL, content_hash uuid)").format(
                sql.Identifier(schema, table),
                sql.SQL(build.id_type),
                sql.SQL(build.vector_type),
                sql.Literal(build.dimensions),
            )
        )
    except psycopg.errors.DuplicateTable:
        raise ValueError(
            f"target.name: table {schema}.{table} already exists and is not an embedops version; "
            "rename it or choose another target name"
        ) from None


class VersionWriter:
    """Writes one shard of a Building version; each chunk is committed together with the shard's progress."""

    def __init__(self, conn: psycopg.Connection, rec: VersionRecord, shard: int):
        if rec.state != VersionState.BUILDING:
            raise ValueError(f"{rec.schema}.{rec.table} is {rec.state}, not Building")
        self._conn = conn
        self.record = rec
        self.shard = shard
        self.progress: ShardProgress = catalog.progress(conn, rec, shard)
        self._rows = RowCopier(conn, rec, sql.Identifier(rec.schema, rec.table))

    def write(
        self, ids: Sequence[Any], vectors: np.ndarray, hashes: Sequence[uuid.UUID] | None = None
    ) -> ShardProgress:
        """Append rows (ids ascending, after the shard's last id) with the content hashes of their texts, and
        commit them with the progress row. Without `hashes` (a build by hand) the rows have none: the
        first sync embeds them again."""
        if len(ids) != len(vectors) or (hashes is not None and len(hashes) != len(ids)):
            raise ValueError(f"{len(ids)} ids but {len(vectors)} vectors and {len(hashes or ())} hashes")
        if not ids:
            return self.progress
        with self._conn.transaction():
            self._rows.copy(ids, vectors, hashes)
            moved = catalog.advance(self._conn, self.record, self.shard, self.progress, ids[-1], len(ids))
            if moved is None:
                raise BuildConflict(
                    f"shard {self.shard} of {self.record.schema}.{self.record.table} moved on while a chunk was "
                    "written (is another pod running the same shard?), or the version is no longer Building"
                )
        self.progress = moved
        return moved

    def finish(self) -> None:
        with self._conn.transaction():
            catalog.finish_shard(self._conn, self.record, self.shard)
        self.progress = catalog.progress(self._conn, self.record, self.shard)


class RowCopier:
    """COPY (id, embedding[, content_hash]) rows of a version into `table` (the version table, or a staging
    table like it), in the caller's transaction."""

    def __init__(self, conn: psycopg.Connection, rec: VersionRecord, table: sql.Composable):
        self._conn, self._table, self._vector_type = conn, table, rec.vector_type
        self._id_type = _id_oid(conn, rec)
        self._wrap = HalfVector if rec.vector_type == "halfvec" else Vector

    def copy(self, ids: Sequence[Any], vectors: np.ndarray, hashes: Sequence[uuid.UUID] | None) -> None:
        columns = sql.SQL("id, embedding, content_hash" if hashes is not None else "id, embedding")
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(self._table, columns)
        data = copy_binary(ids, self._id_type, np.asarray(vectors), self._vector_type, hashes=hashes)
        with self._conn.cursor() as cur, cur.copy(statement) as copy:
            if data is not None:
                copy.write(data)
                return
            # An id type copy_binary does not encode: psycopg's adapters, row by row.
            copy.set_types([self._id_type, self._vector_type, *(["uuid"] if hashes is not None else [])])
            for i, (doc_id, vector) in enumerate(zip(ids, vectors, strict=True)):
                copy.write_row((doc_id, self._wrap(vector), *([hashes[i]] if hashes is not None else [])))


def _id_oid(conn: psycopg.Connection, rec: VersionRecord) -> int:
    """The oid of the version table's id type (a domain's base type)."""
    return fetch.value(
        conn.execute(
            "SELECT CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END "
            "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid WHERE a.attrelid = to_regclass(%s) "
            "AND a.attname = 'id'",
            (sql.Identifier(rec.schema, rec.table).as_string(conn),),
        )
    )


# COPY ... (FORMAT BINARY): signature, flags, header extension length; a tuple count of -1 ends it.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"
_INT_IDS = {21: ">i2", 23: ">i4", 20: ">i8"}  # int2, int4, int8
_TEXT_IDS = {25, 1043}  # text, varchar


def copy_binary(
    ids: Sequence[Any],
    id_oid: int,
    vectors: np.ndarray,
    vector_type: str,
    *,
    hashes: Sequence[uuid.UUID] | None = None,
) -> bytes | memoryview | None:
    """The whole binary COPY stream of (id, embedding[, content_hash]) rows, built with numpy rather than row
    by row.

    Each row is: 2 fields (3 with `hashes`); the id (int2/int4/int8 big-endian, or text as UTF-8);
    the vector in pgvector's binary form (int16 dimensions, int16 unused, big-endian float32, or
    float16 for halfvec); the hash as a uuid's 16 bytes. None for an id type this does not encode
    (the caller falls back to psycopg's adapters). Several times faster than `write_row`, which
    adapts every value in Python.
    """
    n, dim = vectors.shape
    item = np.dtype(">f2" if vector_type == "halfvec" else ">f4")
    vec_len = 4 + dim * item.itemsize
    fields = (3 if hashes is not None else 2).to_bytes(2, "big")
    tail_len = 4 + vec_len + (4 + 16 if hashes is not None else 0)

    def fill_tails(rows: np.ndarray) -> None:  # rows: (n, tail_len) bytes: the vector field, then the hash field
        rows[:, 0:4] = np.frombuffer(vec_len.to_bytes(4, "big"), np.uint8)
        rows[:, 4:6] = np.frombuffer(dim.to_bytes(2, "big"), np.uint8)
        rows[:, 6:8] = 0
        end = 8 + dim * item.itemsize
        rows[:, 8:end].view(item)[...] = vectors  # converted straight into place: one pass over the data
        if hashes is not None:
            rows[:, end : end + 4] = np.frombuffer((16).to_bytes(4, "big"), np.uint8)
            rows[:, end + 4 :] = np.frombuffer(b"".join(h.bytes for h in hashes), np.uint8).reshape(n, 16)

    if id_oid in _INT_IDS:
        kind = np.dtype(_INT_IDS[id_oid])
        prefix = 2 + 4 + kind.itemsize
        width = prefix + tail_len
        out = np.empty(len(_COPY_HEADER) + n * width + len(_COPY_TRAILER), np.uint8)
        out[: len(_COPY_HEADER)] = np.frombuffer(_COPY_HEADER, np.uint8)
        out[len(out) - len(_COPY_TRAILER) :] = np.frombuffer(_COPY_TRAILER, np.uint8)
        rows = out[len(_COPY_HEADER) : len(out) - len(_COPY_TRAILER)].reshape(n, width)
        rows[:, 0:2] = np.frombuffer(fields, np.uint8)
        rows[:, 2:6] = np.frombuffer(kind.itemsize.to_bytes(4, "big"), np.uint8)
        rows[:, 6:prefix].view(kind)[:, 0] = np.asarray(ids, dtype=np.int64)
        fill_tails(rows[:, prefix:])
        return out.data
    if id_oid in _TEXT_IDS:
        tails = np.empty((n, tail_len), np.uint8)
        fill_tails(tails)
        parts = [_COPY_HEADER]
        for doc_id, tail in zip(ids, tails, strict=True):
            raw = str(doc_id).encode()
            parts += (fields, len(raw).to_bytes(4, "big"), raw, tail.data)
        parts.append(_COPY_TRAILER)
        return b"".join(parts)
    return None


def finalize(
    conn: psycopg.Connection, target: Target, version: int, ann: AnnSpec, maintenance_work_mem: str | None = None
) -> VersionRecord | None:
    """Build the ANN index, ANALYZE and mark the version Ready once every shard is done.

    None while shards are still running; the record once the version is no longer Building
    (finalised here or by another shard's pod, or Failed).
    """
    schema, view = _target(conn, target)
    with conn.transaction():
        catalog.lock_version(conn, schema, view, version)
        rec = catalog.record(conn, schema, view, version)
        if rec is None:
            raise ValueError(f"{schema}.{view} has no version {version}")
        if rec.state != VersionState.BUILDING:
            return rec
        done, rows = catalog.shard_totals(conn, rec)
        if not done:
            return None
        table = sql.Identifier(schema, rec.table)
        stored = fetch.value(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)))
        if stored != rows:
            raise RuntimeError(f"{schema}.{rec.table} holds {stored} rows but its shards committed {rows}")
        memory = maintenance_work_mem or _build_memory(conn, rec, ann, rows)
        if memory:
            conn.execute("SELECT set_config('maintenance_work_mem', %s, true)", (memory,))
        log.info(
            "building the %s index of %s.%s (%d rows, maintenance_work_mem %s)",
            ann.method,
            schema,
            rec.table,
            rows,
            memory or "server default",
        )
        conn.execute(_ann_index(rec, ann, rows))
        conn.execute(sql.SQL("ANALYZE {}").format(table))
        catalog.set_state(conn, rec, VersionState.READY, rows=rows)
    return catalog.record(conn, schema, view, version)


def ivfflat_lists(rows: int) -> int:
    """pgvector's advice: rows/1000 lists up to 1M rows, sqrt(rows) above."""
    return max(1, rows // 1000) if rows <= 1_000_000 else int(math.sqrt(rows))


def _ann_index(rec: VersionRecord, ann: AnnSpec, rows: int) -> sql.Composed:
    if ann.method not in _METHODS or rec.vector_type not in MAX_INDEXED_DIMENSIONS or rec.metric not in OPERATORS:
        raise ValueError(f"unsupported index {ann.method} on {rec.vector_type} with {rec.metric}")
    opclass = sql.SQL(f"{rec.vector_type}_{_OPCLASS_METRIC[rec.metric]}_ops")
    if ann.method == "hnsw":
        options = sql.SQL("m = {}, ef_construction = {}").format(sql.Literal(ann.m), sql.Literal(ann.ef_construction))
    else:
        options = sql.SQL("lists = {}").format(sql.Literal(ann.lists or ivfflat_lists(rows)))
    return sql.SQL("CREATE INDEX ON {} USING {} (embedding {}) WITH ({})").format(
        sql.Identifier(rec.schema, rec.table), sql.SQL(ann.method), opclass, options
    )


def _build_memory(conn: psycopg.Connection, rec: VersionRecord, ann: AnnSpec, rows: int) -> str | None:
    """maintenance_work_mem for the build: the index's estimated size, clamped; None keeps a larger server setting."""
    element = rec.dimensions * (2 if rec.vector_type == "halfvec" else 4) + 8
    per_row = element + (2 * ann.m * 8 + 64 if ann.method == "hnsw" else 16)
    low, high = _BUILD_MEMORY
    want = min(max(int(rows * per_row * 1.25), low), high)
    current = fetch.value(conn.execute("SELECT pg_size_bytes(current_setting('maintenance_work_mem'))"))
    return f"{want // _MIB}MB" if want > current else None


# -- reading a version --------------------------------------------------------------------------


def search(
    conn: psycopg.Connection,
    rec: VersionRecord,
    queries: np.ndarray,
    limit: int,
    *,
    ef_search: int = 40,
    probes: int = 10,
) -> list[list[str]]:
    """Ids (as text) of the `limit` nearest rows of the version's table for each query vector, nearest first."""
    query = sql.SQL("SELECT id::text FROM {} ORDER BY embedding {} CAST(%s AS {}) LIMIT {}").format(
        sql.Identifier(rec.schema, rec.table),
        sql.SQL(OPERATORS[rec.metric]),
        sql.SQL(rec.vector_type),
        sql.Literal(limit),
    )
    with conn.transaction():
        # An HNSW scan returns at most ef_search rows, so the beam is at least as deep as the ranking.
        conn.execute(
            "SELECT set_config('hnsw.ef_search', %s, true), set_config('ivfflat.probes', %s, true)",
            (str(max(ef_search, limit)), str(probes)),
        )
        return [[row[0] for row in conn.execute(query, (Vector(q),))] for q in queries]


def listen_for_cutovers(conn: psycopg.Connection) -> None:
    """Have `conn` receive a notification at every cut-over's commit (see wait_for_cutover)."""
    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(LIVE_CHANNEL)))


def wait_for_cutover(conn: psycopg.Connection, target: Target, timeout: float) -> bool:
    """Whether a cut-over of `target` was notified within `timeout` seconds (other targets' are skipped)."""
    deadline = time.monotonic() + timeout
    name = f"{target.schema_name}.{target.name}"
    while (left := deadline - time.monotonic()) > 0:
        if any(n.payload == name for n in conn.notifies(timeout=left, stop_after=1)):
            return True
    return False


class LiveVersionChanged(RuntimeError):
    """The view was cut over to another version after the query was embedded: embed it again."""

    def __init__(self, live: VersionRecord | None):
        super().__init__(f"the view now serves v{live.version}" if live else "the view serves no version now")
        self.live = live


def search_view(
    conn: psycopg.Connection,
    rec: VersionRecord,
    query: np.ndarray,
    limit: int,
    *,
    ef_search: int = 40,
    probes: int = 10,
) -> list[tuple[str, float]]:
    """(id as text, distance) of the `limit` nearest rows of the view, for a query embedded by `rec`'s model.

    What an application should do, in one transaction: hold the view (a cut-over then waits for the
    transaction), check that it still serves `rec`'s version, then search it. LiveVersionChanged when
    a cut-over came between the embedding and the search.
    """
    _, hits = _search_held_view(
        conn, rec.schema, rec.view, lambda live: live.version == rec.version, query, limit, ef_search, probes
    )
    return hits


def search_same_model(
    conn: psycopg.Connection,
    target: Target,
    fingerprint: str | None,
    query: np.ndarray,
    limit: int,
    *,
    ef_search: int = 40,
    probes: int = 10,
) -> tuple[VersionRecord, list[tuple[str, float]]]:
    """The live version and its hits for a query embedded, not normalized, by the model of `fingerprint`.

    As `search_view`, in one transaction; any live version built with that model (same fingerprint and
    dimensions) is searched, the query normalized for its metric. LiveVersionChanged when the view
    serves another model's version, or none.
    """
    schema, view = _target(conn, target)

    def same(live: VersionRecord) -> bool:
        return fingerprint is not None and live.model_fingerprint == fingerprint and live.dimensions == len(query)

    return _search_held_view(conn, schema, view, same, query, limit, ef_search, probes, normalize=True)


def _search_held_view(
    conn: psycopg.Connection,
    schema: str,
    view: str,
    accept: Callable[[VersionRecord], bool],
    query: np.ndarray,
    limit: int,
    ef_search: int,
    probes: int,
    *,
    normalize: bool = False,
) -> tuple[VersionRecord, list[tuple[str, float]]]:
    """Hold the view, check that its live version is one `accept`s, search it: one transaction."""
    with conn.transaction():
        conn.execute(sql.SQL("SELECT 1 FROM {} LIMIT 0").format(sql.Identifier(schema, view)))  # AccessShareLock
        live = next((r for r in catalog.records(conn, schema, view) if r.state == VersionState.LIVE), None)
        if live is None or not accept(live):
            raise LiveVersionChanged(live)
        if normalize and normalizes(live.metric):
            norm = float(np.linalg.norm(query))
            query = query / norm if norm else query
        conn.execute(
            "SELECT set_config('hnsw.ef_search', %s, true), set_config('ivfflat.probes', %s, true)",
            (str(max(ef_search, limit)), str(probes)),
        )
        query_sql = sql.SQL("SELECT id::text, embedding {} CAST(%s AS {}) FROM {} ORDER BY 2 LIMIT {}").format(
            sql.SQL(OPERATORS[live.metric]), sql.SQL(live.vector_type), sql.Identifier(schema, view), sql.Literal(limit)
        )
        return live, [(row[0], float(row[1])) for row in conn.execute(query_sql, (Vector(query),))]


def sample_embeddings(conn: psycopg.Connection, rec: VersionRecord, n: int, seed: str) -> tuple[list[Any], np.ndarray]:
    """`n` stored (id, embedding) rows drawn by a seeded hash of the id."""
    rows = conn.execute(
        sql.SQL("SELECT id, embedding FROM {} ORDER BY md5(id::text || %s) LIMIT %s").format(
            sql.Identifier(rec.schema, rec.table)
        ),
        (seed, n),
    ).fetchall()
    if not rows:
        return [], np.empty((0, rec.dimensions), dtype=np.float32)
    return [r[0] for r in rows], np.stack([np.asarray(r[1].to_numpy(), dtype=np.float32) for r in rows])


def save_probe(conn: psycopg.Connection, rec: VersionRecord, probe: ProbeResult, probe_set: str) -> None:
    """Record a version's latest probe, and a fingerprint of the probe set it ran on."""
    with conn.transaction():
        catalog.save_probe(conn, rec, probe, probe_set)
