"""Local mode in sync mode trigger: the planner's scheduled syncs install the triggers and drain their queue, the
view follows the table, and the mode set back to diff removes the triggers, functions and queue."""

from __future__ import annotations

import datetime as dt

import psycopg

from tests.test_local_sync import run, served, write_index


def trigger_objects(dsn: str) -> tuple[int, int, int]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.docs'::regclass AND NOT tgisinternal), "
            "(SELECT count(*) FROM pg_proc WHERE pronamespace = 'embedops'::regnamespace), "
            "(SELECT count(*) FROM pg_class WHERE relnamespace = 'embedops'::regnamespace AND relname LIKE '%_queue')"
        ).fetchone()


def test_a_trigger_mode_index_follows_its_table_and_its_triggers_go_with_the_mode(tmp_path, dsn, tiny_model_dir):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.docs (id int PRIMARY KEY, title text, body text, views int DEFAULT 0)")
        conn.execute("INSERT INTO public.docs SELECT g, 'T' || g, 'topic ' || g, 0 FROM generate_series(0, 39) g")
    state, path = tmp_path / "state", write_index(tmp_path / "m", tiny_model_dir, sync={"mode": "trigger"})
    assert run(state, dsn, path).live_version == 1
    # The first scheduled sync installs the triggers (one diff covers the rows changed before).
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM public.docs WHERE id = 0")
    status = run(state, dsn, path, later=dt.timedelta(minutes=6))
    assert (status.sync.rows_deleted, status.sync.pending_rows, trigger_objects(dsn)) == (1, 0, (4, 2, 1))

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO public.docs (id, title, body) VALUES (100, 'New', 'a new topic'), (101, NULL, 'b')")
        conn.execute("UPDATE public.docs SET body = 'topic rewritten' WHERE id = 1")
        conn.execute("UPDATE public.docs SET views = 7 WHERE id BETWEEN 2 AND 30")  # not embedded: not queued
        conn.execute("DELETE FROM public.docs WHERE id IN (3, 4)")
    status = run(state, dsn, path, later=dt.timedelta(minutes=12))
    sync = status.sync
    assert (sync.version, sync.rows_embedded, sync.rows_deleted, sync.pending_rows) == (1, 3, 2, 0)
    assert status.rows == 39 and status.live_version == 1
    rows = served(dsn)
    assert {100, 101} <= set(rows) and not {0, 3, 4} & set(rows) and rows[1] == "topic rewritten"

    # Back to diff: the next sync removes what trigger mode installed, then diffs.
    path = write_index(tmp_path / "m", tiny_model_dir, sync={"mode": "diff"})
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM public.docs WHERE id = 5")
    status = run(state, dsn, path, later=dt.timedelta(minutes=18))
    assert (status.sync.rows_deleted, trigger_objects(dsn)) == (1, (0, 0, 0))
    assert 5 not in served(dsn)
