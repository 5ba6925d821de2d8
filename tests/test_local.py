"""Local mode end to end: the quickstart's resources, run again and again, behave as the operator does.

A tiny random model stands in for MiniLM so the whole chain (prepare with mining, train,
embed into pgvector, probe gate, cut-over, scheduled probe and drift) runs in seconds;
quality is not the point here, the lifecycle is. (tests/e2e/test_parity.py runs the same
resources through the operator and compares the statuses.)
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import psycopg
import pytest
import yaml

from embedops import manifests
from embedops.local import LocalRunner

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "quickstart" / "data" / "scifact-sample"


def write_manifests(folder: Path, model: Path, *, epochs: int = 1, index: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    docs = [
        {
            "kind": "EmbeddingDataset",
            "metadata": {"name": "ds"},
            "spec": {
                "source": {"beir": {"path": str(SAMPLE)}},
                "hardNegatives": {"model": str(model), "count": 1},
                "augment": {"maxTitlePairs": 50},
            },
        },
        {
            "kind": "FineTuneJob",
            "metadata": {"name": "job"},
            "spec": {
                "datasetRef": {"name": "ds"},
                "baseModel": str(model),
                "training": {"epochs": epochs, "batchSize": 16, "maxSeqLength": 64},
                "evaluation": {"requireImprovement": False},
            },
        },
        {
            "kind": "EmbeddingIndex",
            "metadata": {"name": "idx"},
            "spec": {
                "model": {"fineTuneJobRef": {"name": "job"}},
                "source": {"datasetRef": {"name": "ds"}},
                "target": {"name": "docs"},
                "embedding": {"maxSeqLength": 64},
                "drift": {"sampleSize": 100},
                **(index or {}),
            },
        },
    ]
    path = folder / "all.yaml"
    path.write_text(yaml.safe_dump_all([{"apiVersion": "embedops.dev/v1alpha1", **d} for d in docs]))
    return path


def run(state: Path, dsn: str, path: Path, *, later: dt.timedelta = dt.timedelta()):
    runner = LocalRunner(state_dir=state, dsn=dsn, device="cpu", clock=lambda: dt.datetime.now(dt.UTC) + later)
    return runner.run(manifests.load([path]))


def test_quickstart_lifecycle_builds_probes_cuts_over_and_follows_the_model(tmp_path, dsn, tiny_model_dir, caplog):
    state = tmp_path / "state"
    first = run(state, dsn, write_manifests(tmp_path / "m1", tiny_model_dir))
    assert all(o.ok for o in first.values()), {k: o.status.conditions for k, o in first.items()}
    ds, job, idx = (
        first[k].status
        for k in ("EmbeddingDataset/default/ds", "FineTuneJob/default/job", "EmbeddingIndex/default/idx")
    )
    assert ds.counts.corpus == 600 and ds.counts.test_queries == 100
    assert job.tuned_metrics.queries == 100 and Path(job.model.location, "model.safetensors").is_file()
    assert idx.live_version == 1 and idx.rows == 600 and idx.probe.version == 1 and idx.probe.passed
    # As in a cluster: the first drift measurement comes one interval after the version was built.
    assert idx.drift is None
    saved = json.loads((state / "default" / "embeddingindexes" / "idx.json").read_text())
    assert saved["status"]["liveVersion"] == 1 and saved["metadata"]["generation"] == 1
    assert saved["status"]["conditions"][0]["type"] == "Ready"
    # The catalog names the model by its path, as the operator's does, so any version can be probed again.
    assert idx.versions[0].model == job.model.location and idx.live_model == job.model.location
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM public.docs").fetchone()[0] == 600

    # An hour later the schedule is due: the live version is probed again and its drift measured.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="embedops.local"):
        later = run(state, dsn, write_manifests(tmp_path / "m1", tiny_model_dir), later=dt.timedelta(minutes=61))
    assert all(o.reused for k, o in later.items() if not k.startswith("EmbeddingIndex"))
    assert sorted(m.split(": running ")[1] for m in caplog.messages if ": running " in m) == ["drift", "probe"]
    idx = later["EmbeddingIndex/default/idx"].status
    assert idx.drift.version == 1 and not idx.drift.drifted and idx.probe.version == 1

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
    outcomes = run(
        state, dsn, write_manifests(tmp_path / "m2", tiny_model_dir, epochs=2, index={"probe": {"minRecall": 1.0}})
    )
    idx = outcomes["EmbeddingIndex/default/idx"].status
    assert idx.live_version == 1, "the live version keeps serving"
    assert [(v.version, v.state) for v in idx.versions] == [(2, "Ready"), (1, "Live")]
    assert idx.versions[0].probe.passed is False
    assert idx.condition("Progressing").reason == "GateFailed"
    assert "v2 not cut over" in idx.condition("Progressing").message


def test_a_missing_dependency_fails_with_a_reason_and_stops_its_dependents(tmp_path, dsn):
    path = tmp_path / "job.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "embedops.dev/v1alpha1",
                "kind": "FineTuneJob",
                "metadata": {"name": "job"},
                "spec": {"datasetRef": {"name": "nowhere"}},
            }
        )
    )
    outcomes = run(tmp_path / "state", dsn, path)
    status = outcomes["FineTuneJob/default/job"].status
    assert not outcomes["FineTuneJob/default/job"].ok
    assert status.condition("Ready").reason == "DependencyNotFound"
    assert status.condition("Ready").message == "EmbeddingDataset nowhere does not exist"


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
    assert main(["rollback", *common, "--to", "1"]) == 0  # the live one: nothing to do, and said so
    assert "public.docs already serves v1: nothing to do" in capsys.readouterr().out

    # Running the same manifests again respects the rollback: nothing rebuilt, v1 keeps serving.
    idx = run(state, dsn, path)["EmbeddingIndex/default/idx"].status
    assert idx.live_version == 1 and [v.version for v in idx.versions] == [2, 1]
    assert idx.condition("Progressing").reason == "RolledBack"


def test_a_failed_step_gets_the_operators_reason_and_the_next_run_retries_it(tmp_path, dsn):
    data = tmp_path / "m" / "pairs.jsonl"
    data.parent.mkdir()
    data.write_text("not json\n" * 5, encoding="utf-8")
    path = tmp_path / "m" / "ds.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "embedops.dev/v1alpha1",
                "kind": "EmbeddingDataset",
                "metadata": {"name": "pairs"},
                "spec": {"source": {"pairs": {"path": "pairs.jsonl"}}, "hardNegatives": {"enabled": False}},
            }
        )
    )
    key = "EmbeddingDataset/default/pairs"
    failed = run(tmp_path / "state", dsn, path)[key]
    ready = failed.status.condition("Ready")
    assert not failed.ok and failed.status.phase == "Failed" and ready.reason == "JobFailed"
    assert (
        ready.message.startswith("Job pairs-prepare-")
        and "failed: InvalidInput: pairs.jsonl: 5 of 5 rows" in ready.message
    )
    # The next run tries again (the same failure), rather than keeping the old one.
    again = run(tmp_path / "state", dsn, path)[key]
    assert not again.reused and again.status.condition("Ready").reason == "JobFailed"
    # Fixed data is prepared.
    data.write_text(
        "".join(json.dumps({"query": f"q{i}", "positive": f"document {i}"}) + "\n" for i in range(20)), encoding="utf-8"
    )
    fixed = run(tmp_path / "state", dsn, path)[key]
    assert fixed.ok and fixed.status.condition("Ready").reason == "Prepared" and fixed.status.counts.corpus == 20
    # Edited again: prepared again, though the spec did not change (the operator needs the rerun annotation).
    data.write_text(
        data.read_text(encoding="utf-8") + json.dumps({"query": "q", "positive": "doc"}) + "\n", encoding="utf-8"
    )
    edited = run(tmp_path / "state", dsn, path)[key]
    assert not edited.reused and edited.status.counts.corpus == 21
    assert run(tmp_path / "state", dsn, path)[key].reused


def test_a_relative_model_path_resolves_against_the_manifest_folder(tmp_path, dsn, tiny_model_dir):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder / "models" / "tiny")
    path = folder / "all.yaml"
    path.write_text(
        yaml.safe_dump_all(
            [
                {"apiVersion": "embedops.dev/v1alpha1", **d}
                for d in [
                    {
                        "kind": "EmbeddingDataset",
                        "metadata": {"name": "ds"},
                        "spec": {"source": {"beir": {"path": str(SAMPLE)}}, "hardNegatives": {"enabled": False}},
                    },
                    {
                        "kind": "EmbeddingIndex",
                        "metadata": {"name": "idx"},
                        "spec": {
                            "model": {"name": "models/tiny"},
                            "source": {"datasetRef": {"name": "ds"}},
                            "target": {"name": "docs"},
                            "embedding": {"maxSeqLength": 32},
                        },
                    },
                ]
            ]
        )
    )
    idx = run(tmp_path / "state", dsn, path)["EmbeddingIndex/default/idx"]
    assert idx.ok and idx.status.live_model == str(folder / "models" / "tiny")


def test_one_run_at_a_time_per_state_folder(tmp_path):
    import os

    from embedops.local import StateLocked

    with (
        LocalRunner(state_dir=tmp_path / "state"),
        pytest.raises(StateLocked, match=f"in use by another embedops run \\(pid {os.getpid()}\\)"),
    ):
        LocalRunner(state_dir=tmp_path / "state").__enter__()
    with LocalRunner(state_dir=tmp_path / "state"):  # released
        pass


def test_a_server_left_by_a_killed_run_is_reused_and_then_stopped(tmp_path):
    import signal
    import subprocess
    import sys

    from embedops.store import embedded

    data = tmp_path / "postgres"
    code = (
        "import sys, time\nfrom embedops.store import embedded\n"
        f"s = embedded.start({str(data)!r}, keep=True)\nprint(s.dsn, flush=True)\ntime.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    dsn = proc.stdout.readline().strip()
    proc.send_signal(signal.SIGKILL)  # no atexit: the server stays up, its user listed forever
    proc.wait()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    server = embedded.start(data, keep=True)  # the running server is reused...
    assert server.dsn == dsn
    server.stop()  # ...and, its only living user gone, stopped
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=3)
    embedded.remove(data)  # as root its data is outside tmp_path


def _index(folder: Path, **spec) -> Path:
    """An index that settles at once (its dataset does not exist): stored, with no database or model needed."""
    folder.mkdir(parents=True, exist_ok=True)
    body = {"model": {"name": "m"}, "source": {"datasetRef": {"name": "nowhere"}}, "target": {"name": "docs"}}
    doc = {"apiVersion": "embedops.dev/v1alpha1", "kind": "EmbeddingIndex", "metadata": {"name": "idx"}}
    path = folder / "idx.yaml"
    path.write_text(yaml.safe_dump({**doc, "spec": {**body, **spec}}))
    return path


def _run_in(state: Path, path: Path, *, fresh: bool = False):
    with LocalRunner(state_dir=state, fresh=fresh) as runner:
        return runner.run(manifests.load([path]))


def test_fresh_removes_only_what_embedops_made_in_a_folder_it_marked(tmp_path):
    from embedops.statedir import MARKER, StateError

    project = tmp_path / "project"
    path = _index(project)
    (project / "notes.txt").write_text("mine")
    # A folder with files of its own is never taken, --fresh or not: nothing in it is touched.
    with pytest.raises(StateError, match=f"is not an embedops state folder .*has no {MARKER}"):
        _run_in(project, path, fresh=True)
    assert sorted(p.name for p in project.iterdir()) == ["idx.yaml", "notes.txt"]
    # An empty folder is adopted and marked; --fresh then removes what embedops wrote there, and only that.
    state = tmp_path / "empty"
    state.mkdir()
    _run_in(state, path)
    assert (state / MARKER).is_file() and (state / "default" / "embeddingindexes" / "idx.json").is_file()
    (state / "mine.txt").write_text("mine")
    (state / "default" / "mine.txt").write_text("mine")
    _run_in(state, path, fresh=True)
    assert (state / "mine.txt").read_text() == "mine" and (state / "default" / "mine.txt").read_text() == "mine"
    assert (state / "default" / "embeddingindexes" / "idx.json").is_file()  # written again by this run
    with pytest.raises(StateError, match="is a file, not a folder"):
        _run_in(project / "notes.txt", path)


def test_state_files_are_written_whole_and_private(tmp_path, monkeypatch):
    import os
    import stat

    from embedops import statedir

    state = tmp_path / "state"
    _run_in(state, _index(tmp_path / "m"))
    stored = state / "default" / "embeddingindexes" / "idx.json"
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in (state, stored.parent, stored.parent.parent, stored)}
    assert modes == {state: 0o700, stored.parent: 0o700, stored.parent.parent: 0o700, stored: 0o600}
    # A write that dies before its rename leaves the old file, and no temporary file.
    before = stored.read_bytes()

    def dies(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", dies)
    with pytest.raises(OSError, match="No space left"):
        statedir.write_json(stored, {"half": "written"})
    assert stored.read_bytes() == before and sorted(stored.parent.iterdir()) == [stored]


def test_a_corrupt_state_file_is_named_with_how_to_recover(tmp_path):
    from embedops.statedir import StateError

    state, path = tmp_path / "state", _index(tmp_path / "m")
    _run_in(state, path)
    stored = state / "default" / "embeddingindexes" / "idx.json"
    stored.write_bytes(stored.read_bytes()[:40])  # what a kill during a plain write_text left
    with pytest.raises(StateError, match=f"^{stored}: a corrupt state file .*delete that file.*--fresh"):
        _run_in(state, path)
    assert _run_in(state, path, fresh=True)["EmbeddingIndex/default/idx"].status.condition("Ready")


def test_an_immutable_field_changed_against_the_stored_resource_is_refused(tmp_path):
    from embedops.local import UpdateRefused

    state = tmp_path / "state"
    _run_in(state, _index(tmp_path / "m1"))
    with pytest.raises(UpdateRefused) as refused:
        _run_in(state, _index(tmp_path / "m2", target={"name": "docs2"}))
    [problem] = refused.value.problems
    assert problem.startswith(
        'EmbeddingIndex/default/idx: spec.target: is immutable; create a new EmbeddingIndex instead (stored: {"name": '
        '"docs"}, now: {"name": "docs2"}); or, to forget the stored one, delete '
        f"{state.resolve()}/default/embeddingindexes/idx.json"
    )
    # As on a cluster: a field unset when created may be set (the rule needs it on both sides)...
    secret = {"dsnSecretRef": {"name": "pg", "key": "dsn"}}
    _run_in(state, _index(tmp_path / "m3", database=secret))
    # ...and, once set, neither changed nor removed.
    with pytest.raises(UpdateRefused, match="spec.database: is immutable"):
        _run_in(state, _index(tmp_path / "m4", database={"dsnSecretRef": {"name": "other", "key": "dsn"}}))
    with pytest.raises(UpdateRefused, match="spec.database: database cannot be removed once set"):
        _run_in(state, _index(tmp_path / "m5"))


def test_every_transition_rule_of_the_crds_is_enforced_locally():
    from embedops import transitions
    from embedops.api.kinds import KINDS

    found = {(kind, rule.field, rule.kept) for kind in KINDS for rule in transitions.rules(kind)}
    assert found == {
        ("EmbeddingIndex", "spec.target", False),
        ("EmbeddingIndex", "spec.database", False),
        ("EmbeddingIndex", "spec.database", True),
    }


def test_a_state_folder_of_an_earlier_embedops_is_adopted(tmp_path):
    """Before the marker file, a state folder held a lock file, the server's data and <ns>/<plural>/ folders."""
    from embedops import statedir

    old = tmp_path / "old"
    (old / "default" / "embeddingindexes").mkdir(parents=True)
    (old / "postgres").mkdir()
    (old / ".lock").write_text("123")
    statedir.claim(old)
    assert (old / statedir.MARKER).is_file()
    # A project folder with a lock file and anything else in it is still refused.
    project = tmp_path / "project"
    project.mkdir()
    (project / ".lock").write_text("1")
    (project / "index.yaml").write_text("kind: EmbeddingIndex\n")
    with pytest.raises(statedir.StateError, match="is not an embedops state folder"):
        statedir.claim(project)
