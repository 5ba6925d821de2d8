"""One lifecycle: the quickstart's resources give the same statuses in local mode and on a cluster.

The three quickstart manifests (with a tiny random model in MiniLM's place, so that training
takes seconds) run twice: through `embedops run`'s executor, and through the operator on the
test control plane, whose worker pods are run as local processes with their commands and
environment exactly as the API server holds them. Each mode has its own database. The statuses
must be equal but for timestamps, durations and where each mode keeps its outputs; so must the
catalogs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import psycopg
import yaml

from embedops import manifests
from embedops.api.index import Target
from embedops.local import LocalRunner
from embedops.store import pgvector
from tests.e2e.conftest import run_pod_command, running_operator, wait_for

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart"
KINDS = ("EmbeddingDataset", "FineTuneJob", "EmbeddingIndex")
VOLATILE = {
    "lastTransitionTime",
    "preparedAt",
    "startTime",
    "completionTime",
    "durationSeconds",
    "checkedAt",
    "createdAt",
}


def _manifests(folder: Path, namespace: str, model: Path) -> list[dict[str, Any]]:
    """The quickstart's resources, sized for a test: the tiny model, one epoch, short sequences."""
    docs = {d["kind"]: d for p in sorted(QUICKSTART.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())}
    docs["EmbeddingDataset"]["spec"]["hardNegatives"]["model"] = str(model)
    docs["EmbeddingDataset"]["spec"]["augment"]["maxTitlePairs"] = 50
    ft = docs["FineTuneJob"]["spec"]
    ft["baseModel"] = str(model)
    ft["training"].update(epochs=1, maxSeqLength=64)
    ft["evaluation"] = {"requireImprovement": False}
    ix = docs["EmbeddingIndex"]["spec"]
    ix["embedding"]["maxSeqLength"] = 64
    ix["probe"]["minRecall"] = 0.0  # a random model's recall
    ix["database"] = {"dsnSecretRef": {"name": "pg"}}  # local mode serves every step from its one database
    out = []
    for kind in KINDS:
        doc = docs[kind]
        doc["metadata"]["namespace"] = namespace
        (folder / f"{kind}.yaml").write_text(yaml.safe_dump(doc))
        out.append(doc)
    return out


def _normalized(value: Any, roots: list[str]) -> Any:
    if isinstance(value, dict):
        return {k: _normalized(v, roots) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_normalized(v, roots) for v in value]
    if isinstance(value, str):
        for root in roots:
            value = value.replace(root, "<outputs>")
    return value


def _catalog(dsn: str, roots: list[str]) -> list[dict[str, Any]]:
    with pgvector.connect(dsn) as conn:
        return _normalized([v.to_wire() for v in pgvector.versions(conn, Target(name="scifact_docs"))], roots)


def _run_operator(kube, workspace: Path, workdir: Path) -> None:
    """The operator reconciles; every pod of every Job it creates runs here, until the index is Ready."""
    done: set[str] = set()

    def step() -> bool:
        for job in kube.jobs():
            for pod in kube.pods(job.metadata.name):
                if pod.metadata.name not in done and pod.status.phase == "Running":
                    done.add(pod.metadata.name)
                    kube.finish(pod.metadata.name, run_pod_command(kube, pod, workdir))
        return (kube.condition("EmbeddingIndex", "scifact-docs") or {}).get("status") == "True"

    with running_operator(kube.ns, workspace_path=str(workspace)):
        wait_for("the index Ready", step, timeout=420, interval=0.5)


def test_local_mode_and_the_operator_write_the_same_statuses(kube, pg_server, dsn, tiny_model_dir, tmp_path):
    workspace = tmp_path / "workspace"
    shutil.copytree(QUICKSTART / "data", workspace / "data")
    docs = _manifests(workspace, kube.ns, tiny_model_dir)
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS parity_cluster WITH (FORCE)")
        conn.execute("CREATE DATABASE parity_cluster")
    cluster_dsn = pg_server.dsn_for("parity_cluster")

    state = tmp_path / "state"
    local = LocalRunner(state_dir=state, dsn=dsn, device="cpu").run(manifests.load([workspace]))
    assert all(o.ok for o in local.values()), {k: o.status.conditions for k, o in local.items()}

    kube.core.create_namespaced_secret(kube.ns, {"metadata": {"name": "pg"}, "stringData": {"dsn": cluster_dsn}})
    for doc in docs:
        kube.apply(doc)
    _run_operator(kube, workspace, tmp_path)

    roots = [str(workspace / "embedops"), str(state / kube.ns)]
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        on_cluster = _normalized(kube.get(kind, name)["status"], roots)
        locally = _normalized(local[f"{kind}/{kube.ns}/{name}"].status.to_wire(), roots)
        assert locally == on_cluster, kind
    assert _catalog(dsn, roots) == _catalog(cluster_dsn, roots)
    assert sorted(j.metadata.labels["embedops.dev/step"] for j in kube.jobs()) == [
        "embed",
        "prepare",
        "publish",
        "train",
    ]
