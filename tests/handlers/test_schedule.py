"""When a resource needs a look with no event (embedops.reconcile.next_due), and the queue that keeps the time."""

from __future__ import annotations

import datetime as dt
import threading
import time

from embedops.handlers.workqueue import WorkQueue
from embedops.reconcile import next_due

NOW = dt.datetime(2026, 12, 3, 12, 0, 0, tzinfo=dt.UTC)
SPEC = {
    "model": {"name": "all-MiniLM-L6-v2"},
    "source": {"datasetRef": {"name": "ds"}},
    "target": {"name": "docs"},
    "database": {"dsnSecretRef": {"name": "pg"}},
    "probe": {"minRecall": 0.5, "intervalMinutes": 30},
    "drift": {"intervalMinutes": 60},
}


def _stamp(minutes_ago: float) -> str:
    return (NOW - dt.timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _index(probe_ago=None, drift_ago=None, built_ago=5.0, drift=True, live=True, **spec):
    version = {
        "version": 1,
        "table": "docs_v1",
        "model": "m",
        "rows": 10,
        "state": "Live" if live else "Ready",
        "createdAt": _stamp(built_ago),
    }
    status = {"liveVersion": 1, "versions": [version]}
    if probe_ago is not None:
        status["probe"] = {
            "version": 1,
            "k": 10,
            "recallAtK": 0.9,
            "mrrAt10": 0.8,
            "ndcgAt10": 0.8,
            "queries": 10,
            "passed": True,
            "checkedAt": _stamp(probe_ago),
        }
    if drift_ago is not None:
        status["drift"] = {
            "version": 1,
            "checkedAt": _stamp(drift_ago),
            "score": 0.01,
            "centroidDistance": 0.0,
            "driftedComponents": 0.0,
            "referenceRows": 10,
            "currentRows": 10,
            "drifted": False,
        }
    return {
        "kind": "EmbeddingIndex",
        "spec": {**SPEC, "drift": {**SPEC["drift"], "enabled": drift}, **spec},
        "status": status,
    }


def test_the_next_probe_is_due_one_interval_after_the_last():
    assert next_due(_index(probe_ago=10, drift=False), NOW) == NOW + dt.timedelta(minutes=20)


def test_a_versions_first_drift_run_is_one_interval_after_it_was_built():
    assert next_due(_index(probe_ago=1, built_ago=50), NOW) == NOW + dt.timedelta(minutes=10)
    assert next_due(_index(probe_ago=1, drift_ago=55, built_ago=500), NOW) == NOW + dt.timedelta(minutes=5)


def test_an_overdue_run_is_looked_at_again_when_its_next_slot_starts():
    # 12:00 is the start of a 30-minute slot: the planner had its chance now; the next is 12:30.
    assert next_due(_index(probe_ago=45, drift=False), NOW) == NOW + dt.timedelta(minutes=30)
    assert next_due(_index(drift=False), NOW + dt.timedelta(minutes=7)) == NOW + dt.timedelta(minutes=30)


def test_nothing_is_due_without_a_live_version_or_for_other_kinds():
    assert next_due(_index(live=False), NOW) is None
    assert next_due({"kind": "EmbeddingDataset", "spec": {}, "status": {}}, NOW) is None
    assert next_due({"kind": "EmbeddingIndex", "spec": {"bad": 1}, "status": {}}, NOW) is None


# -- the queue ----------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_key_waiting_keeps_its_earliest_time_and_runs_once():
    clock, ran = Clock(), []
    queue = WorkQueue(lambda key: ran.append(key), clock=clock)
    queue.add("a", 10)
    queue.add("a", 5)
    queue.add("a", 30)
    queue.add("b", 7)
    assert len(queue) == 2
    queue.forget("b")
    assert len(queue) == 1
    clock.now = 5
    assert queue._next() == "a" and len(queue) == 0  # at 5, not 10 or 30
    assert ran == []  # (run by a worker thread, below)


def test_the_queue_runs_keys_when_due_and_the_work_sets_the_next_look():
    done = threading.Event()
    runs: list[tuple[str, float]] = []
    start = time.monotonic()

    def work(key):
        runs.append((key, time.monotonic() - start))
        if len(runs) == 3:
            done.set()
        return 0.2 if key == "timer" and len(runs) < 3 else None

    queue = WorkQueue(work, workers=2)
    queue.start()
    try:
        queue.add("timer")
        assert done.wait(5)
    finally:
        queue.stop()
    assert [k for k, _ in runs] == ["timer"] * 3
    assert runs[1][1] - runs[0][1] >= 0.19 and runs[2][1] - runs[1][1] >= 0.19


def test_a_key_added_while_it_runs_runs_again_after_never_beside_itself():
    inside, most, count = [0], [0], [0]
    release, first = threading.Event(), threading.Event()

    def work(key):
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        count[0] += 1
        first.set()
        release.wait(2)
        inside[0] -= 1

    queue = WorkQueue(work, workers=4)
    queue.start()
    try:
        queue.add("k")
        assert first.wait(2)
        for _ in range(5):
            queue.add("k")  # a burst of events while it runs: one more run
        release.set()
        deadline = time.monotonic() + 3
        while count[0] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
    finally:
        queue.stop()
    assert count[0] == 2 and most[0] == 1
