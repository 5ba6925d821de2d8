"""The workers' results (embedops.results): their wire form, and what fits a pod's termination message."""

from __future__ import annotations

import json

import pytest

from embedops.api.conditions import Reason
from embedops.api.index import IndexVersion, ProbeResult
from embedops.results import (
    TERMINATION_MESSAGE_BYTES,
    CleanupResult,
    EmbedResult,
    PublishResult,
    TrainResult,
    describe_error,
    error_message,
    termination_message,
)


def probe(v: int) -> ProbeResult:
    return ProbeResult(
        version=v,
        k=10,
        recall_at_k=0.9,
        ndcg_at_10=0.7,
        mrr_at_10=0.6,
        queries=200,
        passed=True,
        reason=f"recall@10 0.9000 meets minRecall 0.8 and is within 0.02 of live v{v - 1}'s 0.9000",
        checked_at="2026-11-25T11:00:00Z",
    )


def published(count: int, live: int) -> PublishResult:
    """A publish result with `count` versions, newest first, each with its last probe."""
    versions = [
        IndexVersion(
            version=v,
            table=f"knowledge_base_v{v}",
            model=f"/workspace/embedops/finetunejobs/tuned-{v}/model",
            model_fingerprint="sha256:" + f"{v:064x}",
            dimensions=384,
            rows=100_000,
            state="Live" if v == live else "Retired",
            created_at="2026-11-25T10:00:00Z",
            probe=probe(v),
        )
        for v in range(count, 0, -1)
    ]
    return PublishResult(candidate=count, probe=probe(count), live_version=live, versions=versions)


def test_a_result_is_compact_camel_case_json_without_nones():
    result = EmbedResult(
        version=2,
        table="kb_v2",
        state="Ready",
        rows=10,
        shard_rows=10,
        embedded=4,
        resumed=True,
        seconds=1.5,
        rows_per_second=2.7,
    )
    text = termination_message(result)
    assert " " not in text and '"shardRows":10' in text and '"rowsPerSecond":2.7' in text
    assert list(json.loads(text)) == sorted(json.loads(text))
    assert EmbedResult.model_validate_json(text) == result
    assert termination_message(CleanupResult()) == '{"dropped":[]}'
    train = TrainResult(
        base_metrics={"ndcgAt10": 0.5, "mrrAt10": 0.4, "queries": 3},
        train_pairs=10,
        steps=5,
        start_time="2026-11-25T11:00:00Z",
        completion_time="2026-11-25T11:01:00Z",
        duration_seconds=60.0,
    )
    assert "model" not in json.loads(termination_message(train)), "a result without a model says nothing of one"


def test_a_small_publish_result_is_not_truncated():
    result = published(2, live=2)
    text = termination_message(result)
    assert PublishResult.model_validate_json(text) == result
    assert json.loads(text)["versionsTruncated"] is False


def test_a_long_publish_result_drops_old_probes_first():
    result = published(12, live=12)
    assert len(result.model_dump_json(by_alias=True, exclude_none=True)) > TERMINATION_MESSAGE_BYTES
    text = termination_message(result)
    assert len(text.encode()) <= TERMINATION_MESSAGE_BYTES
    back = PublishResult.model_validate_json(text)
    assert back.versions_truncated is True
    assert [v.version for v in back.versions] == list(range(12, 0, -1)), "every version still listed"
    assert back.versions[0].probe == probe(12), "the live version keeps its probe"
    assert all(v.probe is None for v in back.versions[1:])
    assert back.probe == probe(12) and back.live_version == 12


def test_a_very_long_publish_result_keeps_the_newest_versions_and_the_live_one():
    result = published(20, live=5)
    text = termination_message(result)
    assert len(text.encode()) <= TERMINATION_MESSAGE_BYTES
    back = PublishResult.model_validate_json(text)
    kept = [v.version for v in back.versions]
    assert back.versions_truncated is True and 5 in kept and len(kept) < 20
    assert kept == sorted(kept, reverse=True) and kept[0] == 20, "older versions are left out first"
    others = [v for v in range(20, 0, -1) if v != 5]
    assert [v for v in kept if v != 5] == others[: len(kept) - 1]
    live = next(v for v in back.versions if v.version == 5)
    assert live.state == "Live" and live.probe == probe(5)


def test_a_result_that_cannot_fit_is_an_error():
    huge = PublishResult(candidate=1, note_reason=Reason.GATE_FAILED, note="x" * TERMINATION_MESSAGE_BYTES)
    with pytest.raises(ValueError, match=r"result of \d+ bytes does not fit a termination message"):
        termination_message(huge)


def test_error_message_round_trips_through_describe_error():
    text = error_message("JobFailed", "CUDA out of memory")
    assert json.loads(text) == {"error": {"reason": "JobFailed", "message": "CUDA out of memory"}}
    assert describe_error(text) == "JobFailed: CUDA out of memory"
    long = error_message("InvalidSpec", "e" * 5000)
    assert json.loads(long)["error"]["message"] == "e" * 3000
    assert len(long.encode()) <= TERMINATION_MESSAGE_BYTES


def test_a_long_non_ascii_error_still_fits_a_termination_message():
    text = error_message("InvalidSpec", "é" * 5000)
    assert len(text.encode()) <= TERMINATION_MESSAGE_BYTES
    assert describe_error(text).startswith("InvalidSpec: ééé"), "still a readable document"


@pytest.mark.parametrize(
    ("text", "described"),
    [
        (None, None),
        ("", None),
        ("  \n", None),
        ("Traceback (most recent call last):\n  ...\nRuntimeError: boom\n", "RuntimeError: boom"),
        ('{"unexpected": 1}', '{"unexpected": 1}'),
        ('["error"]', '["error"]'),
        ('{"error": {"reason": "X"}}', '{"error": {"reason": "X"}}'),
        ("killed\n" + "y" * 900, "y" * 500),
    ],
)
def test_describe_error_falls_back_to_the_log_tail(text, described):
    assert describe_error(text) == described


def test_a_train_result_with_every_field_and_every_export_fits():
    scores = {"ndcgAt10": 0.123456789, "mrrAt10": 0.123456789, "recallAt10": 0.1234567, "recallAt100": 0.98765432}
    exports = [
        {
            "format": f,
            "variant": v,
            "file": p,
            "texts": 256,
            "minCosine": 0.9887416,
            "meanCosine": 0.9936411,
            "bound": b,
        }
        for f, v, p, b in [
            ("onnx", "fp32", "onnx/model.onnx", 0.999),
            ("onnx", "O3", "onnx/model_O3.onnx", 0.999),
            ("onnx", "int8", "onnx/model_qint8.onnx", 0.95),
            ("openvino", "fp32", "openvino/openvino_model.xml", 0.99),
        ]
    ]
    train = TrainResult.model_validate(
        {
            "model": {
                "location": "/workspace/embedops/finetunejobs/" + "a-rather-long-namespace-and-job-name" * 2 + "/model",
                "baseModel": "/workspace/models/" + "some-organisation-and-model-name" * 2,
                "dimensions": 1024,
                "fingerprint": "sha256:" + "f" * 64,
                "exports": exports,
            },
            "baseMetrics": scores | {"queries": 300},
            "tunedMetrics": scores | {"queries": 300},
            "ndcgGain": 0.0123456789,
            "validation": {"queries": 500, "documents": 20000, "baseNdcgAt10": 0.1234567, "bestNdcgAt10": 0.7654321},
            "trainPairs": 110_000,
            "plannedSteps": 2000,
            "steps": 2000,
            "worldSize": 16,
            "globalBatchSize": 1024,
            "resumedFromStep": 1600,
            "startTime": "2026-11-25T11:00:00Z",
            "completionTime": "2026-11-25T11:01:00Z",
            "durationSeconds": 12345.6,
        }
    )
    text = termination_message(train)
    assert len(text.encode()) <= TERMINATION_MESSAGE_BYTES // 2
    assert TrainResult.model_validate_json(text) == train
