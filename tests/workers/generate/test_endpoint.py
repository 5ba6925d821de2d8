"""The OpenAI-compatible client against a loopback server: replies, retries, back-off and failures."""

from __future__ import annotations

import socket

import pytest

from embedops.api.generate import GeneratorEndpoint
from embedops.workers.generate.cache import Reply
from embedops.workers.generate.endpoint import Client, Request, RequestFailed
from tests.workers.generate.chat_server import completion, serve

MESSAGES = ({"role": "user", "content": "Passage: x\nWrite one search query."},)


def client(url: str, waits: list[float] | None = None, **endpoint) -> Client:
    spec = GeneratorEndpoint.model_validate({"baseURL": url, "model": "m", **endpoint})
    sleep = waits.append if waits is not None else (lambda s: None)
    return Client(spec, "sk-secret", temperature=0.5, max_tokens=16, sleep=sleep)


def requests(n: int) -> list[Request]:
    return [Request(key=f"k{i}", messages=MESSAGES, seed=i) for i in range(n)]


def test_a_reply_has_its_text_and_token_counts_and_the_key_is_a_bearer_token():
    with serve(lambda body, n: "what is x") as server:
        (_, reply) = next(iter(client(server.url).run(requests(1))))
    assert reply == Reply("what is x", 50, 8)
    body = server.requests[0]
    assert body["model"] == "m" and body["messages"] == list(MESSAGES) and body["max_tokens"] == 16
    assert body["temperature"] == 0.5 and body["seed"] == 0
    assert server.auth == ["Bearer sk-secret"]


def test_429_then_success_waits_as_retry_after_says():
    def reply(body, n):
        return (429, {"Retry-After": "2"}, b"{}") if n < 2 else "ok"

    waits: list[float] = []
    with serve(reply) as server:
        [(_, outcome)] = list(client(server.url, waits).run(requests(1)))
    assert outcome == Reply("ok", 50, 8) and len(server.requests) == 3
    assert waits == [2.0, 2.0]


def test_5xx_backs_off_exponentially_then_fails_for_that_document_only():
    def reply(body, n):
        return (503, {}, b"busy") if body["seed"] == 0 else "fine"

    waits: list[float] = []
    with serve(reply) as server:
        outcomes = dict((r.key, o) for r, o in client(server.url, waits, maxRetries=3).run(requests(2)))
    assert isinstance(outcomes["k0"], RequestFailed) and "HTTP 503" in str(outcomes["k0"])
    assert outcomes["k1"] == Reply("fine", 50, 8)
    assert waits == [0.5, 1.0, 2.0]
    assert "sk-secret" not in str(outcomes["k0"])


def test_a_client_error_is_not_retried():
    with serve(lambda body, n: (400, {}, b'{"error": "bad"}')) as server:
        [(_, outcome)] = list(client(server.url).run(requests(1)))
    assert isinstance(outcome, RequestFailed) and "HTTP 400" in str(outcome) and len(server.requests) == 1


def test_malformed_json_is_a_failure_of_that_request():
    with serve(lambda body, n: (200, {}, b"{not json")) as server:
        [(_, outcome)] = list(client(server.url).run(requests(1)))
    assert isinstance(outcome, RequestFailed) and "malformed reply" in str(outcome)
    with serve(lambda body, n: (200, {}, b'{"choices": []}')) as server:
        [(_, outcome)] = list(client(server.url).run(requests(1)))
    assert isinstance(outcome, RequestFailed) and "malformed reply" in str(outcome)


def test_an_unreachable_endpoint_fails_each_request_after_its_retries():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    waits: list[float] = []
    [(_, outcome)] = list(client(f"http://127.0.0.1:{port}/v1", waits, maxRetries=2).run(requests(1)))
    assert isinstance(outcome, RequestFailed) and "did not answer" in str(outcome)
    assert waits == [0.5, 1.0]


def test_at_most_max_concurrency_requests_are_in_flight():
    with serve(lambda body, n: "q", delay=0.05) as server:
        outcomes = list(client(server.url, maxConcurrency=3).run(requests(12)))
    assert len(outcomes) == 12 and all(isinstance(o, Reply) for _, o in outcomes)
    assert server.max_in_flight <= 3


@pytest.mark.parametrize("value, expected", [("3", 3.0), ("0", 0.0), ("-5", 0.0), ("100000", 300.0), ("soon", None)])
def test_retry_after_values(value, expected):
    from embedops.workers.generate.endpoint import _retry_after

    assert _retry_after(value) == expected


def test_completion_helper_is_what_the_client_parses():
    from embedops.workers.generate.endpoint import parse_reply

    assert parse_reply(completion("x", 3, 4)) == Reply("x", 3, 4)
