"""Local mode end to end: the quickstart's resources, run twice, behave as the operator will.

A tiny random model stands in for MiniLM so the whole chain (prepare with mining, train,
embed into pgvector, probe gate, cut-over, drift) runs in seconds; quality is not the point
here, the lifecycle is.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import yaml

from embedops import manifests
from embedops.local import LocalRunner

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "quickstart" / "data" / "scifact-sample"


def write_manifests(folder: Path, model: Path, *, epochs: int = 1, index: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    docs = [
        {"kind": "EmbeddingDataset", "metadata": {"name": "ds"}, "spec": {
            "source": {"beir": {"path": str(SAMPLE)}},
            "hardNegatives": {"model": str(model), "count": 1},
            "augment": {"maxTitlePairs": 50},
        }},
        {"kind": "FineTuneJob", "metadata": {"name": "job"}, "spec": {
            "datasetRef": {"name": "ds"}, "baseModel": str(model),
            "training": {"epochs": epochs, "batchSize": 16, "maxSeqLength": 64},
            "evaluation": {"requireImprovement": False},
        }},
        {"kind": "EmbeddingIndex", "metadata": {"name": "idx"}, "spec": {
            "model": {"fineTuneJobRef": {"name": "job"}}, "source": {"datasetRef": {"name": "ds"}},
            "target": {"name": "docs"}, "embedding": {"maxSeqLength": 64}, "drift": {"sampleSize": 100},
            **(index or {}),
        }},
    ]
    path = folder / "all.yaml"
    path.write_text(yaml.safe_dump_all([{"apiVersion": "embedops.dev/v1alpha1", **d} for d in docs]))
    return path


def run(state: Path, dsn: str, path: Path):
    runner = LocalRunner(state_dir=state, dsn=dsn, device="cpu")
    return runner.run(manifests.load([path]))


def test_quickstart_lifecycle_builds_probes_cuts_over_and_follows_the_model(tmp_path, dsn, tiny_model_dir):
    state = tmp_path / "state"
    first = run(state, dsn, write_manifests(tmp_path / "m1", tiny_model_dir))
    assert all(o.ok for o in first.values()), {k: o.status.conditions for k, o in first.items()}
    ds, job, idx = (first[k].status for k in ("EmbeddingDataset/default/ds", "FineTuneJob/default/job",
                                              "EmbeddingIndex/default/idx"))
    assert ds.counts.corpus == 600 and ds.counts.test_queries == 100
    assert job.tuned_metrics.queries == 100 and Path(job.model.location, "model.safetensors").is_file()
    assert idx.live_version == 1 and idx.rows == 600 and idx.probe.version == 1 and idx.probe.passed
    assert idx.drift.version == 1 and not idx.drift.drifted
    saved = json.loads((state / "default" / "embeddingindexes" / "idx.status.json").read_text())
    assert saved["status"]["liveVersion"] == 1
    assert saved["status"]["conditions"][0]["type"] == "Ready"
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM public.docs").fetchone()[0] == 600

    # A new model (a changed job spec) becomes v2 beside v1; the unchanged dataset is reused.
    second = run(state, dsn, write_manifests(tmp_path / "m2", tiny_model_dir, epochs=2))
    assert second["EmbeddingDataset/default/ds"].reused and not second["FineTuneJob/default/job"].reused
    idx = second["EmbeddingIndex/default/idx"].status
    assert idx.live_version == 2
    assert [(v.version, v.state) for v in idx.versions] == [(2, "Live"), (1, "Retired")]

    # Pinning serves v1 again, without building anything.
    third = run(state, dsn, write_manifests(tmp_path / "m3", tiny_model_dir, epochs=2, index={"pinnedVersion": 1}))
    idx = third["EmbeddingIndex/default/idx"].status
    assert idx.live_version == 1 and [v.version for v in idx.versions] == [2, 1]


def test_a_version_failing_the_gate_is_not_cut_over(tmp_path, dsn, tiny_model_dir):
    state = tmp_path / "state"
    run(state, dsn, write_manifests(tmp_path / "m1", tiny_model_dir))
    outcomes = run(state, dsn, write_manifests(tmp_path / "m2", tiny_model_dir, epochs=2,
                                               index={"probe": {"minRecall": 1.0}}))
    idx = outcomes["EmbeddingIndex/default/idx"].status
    assert idx.live_version == 1, "the live version keeps serving"
    assert [(v.version, v.state) for v in idx.versions] == [(2, "Ready"), (1, "Live")]
    assert idx.versions[0].probe.passed is False
    assert idx.condition("Progressing").reason == "GateFailed"
    assert "v2 not cut over" in idx.condition("Progressing").message


def test_a_missing_dependency_fails_with_a_reason_and_stops_its_dependents(tmp_path, dsn):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({
        "apiVersion": "embedops.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "job"},
        "spec": {"datasetRef": {"name": "nowhere"}},
    }))
    outcomes = run(tmp_path / "state", dsn, path)
    status = outcomes["FineTuneJob/default/job"].status
    assert not outcomes["FineTuneJob/default/job"].ok
    assert status.condition("Ready").reason == "DependencyNotFound"
    assert "EmbeddingDataset/default/nowhere" in status.condition("Ready").message


def test_cli_versions_and_rollback(tmp_path, dsn, tiny_model_dir, capsys):
    from embedops.cli import main

    state = tmp_path / "state"
    run(state, dsn, write_manifests(tmp_path / "m1", tiny_model_dir))
    path = write_manifests(tmp_path / "m2", tiny_model_dir, epochs=2)
    run(state, dsn, path)
    common = ["-f", str(path), "--dsn", dsn, "--state-dir", str(state)]
    assert main(["rollback", *common]) == 0
    assert "public.docs now serves v1 (600 rows" in capsys.readouterr().out
    assert main(["versions", *common]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("v2\tRetired\t600 rows") and lines[1].startswith("v1\tLive\t600 rows")
    assert main(["rollback", *common]) == 1
    assert "no earlier retained version" in capsys.readouterr().err

    # Running the same manifests again respects the rollback: nothing rebuilt, v1 keeps serving.
    idx = run(state, dsn, path)["EmbeddingIndex/default/idx"].status
    assert idx.live_version == 1 and [v.version for v in idx.versions] == [2, 1]
    assert idx.condition("Progressing").reason == "RolledBack"
