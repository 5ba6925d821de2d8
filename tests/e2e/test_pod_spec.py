"""The pods the operator creates are runnable as written.

The operator builds an EmbeddingIndex's Jobs on the real control plane; this test takes each
pod's container command and environment exactly as the API server holds them, resolves the
environment the way the kubelet would (Secret keys, the completion-index annotation), runs the
command on this machine against embedded Postgres, and hands the result back through the
pod's termination message. Two things the kubelet provides are mapped to local ones: the
termination-log file (`--result`) and the workspace volume, which the operator is told is
mounted at a temporary folder (EMBEDOPS_WORKSPACE_PATH).
"""

from __future__ import annotations

import json

import psycopg

from tests.e2e.conftest import run_pod_command, running_operator

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TOPICS = [
    "protein folding",
    "river delta sediment",
    "jazz harmony",
    "sourdough baking",
    "orbital mechanics",
    "coral reef bleaching",
    "medieval castles",
    "volcanic eruptions",
    "honeybee colonies",
    "chess openings",
]


def _docs() -> list[tuple[str, str]]:
    return [
        (f"d{i:02d}", f"A note about {topic}, number {j}: how {topic} works and why it matters.")
        for i, (topic, j) in enumerate((t, j) for t in TOPICS for j in range(3))
    ]


def test_index_pods_run_as_written_against_embedded_postgres(kube, dsn, tmp_path):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.docs (id text PRIMARY KEY, text text NOT NULL)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO public.docs VALUES (%s, %s)", _docs())
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    with (workspace / "probe.jsonl").open("w") as f:
        for i, topic in enumerate(TOPICS):
            f.write(json.dumps({"query": f"{topic}", "relevant": [f"d{3 * i + j:02d}" for j in range(3)]}) + "\n")
    kube.core.create_namespaced_secret(kube.ns, {"metadata": {"name": "pg"}, "stringData": {"dsn": dsn}})
    kube.apply(
        {
            "apiVersion": "embedops.dev/v1alpha1",
            "kind": "EmbeddingIndex",
            "metadata": {"name": "notes"},
            "spec": {
                "model": {"name": MODEL},
                "source": {"table": {"table": "docs"}},
                "target": {"name": "notes_search"},
                "database": {"dsnSecretRef": {"name": "pg"}},
                "embedding": {"shards": 2, "commitRows": 8},
                "probe": {"path": "probe.jsonl", "k": 3, "minRecall": 0.5},
            },
        }
    )

    with running_operator(kube.ns, workspace_path=str(workspace)):
        embed = kube.wait_job("embed")
        for pod in kube.wait_running_pods(embed.metadata.name, 2):
            kube.finish(pod.metadata.name, run_pod_command(kube, pod, tmp_path))
        publish = kube.wait_job("publish")
        (pod,) = kube.wait_running_pods(publish.metadata.name)
        kube.finish(pod.metadata.name, run_pod_command(kube, pod, tmp_path))
        status = kube.wait_ready("EmbeddingIndex", "notes")["status"]

    assert status["liveVersion"] == 1 and status["rows"] == 30
    assert status["probe"]["recallAtK"] >= 0.5 and status["probe"]["passed"] is True
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM public.notes_search").fetchone()[0] == 30
        shards = conn.execute("SELECT count(*) FROM embedops.index_progress").fetchone()[0]
    assert shards == 2
