"""Trigger mode against a real Postgres: the triggers queue only changes of the embedded columns, a sync drains
them (a TRUNCATE falls back to a diff), a killed drain loses nothing, logical replication needs ENABLE ALWAYS, and
the triggers, functions and queue go when the index is deleted (either policy) or the mode goes back to diff."""

from __future__ import annotations

import psycopg
import pytest

from embedops import steps
from embedops.api.index import SyncSpec, TableSource
from embedops.store import pgvector, triggers
from embedops.store import sync as store_sync
from embedops.workers import cleanup
from embedops.workers import sync as sync_worker
from tests.workers.test_sync import ROWS, SOURCE, assert_in_step, build, docs_table, source_texts
from tests.workers.test_sync import sync_step as diff_step

TARGET = diff_step("unused").target
NAMES = triggers.names_for(TARGET)
QUEUE = f"embedops.{NAMES.queue}"


@pytest.fixture
def table(dsn):
    return docs_table(dsn)


def trigger_step(model_dir, **embedding) -> steps.SyncStep:
    return diff_step(model_dir, **embedding).model_copy(update={"sync": SyncSpec(mode="trigger")})


def queued(dsn) -> list[int | None]:
    with psycopg.connect(dsn) as conn:
        return [i for (i,) in conn.execute(f"SELECT id FROM {QUEUE} ORDER BY seq")]


def installed(dsn) -> tuple[int, int, bool]:
    """(triggers on public.docs, embedops functions, whether the queue table exists)."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.docs'::regclass AND NOT tgisinternal), "
            "(SELECT count(*) FROM pg_proc WHERE pronamespace = 'embedops'::regnamespace), "
            "to_regclass(%s) IS NOT NULL",
            (QUEUE,),
        ).fetchone()


def counting_encoder(encoded: list[int]):
    real = sync_worker.encoder

    def counting(load, rec, embedding):
        inner = real(load, rec, embedding)
        return lambda texts: (encoded.append(len(texts)), inner(texts))[1]

    return counting


def test_only_changes_of_embedded_columns_are_queued_and_a_sync_drains_them(table, tiny_model_dir, tiny_model):
    build(table, tiny_model_dir)
    first = sync_worker.run(trigger_step(tiny_model_dir), dsn=table)  # installs; a first diff covers what came before
    assert (first.found, first.pending, first.synced_at is not None) == (0, 0, True)
    assert installed(table) == (4, 2, True)
    with psycopg.connect(table, autocommit=True) as conn:
        conn.execute("INSERT INTO public.docs VALUES (1000, 'New', 'a brand new row', 0), (1001, NULL, 'another', 0)")
        conn.execute("UPDATE public.docs SET body = body || ' edited' WHERE doc_id IN (3, 4)")
        conn.execute("UPDATE public.docs SET title = 'Retitled' WHERE doc_id = 7")
        conn.execute("UPDATE public.docs SET views = views + 1 WHERE doc_id < 60")  # not embedded: nothing queued
        conn.execute("UPDATE public.docs SET body = body WHERE doc_id = 8")  # the same text: nothing queued
        conn.execute("UPDATE public.docs SET doc_id = 2000 WHERE doc_id = 9")  # a new key: 9 gone, 2000 new
        conn.execute("DELETE FROM public.docs WHERE doc_id IN (10, 11)")
    assert queued(table) == [1000, 1001, 3, 4, 7, 9, 2000, 10, 11]

    encoded: list[int] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sync_worker, "encoder", counting_encoder(encoded))
        result = sync_worker.run(trigger_step(tiny_model_dir), dsn=table)
    assert (result.inserted, result.updated, result.deleted, result.pending) == (3, 3, 3, 0)
    assert sum(encoded) == 6 and result.found == 9
    assert result.rows == ROWS and result.synced_at is not None
    assert queued(table) == []
    assert_in_step(table, tiny_model)

    # A TRUNCATE queues a marker: the next sync is one diff, and clears what was queued before it.
    with psycopg.connect(table, autocommit=True) as conn:
        conn.execute("UPDATE public.docs SET body = 'queued, then truncated' WHERE doc_id = 1")
        conn.execute("TRUNCATE public.docs")
        conn.execute("INSERT INTO public.docs VALUES (1, NULL, 'after the truncate', 0)")
    assert queued(table) == [1, None, 1]
    result = sync_worker.run(trigger_step(tiny_model_dir), dsn=table)
    assert (result.updated, result.deleted, result.rows, result.pending) == (1, ROWS - 1, 1, 0)
    assert queued(table) == []
    assert_in_step(table, tiny_model)


def test_a_drain_killed_mid_way_and_run_again_leaves_exactly_the_source(table, tiny_model_dir, tiny_model):
    build(table, tiny_model_dir)
    # Killed in the first sync's diff (what came before the triggers), then twice while draining.
    with psycopg.connect(table, autocommit=True) as conn:
        conn.execute("UPDATE public.docs SET body = body || ' before' WHERE doc_id < 20")
    kill_at_apply(tiny_model_dir, table, 2)
    assert None in queued(table)  # the marker stays until a diff has finished
    sync_worker.run(trigger_step(tiny_model_dir), dsn=table)
    assert queued(table) == []
    with psycopg.connect(table, autocommit=True) as conn:
        conn.execute("UPDATE public.docs SET body = body || ' v2' WHERE doc_id % 3 = 0")  # 40 rows
        conn.execute("INSERT INTO public.docs SELECT g, NULL, 'inserted ' || g, 0 FROM generate_series(500, 529) g")
        conn.execute("DELETE FROM public.docs WHERE doc_id % 10 = 1")  # 15 rows (3 of them just inserted)
    assert len(queued(table)) == 85
    kill_at_apply(tiny_model_dir, table, 3)  # chunks of 7 queued rows: 2 committed, the 3rd rolled back
    assert len(queued(table)) == 85 - 14
    kill_at_apply(tiny_model_dir, table, 1)
    assert len(queued(table)) == 85 - 14
    result = sync_worker.run(trigger_step(tiny_model_dir), dsn=table)
    assert (result.pending, queued(table)) == (0, [])
    assert_in_step(table, tiny_model)
    with pgvector.connect(table) as conn:
        rec = pgvector.version_record(conn, trigger_step(tiny_model_dir).target, 1)
        stored = conn.execute("SELECT count(*) FROM public.docs_index_v1").fetchone()[0]
    assert rec.rows == stored == len(source_texts(table))  # the catalog's count stayed exact through the kills


def kill_at_apply(model_dir, dsn, at: int) -> None:
    real = store_sync._Writer.apply
    calls = {"n": 0}

    def killed(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at:
            raise RuntimeError("pod killed")
        return real(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(store_sync._Writer, "apply", killed)
        with pytest.raises(RuntimeError, match="pod killed"):
            sync_worker.run(trigger_step(model_dir), dsn=dsn)


def test_logical_replication_needs_enable_always_which_a_reinstall_keeps(table, tiny_model_dir):
    build(table, tiny_model_dir)
    sync_worker.run(trigger_step(tiny_model_dir), dsn=table)
    # A subscriber's apply worker writes with session_replication_role = replica: ordinary triggers do not fire.
    with psycopg.connect(table, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("INSERT INTO public.docs VALUES (3000, NULL, 'replicated', 0)")
    assert queued(table) == []
    with psycopg.connect(table, autocommit=True) as conn:
        for trigger in NAMES.triggers:
            conn.execute(f"ALTER TABLE public.docs ENABLE ALWAYS TRIGGER {trigger}")
    # Another source spec (the title no longer embedded) installs afresh, keeping ENABLE ALWAYS.
    src = TableSource.model_validate({k: v for k, v in SOURCE.items() if k != "titleColumn"})
    with pgvector.connect(table) as conn:
        assert triggers.install(conn, TARGET, src, "bigint")
        assert not triggers.install(conn, TARGET, src, "bigint")  # idempotent
    with psycopg.connect(table, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("INSERT INTO public.docs VALUES (3001, NULL, 'replicated', 0)")
        conn.execute("UPDATE public.docs SET title = 'not embedded any more' WHERE doc_id = 5")
        enabled = {e for (e,) in conn.execute("SELECT tgenabled FROM pg_trigger WHERE tgname LIKE 'embedops_sync_%'")}
    assert queued(table) == [None, 3001] and enabled == {"A"}


def test_the_triggers_go_when_the_mode_goes_back_to_diff_and_when_the_index_is_deleted(table, tiny_model_dir):
    build(table, tiny_model_dir)
    sync_worker.run(trigger_step(tiny_model_dir), dsn=table)
    assert installed(table) == (4, 2, True)
    sync_worker.run(diff_step(tiny_model_dir), dsn=table)  # the mode back to diff
    assert installed(table) == (0, 0, False)
    with psycopg.connect(table, autocommit=True) as conn:
        conn.execute("INSERT INTO public.docs VALUES (4000, NULL, 'no trigger fires', 0)")

    # deletionPolicy Retain: the triggers and their queue go, the index's tables stay.
    sync_worker.run(trigger_step(tiny_model_dir), dsn=table)
    retain = steps.CleanupStep(target=TARGET, drop_tables=False)
    assert cleanup.run(retain, dsn=table).dropped == [QUEUE]
    assert installed(table) == (0, 0, False)
    with pgvector.connect(table) as conn:
        assert pgvector.live_version(conn, TARGET) is not None
    assert cleanup.run(retain, dsn=table).dropped == []

    # deletionPolicy Delete: both.
    sync_worker.run(trigger_step(tiny_model_dir), dsn=table)
    assert cleanup.run(steps.CleanupStep(target=TARGET), dsn=table).dropped == ["docs_index_v1", QUEUE]
    assert installed(table) == (0, 0, False)
    with psycopg.connect(table) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'embedops'::regnamespace AND relname LIKE %s",
            (f"{NAMES.queue}%",),
        ).fetchone()[0]
        assert left == 0


def test_installing_is_idempotent_for_a_table_whose_names_need_quoting(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('CREATE SCHEMA "Src"')
        conn.execute('CREATE TABLE "Src"."Docs" ("Id" bigint PRIMARY KEY, "Body" text)')
    src = TableSource.model_validate({"schema": "Src", "table": "Docs", "idColumn": "Id", "textColumn": "Body"})
    with pgvector.connect(dsn) as conn:
        assert triggers.install(conn, TARGET, src, "bigint")
        assert not triggers.install(conn, TARGET, src, "bigint")
        conn.execute('INSERT INTO "Src"."Docs" VALUES (7, %s)', ("x",))
        conn.execute('UPDATE "Src"."Docs" SET "Id" = 8')
        assert [i for (i,) in conn.execute(f"SELECT id FROM {QUEUE} ORDER BY seq")] == [None, 7, 7, 8]
        assert triggers.remove(conn, TARGET) == [QUEUE]
