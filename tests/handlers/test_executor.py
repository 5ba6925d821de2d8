"""The executor reading memory: a reconcile with nothing to do makes no request."""

from __future__ import annotations

import pytest

from embedops.handlers import executor, kube, memory
from tests.handlers.test_memory import _memory


def _index(status=None):
    return {
        "apiVersion": "embedops.dev/v1alpha1",
        "kind": "EmbeddingIndex",
        "metadata": {"name": "ix", "namespace": "ns", "uid": "uid-ix", "resourceVersion": "3", "generation": 1},
        "spec": {
            "model": {"name": "all-MiniLM-L6-v2"},
            "source": {"datasetRef": {"name": "ds"}},
            "target": {"name": "docs"},
            "database": {"dsnSecretRef": {"name": "pg"}},
            "probe": {"minRecall": 0.5},
        },
        "status": status or {},
    }


@pytest.fixture
def api(monkeypatch):
    """The API server: every request is recorded; status writes answer as the server would."""
    calls = []

    def refuse(name):
        def call(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} should come from memory")

        return call

    for name in ("get_object", "list_objects", "owned_jobs", "job_pods", "log_tail"):
        monkeypatch.setattr(kube, name, refuse(name))

    def replace_status(kind, namespace, name, old, new):
        calls.append("replace_status")
        return {"metadata": {"resourceVersion": "4"}, "status": new}

    monkeypatch.setattr(kube, "replace_status", replace_status)
    monkeypatch.setattr(kube, "post_event", lambda *args: calls.append("post_event"))
    yield calls
    monkeypatch.setattr(memory, "CURRENT", None)
    from embedops.metrics import METRICS

    METRICS.forget("EmbeddingIndex", "ns", "ix")


def test_a_waiting_index_is_reconciled_from_memory_and_the_second_look_costs_nothing(api, monkeypatch):
    known, _ = _memory(_index())
    monkeypatch.setattr(memory, "CURRENT", known)
    first = executor.reconcile_resource("EmbeddingIndex", "ns", "ix")
    assert api == ["replace_status"]  # the waiting status, once
    assert first.written["conditions"][0]["reason"] == "DependencyNotFound"
    assert first.look_again == executor.SETTINGS.reconcile_seconds and first.dependants == []
    # Its watch event has not arrived yet: memory lays our write over the cached object.
    second = executor.reconcile_resource("EmbeddingIndex", "ns", "ix")
    assert second.written is None and api == ["replace_status"]
    # ... and when the event comes back, it is recognised as our own write.
    echo = {**_index(), "status": first.written}
    assert known.unchanged(("EmbeddingIndex", "ns", "ix"), echo)


def test_a_failed_reconcile_is_retried_later_and_later(api, monkeypatch):
    monkeypatch.setattr(executor, "reconcile_resource", lambda *key: (_ for _ in ()).throw(RuntimeError("boom")))
    delays = [executor.safe_reconcile("EmbeddingIndex", "ns", "ix").look_again for _ in range(4)]
    assert delays == [5.0, 10.0, 20.0, 40.0]
    executor.forget(("EmbeddingIndex", "ns", "ix"))
    assert executor.safe_reconcile("EmbeddingIndex", "ns", "ix").look_again == 5.0
    executor.forget(("EmbeddingIndex", "ns", "ix"))
