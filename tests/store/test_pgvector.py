"""The pgvector store: versions, cut-over, rollback, retention and name checks, with hand-made vectors."""

from __future__ import annotations

import os

import numpy as np
import psycopg
import pytest
from pgvector import HalfVector, Vector
from psycopg import sql
from pydantic import ValidationError

from embedops.api.index import AnnSpec, TableSource, Target
from embedops.store import pgvector, sources
from embedops.store.catalog import Build

TARGET = Target(name="docs")


def make_build(
    dims: int,
    *,
    model: str = "m",
    vector_type: str = "vector",
    metric: str = "cosine",
    shards: int = 1,
    source: str = "test",
) -> Build:
    return Build(
        model=model,
        model_fingerprint=f"fp-{model}",
        dimensions=dims,
        vector_type=vector_type,
        metric=metric,
        id_type="bigint",
        source=source,
        shards=shards,
    )


def build_version(
    conn: psycopg.Connection, dims: int, rows: int = 20, *, target: Target = TARGET, ann: AnnSpec | None = None, **kw
) -> int:
    """A Ready version of `rows` random unit vectors with ids 1..rows."""
    rec, _ = pgvector.begin_build(conn, target, make_build(dims, **kw))
    vectors = np.random.default_rng(rec.version).normal(size=(rows, dims)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    writer = pgvector.VersionWriter(conn, rec, 0)
    writer.write(list(range(1, rows + 1)), vectors)
    writer.finish()
    assert pgvector.finalize(conn, target, rec.version, ann or AnnSpec()).state == "Ready"
    return rec.version


@pytest.fixture
def conn(dsn):
    with pgvector.connect(dsn) as c:
        yield c


def states(conn) -> dict[int, str]:
    return {v.version: v.state for v in pgvector.versions(conn, TARGET)}


def view_dims(conn) -> int:
    return conn.execute("SELECT vector_dims(embedding) FROM public.docs LIMIT 1").fetchone()[0]


def test_cutover_serves_the_new_version_even_with_other_dimensions(conn):
    v1 = build_version(conn, 8)
    pgvector.cutover(conn, TARGET, v1)
    assert view_dims(conn) == 8
    v2 = build_version(conn, 12, rows=30)
    assert states(conn) == {v1: "Live", v2: "Ready"}
    live = pgvector.cutover(conn, TARGET, v2)
    assert (live.version, live.state, live.rows, live.dimensions) == (v2, "Live", 30, 12)
    assert view_dims(conn) == 12
    assert conn.execute("SELECT count(*) FROM public.docs").fetchone()[0] == 30
    assert states(conn) == {v1: "Retired", v2: "Live"}
    assert pgvector.live_version(conn, TARGET).version == v2


def test_cutover_keeps_the_views_grants(conn):
    role = f"embedops_reader_{os.getpid()}"
    conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    try:
        pgvector.cutover(conn, TARGET, build_version(conn, 4))
        conn.execute(sql.SQL("GRANT SELECT ON public.docs TO {}").format(sql.Identifier(role)))
        pgvector.cutover(conn, TARGET, build_version(conn, 4))
        assert conn.execute("SELECT has_table_privilege(%s, 'public.docs', 'SELECT')", (role,)).fetchone()[0]
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_only_finished_versions_can_be_cut_over_to(conn):
    rec, _ = pgvector.begin_build(conn, TARGET, make_build(4))
    with pytest.raises(ValueError, match="Building"):
        pgvector.cutover(conn, TARGET, rec.version)
    with pytest.raises(ValueError, match="no version 9"):
        pgvector.cutover(conn, TARGET, 9)
    assert conn.execute("SELECT to_regclass('public.docs')").fetchone()[0] is None


def test_rollback_repoints_to_the_previous_version(conn):
    v1 = build_version(conn, 4)
    pgvector.cutover(conn, TARGET, v1)
    with pytest.raises(ValueError, match="no earlier"):
        pgvector.rollback(conn, TARGET)
    v2 = build_version(conn, 6)
    pgvector.cutover(conn, TARGET, v2)
    back = pgvector.rollback(conn, TARGET)
    assert (back.version, back.state) == (v1, "Live")
    assert states(conn) == {v1: "Live", v2: "Retired"}
    assert view_dims(conn) == 4
    assert pgvector.rollback(conn, TARGET, to_version=v2).version == v2  # and forward again, explicitly
    assert view_dims(conn) == 6


def test_retention_drops_only_catalog_tables(conn):
    conn.execute("CREATE TABLE public.docs_v9 (id int)")  # a user's table that looks like a version
    conn.execute("CREATE TABLE public.docs_notes (id int)")
    built = [build_version(conn, 4) for _ in range(4)]
    failed, _ = pgvector.begin_build(conn, TARGET, make_build(4, model="other"))
    pgvector.begin_build(conn, TARGET, make_build(4, model="third"))  # supersedes: `failed` is marked Failed
    pgvector.cutover(conn, TARGET, built[1])
    assert states(conn)[failed.version] == "Failed"

    dropped = pgvector.apply_retention(conn, TARGET, keep=2)

    assert sorted(dropped) == [built[0], built[2], failed.version]
    assert states(conn) == {built[1]: "Live", built[3]: "Ready", 6: "Building"}
    tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == {"docs_v2", "docs_v4", "docs_v6", "docs_v9", "docs_notes"}
    assert conn.execute("SELECT count(*) FROM public.docs").fetchone()[0] == 20


def test_drop_target_removes_view_versions_and_catalog_only(conn):
    conn.execute("CREATE TABLE public.keep_me (id int)")
    pgvector.cutover(conn, TARGET, build_version(conn, 4))
    build_version(conn, 4)
    assert sorted(pgvector.drop_target(conn, TARGET)) == ["docs_v1", "docs_v2"]
    assert conn.execute("SELECT to_regclass('public.docs')").fetchone()[0] is None
    tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == {"keep_me"}
    assert pgvector.versions(conn, TARGET) == []
    assert build_version(conn, 4) == 1  # a re-created index starts again


def test_versions_are_never_reused(conn):
    v1 = build_version(conn, 4)
    v2 = build_version(conn, 4)
    pgvector.cutover(conn, TARGET, v1)
    pgvector.apply_retention(conn, TARGET, keep=1)
    assert states(conn) == {v1: "Live"}
    assert build_version(conn, 4) == v2 + 1


def test_a_build_is_resumed_by_the_same_build_and_superseded_by_another(dsn, conn):
    first, resumed = pgvector.begin_build(conn, TARGET, make_build(4, shards=2))
    assert not resumed
    with pgvector.connect(dsn) as other:  # the second shard's pod
        again, resumed = pgvector.begin_build(other, TARGET, make_build(4, shards=2))
    assert (again.version, resumed) == (first.version, True)
    newer, resumed = pgvector.begin_build(conn, TARGET, make_build(4, shards=2, model="tuned"))
    assert (newer.version, resumed) == (first.version + 1, False)
    assert states(conn) == {first.version: "Failed", newer.version: "Building"}


def test_finalize_waits_for_every_shard(conn):
    rec, _ = pgvector.begin_build(conn, TARGET, make_build(3, shards=2))
    w0, w1 = pgvector.VersionWriter(conn, rec, 0), pgvector.VersionWriter(conn, rec, 1)
    w0.write([1, 3], np.ones((2, 3), dtype=np.float32))
    w0.finish()
    assert pgvector.finalize(conn, TARGET, rec.version, AnnSpec()) is None
    w1.write([2], np.ones((1, 3), dtype=np.float32))
    w1.finish()
    ready = pgvector.finalize(conn, TARGET, rec.version, AnnSpec())
    assert (ready.state, ready.rows) == ("Ready", 3)
    index = conn.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'docs_v1' AND indexdef LIKE '%hnsw%'")
    assert "vector_cosine_ops" in index.fetchone()[0]
    assert pgvector.finalize(conn, TARGET, rec.version, AnnSpec()).state == "Ready"  # idempotent


def test_ivfflat_on_halfvec_with_l2(conn):
    version = build_version(
        conn,
        6,
        rows=50,
        ann=AnnSpec(method="ivfflat", vector_type="halfvec", metric="l2"),
        vector_type="halfvec",
        metric="l2",
    )
    indexdef = conn.execute(
        "SELECT indexdef FROM pg_indexes WHERE tablename = %s AND indexdef LIKE '%%ivfflat%%'", (f"docs_v{version}",)
    ).fetchone()[0]
    assert "halfvec_l2_ops" in indexdef and "lists='1'" in indexdef
    rec = pgvector.version_record(conn, TARGET, version)
    _, stored = pgvector.sample_embeddings(conn, rec, 50, "seed")
    hits = pgvector.search(conn, rec, stored[:3], 5, probes=1)
    assert all(len(h) == 5 for h in hits)
    assert pgvector.ivfflat_lists(2_000_000) == 1414 and pgvector.ivfflat_lists(500) == 1


def test_a_second_writer_on_the_same_shard_fails_without_writing(dsn, conn):
    rec, _ = pgvector.begin_build(conn, TARGET, make_build(2))
    first = pgvector.VersionWriter(conn, rec, 0)
    with pgvector.connect(dsn) as other:
        second = pgvector.VersionWriter(other, rec, 0)
        first.write([1, 2], np.ones((2, 2), dtype=np.float32))
        with pytest.raises(pgvector.BuildConflict):
            second.write([3], np.ones((1, 2), dtype=np.float32))
    assert conn.execute("SELECT array_agg(id ORDER BY id) FROM public.docs_v1").fetchone()[0] == [1, 2]


def test_an_existing_user_table_is_never_taken_over(conn):
    conn.execute("CREATE TABLE public.docs_v1 (id int)")
    with pytest.raises(ValueError, match="target.name: table public.docs_v1 already exists"):
        pgvector.begin_build(conn, TARGET, make_build(4))
    assert pgvector.versions(conn, TARGET) == []


def test_a_table_with_the_views_name_is_never_replaced(conn):
    conn.execute("CREATE TABLE public.docs (id int)")
    with pytest.raises(ValueError, match="target.name: public.docs exists and is not a view"):
        pgvector.begin_build(conn, TARGET, make_build(4))


def test_too_many_dimensions_for_the_vector_type(conn):
    with pytest.raises(ValueError, match="use halfvec"):
        pgvector.begin_build(conn, TARGET, make_build(3072))


HOSTILE = ["docs; DROP TABLE x", '"quoted"', "x" * 64, "1docs", "docs-v2", ""]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_rejected_before_any_sql(dsn, name):
    closed = psycopg.connect(dsn, autocommit=True)
    closed.close()  # any statement on it would raise psycopg.OperationalError, not ValueError
    for target in (
        Target.model_construct(schema_name="public", name=name),
        Target.model_construct(schema_name=name, name="docs"),
    ):
        for call, args in (
            (pgvector.versions, ()),
            (pgvector.cutover, (1,)),
            (pgvector.rollback, ()),
            (pgvector.apply_retention, (2,)),
            (pgvector.drop_target, ()),
            (pgvector.begin_build, (make_build(4),)),
            (pgvector.finalize, (1, AnnSpec())),
        ):
            with pytest.raises(ValueError, match=r"target\.(name|schema)"):
                call(closed, target, *args)
    for field in ("schema_name", "table", "id_column", "text_column", "title_column"):
        src = TableSource.model_construct(
            **{
                "schema_name": "public",
                "table": "t",
                "id_column": "id",
                "text_column": "text",
                "title_column": None,
                field: name,
            }
        )
        with pytest.raises(ValueError, match=r"source\.table\."):
            sources.inspect(closed, src)
    with pytest.raises(ValidationError):
        Target(name=name)


def test_a_view_name_too_long_for_its_version_tables_is_rejected(dsn):
    with pytest.raises(ValidationError, match="at most 56 characters"):
        Target(name="d" * 57)
    # The store checks again, for a target that never went through the model.
    closed = psycopg.connect(dsn, autocommit=True)
    closed.close()
    with pytest.raises(ValueError, match="target.name: .* too long for its version tables"):
        pgvector.versions(closed, Target.model_construct(schema_name="public", name="d" * 61))


def test_version_numbers_stop_where_the_table_names_would_not_fit(conn):
    from embedops.api.index import MAX_VERSION
    from embedops.store import catalog

    catalog.ensure(conn)
    conn.execute("INSERT INTO embedops.index_targets VALUES ('public', 'docs', %s)", (MAX_VERSION - 1,))
    assert catalog.next_version(conn, "public", "docs") == MAX_VERSION
    with pytest.raises(ValueError, match=f"all {MAX_VERSION} version numbers are used"):
        catalog.next_version(conn, "public", "docs")


@pytest.mark.parametrize(
    "id_type,ids",
    [
        ("smallint", [3, 7, 9]),
        ("integer", [1, 2**31 - 1, 5]),
        ("bigint", [-(2**62), 0, 2**62]),
        ("text", ["doc-1", "é∑ unicode", ""]),
        ("varchar(40)", ["a", "b b", "c\tc"]),
    ],
)
@pytest.mark.parametrize("vector_type", ["vector", "halfvec"])
def test_the_numpy_copy_stream_stores_what_psycopgs_adapters_store(conn, id_type, ids, vector_type):
    vectors = np.random.default_rng(0).normal(size=(len(ids), 5)).astype(np.float32)
    oid = conn.execute("SELECT %s::regtype::oid", (id_type,)).fetchone()[0]
    data = pgvector.copy_binary(ids, oid, vectors, vector_type)
    assert data is not None
    stored = {}
    for how in ("numpy", "adapters"):
        conn.execute(f"CREATE TEMP TABLE t_{how} (id {id_type}, embedding {vector_type}(5))")
        with conn.cursor() as cur, cur.copy(f"COPY t_{how} (id, embedding) FROM STDIN (FORMAT BINARY)") as copy:
            if how == "numpy":
                copy.write(data)
            else:
                copy.set_types([oid, vector_type])
                for doc_id, v in zip(ids, vectors, strict=True):
                    copy.write_row((doc_id, (HalfVector if vector_type == "halfvec" else Vector)(v)))
        stored[how] = conn.execute(f"SELECT id, embedding::text FROM t_{how} ORDER BY id").fetchall()
    assert stored["numpy"] == stored["adapters"] and len(stored["numpy"]) == len(ids)


def test_ids_copy_binary_does_not_encode_fall_back_to_the_adapters(conn):
    uuid_oid = conn.execute("SELECT 'uuid'::regtype::oid").fetchone()[0]
    assert pgvector.copy_binary(["x"], uuid_oid, np.zeros((1, 3), np.float32), "vector") is None
