"""Local mode keeps a table index in step with its table: the planner's scheduled sync, `embedops sync`, and
the counts in status; inserts, updates of embedded and other columns, deletes and a truncate."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import psycopg
import yaml

from embedops import manifests
from embedops.local import LocalRunner
from embedops.prepared import Doc


def write_index(folder: Path, model: Path, **spec) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "probe.jsonl").write_text(
        "".join(json.dumps({"query": f"topic {i}", "relevant": [str(i)]}) + "\n" for i in range(5))
    )
    doc = {
        "apiVersion": "embedops.dev/v1alpha1",
        "kind": "EmbeddingIndex",
        "metadata": {"name": "idx"},
        "spec": {
            "model": {"name": str(model)},
            "source": {"table": {"table": "docs", "textColumn": "body", "titleColumn": "title"}},
            "target": {"name": "docs_index"},
            "probe": {"path": "probe.jsonl"},
            "drift": {"enabled": False},
            "embedding": {"commitRows": 8},
            **spec,
        },
    }
    path = folder / "index.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run(state: Path, dsn: str, path: Path, *, later: dt.timedelta = dt.timedelta()):
    clock = lambda: dt.datetime.now(dt.UTC) + later  # noqa: E731 - the runner's clock, shifted
    with LocalRunner(state_dir=state, dsn=dsn, device="cpu", clock=clock) as runner:
        return runner.run(manifests.load([path]))["EmbeddingIndex/default/idx"].status


def served(dsn: str) -> dict[int, str]:
    with psycopg.connect(dsn) as conn:
        return dict(
            conn.execute(
                "SELECT v.id, d.body FROM public.docs_index v LEFT JOIN public.docs d ON d.id = v.id"
            ).fetchall()
        )


def test_a_scheduled_sync_follows_inserts_updates_and_deletes(tmp_path, dsn, tiny_model_dir):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.docs (id int PRIMARY KEY, title text, body text, views int DEFAULT 0)")
        conn.execute("INSERT INTO public.docs SELECT g, 'T' || g, 'topic ' || g, 0 FROM generate_series(0, 39) g")
    state, path = tmp_path / "state", write_index(tmp_path / "m", tiny_model_dir)
    status = run(state, dsn, path)
    assert status.live_version == 1 and status.rows == 40

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO public.docs (id, title, body) VALUES (100, 'New', 'a new topic'), (101, NULL, 'b')")
        conn.execute("UPDATE public.docs SET body = 'topic rewritten' WHERE id = 1")
        conn.execute("UPDATE public.docs SET views = 7 WHERE id BETWEEN 2 AND 30")  # not embedded
        conn.execute("DELETE FROM public.docs WHERE id IN (3, 4)")
    # Nothing is due a minute on; five minutes on, the planner's sync runs.
    assert run(state, dsn, path, later=dt.timedelta(minutes=1)).sync is None
    status = run(state, dsn, path, later=dt.timedelta(minutes=6))
    sync = status.sync
    assert (sync.version, sync.rows_embedded, sync.rows_deleted, sync.pending_rows) == (1, 3, 2, 0)
    assert status.rows == 40 and status.versions[0].rows == 40
    rows = served(dsn)
    assert {100, 101} <= set(rows) and not {3, 4} & set(rows) and rows[1] == "topic rewritten"
    assert status.live_version == 1  # the same version, kept current: nothing rebuilt

    # A truncate empties the version on the next sync, asked for now with `embedops sync`.
    from embedops.cli import main

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE public.docs")
    assert main(["sync", "-f", str(path), "--dsn", dsn, "--state-dir", str(state), "--no-progress"]) == 0
    body = json.loads((state / "default" / "embeddingindexes" / "idx.json").read_text())
    assert (body["status"]["sync"]["rowsDeleted"], body["status"]["rows"]) == (40, 0)
    assert served(dsn) == {}


def test_a_new_version_is_caught_up_with_the_table_at_its_cut_over(tmp_path, dsn, tiny_model_dir):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.docs (id int PRIMARY KEY, title text, body text)")
        conn.execute("INSERT INTO public.docs SELECT g, NULL, 'topic ' || g FROM generate_series(0, 19) g")
    state = tmp_path / "state"
    run(state, dsn, write_index(tmp_path / "m", tiny_model_dir))
    # A new embedding setting builds v2; the catch-up at its cut-over leaves it exactly the table's rows.
    status = run(
        state, dsn, write_index(tmp_path / "m", tiny_model_dir, embedding={"commitRows": 8, "maxSeqLength": 32})
    )
    assert status.live_version == 2
    with psycopg.connect(dsn) as conn:
        hashes = dict(conn.execute("SELECT id, content_hash FROM public.docs_index_v2").fetchall())
        texts = dict(conn.execute("SELECT id, body FROM public.docs").fetchall())
    from embedops.store.sources import content_hash

    assert hashes == {i: content_hash(Doc(id="", text=t).full_text) for i, t in texts.items()}
    assert status.versions[0].synced_at is not None
