"""The embed worker against a real Postgres: exact re-index, kill and resume, shards, dataset corpora."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
from pydantic import ValidationError

from embedops import steps
from embedops.prepared import Doc, write_prepared
from embedops.store import catalog, pgvector, sources
from embedops.workers import documents, embed

ROWS = 300
WORDS = [
    "river",
    "stone",
    "cloud",
    "market",
    "engine",
    "garden",
    "violin",
    "harbor",
    "pepper",
    "lantern",
    "quartz",
    "meadow",
]


def text_of(i: int) -> str:
    # Lengths vary a lot, so sorting by length inside encode is exercised.
    return " ".join(WORDS[(i * k) % len(WORDS)] for k in range(1, 2 + i % 17))


@pytest.fixture
def source(dsn):
    """public.docs: ROWS documents with bigint ids (gapped, so ids are not row numbers) and a title."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.docs (doc_id bigint PRIMARY KEY, title text, body text)")
        with conn.cursor().copy("COPY public.docs (doc_id, title, body) FROM STDIN") as copy:
            for i in range(ROWS):
                copy.write_row((i * 7 + 3, f"Doc {i}" if i % 3 else None, text_of(i)))
    return dsn


def config(model_dir, **overrides) -> steps.EmbedStep:
    raw = {
        "target": {"name": "docs_index"},
        "source": {"table": {"table": "docs", "idColumn": "doc_id", "textColumn": "body", "titleColumn": "title"}},
        "model": str(model_dir),
        "embedding": {"batchSize": 16, "commitRows": 64},
        "device": "cpu",
    }
    raw.update(overrides)
    return steps.EmbedStep.model_validate(raw)


def stored(dsn, table: str) -> dict[int, np.ndarray]:
    with pgvector.connect(dsn) as conn:
        return {i: e.to_numpy() for i, e in conn.execute(f"SELECT id, embedding FROM public.{table}")}


def test_reindex_embeds_every_row_exactly(source, tiny_model_dir, tiny_model):
    result = embed.run(config(tiny_model_dir), dsn=source)

    assert (result.version, result.state, result.rows, result.embedded) == (1, "Ready", ROWS, ROWS)
    assert not result.resumed
    vectors = stored(source, result.table)
    assert sorted(vectors) == [i * 7 + 3 for i in range(ROWS)]
    sample = list(range(0, ROWS, 23))
    texts = [Doc(id="", text=text_of(i), title=f"Doc {i}" if i % 3 else "").full_text for i in sample]
    expected = tiny_model.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(np.stack([vectors[i * 7 + 3] for i in sample]), expected, atol=1e-5)
    with pgvector.connect(source) as conn:
        pgvector.cutover(conn, config(tiny_model_dir).target, result.version)
        assert conn.execute("SELECT count(*) FROM public.docs_index").fetchone()[0] == ROWS


def test_a_killed_run_resumes_after_its_last_committed_chunk(source, tiny_model_dir, monkeypatch):
    real_advance = catalog.advance
    calls = {"n": 0}

    def killed_on_third_chunk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # after the third chunk's COPY, before its commit
            raise RuntimeError("pod killed")
        return real_advance(*args, **kwargs)

    monkeypatch.setattr(catalog, "advance", killed_on_third_chunk)
    with pytest.raises(RuntimeError, match="pod killed"):
        embed.run(config(tiny_model_dir), dsn=source)
    with psycopg.connect(source) as conn:
        assert conn.execute("SELECT count(*) FROM public.docs_index_v1").fetchone()[0] == 128
        last_id, rows = conn.execute("SELECT last_id, row_count FROM embedops.index_progress").fetchone()
    assert (last_id, rows) == (str(127 * 7 + 3), 128)

    monkeypatch.setattr(catalog, "advance", real_advance)
    written: list[int] = []
    real_write = pgvector.VersionWriter.write

    def recording_write(self, ids, vectors, hashes):
        written.extend(ids)
        return real_write(self, ids, vectors, hashes)

    monkeypatch.setattr(pgvector.VersionWriter, "write", recording_write)
    result = embed.run(config(tiny_model_dir), dsn=source)

    assert (result.version, result.resumed, result.embedded) == (1, True, ROWS - 128)
    assert (result.rows, result.state) == (ROWS, "Ready")
    assert min(written) == 128 * 7 + 3  # continued right after the last committed id
    with psycopg.connect(source) as conn:
        count, distinct = conn.execute("SELECT count(*), count(DISTINCT id) FROM public.docs_index_v1").fetchone()
    assert count == distinct == ROWS


def test_every_row_keeps_the_hash_of_the_text_it_was_embedded_from(source, tiny_model_dir):
    """The hash Python computes of the text the model read equals the one SQL computes of the row (what a
    sync diffs): for titled, untitled and whitespace-edged rows alike."""
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO public.docs VALUES (1, '  Ünïcode  ', E' \\u00a0tabbed\\t text\\n'), (2, '', ' bare '), "
            "(4, NULL, E'caf\\u00e9 \\u2028 line')"
        )
    result = embed.run(config(tiny_model_dir), dsn=source)
    with psycopg.connect(source) as conn:
        stored_hashes = dict(conn.execute(f"SELECT id, content_hash FROM public.{result.table}").fetchall())
        titles = dict(conn.execute("SELECT doc_id, title FROM public.docs").fetchall())
        bodies = dict(conn.execute("SELECT doc_id, body FROM public.docs").fetchall())
    assert len(stored_hashes) == ROWS + 3
    for doc_id, digest in stored_hashes.items():
        text = Doc(id="", text=bodies[doc_id], title=titles[doc_id] or "").full_text
        assert digest == sources.content_hash(text), doc_id


def test_two_shards_split_the_corpus_exactly(source, tiny_model_dir):
    first = embed.run(config(tiny_model_dir, shard=0, embedding={"commitRows": 50, "shards": 2}), dsn=source)
    assert (first.state, first.rows) == ("Building", first.shard_rows)
    second = embed.run(config(tiny_model_dir, shard=1, embedding={"commitRows": 50, "shards": 2}), dsn=source)

    assert (second.version, second.state, second.rows) == (first.version, "Ready", ROWS)
    assert first.shard_rows + second.shard_rows == ROWS and 0 < first.shard_rows < ROWS
    with psycopg.connect(source) as conn:
        shard_of = dict(conn.execute("SELECT doc_id, mod(abs(hashtext(doc_id::text)::bigint), 2) FROM public.docs"))
        ids = [r[0] for r in conn.execute("SELECT id FROM public.docs_index_v1")]
    assert sorted(ids) == sorted(shard_of)
    assert sum(1 for s in shard_of.values() if s == 0) == first.shard_rows


def test_a_dataset_corpus_with_halfvec_ivfflat_and_l2(tmp_path, dsn, tiny_model_dir, tiny_model):
    docs = [Doc(id=f"d{i}", text=text_of(i), title="T" if i % 2 else "") for i in range(120)]
    write_prepared(tmp_path / "ds", corpus=docs, train=[], test_queries={}, test_qrels={})
    cfg = config(
        tiny_model_dir,
        source={"datasetRef": {"name": "ds"}},
        datasetDir=str(tmp_path / "ds"),
        ann={"method": "ivfflat", "vectorType": "halfvec", "metric": "l2"},
        embedding={"commitRows": 50, "shards": 2},
    )
    results = [embed.run(cfg.model_copy(update={"shard": s}), dsn=dsn) for s in (0, 1)]

    assert [r.state for r in results] == ["Building", "Ready"] and results[1].rows == 120
    vectors = stored(dsn, results[1].table)
    assert sorted(vectors) == sorted(d.id for d in docs)
    expected = tiny_model.encode([d.full_text for d in docs[:10]], normalize_embeddings=False)
    np.testing.assert_allclose(
        np.stack([vectors[d.id] for d in docs[:10]]).astype(np.float32), expected, rtol=2e-3, atol=2e-3
    )  # halfvec keeps about three digits
    assert documents.in_shard("d1", 0, 2) != documents.in_shard("d1", 1, 2)


def test_a_new_model_starts_a_new_version_instead_of_resuming(source, tiny_model_dir, tmp_path, monkeypatch):
    from tests.tinymodel import build_tiny_model

    def killed(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(catalog, "advance", killed)
    with pytest.raises(RuntimeError, match="killed"):
        embed.run(config(tiny_model_dir), dsn=source)
    monkeypatch.undo()
    other = build_tiny_model(tmp_path / "other", hidden=16, seed=1)
    result = embed.run(config(other), dsn=source)
    assert (result.version, result.rows, result.resumed) == (2, ROWS, False)
    with pgvector.connect(source) as conn:
        assert [(v.version, v.state, v.dimensions) for v in pgvector.versions(conn, config(other).target)] == [
            (2, "Ready", 16),
            (1, "Failed", 32),
        ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("target", {"name": "docs; DROP TABLE x"}),
        ("target", {"name": '"quoted"'}),
        ("target", {"name": "d" * 64}),
        ("target", {"name": "d" * 62}),  # fits, but docs..._v1 would not
        ("source", {"table": {"table": "docs; DROP TABLE x"}}),
        ("source", {"table": {"table": "docs", "textColumn": 'body"--'}}),
    ],
)
def test_hostile_names_fail_the_config(tiny_model_dir, field, value):
    with pytest.raises(ValidationError):
        config(tiny_model_dir, **{field: value})


def test_source_problems_name_the_field(source, tiny_model_dir):
    with pytest.raises(ValueError, match="source.table.textColumn: column 'nope' not found"):
        bad = {"table": {"table": "docs", "idColumn": "doc_id", "textColumn": "nope"}}
        embed.run(config(tiny_model_dir, source=bad), dsn=source)
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.nokey (id int, text text)")
    with pytest.raises(ValueError, match="source.table.idColumn: 'id' of public.nokey has no primary key"):
        embed.run(config(tiny_model_dir, source={"table": {"table": "nokey"}}), dsn=source)


# -- issue 16: rows with no text are skipped and reported, by the dataset readers' rule -----------

# Texts with nothing to embed, as a table may hold them (NULL too): never embedded, whatever the title.
BLANK_TEXTS = [None, "", "   ", "\t\n", "\u200b", " \u200b\u00a0\u2060 ", "\ufeff\u3000"]


@pytest.fixture
def source_with_blank_texts(dsn):
    """public.docs: ten documents with text, then one row per blank text (ids 100, 101...), titled or not."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.docs (doc_id bigint PRIMARY KEY, title text, body text)")
        with conn.cursor().copy("COPY public.docs (doc_id, title, body) FROM STDIN") as copy:
            for i in range(10):
                copy.write_row((i, None, text_of(i)))
            for i, text in enumerate(BLANK_TEXTS):
                copy.write_row((100 + i, "A title" if i % 2 else None, text))
    return dsn


def test_rows_without_text_are_skipped_and_reported_never_embedded(source_with_blank_texts, tiny_model_dir, caplog):
    dsn = source_with_blank_texts
    result = embed.run(config(tiny_model_dir), dsn=dsn)

    assert (result.rows, result.embedded) == (10, 10)
    assert result.skipped_rows == len(BLANK_TEXTS) and result.skipped_ids[:3] == ["100", "101", "102"]
    assert sorted(stored(dsn, result.table)) == list(range(10))
    with psycopg.connect(dsn) as conn:
        docs = documents.open_documents(config(tiny_model_dir).source, conn=conn, dataset_dir=None)
        assert docs.total() == 10 and len(docs.sample(100, "seed")) == 10
        assert docs.texts([0, 100, 101]).keys() == {0}
        with caplog.at_level("WARNING", logger="embedops.workers.documents"):
            skipped = documents.skipped_rows(docs)
    blank_ids = [str(100 + i) for i in range(len(BLANK_TEXTS))]
    assert skipped == (len(BLANK_TEXTS), blank_ids)
    assert f"{len(BLANK_TEXTS)} rows have no text to embed" in caplog.text and "ids 100, 101, 102" in caplog.text


def test_a_table_skips_exactly_the_texts_the_dataset_readers_reject(dsn):
    """Postgres's btrim(text, BLANK) and the readers' str.strip(BLANK) agree, character by character."""
    from embedops.workers.readers.rows import BLANK, trimmed

    blank = [*BLANK, BLANK]
    not_blank = [*(c + "x" + c for c in BLANK), "x", " \u200bx\u200b ", "\u00ad", "\u200e"]  # soft hyphen, LRM
    with psycopg.connect(dsn) as conn:
        in_postgres = [fetch_one(conn, "SELECT btrim(%s, %s) = ''", (t, BLANK)) for t in blank + not_blank]
    assert in_postgres == [not trimmed(t) for t in blank + not_blank] == [True] * len(blank) + [False] * len(not_blank)


def fetch_one(conn, query: str, params: tuple):
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]
