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


def test_worker_spec_errors_exit_2_in_one_line(tmp_path, capsys):
    """Exit 2 fails a Job at once (docs/operator.md): a spec that cannot be read never gets better."""
    latin1, not_yaml = tmp_path / "latin1.yaml", tmp_path / "bad.yaml"
    latin1.write_bytes(b"target: {name: caf\xe9}\n")
    not_yaml.write_text("target: [unclosed\n")
    result = tmp_path / "termination-log"
    cases = {
        ("--spec", str(tmp_path / "missing.yaml")): "No such file or directory",
        ("--spec", str(tmp_path)): "Is a directory",
        ("--spec", str(latin1)): "not UTF-8 (byte 0xe9 at offset 18)",
        ("--spec", str(not_yaml)): "not valid YAML or JSON",
        ("--spec-json", "{bad"): "--spec-json is not JSON",
    }
    for given, message in cases.items():
        assert main(["worker", "cleanup", *given, "--result", str(result)]) == 2, given
        [line] = capsys.readouterr().err.splitlines()
        assert line.startswith("error: invalid worker config: ") and message in line, line
        assert '"reason":"InvalidConfig"' in result.read_text()


def test_under_torchrun_rank_0_writes_results_and_another_rank_a_failure_nobody_wrote(tmp_path, capsys, monkeypatch):
    """torchrun stops every process when one fails: rank 0 may be killed before it says why, so the first failure
    of another rank is the termination message; rank 0's own word, when it has one, is kept."""
    from embedops.results import CleanupResult
    from embedops.workers import runner

    spec, log = '{"target": {"name": "docs"}}', tmp_path / "termination-log"
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(runner, "run", lambda step, dsn: CleanupResult(dropped=[]))
    log.touch()  # the kubelet's /dev/termination-log: there, empty
    assert main(["worker", "cleanup", "--spec-json", spec, "--result", str(log)]) == 0
    assert log.read_text() == ""  # a result: rank 0's alone
    assert main(["worker", "cleanup", "--spec-json", "{bad", "--result", str(log)]) == 2
    assert '"reason":"InvalidConfig"' in log.read_text()  # a failure, and no message yet
    log.write_text("rank 0's word")
    assert main(["worker", "cleanup", "--spec-json", "{bad", "--result", str(log)]) == 2
    assert log.read_text() == "rank 0's word"
    capsys.readouterr()


def test_a_result_that_cannot_be_written_after_success_still_exits_0(tmp_path, capsys, monkeypatch):
    from embedops.results import CleanupResult
    from embedops.workers import runner

    monkeypatch.setattr(runner, "run", lambda step, dsn: CleanupResult(dropped=["public.docs_v1"]))
    spec = '{"target": {"name": "docs"}}'
    assert main(["worker", "cleanup", "--spec-json", spec, "--result", str(tmp_path / "no" / "such" / "log")]) == 0
    out, err = capsys.readouterr()
    assert '"dropped": ["public.docs_v1"]' in out
    assert err.startswith("warning: --result ") and "No such file or directory; the result is on stdout only" in err


def test_a_pydantic_error_inside_a_worker_is_one_line_a_problem(capsys, monkeypatch):
    from pydantic import BaseModel

    from embedops.workers import runner

    class Inputs(BaseModel):
        corpus: str
        queries: str

    def fails(step, dsn):
        try:
            Inputs.model_validate({})
        except ValueError as err:
            raise runner.WorkerError("InvalidInput", [str(err)], 2) from err

    monkeypatch.setattr(runner, "run", fails)
    assert main(["worker", "cleanup", "--spec-json", '{"target": {"name": "docs"}}']) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: InvalidInput:",
        "  Inputs.corpus: Field required",
        "  Inputs.queries: Field required",
    ]


def test_a_device_torch_does_not_know_is_refused_before_anything_runs(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit) as exited:
        main(["run", "-f", str(QUICKSTART), "--device", "bogus", "--state-dir", str(tmp_path / "s")])
    assert exited.value.code == 2
    assert "argument --device: 'bogus' is not a torch device: give cpu, cuda, cuda:N or mps" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_a_state_dir_that_is_a_file_or_not_embedops_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    for state, message in ((tmp_path / "file", "is a file, not a folder"), (tmp_path / "mine", "has no .embedops")):
        assert main(["run", "-f", str(QUICKSTART), "--state-dir", str(state), "--fresh"]) == 1
        [line] = capsys.readouterr().err.splitlines()
        assert line.startswith(f"error: --state-dir {state} ") and message in line
    assert (tmp_path / "mine" / "notes.txt").read_text() == "x"
