"""Nothing embedops does destroys what it did not create (issue 16: cases 2, 3, 4, 6, 8, 9; issue 17: 1).

Against a real Postgres with the tiny model: one owner per target recorded in the catalog, views
of users never replaced or dropped, a dependent view found before any embedding, "the same
embeddings" as the planner defines it, unpinning that follows the current model again, a source
the role may not read and an empty source refused before a version exists.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from embedops import steps
from embedops.api.conditions import Reason
from embedops.api.index import Target
from embedops.results import EmptySource, TargetConflict
from embedops.store import pgvector
from embedops.workers import cleanup, embed, publish, runner

TARGET = Target(name="kb")
FIRST = steps.TargetOwner(namespace="team-a", name="kb", uid="u1")
SECOND = steps.TargetOwner(namespace="team-b", name="kb-copy", uid="u2")
DOCS = ["The Eiffel Tower was completed in 1889.", "Honeybees dance.", "A violin has four strings."]


@pytest.fixture
def notes(dsn) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.notes (id int PRIMARY KEY, text text)")
        for i, doc in enumerate(DOCS, 1):
            conn.execute("INSERT INTO public.notes VALUES (%s, %s)", (i, doc))
    return dsn


@pytest.fixture
def probes(tmp_path) -> Path:
    path = tmp_path / "probes.jsonl"
    path.write_text("".join(json.dumps({"query": d, "relevant": [1, 2, 3]}) + "\n" for d in DOCS), encoding="utf-8")
    return path


def embed_step(model: str, owner: steps.TargetOwner | None = FIRST, **kw) -> steps.EmbedStep:
    return steps.EmbedStep(
        target=TARGET, source={"table": {"table": "notes"}}, model=model, device="cpu", owner=owner, **kw
    )


def publish_step(model: str, version: int, probes: Path, owner=FIRST, **kw) -> steps.PublishStep:
    return steps.PublishStep(
        target=TARGET, version=version, model=model, probe={"path": str(probes)}, device="cpu", owner=owner, **kw
    )


def relations(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace").fetchall()
    return {r[0] for r in rows}


def test_a_second_index_on_the_same_target_is_refused_and_its_deletion_drops_nothing(notes, probes, tiny_model_dir):
    model = str(tiny_model_dir)
    built = embed.run(embed_step(model), dsn=notes)
    publish.run(publish_step(model, built.version, probes), dsn=notes)
    # The second index's embed is refused before it reads or writes anything ...
    with pytest.raises(runner.WorkerError) as refused:
        runner.run(embed_step(model, SECOND, reuse=False), dsn=notes)
    assert refused.value.reason == Reason.TARGET_CONFLICT and refused.value.exit_code == 2
    assert "belongs to EmbeddingIndex team-a/kb" in str(refused.value)
    # ... and deleting it (deletionPolicy: Delete) leaves the first index's view and tables.
    assert cleanup.run(steps.CleanupStep(target=TARGET, owner=SECOND), dsn=notes).dropped == []
    assert {"kb", "kb_v1"} <= relations(notes)
    # The owner re-created under the same name (a new uid) is the same owner.
    again = embed.run(embed_step(model, steps.TargetOwner(namespace="team-a", name="kb", uid="u9")), dsn=notes)
    assert again.reused and again.version == 1
    assert cleanup.run(steps.CleanupStep(target=TARGET, owner=FIRST), dsn=notes).dropped == ["kb_v1"]
    assert not {"kb", "kb_v1"} & relations(notes)


def test_a_view_of_a_user_under_the_target_name_is_never_replaced(notes, probes, tiny_model_dir):
    with psycopg.connect(notes, autocommit=True) as conn:
        conn.execute("CREATE VIEW public.kb AS SELECT id, text FROM public.notes")
    with pytest.raises(TargetConflict, match=r"public\.kb is a view embedops did not create \(it reads notes\)"):
        embed.run(embed_step(str(tiny_model_dir)), dsn=notes)
    assert "kb_v1" not in relations(notes), "refused before a version table exists"
    # Cleanup of the index leaves the user's view alone too.
    assert cleanup.run(steps.CleanupStep(target=TARGET, owner=FIRST), dsn=notes).dropped == []
    assert "kb" in relations(notes)


def test_a_view_that_depends_on_the_index_view_blocks_before_any_embedding(notes, probes, tiny_model_dir):
    model = str(tiny_model_dir)
    built = embed.run(embed_step(model), dsn=notes)
    publish.run(publish_step(model, built.version, probes), dsn=notes)
    with psycopg.connect(notes, autocommit=True) as conn:
        conn.execute("CREATE VIEW public.kb_report AS SELECT count(*) FROM public.kb")
    with pytest.raises(TargetConflict, match=r"kb_report depend on the view"):
        embed.run(embed_step(model, reuse=False), dsn=notes)
    assert "kb_v2" not in relations(notes)


def test_only_a_version_with_the_planners_embeddings_key_is_reused(notes, tiny_model_dir):
    model = str(tiny_model_dir)
    first = embed.run(embed_step(model, embeddings_key="hnsw-m16"), dsn=notes)
    assert embed.run(embed_step(model, embeddings_key="hnsw-m16"), dsn=notes).reused
    # An ANN change (another key, same model and source) builds a new version instead of keeping the old one.
    changed = embed.run(embed_step(model, embeddings_key="ivfflat", ann={"method": "ivfflat"}), dsn=notes)
    assert not changed.reused and changed.version == first.version + 1


def test_unpinning_serves_the_current_models_version_again_and_retention_keeps_it(notes, probes, tiny_model_dir):
    model = str(tiny_model_dir)
    v1 = embed.run(embed_step(model, reuse=False), dsn=notes).version
    publish.run(publish_step(model, v1, probes), dsn=notes)
    v2 = embed.run(embed_step(model, reuse=False), dsn=notes).version
    publish.run(publish_step(model, v2, probes), dsn=notes)
    # Pinned to v1 with keepVersions 1: v2 (the current model's version) is retired, not dropped.
    pinned = publish.run(publish_step(model, v2, probes, pinned_version=v1, keep_versions=1), dsn=notes)
    assert pinned.live_version == v1 and {v.version for v in pinned.versions} == {v1, v2}
    # The pin removed: v2 serves again (a pin is not a rollback).
    unpinned = publish.run(publish_step(model, v2, probes, keep_versions=1), dsn=notes)
    assert unpinned.live_version == v2 and unpinned.note_reason is None


def test_a_source_the_role_may_not_read_is_invalid_input_and_leaves_no_version(notes, tiny_model_dir):
    pgvector.connect(notes).close()  # the catalog, made by a role that may
    with psycopg.connect(notes, autocommit=True) as conn:
        conn.execute("CREATE ROLE kb_no_select LOGIN PASSWORD 'r'")
        conn.execute("GRANT ALL ON SCHEMA public TO kb_no_select")
        conn.execute("GRANT CREATE ON DATABASE " + conn.info.dbname + " TO kb_no_select")
        conn.execute("GRANT USAGE, CREATE ON SCHEMA embedops TO kb_no_select")
        conn.execute("GRANT ALL ON ALL TABLES IN SCHEMA embedops TO kb_no_select")
    limited = psycopg.conninfo.make_conninfo(notes, user="kb_no_select", password="r")
    with pytest.raises(runner.WorkerError) as refused:
        runner.run(embed_step(str(tiny_model_dir)), dsn=limited)
    assert refused.value.reason == "InvalidInput" and "permission denied" in str(refused.value)
    with pgvector.connect(notes) as conn:
        assert pgvector.versions(conn, TARGET) == []


def test_an_empty_source_never_gets_a_version(notes, tiny_model_dir):
    with psycopg.connect(notes, autocommit=True) as conn:
        conn.execute("DELETE FROM public.notes")
    with pytest.raises(runner.WorkerError) as refused:
        runner.run(embed_step(str(tiny_model_dir)), dsn=notes)
    assert refused.value.reason == Reason.EMPTY_SOURCE and refused.value.exit_code == 2
    with pgvector.connect(notes) as conn:
        assert pgvector.versions(conn, TARGET) == []
    assert issubclass(EmptySource, ValueError)
