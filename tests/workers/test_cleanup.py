"""The cleanup worker against a real Postgres: exactly the target's view, version tables and catalog rows go."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from embedops import steps
from embedops.api.index import AnnSpec, Target
from embedops.store import pgvector
from embedops.store.catalog import Build
from embedops.workers import cleanup

KB, OTHER = Target(name="kb"), Target(name="other")


def build_version(conn: psycopg.Connection, target: Target, rows: int = 5) -> int:
    """A Ready version of `rows` hand-made vectors."""
    build = Build(
        model="m",
        model_fingerprint="fp",
        dimensions=4,
        vector_type="vector",
        metric="cosine",
        id_type="bigint",
        source="test",
        shards=1,
    )
    rec, _ = pgvector.begin_build(conn, target, build)
    vectors = np.eye(rows, 4, dtype=np.float32) + 0.1
    writer = pgvector.VersionWriter(conn, rec, 0)
    writer.write(list(range(1, rows + 1)), vectors)
    writer.finish()
    pgvector.finalize(conn, target, rec.version, AnnSpec())
    return rec.version


@pytest.fixture
def two_indexes(dsn) -> str:
    """kb with a live and a retired version, `other` beside it, and user tables next to both."""
    with pgvector.connect(dsn) as conn:
        for target in (KB, KB, OTHER):
            pgvector.cutover(conn, target, build_version(conn, target))
        conn.execute("CREATE TABLE public.kb_notes (id int PRIMARY KEY, text text)")
        conn.execute("INSERT INTO public.kb_notes VALUES (1, 'mine')")
        # Named like a version table, but the catalog does not list it: not the operator's to drop.
        conn.execute("CREATE TABLE public.kb_v9 (id int)")
        conn.commit()
    return dsn


def relations(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'").fetchall()
    return {r[0] for r in rows}


def catalog_rows(dsn: str) -> dict[str, set[tuple[str, int | None]]]:
    with psycopg.connect(dsn) as conn:
        return {
            table: set(conn.execute(f"SELECT target_name, {column} FROM embedops.{table}").fetchall())
            for table, column in (("index_targets", "NULL::int"), ("index_versions", "version"))
        }


def test_cleanup_drops_exactly_the_targets_tables_and_catalog_rows(two_indexes):
    assert relations(two_indexes) == {"kb", "kb_v1", "kb_v2", "other", "other_v1", "kb_notes", "kb_v9"}
    result = cleanup.run(steps.CleanupStep(target=KB), dsn=two_indexes)
    assert sorted(result.dropped) == ["kb_v1", "kb_v2"]
    assert relations(two_indexes) == {"other", "other_v1", "kb_notes", "kb_v9"}
    assert catalog_rows(two_indexes) == {"index_targets": {("other", None)}, "index_versions": {("other", 1)}}
    with psycopg.connect(two_indexes) as conn:
        assert conn.execute("SELECT text FROM public.kb_notes").fetchall() == [("mine",)]
        assert conn.execute("SELECT count(*) FROM public.other").fetchone()[0] == 5
    with pgvector.connect(two_indexes) as conn:
        assert pgvector.versions(conn, KB) == []
        assert [v.state for v in pgvector.versions(conn, OTHER)] == ["Live"]


def test_cleanup_of_a_target_already_gone_drops_nothing(two_indexes):
    cleanup.run(steps.CleanupStep(target=KB), dsn=two_indexes)
    assert cleanup.run(steps.CleanupStep(target=KB), dsn=two_indexes).dropped == []
    assert cleanup.run(steps.CleanupStep(target=Target(name="never")), dsn=two_indexes).dropped == []
    assert relations(two_indexes) == {"other", "other_v1", "kb_notes", "kb_v9"}


def test_cleanup_refuses_a_catalog_row_that_names_another_table(two_indexes):
    with psycopg.connect(two_indexes, autocommit=True) as conn:
        conn.execute(
            "UPDATE embedops.index_versions SET table_name = 'kb_notes' WHERE target_name = 'kb' AND version = 1"
        )
    with pytest.raises(ValueError, match="names table 'kb_notes'; refusing"):
        cleanup.run(steps.CleanupStep(target=KB), dsn=two_indexes)
    assert {"kb", "kb_v1", "kb_v2", "kb_notes"} <= relations(two_indexes), "nothing dropped: one transaction"
