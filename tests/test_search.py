"""The query side's contract in local mode: `embedops search` and `embedops serve -f` embed queries with the
model of the version the view serves, before and after a cut-over, and the documented SQL names that model."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import psycopg
import pytest
import yaml

from embedops import manifests, modelzoo
from embedops.local import LocalRunner
from tests.test_local import SAMPLE
from tests.tinymodel import build_tiny_model

pytestmark = pytest.mark.postgres
DOCS = Path(__file__).resolve().parents[1] / "docs" / "operator.md"
QUERY = "what causes a fever"


def write(folder: Path, miner: Path, model: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    docs = [
        {
            "kind": "EmbeddingDataset",
            "metadata": {"name": "ds"},
            "spec": {"source": {"beir": {"path": str(SAMPLE)}}, "hardNegatives": {"model": str(miner), "count": 1}},
        },
        {
            "kind": "EmbeddingIndex",
            "metadata": {"name": "idx"},
            "spec": {
                "model": {"name": str(model)},
                "source": {"datasetRef": {"name": "ds"}},
                "target": {"name": "docs"},
                "embedding": {"maxSeqLength": 64},
                "probe": {"minRecall": 0.0, "maxRegression": 1.0},  # random models: every version cuts over
            },
        },
    ]
    path = folder / "all.yaml"
    path.write_text(yaml.safe_dump_all([{"apiVersion": "embedops.dev/v1alpha1", **d} for d in docs]))
    return path


def stored(dsn: str, ids: list[str]) -> np.ndarray:
    with psycopg.connect(dsn) as conn:
        rows = dict(conn.execute("SELECT id::text, embedding::text FROM public.docs WHERE id::text = ANY(%s)", (ids,)))
    return np.array([np.array(yaml.safe_load(rows[i]), dtype=np.float32) for i in ids])


def search(capsys, path: Path, dsn: str, state: Path) -> tuple[str, list[str], np.ndarray]:
    from embedops.cli import main

    assert main(["search", "-f", str(path), "--dsn", dsn, "--state-dir", str(state), "-k", "5", QUERY]) == 0
    out, err = capsys.readouterr()
    hits = [line.split("\t") for line in out.splitlines()]
    header = next(line for line in err.splitlines() if line.startswith("# "))
    return header, [h[0] for h in hits], np.array([float(h[1]) for h in hits])


def query_vector(model_dir: Path) -> np.ndarray:
    model = modelzoo.load(str(model_dir), device="cpu", max_seq_length=64)
    return model.encode_query([QUERY], normalize_embeddings=True)[0]


def documented_query() -> str:
    """The SQL docs/operator.md gives applications to learn the live model, as written there."""
    text = DOCS.read_text(encoding="utf-8")
    return re.search(r"<!-- live-model-query -->\s*```sql\n(.*?)```", text, re.S).group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_search_and_serve_follow_the_live_version(tmp_path, dsn, tiny_model_dir, capsys):
    from embedops.cli import main

    state, other = tmp_path / "state", build_tiny_model(tmp_path / "other" / "model", seed=1)
    first = write(tmp_path / "m1", tiny_model_dir, tiny_model_dir)
    outcomes = LocalRunner(state_dir=state, dsn=dsn, device="cpu").run(manifests.load([first]))
    assert outcomes["EmbeddingIndex/default/idx"].status.live_version == 1

    err, ids, distances = search(capsys, first, dsn, state)
    assert err == f"# public.docs v1 ({tiny_model_dir}, {modelzoo.fingerprint(tiny_model_dir)})"
    assert len(ids) == 5 and list(distances) == sorted(distances)
    # The distances are those of the query embedded by v1's model to the stored vectors.
    assert np.allclose(distances, 1 - stored(dsn, ids) @ query_vector(tiny_model_dir), atol=1e-4)

    # `embedops serve -f` serves v1's model, and follows the view from then on.
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "embedops.cli", "serve", "-f", str(first), "--dsn", dsn, "--port", str(port)]
        + ["--device", "cpu"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert served_when(port, server, 1) == pytest.approx(query_vector(tiny_model_dir), abs=1e-5)

        # Another model becomes v2 and is cut over: search and the server embed with it from then on.
        second = write(tmp_path / "m2", tiny_model_dir, other)
        outcomes = LocalRunner(state_dir=state, dsn=dsn, device="cpu").run(manifests.load([second]))
        assert outcomes["EmbeddingIndex/default/idx"].status.live_version == 2
        err, ids, distances = search(capsys, second, dsn, state)
        assert err.startswith(f"# public.docs v2 ({other}, ")
        assert np.allclose(distances, 1 - stored(dsn, ids) @ query_vector(other), atol=1e-4)
        assert not np.allclose(query_vector(other), query_vector(tiny_model_dir), atol=1e-2)
        assert served_when(port, server, 2) == pytest.approx(query_vector(other), abs=1e-5)

        # What the documentation tells an application to run names the same model.
        with psycopg.connect(dsn) as conn:
            row = conn.execute(documented_query(), {"schema": "public", "view": "docs"}).fetchone()
        assert row == (2, str(other), modelzoo.fingerprint(other), 32, "cosine")

        # A rollback switches the server back with the view.
        assert main(["rollback", "-f", str(second), "--dsn", dsn, "--state-dir", str(state)]) == 0
        assert served_when(port, server, 1) == pytest.approx(query_vector(tiny_model_dir), abs=1e-5)
    finally:
        server.terminate()
        _, log = server.communicate(timeout=30)
    assert server.returncode == 0, log
    assert f"listening on http://127.0.0.1:{port}: v1's model, following the live version" in log


def served_when(port: int, server: subprocess.Popen, version: int) -> np.ndarray:
    """The server's vector for QUERY once it answers with `version`'s model (within 2 minutes)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/embed", data=json.dumps({"inputs": QUERY}).encode(), method="POST"
    )
    deadline, seen = time.monotonic() + 120, None
    while time.monotonic() < deadline:
        assert server.poll() is None, server.stderr.read()
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                seen = response.headers["X-Embedops-Version"]
                if seen == str(version):
                    return np.array(json.loads(response.read())[0], dtype=np.float32)
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"embedops serve did not serve v{version} within 2 minutes (last seen: v{seen})")
