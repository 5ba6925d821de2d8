"""`embedops serve`: TEI's /embed and OpenAI's /v1/embeddings over the model's query encoder, batched."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from embedops import modelzoo, serve

QUERIES = ["what causes fever", "ö unicode query", "a much longer query about the weather in the mountains"]


@pytest.fixture(scope="module")
def served(tiny_model_dir):
    return serve.load_model(str(tiny_model_dir), device="cpu")


def app(served, **options):
    return serve.build(served, **options)[0]


def call(application, *stages, headers=None):
    """Send each stage's requests ((method, path, json)) concurrently to `application`, stage after stage
    (a callable stage is called instead); every (status, body) in order, and each response's headers
    appended to `headers`."""

    async def go():
        async with TestClient(TestServer(application)) as client:

            async def one(method, path, body):
                response = await client.request(method, path, json=body)
                text = await response.text()
                if headers is not None:
                    headers.append(response.headers)
                body = await response.json() if response.content_type == "application/json" else text
                return response.status, body

            answers = []
            for stage in stages:
                if callable(stage):  # something to do between two stages
                    stage()
                else:
                    answers += await asyncio.gather(*(one(*r) for r in stage))
            return answers

    return asyncio.run(go())


def expected(tiny_model_dir, texts):
    model = modelzoo.load(str(tiny_model_dir), device="cpu")
    return model.encode_query(texts, normalize_embeddings=True)


def test_both_dialects_return_the_models_query_embeddings(served, tiny_model_dir):
    (s1, tei), (s2, openai), (s3, single) = call(
        app(served),
        [
            ("POST", "/embed", {"inputs": QUERIES}),
            ("POST", "/v1/embeddings", {"input": QUERIES, "model": "ignored"}),
            ("POST", "/embed", {"inputs": QUERIES[0]}),
        ],
    )
    assert (s1, s2, s3) == (200, 200, 200)
    want = expected(tiny_model_dir, QUERIES)
    assert np.allclose(np.array(tei), want, atol=1e-5)
    assert np.allclose(np.array(single), want[:1], atol=1e-5)
    assert [d["index"] for d in openai["data"]] == [0, 1, 2]
    assert np.allclose(np.array([d["embedding"] for d in openai["data"]]), want, atol=1e-5)
    assert openai["model"] == str(tiny_model_dir) and openai["usage"]["prompt_tokens"] > len(QUERIES) * 2


def test_openai_options_dimensions_and_base64(served, tiny_model_dir):
    [(_, short), (_, packed)] = call(
        app(served),
        [
            ("POST", "/v1/embeddings", {"input": QUERIES, "dimensions": 8}),
            ("POST", "/v1/embeddings", {"input": QUERIES, "encoding_format": "base64"}),
        ],
    )
    want = expected(tiny_model_dir, QUERIES)
    truncated = want[:, :8] / np.linalg.norm(want[:, :8], axis=1, keepdims=True)
    assert np.allclose(np.array([d["embedding"] for d in short["data"]]), truncated, atol=1e-5)
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in packed["data"]]
    assert np.allclose(np.array(decoded), want, atol=1e-5)


def test_concurrent_requests_are_encoded_together(served):
    calls = []

    def counting(texts):
        calls.append(len(texts))
        return served.encode(texts)

    answers = call(
        app(serve.Served(counting, served.info), max_wait=0.05),
        [("POST", "/embed", {"inputs": f"query number {i}"}) for i in range(16)],
    )
    assert all(status == 200 for status, _ in answers)
    assert sum(calls) == 16 and len(calls) <= 4, calls
    # Each request gets its own text's vector back, not a neighbour's.
    alone = served.encode([f"query number {i}" for i in range(16)])[0]
    got = np.array([body[0] for _, body in answers])
    assert np.allclose(got, alone / np.linalg.norm(alone, axis=1, keepdims=True), atol=1e-5)


def test_bad_requests_are_422_with_the_reason(served):
    answers = call(
        app(served),
        [
            ("POST", "/embed", {"inputs": []}),
            ("POST", "/embed", {"inputs": ["a", 3]}),
            ("POST", "/embed", ["not", "an", "object"]),
            ("POST", "/v1/embeddings", {"input": ["a"] * 257}),
            ("POST", "/v1/embeddings", {"input": "a", "dimensions": 33}),
            ("POST", "/v1/embeddings", {"input": "a", "encoding_format": "int8"}),
        ],
    )
    assert [s for s, _ in answers] == [422] * 6
    assert [b["error"] for _, b in answers] == [
        "inputs must be a string or a non-empty list of strings",
        "inputs must be a string or a non-empty list of strings",
        "the request body must be a JSON object",
        "input holds 257 texts; at most 256 a request",
        "dimensions must be an integer from 1 to 32",
        "encoding_format must be float or base64",
    ]
    assert {b["error_type"] for _, b in answers} == {"Validation"}


def test_a_model_error_fails_its_batch_and_the_server_keeps_serving(served):
    def fragile(texts):
        if "boom" in texts:
            raise RuntimeError("CUDA out of memory")
        return served.encode(texts)

    [(s1, b1), (s2, _)] = call(
        app(serve.Served(fragile, served.info)),
        [("POST", "/embed", {"inputs": "boom"})],
        [("POST", "/embed", {"inputs": "fine"})],
    )
    assert (s1, b1) == (500, {"error": "CUDA out of memory", "error_type": "Backend"})
    assert s2 == 200


def test_health_info_and_metrics(served, tiny_model_dir):
    [(_, _), (hs, health), (_, about), (ms, metrics)] = call(
        app(served),
        [("POST", "/embed", {"inputs": QUERIES}), ("GET", "/health", None), ("GET", "/info", None)],
        [("GET", "/metrics", None)],
    )
    assert (hs, health) == (200, {"status": "ok"})
    assert about["model_sha"] == modelzoo.fingerprint(tiny_model_dir) and about["dimensions"] == 32
    assert about["max_input_length"] == 128
    assert ms == 200
    for name in (
        "embedops_serve_request_duration_seconds_bucket",
        "embedops_serve_requests_total",
        "embedops_serve_batch_size_bucket",
        "embedops_serve_batch_duration_seconds_bucket",
        "embedops_serve_queue_wait_seconds_bucket",
    ):
        assert name in metrics
    assert "embedops_serve_batch_size_count 1.0" in metrics and "_created" not in metrics


def test_a_swapped_model_encodes_from_the_next_batch_and_responses_name_it(served, tmp_path):
    from tests.tinymodel import build_tiny_model

    other = serve.load_model(str(build_tiny_model(tmp_path / "other", seed=1)), device="cpu", version=2)
    application, batcher = serve.build(serve.Served(served.encode, served.info), max_wait=0)
    headers = []
    [(_, before), (_, after), (_, about)] = call(
        application,
        [("POST", "/embed", {"inputs": QUERIES[0]})],
        lambda: batcher.use(other),
        [("POST", "/embed", {"inputs": QUERIES[0]})],
        [("GET", "/info", None)],
        headers=headers,
    )
    assert np.allclose(before, served.encode([QUERIES[0]])[0] / np.linalg.norm(served.encode([QUERIES[0]])[0]))
    assert np.allclose(after[0], other.encode([QUERIES[0]])[0][0] / np.linalg.norm(other.encode([QUERIES[0]])[0][0]))
    assert "X-Embedops-Version" not in headers[0] and headers[1]["X-Embedops-Version"] == "2"
    assert headers[1]["X-Embedops-Model-Fingerprint"] == other.info.fingerprint != served.info.fingerprint
    assert about["version"] == 2 and about["model_sha"] == other.info.fingerprint


def test_the_cluster_example_serves_the_example_index_as_the_cli_reads_it(served):
    """examples/cluster/query-embeddings.yaml: its command parses as `embedops serve --target` of the
    example index's view, with that index's database Secret, the workspace claim and a route for its probes."""
    from pathlib import Path

    import yaml

    from embedops import cli
    from embedops.settings import OperatorSettings

    folder = Path(__file__).resolve().parents[1] / "examples" / "cluster"
    deployment, service = yaml.safe_load_all((folder / "query-embeddings.yaml").read_text())
    index = yaml.safe_load((folder / "index.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"][0] == "embedops"
    args = cli.build_parser().parse_args(container["command"][1:])
    assert args.func is cli.cmd_serve and args.model is None and args.host == "0.0.0.0"
    assert args.target == f"public.{index['spec']['target']['name']}"
    (env,) = container["env"]
    assert env["name"] == cli.DSN_ENV
    assert env["valueFrom"]["secretKeyRef"]["name"] == index["spec"]["database"]["dsnSecretRef"]["name"]
    assert container["ports"][0]["containerPort"] == args.port == service["spec"]["ports"][0]["port"]
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in deployment["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == [OperatorSettings().workspace_claim]
    routes = {r.resource.canonical for r in app(served).router.routes()}
    assert container["readinessProbe"]["httpGet"]["path"] in routes
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
