"""The command line: manifest validation and the worker entry point's error reporting."""

from __future__ import annotations

from pathlib import Path

from embedops.cli import main

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart"


def test_validate_accepts_the_quickstart(capsys):
    assert main(["validate", "-f", str(QUICKSTART)]) == 0
    out = capsys.readouterr().out
    assert "EmbeddingDataset/default/scifact-sample: valid" in out
    assert "EmbeddingIndex/default/scifact-docs: valid" in out


def test_validate_reports_every_problem_with_file_and_field(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: embedops.dev/v1alpha1\nkind: FineTuneJob\nmetadata: {name: j}\n"
        "spec: {datasetRef: {name: d}, training: {epochs: 0}}\n"
        "---\n"
        "apiVersion: embedops.dev/v1alpha1\nkind: EmbeddingIndex\nmetadata: {name: i}\n"
        "spec: {model: {name: m}, source: {table: {table: t}}, target: {name: 'v x'}}\n"
    )
    assert main(["validate", "-f", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}[0] (FineTuneJob/j): spec.training.epochs: Input should be greater than or equal to 1" in err
    assert f"{bad}[1] (EmbeddingIndex/i): spec.target.name: 'v x' is not a lower-case SQL name" in err


def test_duplicate_resources_are_rejected(tmp_path, capsys):
    doc = (
        "apiVersion: embedops.dev/v1alpha1\nkind: EmbeddingDataset\nmetadata: {name: d}\n"
        "spec: {source: {beir: {path: x}}}\n"
    )
    (tmp_path / "a.yaml").write_text(doc)
    (tmp_path / "b.yaml").write_text(doc)
    assert main(["validate", "-f", str(tmp_path)]) == 2
    assert "EmbeddingDataset/default/d: defined more than once" in capsys.readouterr().err


def test_worker_config_errors_name_the_field(tmp_path, capsys):
    spec = tmp_path / "drift.yaml"
    spec.write_text("bogusField: 1\n")
    assert main(["worker", "drift", "--spec", str(spec)]) == 2
    assert "config.bogusField: unknown field" in capsys.readouterr().err


CLUSTER = Path(__file__).resolve().parents[1] / "examples" / "cluster"


def test_validate_says_what_a_cluster_would_refuse(capsys):
    assert main(["validate", "--cluster", "-f", str(CLUSTER)]) == 0
    out = capsys.readouterr().out
    assert "EmbeddingIndex/default/scifact-docs: valid for a cluster" in out
    assert "the operator must watch each resource's namespace" in out
    # The local quickstart runs here, not as is on a cluster: its index names no database Secret.
    assert main(["validate", "--cluster", "-f", str(QUICKSTART)]) == 2
    assert (
        "EmbeddingIndex/default/scifact-docs: spec.database.dsnSecretRef is required in a cluster"
        in capsys.readouterr().err
    )


def test_other_kinds_beside_the_manifests_are_left_to_kubectl():
    from embedops import manifests

    kinds = sorted(r.resource.kind.kind for r in manifests.load([CLUSTER]))
    assert kinds == ["EmbeddingDataset", "EmbeddingIndex", "FineTuneJob"]
