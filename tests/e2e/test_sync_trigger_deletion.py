"""Deleting an index in sync mode trigger on the control plane: with deletionPolicy Retain it still carries the
finalizer, and its cleanup Job (run as written against embedded Postgres) removes the source table's triggers,
functions and queue while the index's tables stay."""

from __future__ import annotations

import json

import psycopg

from embedops.api.index import TableSource, Target
from embedops.store import pgvector, triggers
from tests.e2e.conftest import run_pod_command, wait_for


def test_a_retained_trigger_mode_index_leaves_no_trigger_behind(kube, operator, dsn, tmp_path):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.docs (id bigint PRIMARY KEY, body text)")
        conn.execute("CREATE TABLE public.notes_search_v1 (id bigint)")  # stands for the index's retained tables
    with pgvector.connect(dsn) as conn:  # as the index's first sync would have
        src = TableSource.model_validate({"table": "docs", "textColumn": "body"})
        triggers.install(conn, Target(name="notes_search"), src, "bigint")
    kube.core.create_namespaced_secret(kube.ns, {"metadata": {"name": "pg"}, "stringData": {"dsn": dsn}})
    kube.apply(
        {
            "apiVersion": "embedops.dev/v1alpha1",
            "kind": "EmbeddingIndex",
            "metadata": {"name": "notes"},
            "spec": {
                "model": {"name": "sentence-transformers/all-MiniLM-L6-v2"},
                "source": {"table": {"table": "docs", "textColumn": "body"}},
                "target": {"name": "notes_search"},
                "database": {"dsnSecretRef": {"name": "pg"}},
                "probe": {"path": "probe.jsonl"},
                "sync": {"mode": "trigger"},
            },
        }
    )
    wait_for(
        "the finalizer",
        lambda: "embedops.dev/finalizer" in (kube.get("EmbeddingIndex", "notes")["metadata"].get("finalizers") or []),
    )
    kube.custom.delete_namespaced_custom_object("embedops.dev", "v1alpha1", kube.ns, "embeddingindexes", "notes")
    job = kube.wait_job("cleanup")
    step = json.loads(job.spec.template.spec.containers[0].command[4])
    assert step["dropTables"] is False and step["target"]["name"] == "notes_search"
    (pod,) = kube.wait_running_pods(job.metadata.name)
    message = run_pod_command(kube, pod, tmp_path)
    assert json.loads(message)["dropped"] == [f"embedops.{triggers.names_for(Target(name='notes_search')).queue}"]
    kube.finish(pod.metadata.name, message)
    wait_for(
        "notes gone",
        lambda: (
            not kube.custom.list_namespaced_custom_object("embedops.dev", "v1alpha1", kube.ns, "embeddingindexes")[
                "items"
            ]
        ),
        timeout=60,
    )
    with psycopg.connect(dsn) as conn:
        left = conn.execute(
            "SELECT (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.docs'::regclass AND NOT tgisinternal), "
            "(SELECT count(*) FROM pg_proc WHERE pronamespace = 'embedops'::regnamespace), "
            "to_regclass('public.notes_search_v1') IS NOT NULL"
        ).fetchone()
    assert left == (0, 0, True)
