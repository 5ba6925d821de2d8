"""`kubectl embedops` against the real API server: it reads status and writes only the spec and annotations."""

from __future__ import annotations

import json

from embedops.kubectl import main
from tests.e2e.test_operator import INDEX

VERSIONS = [
    {
        "version": 2,
        "table": "docs_v2",
        "model": "/workspace/m2",
        "rows": 600,
        "state": "Live",
        "probe": {
            "version": 2,
            "k": 10,
            "recallAtK": 0.91,
            "mrrAt10": 0.8,
            "ndcgAt10": 0.8,
            "queries": 100,
            "passed": True,
            "checkedAt": "2026-11-27T10:00:00Z",
        },
    },
    {"version": 1, "table": "docs_v1", "model": "/workspace/m1", "rows": 600, "state": "Retired"},
]


def _serving(kube) -> None:
    kube.apply(json.loads(json.dumps(INDEX)))
    kube.custom.patch_namespaced_custom_object_status(
        "embedops.dev",
        "v1alpha1",
        kube.ns,
        "embeddingindexes",
        "ix",
        {
            "status": {
                "liveVersion": 2,
                "versions": VERSIONS,
                "phase": "Ready",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "Serving",
                        "message": "serving v2 (600 rows)",
                        "lastTransitionTime": "2026-11-27T10:00:00Z",
                    }
                ],
            }
        },
    )


def test_the_plugin_reads_status_and_pins_rolls_back_reruns_and_probes(kube, capsys):
    _serving(kube)
    ns = ["-n", kube.ns]
    assert main([*ns, "status"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["KIND", "NAME", "READY", "PHASE", "REASON", "MESSAGE"]
    assert out[1].split()[:5] == ["EmbeddingIndex", "ix", "True", "Ready", "Serving"]
    assert main([*ns, "versions", "eix/ix"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:5] == ["v2", "Live", "600", "0.9100@10", "pass"] and lines[2].split()[:2] == [
        "v1",
        "Retired",
    ]

    assert main([*ns, "pin", "ix", "9"]) == 1
    assert "ix keeps v2, v1: v9 cannot be served" in capsys.readouterr().err
    assert main([*ns, "rollback", "ix"]) == 0
    assert kube.get("EmbeddingIndex", "ix")["spec"]["pinnedVersion"] == 1
    assert main([*ns, "unpin", "ix"]) == 0
    assert "pinnedVersion" not in kube.get("EmbeddingIndex", "ix")["spec"]

    assert main([*ns, "rerun", "ix"]) == 0 and main([*ns, "probe", "ix"]) == 0
    annotations = kube.get("EmbeddingIndex", "ix")["metadata"]["annotations"]
    assert {"embedops.dev/rerun", "embedops.dev/probe"} <= set(annotations)
    assert main([*ns, "status", "nothing"]) == 1
    assert "no EmbeddingDataset or FineTuneJob or EmbeddingIndex named 'nothing'" in capsys.readouterr().err
    # The status was written by the (absent) operator only: the plugin touched spec and annotations.
    assert kube.get("EmbeddingIndex", "ix")["status"]["liveVersion"] == 2
