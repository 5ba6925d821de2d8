"""The real bundled generator, SmolLM2-135M-Instruct, served over loopback and asked by the production client.

The model is loaded once per process (`local.load`), so this test and local-mode runs with
`generate.model` share it. Loading takes ~20-45 s on a 2-core CPU, hence one test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from embedops.api.generate import BUNDLED_GENERATOR, GeneratorEndpoint, PromptSpec
from embedops.prepared import Doc
from embedops.workers.generate import local, prompt
from embedops.workers.generate.cache import Reply
from embedops.workers.generate.endpoint import Client, Request
from tests.workers.generate.chat_server import completion, serve
from tests.workers.generate.corpus import sample_docs


@pytest.fixture(scope="session")
def smollm2() -> local.LocalGenerator:
    try:
        folder, gguf = local.resolve(BUNDLED_GENERATOR, Path("."))
    except local.GeneratorNotFound as err:
        pytest.skip(str(err))
    return local.LocalGenerator(folder, gguf, temperature=0.7, max_tokens=16, batch_size=2)


def test_the_bundled_model_answers_the_production_client_over_http(smollm2):
    def reply(body, n):
        [out] = smollm2.complete([Request(key=str(n), messages=tuple(body["messages"]), seed=body["seed"])])
        return 200, {}, completion(out.text, out.tokens_in, out.tokens_out)

    docs = [Doc(id=d["_id"], text=d["text"], title=d["title"]) for d in sample_docs(2)]
    requests = [
        Request(key=d.id, messages=prompt.messages(PromptSpec(), prompt.BUILT_IN_EXAMPLES, d), seed=i)
        for i, d in enumerate(docs)
    ]
    with serve(reply) as server:
        endpoint = GeneratorEndpoint.model_validate({"baseURL": server.url, "model": BUNDLED_GENERATOR})
        outcomes = dict(Client(endpoint, None, temperature=0.7, max_tokens=24).run(requests))
    assert len(outcomes) == 2 and all(isinstance(o, Reply) for o in outcomes.values())
    assert all(o.text.strip() and o.tokens_in > 100 and 0 < o.tokens_out <= 16 for o in outcomes.values())
