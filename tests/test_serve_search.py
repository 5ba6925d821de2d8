"""`embedops serve --search-target`: POST /search embeds the query with the server's model and searches the view
in one transaction that checks the view serves a version of that model (409 when it does not)."""

from __future__ import annotations

import numpy as np
import pytest

from embedops import cli, serve
from embedops.api.index import AnnSpec, Target
from embedops.store import pgvector
from embedops.store.catalog import Build
from tests.test_serve import call

pytestmark = pytest.mark.postgres
TARGET = Target(name="docs")
QUERY = "what causes a fever"


def build_version(conn, fingerprint: str, rows: int = 30, dims: int = 32) -> tuple[int, np.ndarray]:
    """A version of random unit vectors (ids 1..rows) recorded as built by the model of `fingerprint`, cut over."""
    build = Build(
        model="m",
        model_fingerprint=fingerprint,
        dimensions=dims,
        vector_type="vector",
        metric="cosine",
        id_type="bigint",
        source="test",
        shards=1,
    )
    rec, _ = pgvector.begin_build(conn, TARGET, build)
    vectors = np.random.default_rng(rec.version).normal(size=(rows, dims)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    writer = pgvector.VersionWriter(conn, rec, 0)
    writer.write(list(range(1, rows + 1)), vectors)
    writer.finish()
    pgvector.finalize(conn, TARGET, rec.version, AnnSpec())
    pgvector.cutover(conn, TARGET, rec.version)
    return rec.version, vectors


@pytest.fixture(scope="module")
def served_v1(tiny_model_dir):
    return serve.load_model(str(tiny_model_dir), device="cpu", version=1)


def test_search_answers_the_views_nearest_rows_and_409_after_a_cut_over_to_another_model(dsn, served_v1):
    fingerprint = served_v1.info.fingerprint
    with pgvector.connect(dsn) as conn:
        version, stored = build_version(conn, fingerprint)
    assert version == 1

    searcher = serve.Searcher(dsn, TARGET)
    application = serve.build(served_v1, max_wait=0, searcher=searcher)[0]
    headers: list = []
    [(status, found), (s_default, default_k)] = call(
        application,
        [("POST", "/search", {"query": QUERY, "k": 5}), ("POST", "/search", {"query": QUERY})],
        headers=headers,
    )
    assert status == 200 and s_default == 200, found
    assert found["version"] == 1 and found["model_fingerprint"] == fingerprint and found["view"] == "public.docs"
    assert len(found["hits"]) == 5 and len(default_k["hits"]) == 10
    assert headers[0]["X-Embedops-Version"] == "1" and headers[0]["X-Embedops-Model-Fingerprint"] == fingerprint
    # The distances are those of the query embedded by the server's model to the stored vectors, nearest first.
    query = served_v1.encode([QUERY])[0][0]
    query /= np.linalg.norm(query)
    ids = [int(h["id"]) for h in found["hits"]]
    distances = [h["distance"] for h in found["hits"]]
    assert distances == sorted(distances)
    assert np.allclose(distances, 1 - stored[np.array(ids) - 1] @ query, atol=1e-4)
    assert ids == list(np.argsort(1 - stored @ query)[:5] + 1)

    # Another model's version is cut over: the server (still v1's model) refuses rather than mixing models.
    with pgvector.connect(dsn) as conn:
        assert build_version(conn, "sha256:another-model")[0] == 2
    [(status, refused)] = call(
        searching(served_v1, dsn),
        [("POST", "/search", {"query": QUERY})],
    )
    assert status == 409
    assert refused == {
        "error": "the view public.docs serves v2 (model fingerprint sha256:another-model); "
        "this server serves v1's model",
        "error_type": "Conflict",
        "live_version": 2,
    }


def searching(served, dsn):
    return serve.build(served, max_wait=0, searcher=serve.Searcher(dsn, TARGET))[0]


def test_bad_searches_are_422_and_a_database_error_is_503_without_the_dsn(dsn, served_v1):
    answers = call(
        searching(served_v1, dsn),
        [
            ("POST", "/search", {"query": QUERY, "k": 0}),
            ("POST", "/search", {"query": QUERY, "k": 1001}),
            ("POST", "/search", {"query": QUERY, "k": "5"}),
            ("POST", "/search", {"query": QUERY, "k": True}),
            ("POST", "/search", {"query": ""}),
            ("POST", "/search", {"k": 3}),
            ("POST", "/search", [QUERY]),
        ],
    )
    for status, body in answers:
        assert status == 422 and body["error_type"] == "Validation", body
    assert "k must be an integer from 1 to 1000" in answers[0][1]["error"]

    # No such view (nothing was built in this database): 503, and the DSN is nowhere in the answer.
    [(status, body)] = call(searching(served_v1, dsn), [("POST", "/search", {"query": QUERY})])
    assert status == 503 and body["error_type"] == "Unavailable"
    password_dsn = "postgresql://embedops:s3cret-pw@127.0.0.1:1/nowhere?connect_timeout=1"
    [(status, down)] = call(
        searching(served_v1, password_dsn),
        [("POST", "/search", {"query": QUERY})],
    )
    assert status == 503 and "s3cret-pw" not in str(down) and "nowhere" not in str(down)


def test_without_a_search_target_search_is_404_and_the_flags_parse(served_v1, monkeypatch):
    [(status, _)] = call(serve.build(served_v1)[0], [("POST", "/search", {"query": QUERY})])
    assert status == 404
    args = cli.build_parser().parse_args(
        ["serve", "--model", "/models/m", "--version", "3", "--host", "0.0.0.0", "--port", "8080"]
        + ["--search-target", "app.docs"]
    )
    assert (args.model, args.version, args.search_target) == ("/models/m", 3, "app.docs")
    assert cli._view_target(args.search_target) == Target.model_validate({"schema": "app", "name": "docs"})
    # --search-target needs a DSN; --version only goes with --model.
    monkeypatch.delenv(cli.DSN_ENV, raising=False)
    with pytest.raises(SystemExit, match="--search-target needs the database"):
        cli.main(["serve", "--model", "m", "--search-target", "app.docs"])
    with pytest.raises(SystemExit, match="--version goes with --model"):
        cli.main(["serve", "--target", "app.docs", "--dsn", "host=nowhere", "--version", "2"])


def test_the_operators_serving_deployment_and_service_are_what_serve_and_kubectl_embedops_search_expect():
    """builders/serving.py's command parses as `embedops serve --model --version --search-target`, and its Service
    is the `<index>-query` port `http` that `kubectl embedops search` proxies to."""
    from embedops import kubectl
    from embedops.api.common import SecretKeySelector
    from embedops.api.index import AnnSpec, ServingSpec
    from embedops.builders import serving
    from embedops.builders.jobs import Owner
    from embedops.settings import OperatorSettings

    s = serving.Serving(
        owner=Owner(kind="EmbeddingIndex", name="docs", namespace="ns", uid="u1"),
        spec=ServingSpec.model_validate({}),
        target=Target.model_validate({"schema": "search", "name": "docs"}),
        dsn_secret=SecretKeySelector(name="pg"),
        ann=AnnSpec(ef_search=120, probes=7),
    )
    d = serving.deployment(s, serving.ServedVersion(3, "/workspace/m", replicas=1), OperatorSettings(worker_image="w"))
    (container,) = d["spec"]["template"]["spec"]["containers"]
    args = cli.build_parser().parse_args(container["command"][1:])
    assert args.func is cli.cmd_serve and (args.model, args.version, args.search_target) == (
        "/workspace/m",
        3,
        "search.docs",
    )
    assert (args.ef_search, args.probes) == (120, 7)  # /search scans the view as the probes do (spec.ann)
    assert cli.DSN_ENV in {e["name"] for e in container["env"]}
    service = serving.service(s, 3)
    assert service["metadata"]["name"] == "docs-query"
    assert [p["name"] for p in service["spec"]["ports"]] == [kubectl.QUERY_PORT] and args.port == 8080
