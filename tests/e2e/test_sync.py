"""An index that follows its table, on the control plane: the operator's scheduled and asked-for sync Jobs,
their pods run as written (as in test_pod_spec) against embedded Postgres, and the counts in status."""

from __future__ import annotations

import json

import psycopg
import pytest

from embedops.api import times
from tests.e2e.conftest import run_next_job, running_operator, wait_for

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TOPICS = ["protein folding", "river deltas", "jazz harmony", "sourdough", "orbital mechanics", "coral reefs"]


def _served(dsn: str) -> set[int]:
    with psycopg.connect(dsn) as conn:
        return {i for (i,) in conn.execute("SELECT id FROM public.notes_search")}


def _sync_now(kube) -> None:
    """What `kubectl embedops sync notes` sets."""
    kube.patch("EmbeddingIndex", "notes", {"metadata": {"annotations": {"embedops.dev/sync": times.now()}}})


@pytest.mark.parametrize("mode", ["diff", "trigger"])
def test_an_index_follows_inserts_updates_deletes_and_a_truncate(kube, dsn, tmp_path, mode):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.docs (id bigint PRIMARY KEY, body text, views int NOT NULL DEFAULT 0)")
        for i, topic in enumerate(TOPICS * 2):
            conn.execute("INSERT INTO public.docs (id, body) VALUES (%s, %s)", (i, f"A note about {topic} ({i})."))
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "probe.jsonl").write_text(
        "".join(json.dumps({"query": t, "relevant": [str(i), str(i + 6)]}) + "\n" for i, t in enumerate(TOPICS))
    )
    kube.core.create_namespaced_secret(kube.ns, {"metadata": {"name": "pg"}, "stringData": {"dsn": dsn}})
    kube.apply(
        {
            "apiVersion": "embedops.dev/v1alpha1",
            "kind": "EmbeddingIndex",
            "metadata": {"name": "notes"},
            "spec": {
                "model": {"name": MODEL},
                "source": {"table": {"table": "docs", "textColumn": "body"}},
                "target": {"name": "notes_search"},
                "database": {"dsnSecretRef": {"name": "pg"}},
                "probe": {"path": "probe.jsonl", "k": 3},
                "drift": {"enabled": False},
                # diff: on a one-minute schedule; trigger: row triggers, synced on request here.
                "sync": {"intervalMinutes": 1} if mode == "diff" else {"mode": "trigger", "intervalMinutes": 0},
            },
        }
    )
    known: set[str] = set()
    with running_operator(kube.ns, workspace_path=str(workspace)):
        run_next_job(kube, "embed", tmp_path, known)
        run_next_job(kube, "publish", tmp_path, known)
        kube.wait_ready("EmbeddingIndex", "notes")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO public.docs (id, body) VALUES (100, 'A note about glaciers.')")
            conn.execute("UPDATE public.docs SET body = 'A note about tea ceremonies.' WHERE id = 1")
            conn.execute("UPDATE public.docs SET views = 9 WHERE id >= 2")  # not embedded: not re-embedded
            conn.execute("DELETE FROM public.docs WHERE id IN (3, 4)")

        # diff: the schedule (one minute after the cut-over's catch-up) starts a sync Job by itself.
        # trigger: the first sync installs the triggers and diffs once (they were not there to see these).
        if mode == "trigger":
            _sync_now(kube)
        result = run_next_job(kube, "sync", tmp_path, known)
        assert (result["inserted"], result["updated"], result["deleted"]) == (1, 1, 2)
        status = wait_for(
            "status.sync",
            lambda: s if (s := kube.get("EmbeddingIndex", "notes")["status"]).get("sync") else None,
        )
        assert status["sync"]["rowsEmbedded"] == 2 and status["sync"]["rowsDeleted"] == 2
        assert status["rows"] == 11 and status["liveVersion"] == 1
        served = _served(dsn)
        assert 100 in served and not {3, 4} & served

        # More changes, synced now on request (in trigger mode, from the queue the triggers filled).
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO public.docs (id, body) VALUES (101, 'A note about lighthouses.')")
            conn.execute("UPDATE public.docs SET body = 'A note about kites.' WHERE id = 2")
            conn.execute("UPDATE public.docs SET views = 10 WHERE id = 5")
        _sync_now(kube)
        result = run_next_job(kube, "sync", tmp_path, known)
        assert (result["inserted"], result["updated"], result["deleted"], result["rows"]) == (1, 1, 0, 12)
        if mode == "trigger":
            with psycopg.connect(dsn) as conn:
                triggers = conn.execute(
                    "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.docs'::regclass AND NOT tgisinternal"
                ).fetchone()[0]
            assert triggers == 4

        # A truncate, synced now on request.
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("TRUNCATE public.docs")
        _sync_now(kube)
        result = run_next_job(kube, "sync", tmp_path, known)
        assert (result["deleted"], result["rows"]) == (12, 0)
        wait_for(
            "the truncate in status",
            lambda: (kube.get("EmbeddingIndex", "notes")["status"].get("sync") or {}).get("rowsDeleted") == 12,
        )
    assert _served(dsn) == set()
