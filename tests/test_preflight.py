"""Problems a user types are found before anything expensive runs, named by resource and field (issue 12)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from embedops.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "quickstart" / "data" / "scifact-sample"


def write(folder: Path, *docs: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "all.yaml"
    path.write_text(yaml.safe_dump_all([{"apiVersion": "embedops.dev/v1alpha1", **d} for d in docs]))
    return path


def index(**spec) -> dict:
    base = {
        "model": {"name": "all-MiniLM-L6-v2"},
        "source": {"table": {"table": "docs"}},
        "target": {"name": "docs_search"},
        "probe": {"path": "probe.jsonl"},
    }
    return {"kind": "EmbeddingIndex", "metadata": {"name": "ix"}, "spec": {**base, **spec}}


def test_validate_finds_missing_files_unknown_models_and_a_folder_for_a_file(tmp_path, capsys):
    (tmp_path / "probe.jsonl").mkdir()
    path = write(
        tmp_path,
        {
            "kind": "EmbeddingDataset",
            "metadata": {"name": "ds"},
            "spec": {"source": {"beir": {"path": "nowhere"}}, "hardNegatives": {"model": "no-such-model"}},
        },
        {"kind": "EmbeddingDataset", "metadata": {"name": "pairs"}, "spec": {"source": {"pairs": {"path": "p.jsonl"}}}},
        {
            "kind": "FineTuneJob",
            "metadata": {"name": "ft"},
            "spec": {
                "datasetRef": {"name": "ds"},
                "baseModel": "models/missing",
                "loss": {"type": "GISTEmbedLoss", "guideModel": "models/guide"},
            },
        },
        index(),
    )
    assert main(["validate", "-f", str(path)]) == 2
    err = capsys.readouterr().err
    assert "EmbeddingDataset/default/ds: spec.source.beir.path: 'nowhere' does not exist" in err
    assert "EmbeddingDataset/default/ds: spec.hardNegatives.model: model 'no-such-model' is neither" in err
    assert "EmbeddingDataset/default/pairs: spec.source.pairs.path: 'p.jsonl' is not found" in err
    assert "FineTuneJob/default/ft: spec.baseModel: model 'models/missing' is neither" in err
    assert "FineTuneJob/default/ft: spec.loss.guideModel: model 'models/guide' is neither" in err
    assert "EmbeddingIndex/default/ix: spec.probe.path: 'probe.jsonl' is a folder, not a file" in err


def test_a_beir_folder_must_hold_its_files(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "corpus.jsonl").write_text("{}\n")
    path = write(
        tmp_path,
        {
            "kind": "EmbeddingDataset",
            "metadata": {"name": "ds"},
            "spec": {"source": {"beir": {"path": "data"}}, "hardNegatives": {"enabled": False}},
        },
    )
    assert main(["validate", "-f", str(path)]) == 2
    err = capsys.readouterr().err
    assert "queries.jsonl not found in 'data'" in err and "qrels/train.tsv not found" in err
    assert "corpus.jsonl not found" not in err


def test_a_corpus_only_dataset_names_its_missing_file_and_generator(tmp_path, capsys):
    """Issue 21: a BEIR folder needs only its corpus with spec.generate; documents and the generator are checked."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "corpus.jsonl").write_text("{}\n")
    generate = {"model": "models/no-llm", "filter": {"model": "no-such-model"}}
    path = write(
        tmp_path,
        {
            "kind": "EmbeddingDataset",
            "metadata": {"name": "beir"},
            "spec": {"source": {"beir": {"path": "data"}}, "generate": {"model": "smollm2-135m-instruct"}},
        },
        {
            "kind": "EmbeddingDataset",
            "metadata": {"name": "docs"},
            "spec": {"source": {"documents": {"path": "docs.jsonl"}}, "generate": generate},
        },
    )
    assert main(["validate", "-f", str(path)]) == 2
    err = capsys.readouterr().err
    assert "EmbeddingDataset/default/beir" not in err
    assert "EmbeddingDataset/default/docs: spec.source.documents.path: 'docs.jsonl' is not found" in err
    assert "EmbeddingDataset/default/docs: spec.generate.model 'models/no-llm' is neither" in err
    assert "EmbeddingDataset/default/docs: spec.generate.filter.model: model 'no-such-model' is neither" in err


def test_documents_without_generate_are_refused_naming_the_rule(tmp_path, capsys):
    path = write(
        tmp_path,
        {"kind": "EmbeddingDataset", "metadata": {"name": "d"}, "spec": {"source": {"documents": {"path": "d.jsonl"}}}},
    )
    assert main(["validate", "-f", str(path)]) == 2
    assert (
        "source.documents, source.table, source.datasetRef hold no queries: they need spec.generate"
        in capsys.readouterr().err
    )


def test_validate_checks_the_database_when_given_one(tmp_path, dsn, capsys):
    import psycopg

    (tmp_path / "probe.jsonl").write_text('{"query": "q", "relevant": [1]}\n')
    path = write(tmp_path, index())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.docs (id int, text text)")
        conn.execute("CREATE ROLE reader LOGIN")
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(dsn + "\n")
    assert main(["validate", "-f", str(path), "--dsn-file", str(dsn_file)]) == 2
    assert "spec.source.table.idColumn: 'id' of public.docs has no primary key" in capsys.readouterr().err
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE public.docs ADD PRIMARY KEY (id)")
        conn.execute("CREATE SCHEMA locked")
    assert main(["validate", "-f", str(path), "--dsn-file", str(dsn_file)]) == 0
    # A user who may not create tables in the target schema.
    reader = dsn.replace("postgres:@", "reader:@")
    dsn_file.write_text(reader)
    locked = write(
        tmp_path / "locked",
        index(target={"name": "docs", "schema": "locked"}, probe={"path": str(tmp_path / "probe.jsonl")}),
    )
    assert main(["validate", "-f", str(locked), "--dsn-file", str(dsn_file)]) == 2
    assert "spec.target.schema: the database user may not create tables in 'locked'" in capsys.readouterr().err


def test_a_database_that_cannot_be_reached_is_one_line_and_no_password(tmp_path, capsys):
    (tmp_path / "probe.jsonl").write_text('{"query": "q", "relevant": [1]}\n')
    path = write(tmp_path, index())
    for dsn, said in (
        ("postgresql://u:S3cr3t@127.0.0.1:1/x", "cannot connect to the database"),
        ("password=S3cr3t extra-Part", "the database connection string (DSN) is malformed"),
    ):
        assert main(["validate", "-f", str(path), "--dsn", dsn]) == 2
        err = capsys.readouterr().err
        assert said in err and "S3cr3t" not in err and "extra-Part" not in err and "Traceback" not in err


def test_a_worker_without_its_database_exits_transient_with_one_line(tmp_path):
    result = tmp_path / "result"
    config = {"target": {"name": "docs"}, "version": 1, "model": "all-MiniLM-L6-v2", "probe": {"path": "p.jsonl"}}

    def publish(dsn: str) -> subprocess.CompletedProcess:
        command = ["embedops.cli", "worker", "publish", "--spec-json", json.dumps(config), "--result", str(result)]
        env = {**os.environ, "EMBEDOPS_DSN": dsn}
        return subprocess.run([sys.executable, "-m", *command], env=env, capture_output=True, text=True)

    proc = publish("postgresql://u:S3cr3t@127.0.0.1:1/x")
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr and "S3cr3t" not in proc.stderr + result.read_text()
    assert json.loads(result.read_text())["error"]["reason"] == "DatabaseUnavailable"
    proc = publish("password=S3cr3t extra-Part")
    assert proc.returncode == 2 and "malformed" in proc.stderr and "extra-Part" not in proc.stderr


def test_run_reports_missing_paths_and_files_before_doing_anything(tmp_path, capsys):
    assert main(["run", "-f", str(tmp_path / "missing.yaml"), "--state-dir", str(tmp_path / "s")]) == 2
    assert "missing.yaml: no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["run", "-f", str(tmp_path / "empty"), "--state-dir", str(tmp_path / "s")]) == 2
    assert "no embedops manifests in" in capsys.readouterr().err
    path = write(
        tmp_path / "m",
        {"kind": "EmbeddingDataset", "metadata": {"name": "ds"}, "spec": {"source": {"beir": {"path": "nowhere"}}}},
    )
    assert main(["run", "-f", str(path), "--state-dir", str(tmp_path / "s")]) == 2
    assert not (tmp_path / "s" / "default").exists()  # nothing was started


def test_read_only_commands_create_no_state(tmp_path, capsys):
    (tmp_path / "probe.jsonl").write_text('{"query": "q", "relevant": [1]}\n')
    path = write(tmp_path, index())
    with pytest.raises(SystemExit, match="holds no embedded database: run `embedops run` first"):
        main(["versions", "-f", str(path), "--state-dir", str(tmp_path / "state")])
    assert not (tmp_path / "state").exists()


def test_validate_refuses_a_target_that_is_not_the_index_s_to_use(tmp_path, dsn, capsys):
    """Issue 16 cases 3, 4, 8: a user's view under the target name, another owner, an unreadable source."""
    import psycopg

    from embedops.api.index import Target
    from embedops.steps import TargetOwner
    from embedops.store import catalog, pgvector

    (tmp_path / "probe.jsonl").write_text('{"query": "q", "relevant": [1]}\n')
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(dsn + "\n")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.docs (id int PRIMARY KEY, text text)")
        conn.execute("CREATE VIEW public.docs_search AS SELECT id FROM public.docs")
    path = write(tmp_path, index())
    assert main(["validate", "-f", str(path), "--dsn-file", str(dsn_file)]) == 2
    err = capsys.readouterr().err
    assert "spec.target: public.docs_search is a view embedops did not create (it reads docs)" in err
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP VIEW public.docs_search")
    with pgvector.connect(dsn) as conn, conn.transaction():
        catalog.claim(conn, "public", "docs_search", TargetOwner(namespace="team-b", name="other"))
    assert main(["validate", "-f", str(path), "--dsn-file", str(dsn_file)]) == 2
    assert "spec.target: target public.docs_search belongs to EmbeddingIndex team-b/other" in capsys.readouterr().err
    assert (
        pgvector.target_problems(
            pgvector.connect(dsn), Target(name="docs_search"), TargetOwner(namespace="team-b", name="other")
        )
        == []
    )
    # A source table the database user may not SELECT from is found before a version exists.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE ROLE lister LOGIN")
        conn.execute("GRANT CREATE ON SCHEMA public TO lister")
    other = write(tmp_path / "other", index(target={"name": "fresh"}, probe={"path": str(tmp_path / "probe.jsonl")}))
    dsn_file.write_text(dsn.replace("postgres:@", "lister:@"))
    assert main(["validate", "-f", str(other), "--dsn-file", str(dsn_file)]) == 2
    assert "spec.source.table: the database user may not SELECT from public.docs" in capsys.readouterr().err


def test_validate_refuses_two_indexes_with_one_target_in_one_folder(tmp_path, capsys):
    (tmp_path / "probe.jsonl").write_text('{"query": "q", "relevant": [1]}\n')
    second = {**index(), "metadata": {"name": "ix-copy"}}
    path = write(tmp_path, index(), second)
    assert main(["validate", "-f", str(path)]) == 2
    assert (
        "EmbeddingIndex/default/ix-copy: spec.target: public.docs_search is also the target of "
        "EmbeddingIndex/default/ix in the same database; one index per target"
    ) in capsys.readouterr().err


def test_validate_names_a_reference_to_a_resource_the_folder_does_not_define(tmp_path, capsys):
    """Issue 16, minor: `validate` passed a misspelt datasetRef that `run` then waited on for ever."""
    job = {"kind": "FineTuneJob", "metadata": {"name": "ft"}, "spec": {"datasetRef": {"name": "dss"}}}
    assert main(["validate", "-f", str(write(tmp_path, job))]) == 2
    assert "FineTuneJob/default/ft: refers to EmbeddingDataset 'dss', which these manifests do not define" in (
        capsys.readouterr().err
    )


def test_validate_says_when_the_role_may_not_create_the_trigger_mode_s_triggers(tmp_path, dsn, capsys):
    import psycopg

    (tmp_path / "probe.jsonl").write_text('{"query": "q", "relevant": [1]}\n')
    path = write(tmp_path, index(sync={"mode": "trigger"}))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.docs (id int PRIMARY KEY, text text)")
        conn.execute("CREATE ROLE syncer LOGIN")
        conn.execute("GRANT SELECT ON public.docs TO syncer")
        conn.execute("GRANT CREATE ON SCHEMA public TO syncer")
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(dsn.replace("postgres:@", "syncer:@"))
    assert main(["validate", "-f", str(path), "--dsn-file", str(dsn_file)]) == 2
    err = capsys.readouterr().err
    assert (
        "EmbeddingIndex/default/ix: spec.sync.mode: trigger: the database role 'syncer' may not create triggers on "
        "public.docs (it must own the table or hold its TRIGGER privilege: GRANT TRIGGER ON public.docs TO syncer)"
    ) in err
    assert "may not create the trigger functions and queue table in the 'embedops' schema" in err
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("GRANT TRIGGER ON public.docs TO syncer")
        conn.execute("CREATE SCHEMA embedops")
        conn.execute("GRANT USAGE, CREATE ON SCHEMA embedops TO syncer")
    assert main(["validate", "-f", str(path), "--dsn-file", str(dsn_file)]) == 0, capsys.readouterr().err


def test_validate_says_that_several_nodes_need_the_trainjob_api_which_local_mode_has_not(tmp_path, capsys):
    path = write(
        tmp_path,
        {"kind": "EmbeddingDataset", "metadata": {"name": "ds"}, "spec": {"source": {"beir": {"path": str(SAMPLE)}}}},
        {
            "kind": "FineTuneJob",
            "metadata": {"name": "ft"},
            "spec": {"datasetRef": {"name": "ds"}, "resources": {"gpus": 8, "nodes": 2}},
        },
        {
            "kind": "FineTuneJob",
            "metadata": {"name": "tj"},
            "spec": {"datasetRef": {"name": "ds"}, "launcher": "trainjob"},
        },
    )
    assert main(["validate", "-f", str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        "FineTuneJob/default/ft: spec.resources.nodes: 2 nodes run as a Kubeflow Trainer TrainJob "
        "(trainer.kubeflow.org/v1alpha1), which local mode does not serve" in err
    )
    assert "FineTuneJob/default/tj: spec.launcher: trainjob needs the trainer.kubeflow.org/v1alpha1 TrainJob API" in err
