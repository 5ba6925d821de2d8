"""benchmarks/recipe_sweep.py on CPU: a tiny random model, a BEIR folder of a few dozen documents."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.workers.test_train import TOPICS  # the same synthetic corpus

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def sweep_module(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import recipe_sweep

    return recipe_sweep


def beir(folder: Path) -> Path:
    """Thirty titled documents, a query each: twenty to train on, ten to test."""

    def lines(path: Path, rows: list[str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(r + "\n" for r in rows), encoding="utf-8")

    lines(
        folder / "corpus.jsonl",
        [
            json.dumps({"_id": f"d{i}", "title": t.title(), "text": f"notes on {t} findings"})
            for i, t in enumerate(TOPICS)
        ],
    )
    lines(
        folder / "queries.jsonl",
        [json.dumps({"_id": f"q{i}", "text": f"what is known about {t}?"}) for i, t in enumerate(TOPICS)],
    )
    lines(folder / "qrels" / "train.tsv", ["query-id\tcorpus-id\tscore", *(f"q{i}\td{i}\t1" for i in range(20))])
    lines(folder / "qrels" / "test.tsv", ["query-id\tcorpus-id\tscore", *(f"q{i}\td{i}\t1" for i in range(20, 30))])
    return folder


def tiny(model: Path) -> list[str]:
    return [
        f"baseModel={model}",
        f"hardNegatives.model={model}",
        "hardNegatives.rangeMin=2",
        "hardNegatives.rangeMax=10",
        "training.maxSteps=2",
        "training.batchSize=8",
        "training.maxSeqLength=32",
        "evaluation.requireImprovement=false",
    ]


def test_the_sweep_runs_every_variant_sharing_prepared_datasets_and_prints_one_table(
    tmp_path, tiny_model_dir, sweep_module, capsys
):
    folder = beir(tmp_path / "beir")
    argv = [
        str(folder),
        "--device",
        "cpu",
        "--work",
        str(tmp_path / "work"),
        "--json",
        str(tmp_path / "rows.json"),
        "--variant",
        "defaults",
        "--variant",
        "n-tuple",
        "--variant",
        "gist: loss.type=GISTEmbedLoss",
        *(a for o in tiny(tiny_model_dir) for a in ("--set", o)),
    ]
    rows = sweep_module.main(argv)

    assert [r.variant for r in rows] == ["defaults", "n-tuple", "gist"]
    assert all(r.steps == r.planned_steps == 2 and r.tuned is not None and r.device.endswith("threads") for r in rows)
    assert rows[0].base == rows[1].base == rows[2].base  # the same base model on the same test queries
    assert "loss.type=GISTEmbedLoss" in rows[2].overrides
    # defaults and gist share a dataset; n-tuple mines into rows of its own.
    assert sorted(p.name for p in (tmp_path / "work").glob("dataset-*")) == ["dataset-0", "dataset-1"]
    out = capsys.readouterr().out
    table = out[out.index("\nvariant") + 1 :].splitlines()
    assert table[0].split()[:8] == ["variant", "nDCG@10", "MRR@10", "R@10", "R@100", "val", "best", "steps"]
    assert table[1].startswith("(base model)") and [line.split()[0] for line in table[2:5]] == [
        "defaults",
        "n-tuple",
        "gist",
    ]
    assert all(" 2/2 " in line for line in table[2:5])
    assert [r["variant"] for r in json.loads((tmp_path / "rows.json").read_text())] == ["defaults", "n-tuple", "gist"]


def test_variants_parse_from_the_command_line_and_a_file(tmp_path, sweep_module):
    assert sweep_module.parse_variant("gist: loss.type=GISTEmbedLoss, training.batchSize=32") == sweep_module.Variant(
        "gist", ("loss.type=GISTEmbedLoss", "training.batchSize=32")
    )
    (tmp_path / "v.yaml").write_text(
        "- name: a\n- name: b\n  set: {hardNegatives.count: 1, loss.type: GISTEmbedLoss}\n"
    )
    assert sweep_module.load_variants(tmp_path / "v.yaml") == [
        sweep_module.Variant("a"),
        sweep_module.Variant("b", ("hardNegatives.count=1", 'loss.type="GISTEmbedLoss"')),
    ]
    assert sweep_module.slots("cpu", runs=5, parallel=None, gib_per_run=10) == 1
    assert sweep_module.slots("cpu", runs=5, parallel=3, gib_per_run=10) == 3


def test_runs_in_child_processes_give_the_same_rows(tmp_path, tiny_model_dir, sweep_module):
    folder = beir(tmp_path / "beir")
    variants = [sweep_module.Variant("a"), sweep_module.Variant("b", ("training.learningRate=1e-4",))]
    rows = sweep_module.sweep(
        folder, variants, common=tiny(tiny_model_dir), work=tmp_path / "w", device="cpu", parallel=2
    )
    again = sweep_module.sweep(folder, variants[:1], common=tiny(tiny_model_dir), work=tmp_path / "w1", device="cpu")
    assert [r.variant for r in rows] == ["a", "b"] and rows[0].tuned == again[0].tuned
    assert sys.modules.get("recipe_sweep") is sweep_module
