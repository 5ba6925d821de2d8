"""spec.generate on the control plane: the operator's prepare pod, run as written, asks a generator endpoint.

The pod's command and environment are taken as the API server holds them and run on this machine
(the kubelet's part: the API key resolved from its Secret into EMBEDOPS_GENERATOR_API_KEY); the
endpoint is an OpenAI-compatible server on loopback with scripted replies. The dataset has only
a corpus, reaches Prepared with the generation counts in its status, and the key is in no spec,
log or status.
"""

from __future__ import annotations

import json

from tests.e2e.conftest import run_pod_command, running_operator
from tests.workers.generate.chat_server import serve
from tests.workers.generate.corpus import sample_docs, title_query, write_documents

N_DOCS = 20
KEY = "sk-e2e-not-for-logs"


def test_a_corpus_only_dataset_is_prepared_by_its_pod_with_a_key_from_a_secret(kube, tmp_path):
    workspace = tmp_path / "workspace"
    write_documents(workspace / "docs.jsonl", N_DOCS)
    docs = sample_docs(N_DOCS)
    kube.core.create_namespaced_secret(kube.ns, {"metadata": {"name": "llm"}, "stringData": {"token": KEY}})
    with serve(lambda body, n: title_query(docs, body, bad_every=4)) as server:
        kube.apply(
            {
                "apiVersion": "embedops.dev/v1alpha1",
                "kind": "EmbeddingDataset",
                "metadata": {"name": "corpus"},
                "spec": {
                    "source": {"documents": {"path": "docs.jsonl"}},
                    "generate": {
                        "endpoint": {
                            "baseURL": server.url,
                            "model": "m",
                            "apiKeySecretRef": {"name": "llm", "key": "token"},
                        },
                        "queriesPerDocument": 1,
                    },
                    "hardNegatives": {"enabled": False},
                    "augment": {"titlePairs": False},
                },
            }
        )
        with running_operator(kube.ns, workspace_path=str(workspace)):
            job = kube.wait_job("prepare")
            (pod,) = kube.wait_running_pods(job.metadata.name)
            env = {e.name: e for e in pod.spec.containers[0].env}
            ref = env["EMBEDOPS_GENERATOR_API_KEY"].value_from.secret_key_ref
            assert (ref.name, ref.key) == ("llm", "token")
            result = run_pod_command(kube, pod, tmp_path)
            kube.finish(pod.metadata.name, result)
            status = kube.wait_ready("EmbeddingDataset", "corpus")["status"]

    assert set(server.auth) == {f"Bearer {KEY}"} and len(server.requests) == N_DOCS
    g = status["generation"]
    assert g["documentsSampled"] == N_DOCS and g["queriesGenerated"] == N_DOCS
    assert g["keptSpecific"] == N_DOCS - N_DOCS // 4 and g["trainQueries"] > 0
    assert g["validationOn"] == "generated" and status["counts"]["testQueries"] == g["testQueries"] > 0
    assert KEY not in json.dumps(status) + result + json.dumps(pod.to_dict(), default=str)
    assert (workspace / "embedops" / "embeddingdatasets" / "corpus" / "generations").is_dir()  # the cache
