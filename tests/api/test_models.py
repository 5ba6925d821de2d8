"""The API models: defaults, field-naming errors, mutual exclusion, condition bookkeeping."""

from __future__ import annotations

import datetime as dt

import pytest

from embedops.api.common import BaseStatus
from embedops.api.kinds import InvalidResource, parse_manifest


def manifest(kind: str, spec: dict, name: str = "x") -> dict:
    return {"apiVersion": "embedops.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def test_index_defaults_are_applied_and_round_trip_in_camel_case():
    r = parse_manifest(
        manifest(
            "EmbeddingIndex",
            {
                "model": {"name": "all-MiniLM-L6-v2"},
                "source": {"table": {"table": "docs"}},
                "target": {"name": "docs_vec"},
            },
        )
    )
    wire = r.spec.to_wire()
    assert wire["ann"] == {
        "method": "hnsw",
        "metric": "cosine",
        "vectorType": "vector",
        "m": 16,
        "efConstruction": 64,
        "efSearch": 40,
        "probes": 10,
    }
    assert wire["source"]["table"]["idColumn"] == "id"
    assert wire["keepVersions"] == 2 and wire["deletionPolicy"] == "Retain"
    assert type(r.spec).model_validate(wire) == r.spec


def test_errors_name_every_bad_field_in_the_users_spelling():
    with pytest.raises(InvalidResource) as err:
        parse_manifest(
            manifest(
                "EmbeddingIndex",
                {
                    "model": {"name": "m", "fineTuneJobRef": {"name": "j"}},
                    "source": {"table": {"table": "docs; DROP TABLE users"}},
                    "target": {"name": "v"},
                    "ann": {"efConstrucion": 10},
                },
            )
        )
    problems = "\n".join(err.value.problems)
    assert "spec.model: Value error, exactly one of model.fineTuneJobRef or model.name" in problems
    assert "spec.source.table.table: 'docs; DROP TABLE users' is not an SQL name (letters, digits" in problems
    assert "spec.ann.efConstrucion: unknown field" in problems


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"source": {}}, "exactly one of source.beir"),
        ({"source": {"beir": {"path": "a"}, "pairs": {"path": "b"}}}, "exactly one of source.beir"),
        ({"source": {"beir": {"path": "a"}}, "split": {"testFraction": 1.5}}, "spec.split.testFraction"),
    ],
)
def test_dataset_spec_rejections(spec, message):
    with pytest.raises(InvalidResource, match=message):
        parse_manifest(manifest("EmbeddingDataset", spec))


def test_finetune_job_checks_cached_loss_minibatch():
    with pytest.raises(InvalidResource, match="miniBatchSize must not exceed"):
        parse_manifest(
            manifest(
                "FineTuneJob",
                {
                    "datasetRef": {"name": "d"},
                    "loss": {"type": "CachedMultipleNegativesRankingLoss", "miniBatchSize": 64},
                    "training": {"batchSize": 32},
                },
            )
        )


def test_manifest_envelope_errors():
    with pytest.raises(InvalidResource, match="apiVersion: expected embedops.dev/v1alpha1"):
        parse_manifest({"apiVersion": "v1", "kind": "EmbeddingIndex", "metadata": {"name": "x"}})
    with pytest.raises(InvalidResource, match="kind: expected one of"):
        parse_manifest({"apiVersion": "embedops.dev/v1alpha1", "kind": "Index", "metadata": {"name": "x"}})
    with pytest.raises(InvalidResource, match="metadata.name: Field required"):
        parse_manifest({"apiVersion": "embedops.dev/v1alpha1", "kind": "EmbeddingIndex", "metadata": {}})


def test_condition_keeps_transition_time_while_status_is_unchanged():
    status = BaseStatus()
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
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
        parse_manifest(
            manifest(
                "EmbeddingIndex",
                {
                    "model": {"name": "m"},
                    "source": {"table": {"table": "docs"}},
                    "target": {"name": "v"},
                    "probe": {"datasetRef": {"name": "d"}, "path": "probe.jsonl"},
                },
            )
        )


def test_gpus_are_left_to_the_kind_when_unset():
    job = parse_manifest(manifest("FineTuneJob", {"datasetRef": {"name": "d"}, "resources": {"memory": "16Gi"}}))
    assert job.spec.resources.gpus is None and job.spec.resources.memory == "16Gi"


@pytest.mark.parametrize(
    "metadata, message",
    [
        ({"name": "../../Evil Name"}, "metadata.name: '../../Evil Name' is not a lower-case RFC 1123 name"),
        ({"name": "UPPER_case"}, "metadata.name: 'UPPER_case' is not a lower-case RFC 1123 name"),
        (
            {"name": "ok", "namespace": "/abs/path"},
            "metadata.namespace: '/abs/path' is not a lower-case RFC 1123 label",
        ),
        ({"name": "a.b", "namespace": "a.b"}, "metadata.namespace: 'a.b' is not a lower-case RFC 1123 label"),
        ({"name": 12}, "metadata.name: Input should be a valid string"),
        ({}, "metadata.name: Field required"),
        ({"name": "ok", "nmespace": "x"}, "metadata.nmespace: unknown field"),
        ({"name": "ok", "labels": {"team": 7}}, "metadata.labels.team: Input should be a valid string"),
    ],
)
def test_metadata_is_checked_as_the_api_server_checks_it(metadata, message):
    with pytest.raises(InvalidResource) as err:
        parse_manifest({**manifest("FineTuneJob", {"datasetRef": {"name": "d"}}), "metadata": metadata})
    assert message in str(err.value)


def test_unknown_top_level_keys_are_rejected_and_server_fields_accepted():
    with pytest.raises(InvalidResource, match="speck: unknown field"):
        parse_manifest({**manifest("FineTuneJob", {"datasetRef": {"name": "d"}}), "speck": {}})
    live = {**manifest("FineTuneJob", {"datasetRef": {"name": "d"}}), "status": {"phase": "Running"}}
    live["metadata"].update(
        uid="u",
        resourceVersion="7",
        generation=2,
        creationTimestamp="2026-11-27T00:00:00Z",
        managedFields=[{"manager": "kubectl"}],
    )
    assert parse_manifest(live).metadata["generation"] == 2


@pytest.mark.parametrize(
    "training, message",
    [
        ({"epochs": "3"}, "spec.training.epochs: Input should be a valid integer"),
        ({"epochs": 3.5}, "spec.training.epochs: Input should be a valid integer"),
        ({"learningRate": "2e-5"}, "spec.training.learningRate: Input should be a valid number"),
    ],
)
def test_types_are_as_strict_as_the_api_servers(training, message):
    with pytest.raises(InvalidResource, match=message):
        parse_manifest(manifest("FineTuneJob", {"datasetRef": {"name": "d"}, "training": training}))
    with pytest.raises(InvalidResource, match="spec.evaluation.requireImprovement: Input should be a valid boolean"):
        parse_manifest(
            manifest("FineTuneJob", {"datasetRef": {"name": "d"}, "evaluation": {"requireImprovement": "yes"}})
        )
    # An integer where a number is expected is fine, as it is for the API server.
    assert parse_manifest(manifest("FineTuneJob", {"datasetRef": {"name": "d"}, "training": {"learningRate": 1}}))


INDEX = {"model": {"name": "m"}, "source": {"table": {"table": "docs"}}}


@pytest.mark.parametrize(
    "target, message",
    [
        ({"name": "d" * 57}, "spec.target.name: String should have at most 56 characters"),
        ({"name": "Docs"}, "spec.target.name: 'Docs' is not a lower-case SQL name"),
        ({"name": "docs", "schema": "PUBLIC"}, "spec.target.schema: 'PUBLIC' is not a lower-case SQL name"),
        ({"name": "docs", "schema": "information_schema"}, "spec.target.schema: Value error, is reserved"),
        ({"name": "docs", "schema": "pg_catalog"}, "spec.target.schema: Value error, is reserved"),
        ({"name": "docs", "schema": "embedops"}, "spec.target.schema: Value error, is reserved"),
    ],
)
def test_targets_fit_every_version_and_stay_out_of_reserved_schemas(target, message):
    with pytest.raises(InvalidResource, match=message):
        parse_manifest(manifest("EmbeddingIndex", {**INDEX, "target": target}))


def test_the_longest_target_name_fits_its_last_version_table():
    from embedops.api.index import MAX_VERSION
    from embedops.store import names

    spec = parse_manifest(manifest("EmbeddingIndex", {**INDEX, "target": {"name": "d" * 56}})).spec
    assert len(names.version_table(spec.target.name, MAX_VERSION)) == 63


@pytest.mark.parametrize(
    "ann, message",
    [
        ({"method": "ivfflat", "lists": 1_000_000_000}, "spec.ann.lists: Input should be less than or equal to 32768"),
        ({"m": 40}, "ann.efConstruction must be at least twice ann.m"),
    ],
)
def test_index_parameters_stay_within_pgvectors_bounds(ann, message):
    with pytest.raises(InvalidResource, match=message):
        parse_manifest(manifest("EmbeddingIndex", {**INDEX, "target": {"name": "docs"}, "ann": ann}))
