"""Local mode with spec.generate: a corpus with no queries is prepared, and a rerun reads the generation cache."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from embedops import manifests
from embedops.local import LocalRunner
from tests.workers.generate.chat_server import serve
from tests.workers.generate.corpus import sample_docs, title_query, write_documents

N_DOCS = 25


def write_dataset(folder: Path, url: str, rerun: str | None = None) -> Path:
    write_documents(folder / "docs.jsonl", N_DOCS)
    doc = {
        "apiVersion": "embedops.dev/v1alpha1",
        "kind": "EmbeddingDataset",
        "metadata": {"name": "corpus", **({"annotations": {"embedops.dev/rerun": rerun}} if rerun else {})},
        "spec": {
            "source": {"documents": {"path": "docs.jsonl"}},
            "generate": {"endpoint": {"baseURL": url, "model": "m"}, "queriesPerDocument": 2},
            "hardNegatives": {"count": 1},
            "augment": {"titlePairs": False},
        },
    }
    path = folder / "dataset.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_corpus_only_dataset_reaches_prepared_and_a_rerun_hits_the_cache(tmp_path):
    docs = sample_docs(N_DOCS)
    state = tmp_path / "state"
    with serve(lambda body, n: title_query(docs, body, bad_every=5)) as server:
        first = LocalRunner(state_dir=state, device="cpu").run(manifests.load([write_dataset(tmp_path, server.url)]))
        asked = len(server.requests)
        again = LocalRunner(state_dir=state, device="cpu").run(
            manifests.load([write_dataset(tmp_path, server.url, rerun="1")])
        )
        assert len(server.requests) == asked

    status = first["EmbeddingDataset/default/corpus"].status
    assert status.condition("Ready").reason == "Prepared", status.conditions
    g = status.generation
    assert g.documents_sampled == N_DOCS and g.queries_generated == asked == 2 * N_DOCS
    assert g.kept_unique == N_DOCS  # each document got the same query twice
    assert g.train_queries > 0 and g.validation_on == "generated"
    assert "the fine-tuning gate compares on generated queries" in status.condition("Ready").message
    assert status.counts.train_queries == g.train_queries and status.counts.test_queries == g.test_queries
    assert status.counts.with_negatives == status.counts.train_pairs  # generated pairs are mined too

    redone = again["EmbeddingDataset/default/corpus"]
    assert not redone.reused and redone.status.generation.from_cache == 2 * N_DOCS
    assert redone.status.fingerprint == status.fingerprint


def test_a_dataset_made_from_another_datasets_corpus_runs_after_it(tmp_path):
    docs = sample_docs(N_DOCS)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": d["title"], "positive": d["text"]}) + "\n" for d in docs))
    with serve(lambda body, n: title_query(docs, body)) as server:
        manifests_path = tmp_path / "all.yaml"
        manifests_path.write_text(
            yaml.safe_dump_all(
                [
                    {
                        "apiVersion": "embedops.dev/v1alpha1",
                        "kind": "EmbeddingDataset",
                        "metadata": {"name": "a-generated"},  # sorts first by name, runs second
                        "spec": {
                            "source": {"datasetRef": {"name": "b-labelled"}},
                            "generate": {
                                "endpoint": {"baseURL": server.url, "model": "m"},
                                "queriesPerDocument": 1,
                                "filter": {"generic": False, "roundTripTopK": 0},  # no model to load
                            },
                            "hardNegatives": {"enabled": False},
                        },
                    },
                    {
                        "apiVersion": "embedops.dev/v1alpha1",
                        "kind": "EmbeddingDataset",
                        "metadata": {"name": "b-labelled"},
                        "spec": {"source": {"pairs": {"path": "pairs.jsonl"}}, "hardNegatives": {"enabled": False}},
                    },
                ]
            )
        )
        out = LocalRunner(state_dir=tmp_path / "state", device="cpu").run(manifests.load([manifests_path]))
    status = out["EmbeddingDataset/default/a-generated"].status
    assert status.condition("Ready").reason == "Prepared", status.conditions
    # Its corpus is the other dataset's (the pairs' positives), whose ids are content hashes.
    assert status.counts.corpus == N_DOCS and status.generation.documents_sampled == N_DOCS
    assert len(server.requests) == N_DOCS
