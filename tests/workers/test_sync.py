"""Sync against a real Postgres: only changed rows are embedded, deletes and truncates follow, a killed sync
leaves nothing half done, every id type is kept, and a cut-over catches its version up first."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from embedops import modelzoo, steps
from embedops.prepared import Doc
from embedops.store import catalog, pgvector, sources
from embedops.store import sync as store_sync
from embedops.workers import embed, probe
from embedops.workers import sync as sync_worker

ROWS = 120


def body_of(i: int) -> str:
    return f"document {i} about " + " ".join(["rivers", "stones", "clouds", "engines"][: 1 + i % 4])


def docs_table(dsn: str) -> str:
    """public.docs: bigint ids, a title, a body (embedded) and a view count (not embedded); the DSN."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.docs (doc_id bigint PRIMARY KEY, title text, body text, views int)")
        with conn.cursor().copy("COPY public.docs (doc_id, title, body, views) FROM STDIN") as copy:
            for i in range(ROWS):
                copy.write_row((i, f"Title {i}" if i % 2 else None, body_of(i), 0))
    return dsn


@pytest.fixture
def table(dsn):
    return docs_table(dsn)


SOURCE = {"table": "docs", "idColumn": "doc_id", "textColumn": "body", "titleColumn": "title"}


def build(dsn, model_dir, *, reuse: bool = True, **embedding) -> int:
    config = steps.EmbedStep.model_validate(
        {
            "target": {"name": "docs_index"},
            "source": {"table": SOURCE},
            "model": str(model_dir),
            "embedding": {"batchSize": 16, "commitRows": 50, **embedding},
            "reuse": reuse,
            "device": "cpu",
        }
    )
    result = embed.run(config, dsn=dsn)
    with pgvector.connect(dsn) as conn:
        if pgvector.live_version(conn, config.target) is None:
            pgvector.cutover(conn, config.target, result.version)
    return result.version


def sync_step(model_dir, version: int = 1, **embedding) -> steps.SyncStep:
    return steps.SyncStep.model_validate(
        {
            "target": {"name": "docs_index"},
            "table": SOURCE,
            "model": str(model_dir),
            "version": version,
            "embedding": {"batchSize": 16, "commitRows": 7, **embedding},
            "device": "cpu",
        }
    )


def version_rows(dsn, table: str = "docs_index_v1") -> dict[int, tuple[np.ndarray, object]]:
    with pgvector.connect(dsn) as conn:
        return {i: (e.to_numpy(), h) for i, e, h in conn.execute(f"SELECT id, embedding, content_hash FROM {table}")}


def source_texts(dsn) -> dict[int, str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT doc_id, title, body FROM public.docs").fetchall()
    return {i: Doc(id="", text=body, title=title or "").full_text for i, title, body in rows if body and body.strip()}


def assert_in_step(dsn, model, table: str = "docs_index_v1") -> None:
    """The version holds exactly the source's rows with text, each with its text's hash and vector."""
    stored, texts = version_rows(dsn, table), source_texts(dsn)
    assert sorted(stored) == sorted(texts)
    ids = sorted(texts)
    assert [stored[i][1] for i in ids] == [sources.content_hash(texts[i]) for i in ids]
    expected = model.encode([texts[i] for i in ids], normalize_embeddings=True)
    np.testing.assert_allclose(np.stack([stored[i][0] for i in ids]), expected, atol=1e-5)


def test_a_sync_embeds_exactly_the_rows_whose_embedded_text_changed(table, tiny_model_dir, tiny_model):
    build(table, tiny_model_dir)
    with psycopg.connect(table, autocommit=True) as conn:
        conn.execute("INSERT INTO public.docs VALUES (1000, 'New', 'a brand new row', 0), (1001, NULL, 'another', 0)")
        conn.execute("UPDATE public.docs SET body = body || ' edited' WHERE doc_id IN (3, 4, 5)")
        conn.execute("UPDATE public.docs SET title = 'Retitled' WHERE doc_id = 7")  # the title is embedded too
        conn.execute("UPDATE public.docs SET views = views + 100 WHERE doc_id < 60")  # not embedded: no cost
        conn.execute("DELETE FROM public.docs WHERE doc_id IN (10, 11)")
        conn.execute("UPDATE public.docs SET body = '   ' WHERE doc_id = 12")  # no text left: removed, reported
    encoded: list[int] = []
    real = sync_worker.encoder

    def counting(load, rec, embedding):
        inner = real(load, rec, embedding)
        return lambda texts: (encoded.append(len(texts)), inner(texts))[1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sync_worker, "encoder", counting)
        result = sync_worker.run(sync_step(tiny_model_dir), dsn=table)

    assert (result.inserted, result.updated, result.deleted, result.pending) == (2, 4, 3, 0)
    assert sum(encoded) == 6  # the rows changed, not the table
    assert result.rows == ROWS + 2 - 3
    assert (result.skipped_rows, result.skipped_ids) == (1, ["12"])
    assert result.synced_at is not None and result.changed_fraction == pytest.approx(9 / result.rows, abs=1e-6)
    assert_in_step(table, tiny_model)
    with pgvector.connect(table) as conn:
        rec = pgvector.version_record(conn, sync_step(tiny_model_dir).target, 1)
        assert (rec.rows, rec.changed_rows, rec.synced_at is not None) == (ROWS - 1, 9, True)
        # The view serves the new rows and not the deleted ones.
        served = {i for (i,) in conn.execute("SELECT id FROM public.docs_index")}
    assert {1000, 1001} <= served and not {10, 11, 12} & served

    again = sync_worker.run(sync_step(tiny_model_dir), dsn=table)
    assert (again.found, again.embedded, again.deleted) == (0, 0, 0)


def test_a_sync_that_finds_nothing_loads_no_model(table, tiny_model_dir, monkeypatch):
    build(table, tiny_model_dir)

    def no_model(*args, **kwargs):
        raise AssertionError("a sync with nothing to embed loaded the model")

    monkeypatch.setattr(modelzoo, "load", no_model)
    with psycopg.connect(table, autocommit=True) as conn:
        conn.execute("UPDATE public.docs SET views = 1")
        conn.execute("DELETE FROM public.docs WHERE doc_id = 0")
    result = sync_worker.run(sync_step(tiny_model_dir), dsn=table)
    assert (result.found, result.embedded, result.deleted, result.rows) == (1, 0, 1, ROWS - 1)


def test_a_truncated_table_empties_the_version(table, tiny_model_dir):
    build(table, tiny_model_dir)
    with psycopg.connect(table, autocommit=True) as conn:
        conn.execute("TRUNCATE public.docs")
    result = sync_worker.run(sync_step(tiny_model_dir), dsn=table)
    assert (result.deleted, result.rows) == (ROWS, 0)
    assert version_rows(table) == {}


def test_a_sync_killed_at_any_chunk_and_run_again_leaves_exactly_the_source(table, tiny_model_dir, tiny_model):
    build(table, tiny_model_dir)
    with psycopg.connect(table, autocommit=True) as conn:
        conn.execute("UPDATE public.docs SET body = body || ' v2' WHERE doc_id % 3 = 0")  # 40 rows
        conn.execute("INSERT INTO public.docs SELECT g, NULL, 'inserted ' || g, 0 FROM generate_series(500, 529) g")
        conn.execute("DELETE FROM public.docs WHERE doc_id % 10 = 1")
    # Killed while deleting, then at the 3rd and the 2nd chunk of what is left (70 rows: 10 chunks of 7).
    for method, kill_at in (("delete_gone", 1), ("apply", 3), ("apply", 2)):
        real = getattr(store_sync._Writer, method)
        calls = {"n": 0}

        def killed(self, *args, _at=kill_at, _real=real, calls=calls, **kwargs):
            calls["n"] += 1
            if calls["n"] == _at:
                raise RuntimeError("pod killed")
            return _real(self, *args, **kwargs)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(store_sync._Writer, method, killed)
            with pytest.raises(RuntimeError, match="pod killed"):
                sync_worker.run(sync_step(tiny_model_dir), dsn=table)
    result = sync_worker.run(sync_step(tiny_model_dir), dsn=table)
    assert result.pending == 0
    assert_in_step(table, tiny_model)
    with pgvector.connect(table) as conn:
        rec = pgvector.version_record(conn, sync_step(tiny_model_dir).target, 1)
        stored = conn.execute("SELECT count(*) FROM public.docs_index_v1").fetchone()[0]
    assert rec.rows == stored == len(source_texts(table))  # the catalog's count stayed exact through the kills


def test_a_version_without_hashes_is_embedded_again_on_its_first_sync(table, tiny_model_dir, tiny_model):
    build(table, tiny_model_dir)
    with psycopg.connect(table, autocommit=True) as conn:
        conn.execute("ALTER TABLE public.docs_index_v1 DROP COLUMN content_hash")  # as an earlier release built it
    result = sync_worker.run(sync_step(tiny_model_dir), dsn=table)
    assert result.rehashed and (result.updated, result.inserted) == (ROWS, 0)
    assert_in_step(table, tiny_model)


@pytest.mark.parametrize(
    ("id_type", "ids"),
    [
        ("integer", ["1", "2", "3", "4"]),
        ("bigint", ["9000000000", "9000000001", "9000000002", "9000000003"]),
        ("text", ["b", "a", "c-1", "Ω"]),
        ("uuid", [f"00000000-0000-0000-0000-00000000000{i}" for i in range(4)]),
    ],
)
def test_the_source_id_type_is_kept(dsn, tiny_model_dir, id_type, ids):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE public.docs (doc_id {id_type} PRIMARY KEY, body text)")
        for i, doc_id in enumerate(ids[:3]):
            conn.execute("INSERT INTO public.docs VALUES (%s::" + id_type + ", %s)", (doc_id, f"text {i}"))
    config = steps.EmbedStep.model_validate(
        {
            "target": {"name": "docs_index"},
            "source": {"table": {"table": "docs", "idColumn": "doc_id", "textColumn": "body"}},
            "model": str(tiny_model_dir),
            "device": "cpu",
        }
    )
    embed.run(config, dsn=dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO public.docs VALUES (%s::" + id_type + ", 'new')", (ids[3],))
        conn.execute("UPDATE public.docs SET body = 'changed' WHERE doc_id = %s::" + id_type, (ids[0],))
        conn.execute("DELETE FROM public.docs WHERE doc_id = %s::" + id_type, (ids[1],))
    step = sync_step(tiny_model_dir).model_copy(update={"table": config.source.table})
    result = sync_worker.run(step, dsn=dsn)
    assert (result.inserted, result.updated, result.deleted) == (1, 1, 1)
    with psycopg.connect(dsn) as conn:
        kept = conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'public.docs_index_v1'::regclass AND attname = 'id'"
        ).fetchone()[0]
        stored = sorted(i for (i,) in conn.execute("SELECT id::text FROM public.docs_index_v1"))
    assert kept == id_type
    assert stored == sorted([ids[0], ids[2], ids[3]])


def test_a_cut_over_catches_its_version_up_in_the_same_lock(table, tiny_model_dir, tiny_model, tmp_path):
    """v2 is built, then the table changes; the cut-over to v2 embeds those rows into it before the view moves,
    so v2 never serves rows older than v1 had."""
    build(table, tiny_model_dir)
    v2 = build(table, tiny_model_dir, reuse=False, maxSeqLength=64)  # another build: a new version, Ready beside v1
    assert v2 == 2
    with psycopg.connect(table, autocommit=True) as conn:
        conn.execute("INSERT INTO public.docs VALUES (2000, NULL, 'rows changed while v2 waited', 0)")
        conn.execute("UPDATE public.docs SET body = 'rewritten' WHERE doc_id = 5")
        conn.execute("DELETE FROM public.docs WHERE doc_id = 6")
    probe_set = tmp_path / "probe.jsonl"
    probe_set.write_text('{"query": "rivers", "relevant": ["1"]}\n')
    seen: list[tuple[bool, int]] = []
    real_point = pgvector._point_view

    def point(conn, rec):
        # Inside the cut-over's transaction: v2 already holds the change, and the view still serves v1.
        has_new = conn.execute("SELECT count(*) FROM public.docs_index_v2 WHERE id = 2000").fetchone()[0] == 1
        seen.append((has_new, conn.execute("SELECT count(*) FROM public.docs_index WHERE id = 2000").fetchone()[0]))
        real_point(conn, rec)

    step = steps.ProbeStep.model_validate(
        {
            "target": {"name": "docs_index"},
            "version": 2,
            "model": str(tiny_model_dir),
            "probe": {"path": str(probe_set), "maxRegression": 1.0},
            "promote": True,
            "catchUp": {"table": SOURCE, "embedding": {"maxSeqLength": 64, "commitRows": 7}},
            "device": "cpu",
        }
    )
    real_catch_up = sync_worker.catch_up
    calls: list[bool] = []

    def recording(model, table_, embedding):
        hook = real_catch_up(model, table_, embedding)

        def wrapped(conn, rec):
            calls.append(conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE)
            hook(conn, rec)

        return wrapped

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pgvector, "_point_view", point)
        mp.setattr(sync_worker, "catch_up", recording)
        result = probe.run(step, dsn=table)
    assert result.passed
    assert calls == [False, True]  # the bulk outside the cut-over's lock, the remainder inside it
    assert seen == [(True, 0)]
    with pgvector.connect(table) as conn:
        live = pgvector.live_record(conn, step.target)
        assert live is not None and live.version == 2
        served = {i for (i,) in conn.execute("SELECT id FROM public.docs_index")}
        assert catalog.record(conn, "public", "docs_index", 2).changed_rows == 3
    assert 2000 in served and 6 not in served
    assert_in_step(table, tiny_model, "docs_index_v2")
