"""The API models: defaults, field-naming errors, mutual exclusion, condition bookkeeping."""

from __future__ import annotations

import datetime as dt

import pytest

from embedops.api.common import BaseStatus
from embedops.api.kinds import InvalidResource, parse_manifest


def manifest(kind: str, spec: dict, name: str = "x") -> dict:
    return {"apiVersion": "embedops.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def test_index_defaults_are_applied_and_round_trip_in_camel_case():
    r = parse_manifest(manifest("EmbeddingIndex", {
        "model": {"name": "all-MiniLM-L6-v2"}, "source": {"table": {"table": "docs"}}, "target": {"name": "docs_vec"},
    }))
    wire = r.spec.to_wire()
    assert wire["ann"] == {"method": "hnsw", "metric": "cosine", "vectorType": "vector", "m": 16,
                           "efConstruction": 64, "efSearch": 40, "probes": 10}
    assert wire["source"]["table"]["idColumn"] == "id"
    assert wire["keepVersions"] == 2 and wire["deletionPolicy"] == "Retain"
    assert type(r.spec).model_validate(wire) == r.spec


def test_errors_name_every_bad_field_in_the_users_spelling():
    with pytest.raises(InvalidResource) as err:
        parse_manifest(manifest("EmbeddingIndex", {
            "model": {"name": "m", "fineTuneJobRef": {"name": "j"}},
            "source": {"table": {"table": "docs; DROP TABLE users"}},
            "target": {"name": "v"},
            "ann": {"efConstrucion": 10},
        }))
    problems = "\n".join(err.value.problems)
    assert "spec.model: Value error, exactly one of model.fineTuneJobRef or model.name" in problems
    assert "spec.source.table.table: String should match pattern" in problems
    assert "spec.ann.efConstrucion: unknown field" in problems


@pytest.mark.parametrize("spec, message", [
    ({"source": {}}, "exactly one of source.beir"),
    ({"source": {"beir": {"path": "a"}, "pairs": {"path": "b"}}}, "exactly one of source.beir"),
    ({"source": {"beir": {"path": "a"}}, "split": {"testFraction": 1.5}}, "spec.split.testFraction"),
])
def test_dataset_spec_rejections(spec, message):
    with pytest.raises(InvalidResource, match=message):
        parse_manifest(manifest("EmbeddingDataset", spec))


def test_finetune_job_checks_cached_loss_minibatch():
    with pytest.raises(InvalidResource, match="miniBatchSize must not exceed"):
        parse_manifest(manifest("FineTuneJob", {
            "datasetRef": {"name": "d"},
            "loss": {"type": "CachedMultipleNegativesRankingLoss", "miniBatchSize": 64},
            "training": {"batchSize": 32},
        }))


def test_manifest_envelope_errors():
    with pytest.raises(InvalidResource, match="apiVersion: expected embedops.dev/v1alpha1"):
        parse_manifest({"apiVersion": "v1", "kind": "EmbeddingIndex", "metadata": {"name": "x"}})
    with pytest.raises(InvalidResource, match="kind: expected one of"):
        parse_manifest({"apiVersion": "embedops.dev/v1alpha1", "kind": "Index", "metadata": {"name": "x"}})
    with pytest.raises(InvalidResource, match="metadata.name: required"):
        parse_manifest({"apiVersion": "embedops.dev/v1alpha1", "kind": "EmbeddingIndex", "metadata": {}})


def test_condition_keeps_transition_time_while_status_is_unchanged():
    status = BaseStatus()
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    status.set_condition("Ready", "False", "Building", "v1", generation=1, now=t0)
    status.set_condition("Ready", "False", "Probing", "v1", generation=1, now=t0 + dt.timedelta(minutes=5))
    assert status.condition("Ready").last_transition_time == "2026-01-01T00:00:00Z"
    assert status.condition("Ready").reason == "Probing"
    status.set_condition("Ready", "True", "Serving", "v1", generation=2, now=t0 + dt.timedelta(minutes=9))
    ready = status.condition("Ready")
    assert ready.last_transition_time == "2026-01-01T00:09:00Z" and ready.observed_generation == 2
    assert status.to_wire()["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:09:00Z"


def test_probe_set_is_a_dataset_or_a_file_not_both():
    with pytest.raises(InvalidResource, match="set at most one of probe.datasetRef or probe.path"):
        parse_manifest(manifest("EmbeddingIndex", {
            "model": {"name": "m"}, "source": {"table": {"table": "docs"}}, "target": {"name": "v"},
            "probe": {"datasetRef": {"name": "d"}, "path": "probe.jsonl"},
        }))


def test_gpus_are_left_to_the_kind_when_unset():
    job = parse_manifest(manifest("FineTuneJob", {"datasetRef": {"name": "d"}, "resources": {"memory": "16Gi"}}))
    assert job.spec.resources.gpus is None and job.spec.resources.memory == "16Gi"
