"""The prepare step with spec.generate, against a loopback OpenAI-compatible server: counts, cache, failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedops import prepared, steps
from embedops.api.dataset import EmbeddingDatasetSpec
from embedops.api.generate import API_KEY_ENV
from embedops.workers import prepare
from embedops.workers.generate.run import REPORT, GenerationFailed
from tests.workers.generate.chat_server import serve
from tests.workers.generate.corpus import sample_docs, title_query, write_documents

N_DOCS = 25


def spec(url: str, **generate) -> EmbeddingDatasetSpec:
    return EmbeddingDatasetSpec.model_validate(
        {
            "source": {"documents": {"path": "docs.jsonl"}},
            "generate": {"endpoint": {"baseURL": url, "model": "m", "maxRetries": 0}, "queriesPerDocument": 1}
            | generate,
            "hardNegatives": {"enabled": False},
            "augment": {"titlePairs": False},
        }
    )


def run(tmp: Path, spec: EmbeddingDatasetSpec, out: str = "out"):
    config = steps.PrepareStep(spec=spec, base_dir=tmp, output_dir=tmp / out, cache_dir=tmp / "cache")
    return prepare.run(config)


@pytest.fixture
def folder(tmp_path) -> Path:
    write_documents(tmp_path / "docs.jsonl", N_DOCS)
    return tmp_path


def test_a_corpus_only_dataset_is_prepared_with_counts_and_a_rerun_reads_the_cache(folder):
    docs = sample_docs(N_DOCS)
    with serve(lambda body, n: title_query(docs, body, bad_every=5)) as server:
        first = run(folder, spec(server.url))
        asked = len(server.requests)
        again = run(folder, spec(server.url), out="again")
        assert len(server.requests) == asked  # nothing asked twice
        changed = run(folder, spec(server.url, prompt={"system": "You write queries."}), out="changed")
        assert len(server.requests) == 2 * asked  # a changed prompt asks again

    g = first.generation
    assert (g.documents_sampled, g.queries_generated, g.failures, g.from_cache) == (N_DOCS, N_DOCS, 0, 0)
    assert g.kept_well_formed == g.kept_unique == g.kept_not_copies == N_DOCS
    assert g.kept_specific == N_DOCS - N_DOCS // 5  # "the purpose of this passage" for one in five
    assert 0 < g.kept_round_trip == g.train_queries
    assert g.validation_queries > 0 and g.test_queries > 0 and g.validation_on == "generated"
    assert (g.tokens_in, g.tokens_out) == (50 * N_DOCS, 8 * N_DOCS)
    assert again.generation.from_cache == N_DOCS and again.generation.tokens_in == 0
    assert again.fingerprint == first.fingerprint
    assert changed.generation.from_cache == 0

    data = prepared.PreparedDataset(folder / "out")
    origins = {e.origin for e in data.train_examples()}
    assert origins == {"generated", "validation"}
    assert first.counts.test_queries == g.test_queries == len(data.test_queries())
    report = json.loads((folder / "out" / REPORT).read_text())
    assert report["counts"]["keptSpecific"] == g.kept_specific
    assert report["dropped"]["generic"][0]["reply"] == "What is the purpose of this passage?"
    assert {k["role"] for k in report["kept"]} <= {"train", "validation", "test"} and report["kept"]


def test_a_generator_that_writes_nothing_useful_fails_the_dataset_with_the_reason(folder):
    with (
        serve(lambda body, n: "What is the purpose of this passage?") as server,
        pytest.raises(GenerationFailed) as err,
    ):
        run(folder, spec(server.url, filter={"roundTripTopK": 0}))
    assert f"none of the {N_DOCS} generated queries is left to train on ({N_DOCS} generic)" in str(err.value)
    assert not err.value.transient  # a rerun asks the same: the pod fails at once (exit 2)


def test_an_unreachable_endpoint_fails_the_dataset_naming_it(folder):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(GenerationFailed) as err:
        run(folder, spec(f"http://127.0.0.1:{port}/v1", maxDocuments=5))
    assert "every one of the 5 requests to the generator failed" in str(err.value)
    assert f"127.0.0.1:{port}/v1/chat/completions did not answer" in str(err.value)
    # As the pod runs it: the dataset's own reason, and exit 3 (the Job retries: the endpoint may come up).
    from embedops.builders.jobs import EXIT_TRANSIENT
    from embedops.workers import runner

    config = steps.PrepareStep(
        spec=spec(f"http://127.0.0.1:{port}/v1", maxDocuments=5), base_dir=folder, output_dir=folder / "pod"
    )
    with pytest.raises(runner.WorkerError) as failed:
        runner.run(config, dsn=None)
    assert (failed.value.reason, failed.value.exit_code) == ("GenerationFailed", EXIT_TRANSIENT)


def test_a_failing_document_is_reported_and_the_rest_prepared(folder):
    docs = sample_docs(N_DOCS)
    bad = docs[3]["text"][:100]

    def reply(body, n):
        if bad in body["messages"][-1]["content"]:
            return (500, {}, b"boom")
        if n < 2:
            return (429, {"Retry-After": "0"}, b"")
        return title_query(docs, body)

    with serve(reply) as server:
        endpoint = {"baseURL": server.url, "model": "m", "maxRetries": 2}
        result = run(folder, spec(server.url, endpoint=endpoint, filter={"roundTripTopK": 0}))
    g = result.generation
    assert g.failures == 1 and g.queries_generated == N_DOCS - 1
    assert g.failure_samples == [
        f"document {docs[3]['_id']!r} (query 1): HTTP 500 Internal Server Error from {server.url}/chat/completions"
    ]


def test_the_api_key_comes_from_the_environment_only_and_is_written_nowhere(folder, monkeypatch):
    docs = sample_docs(N_DOCS)
    with serve(lambda body, n: title_query(docs, body)) as server:
        endpoint = {"baseURL": server.url, "model": "m", "apiKeySecretRef": {"name": "llm"}}
        monkeypatch.delenv(API_KEY_ENV, raising=False)
        with pytest.raises(GenerationFailed) as err:
            run(folder, spec(server.url, endpoint=endpoint))
        assert "apiKeySecretRef: no API key in EMBEDOPS_GENERATOR_API_KEY" in str(err.value)
        assert "key 'api-key' of Secret 'llm'" in str(err.value) and not server.requests

        monkeypatch.setenv(API_KEY_ENV, "sk-very-secret")
        result = run(folder, spec(server.url, endpoint=endpoint, maxDocuments=10, filter={"roundTripTopK": 0}))
    assert set(server.auth) == {"Bearer sk-very-secret"}
    assert "sk-very-secret" not in result.model_dump_json()
    for path in folder.rglob("*"):
        assert not path.is_file() or b"sk-very-secret" not in path.read_bytes(), path


def test_labelled_pairs_are_the_few_shot_examples_and_the_validation(tmp_path):
    docs = sample_docs(N_DOCS)
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    queries = [{"_id": f"q{i}", "text": f"real query {i} about {d['title'][:30]}"} for i, d in enumerate(docs[:12])]
    (beir / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (beir / "qrels" / "train.tsv").write_text("".join(f"q{i}\t{d['_id']}\t1\n" for i, d in enumerate(docs[:8])))
    (beir / "qrels" / "test.tsv").write_text(
        "".join(f"q{i}\t{d['_id']}\t1\n" for i, d in enumerate(docs[:12]) if i >= 8)
    )
    with serve(lambda body, n: title_query(docs, body)) as server:
        s = spec(server.url, maxDocuments=20, filter={"roundTripTopK": 0})
        s = s.model_copy(
            update={"source": EmbeddingDatasetSpec.model_validate({"source": {"beir": {"path": "beir"}}}).source}
        )
        result = run(tmp_path, s)
    g = result.generation
    assert g.validation_on == "labelled" and g.validation_queries == 0 and g.test_queries == 0
    assert g.train_queries == 20 and result.counts.test_queries == 4
    shots = [m["content"] for m in server.requests[0]["messages"] if m["role"] == "assistant"]
    assert len(shots) == 2 and all(s.startswith("real query") for s in shots)
    origins = [e.origin for e in prepared.PreparedDataset(tmp_path / "out").train_examples()]
    assert origins.count("pair") == 8 and origins.count("generated") == 20 and "validation" not in origins


def test_a_beir_folder_with_only_its_corpus_is_a_corpus(tmp_path):
    docs = sample_docs(N_DOCS)
    (tmp_path / "beir").mkdir()
    (tmp_path / "beir" / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    with serve(lambda body, n: title_query(docs, body)) as server:
        s = spec(server.url, filter={"roundTripTopK": 0})
        s = s.model_copy(
            update={"source": EmbeddingDatasetSpec.model_validate({"source": {"beir": {"path": "beir"}}}).source}
        )
        result = run(tmp_path, s)
    assert result.generation.validation_on == "generated" and result.counts.corpus == N_DOCS


def test_roles_hold_out_enough_validation_documents_and_none_when_labelled():
    from collections import Counter

    from embedops.api.generate import GenerateSpec
    from embedops.prepared import Doc
    from embedops.workers.generate.run import assign_roles

    corpus = {f"d{i}": Doc(id=f"d{i}", text="x") for i in range(600)}
    gen = GenerateSpec.model_validate({"model": "m", "maxDocuments": 60, "queriesPerDocument": 1})
    roles = assign_roles(corpus, gen, 0.2, 42, labelled=False, labelled_test=False)
    assert Counter(roles.values()) == {"test": 12, "validation": 15, "train": 33}  # a quarter of a small sample
    big = gen.model_copy(update={"max_documents": 600})
    assert Counter(assign_roles(corpus, big, 0.2, 42, False, True).values()) == {"validation": 60, "train": 540}
    assert set(assign_roles(corpus, gen, 0.2, 42, labelled=True, labelled_test=True).values()) == {"train"}
