"""Query models switched with the view, on the control plane (spec.serving, engine embedops).

The operator's Deployments and Service are real objects: the deployment controller rolls them out and kwok
makes their pods Ready at once. The serving pod's container command is run on this machine (as test_pod_spec
runs the worker pods), so what a Deployment serves is checked against the catalog the cut-over wrote.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from embedops.api.index import Target
from embedops.store import pgvector
from embedops.store.catalog import VersionRecord
from tests.e2e.conftest import new_job, run_next_job, running_operator, wait_for

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TOPICS = ["protein folding", "river deltas", "jazz harmony", "sourdough", "orbital mechanics", "coral reefs"]
SERVICE = "notes-query"


def _deployment(kube, version: int) -> Any:
    from kubernetes import client

    return client.AppsV1Api(kube.api).read_namespaced_deployment(f"notes-serve-v{version}", kube.ns)


def _ready(kube, version: int) -> bool:
    d = _deployment(kube, version)
    return (d.status.available_replicas or 0) >= 1 and (d.status.updated_replicas or 0) >= 1


def _selected(kube) -> str | None:
    """The version the index's Service selects."""
    return (kube.core.read_namespaced_service(SERVICE, kube.ns).spec.selector or {}).get("embedops.dev/version")


def _status_live(kube, version: int) -> dict[str, Any]:
    """The index's status once it says `version` is live."""
    return wait_for(
        f"status: v{version} live",
        lambda: s if (s := kube.get("EmbeddingIndex", "notes")["status"]).get("liveVersion") == version else None,
    )


def _live(dsn: str) -> VersionRecord:
    """The catalog's row of the version the view serves."""
    with pgvector.connect(dsn) as conn:
        return pgvector.version_record(conn, Target(name="notes_search"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(port: int, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@contextlib.contextmanager
def _serving_pod(kube, version: int, workdir: Path) -> Iterator[int]:
    """The container of the Deployment of `version`, as the API server holds it, run here (the kubelet's part:
    the Secret's key in its env, a loopback port for the pod's 0.0.0.0:8080); the port it listens on."""
    container = _deployment(kube, version).spec.template.spec.containers[0]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for var in container.env or []:
        if var.value is not None:
            env[var.name] = var.value
        else:
            ref = var.value_from.secret_key_ref
            env[var.name] = base64.b64decode(kube.core.read_namespaced_secret(ref.name, kube.ns).data[ref.key]).decode()
    env.pop("HOME", None)  # /tmp in the pod: the bundled model's cache is this machine's
    command, port = list(container.command), _free_port()
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    proc = subprocess.Popen(command, env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(OSError):
                if _call(port, "/health")[0] == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the v{version} serving pod's command did not start: {proc.communicate()[0][-3000:]}")
            time.sleep(0.25)
        yield port
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
        assert env["EMBEDOPS_DSN"] not in output  # the DSN is never logged


def _serves(port: int, version: int, live: VersionRecord) -> None:
    """The server on `port` encodes with `version`'s model, and its /search finds the view serving it."""
    status, info = _call(port, "/info")
    assert status == 200 and info["version"] == version
    assert info["model_sha"] == live.model_fingerprint and info["model_id"] == live.model
    status, found = _call(port, "/search", {"query": "coral reefs", "k": 3})
    assert status == 200, found
    assert found["version"] == version == live.version and len(found["hits"]) == 3


def test_a_cut_over_and_a_rollback_switch_the_view_and_the_query_service_together(kube, dsn, tmp_path, tiny_model_dir):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.docs (id bigint PRIMARY KEY, body text)")
        for i, topic in enumerate(TOPICS * 2):
            conn.execute("INSERT INTO public.docs VALUES (%s, %s)", (i, f"A note about {topic} ({i})."))
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
                # A random tiny model is v2: its recall may be anything, the gate lets it through.
                "probe": {"path": "probe.jsonl", "k": 3, "minRecall": 0, "maxRegression": 1},
                "drift": {"enabled": False},
                "serving": {"engine": "embedops", "readyTimeoutSeconds": 5},
            },
        }
    )
    known: set[str] = set()
    with running_operator(kube.ns, workspace_path=str(workspace)):
        # v1: its Deployment is rolled out before the publish Job; the cut-over points the Service at it.
        run_next_job(kube, "embed", tmp_path, known)
        wait_for("v1's Deployment Ready", lambda: _ready(kube, 1))
        run_next_job(kube, "publish", tmp_path, known)
        status = kube.wait_ready("EmbeddingIndex", "notes")["status"]
        assert status["liveVersion"] == 1
        wait_for("the Service selecting v1", lambda: _selected(kube) == "1")
        assert kube.get("EmbeddingIndex", "notes")["status"]["serving"] == {
            "service": SERVICE,
            "version": 1,
            "engine": "embedops",
        }
        v1 = _live(dsn)
        with _serving_pod(kube, 1, tmp_path) as port:
            _serves(port, 1, v1)

        # v2 (another model): its Deployment becomes Ready with its model while the Service still selects v1;
        # the publish Job starts only then, and the reconcile that records v2 live switches the Service.
        kube.patch("EmbeddingIndex", "notes", {"spec": {"model": {"name": str(tiny_model_dir)}}})
        run_next_job(kube, "embed", tmp_path, known)
        new_job(kube, "publish", known)
        assert _ready(kube, 2) and _selected(kube) == "1"  # blue/green: green is up, blue still serves
        run_next_job(kube, "publish", tmp_path, known)  # its transaction has switched the view when it returns
        committed = time.monotonic()
        wait_for("the Service selecting v2", lambda: _selected(kube) == "2", interval=0.05)
        # The window in which the view serves v2 and the Service still v1 (the fingerprint header tells them apart).
        window = time.monotonic() - committed
        status = _status_live(kube, 2)  # the same reconcile writes it, just after the Service
        assert status["serving"]["version"] == 2
        wait_for("v1's Deployment kept at zero replicas", lambda: _deployment(kube, 1).spec.replicas == 0)
        v2 = _live(dsn)
        assert v2.version == 2 and v2.model_fingerprint != v1.model_fingerprint
        with _serving_pod(kube, 2, tmp_path) as port2, _serving_pod(kube, 1, tmp_path) as port1:
            _serves(port2, 2, v2)
            # v1's model is not the view's any more: its /search refuses rather than rank with the wrong space.
            status_code, refused = _call(port1, "/search", {"query": "coral reefs"})
            assert status_code == 409 and "v2" in refused["error"]
        switched = [e for e in kube.events("notes") if e.reason == "ServingSwitched"]
        assert any("v2" in e.message for e in switched), [e.message for e in switched]

        # A rollback whose Deployment cannot roll out (no node matches) is blocked: no publish Job, and
        # both the view and the Service stay on v2.
        kube.patch(
            "EmbeddingIndex",
            "notes",
            {"spec": {"pinnedVersion": 1, "serving": {"scheduling": {"nodeSelector": {"pool": "nowhere"}}}}},
        )
        failed = wait_for(
            "ServingFailed",
            lambda: (
                c if (c := kube.condition("EmbeddingIndex", "notes", "Degraded")) and c["status"] == "True" else None
            ),
            timeout=90,
        )
        assert failed["reason"] == "ServingFailed" and "notes-serve-v1" in failed["message"], failed
        assert "ProgressDeadlineExceeded" in failed["message"]
        assert not [j for j in kube.jobs("publish") if j.metadata.name not in known]
        assert _selected(kube) == "2" and _live(dsn).version == 2
        assert kube.get("EmbeddingIndex", "notes")["status"]["liveVersion"] == 2

        # The scheduling fixed: v1's Deployment rolls out, the rollback publishes, the Service follows it.
        kube.patch("EmbeddingIndex", "notes", {"spec": {"serving": {"scheduling": None}}})
        wait_for("v1's Deployment Ready again", lambda: _ready(kube, 1) and _deployment(kube, 1).spec.replicas == 1)
        run_next_job(kube, "publish", tmp_path, known)
        wait_for("the Service selecting v1 again", lambda: _selected(kube) == "1")
        status = _status_live(kube, 1)
        assert status["serving"]["version"] == 1 and kube.condition("EmbeddingIndex", "notes")["status"] == "True"
        wait_for(
            "Degraded cleared",
            lambda: (kube.condition("EmbeddingIndex", "notes", "Degraded") or {}).get("status") != "True",
        )
        wait_for("v2's Deployment kept at zero replicas", lambda: _deployment(kube, 2).spec.replicas == 0)
        with _serving_pod(kube, 1, tmp_path) as port:
            _serves(port, 1, _live(dsn))
    print(f"view switched to v2 -> Service switched to v2: {window:.2f} s")  # (kopf's runner holds stdout above)
