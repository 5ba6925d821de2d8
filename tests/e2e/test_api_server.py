"""The generated CRDs on a real kube-apiserver: they apply, explain, and reject bad resources."""

from __future__ import annotations

import json
import subprocess

import pytest
from kubernetes.client.exceptions import ApiException

from tests.e2e.conftest import wait_for

DATASET = {
    "apiVersion": "embedops.dev/v1alpha1",
    "kind": "EmbeddingDataset",
    "metadata": {"name": "ds"},
    "spec": {"source": {"beir": {"path": "data/scifact"}}},
}
INDEX = {
    "apiVersion": "embedops.dev/v1alpha1",
    "kind": "EmbeddingIndex",
    "metadata": {"name": "ix"},
    "spec": {
        "model": {"name": "sentence-transformers/all-MiniLM-L6-v2"},
        "source": {"table": {"table": "docs"}},
        "target": {"name": "docs"},
        "database": {"dsnSecretRef": {"name": "pg"}},
        "probe": {"path": "probe.jsonl"},
    },
}


def _kubectl_env(cluster) -> dict[str, str]:
    return {"KUBECONFIG": cluster["KUBECONFIG"], "KUBECACHEDIR": cluster["KUBECACHEDIR"]}


def _rejected(kube, doc) -> str:
    with pytest.raises(ApiException) as err:
        kube.apply(doc)
    assert err.value.status == 422
    return json.loads(err.value.body)["message"]


def test_crds_apply_and_explain(cluster, crds):
    assert sorted(crds) == [
        "embeddingdatasets.embedops.dev",
        "embeddingindexes.embedops.dev",
        "finetunejobs.embedops.dev",
    ]

    def explain() -> str:
        # The API server publishes a new CRD's OpenAPI a moment after it is Established.
        return subprocess.run(
            [f"{cluster['EMBEDOPS_KUBE_BIN']}/kubectl", "explain", "embeddingindex.spec.probe.minRecall"],
            capture_output=True,
            text=True,
            check=True,
            env=_kubectl_env(cluster),
        ).stdout

    assert "never cut over" in wait_for("kubectl explain", explain, timeout=30)
    out = subprocess.run(
        [f"{cluster['EMBEDOPS_KUBE_BIN']}/kubectl", "api-resources", "--categories=embedops", "-o", "name"],
        capture_output=True,
        text=True,
        check=True,
        env=_kubectl_env(cluster),
    ).stdout
    assert set(out.split()) == set(crds)


def test_schema_and_cel_rules_reject_bad_resources(kube):
    both = json.loads(json.dumps(DATASET))
    both["spec"]["source"]["pairs"] = {"path": "pairs.jsonl"}
    one_of = "exactly one of source.beir, source.pairs, source.postgres, source.documents, source.table or"
    assert one_of in _rejected(kube, both)

    bad_k = json.loads(json.dumps(INDEX))
    bad_k["spec"]["probe"]["k"] = 0
    assert "spec.probe.k" in _rejected(kube, bad_k)

    hostile = json.loads(json.dumps(INDEX))
    hostile["spec"]["target"]["name"] = 'docs"; DROP TABLE users; --'
    assert "spec.target.name" in _rejected(kube, hostile)

    # The same rules as `embedops validate`: reserved schemas, pgvector's bounds.
    reserved = json.loads(json.dumps(INDEX))
    reserved["spec"]["target"]["schema"] = "information_schema"
    assert "is reserved" in _rejected(kube, reserved)
    degree = json.loads(json.dumps(INDEX))
    degree["spec"]["ann"] = {"m": 40}
    assert "efConstruction must be at least twice ann.m" in _rejected(kube, degree)
    degree["spec"]["ann"] = {"m": 40, "efConstruction": 80}
    kube.apply(degree)


def test_unknown_fields_are_rejected_by_kubectl(cluster, kube):
    # A field in the wrong place (shards belongs under spec.embedding) is an error, not silently pruned:
    # kubectl asks the API server for strict field validation.
    doc = json.loads(json.dumps(INDEX))
    doc["metadata"]["namespace"] = kube.ns
    doc["spec"]["shards"] = 4
    out = subprocess.run(
        [f"{cluster['EMBEDOPS_KUBE_BIN']}/kubectl", "create", "-f", "-"],
        input=json.dumps(doc),
        capture_output=True,
        text=True,
        env=_kubectl_env(cluster),
    )
    assert out.returncode != 0
    assert 'unknown field "spec.shards"' in out.stderr


def test_immutable_target_and_database(kube):
    kube.apply(INDEX)
    message = None
    with pytest.raises(ApiException) as err:
        kube.patch("EmbeddingIndex", "ix", {"spec": {"target": {"name": "other"}}})
    message = json.loads(err.value.body)["message"]
    assert "is immutable" in message
    with pytest.raises(ApiException) as err:
        kube.patch("EmbeddingIndex", "ix", {"spec": {"database": {"dsnSecretRef": {"name": "elsewhere"}}}})
    assert "is immutable" in json.loads(err.value.body)["message"]
    # What may change, changes.
    kube.patch("EmbeddingIndex", "ix", {"spec": {"pinnedVersion": 1}})
    assert kube.get("EmbeddingIndex", "ix")["spec"]["pinnedVersion"] == 1
