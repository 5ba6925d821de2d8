"""What the operator remembers between watch events: embedops.handlers.memory, .jobs and .locks."""

from __future__ import annotations

import threading
import time

from kopf._core.engines.indexing import OperatorIndexer

from embedops.handlers import jobs, memory
from embedops.handlers.locks import KeyedLocks


def _body(kind, name, spec=None, status=None, rv="1", uid=None, annotations=None):
    return {
        "apiVersion": "embedops.dev/v1alpha1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": uid or f"uid-{name}",
            "resourceVersion": rv,
            "annotations": annotations or {},
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": spec or {},
        "status": status or {},
    }


INDEX = _body(
    "EmbeddingIndex",
    "ix",
    {
        "model": {"fineTuneJobRef": {"name": "ft"}},
        "source": {"datasetRef": {"name": "ds"}},
        "probe": {"datasetRef": {"name": "qs"}},
    },
)
FINETUNE = _body("FineTuneJob", "ft", {"datasetRef": {"name": "ds"}})


def _memory(*bodies, jobs_=()):
    """A Memory over kopf's own index type, filled as kopf's indexers fill it."""
    indexers = [OperatorIndexer() for _ in range(3)]
    for body in bodies:
        key = ("ns", body["metadata"]["name"], body["metadata"]["uid"])
        indexers[0].replace(key, memory.index_resource(body))
        indexers[1].replace(key, memory.index_references(body))
    for job in jobs_:
        indexers[2].replace(("ns", job["metadata"]["name"], job["metadata"]["uid"]), memory.index_job(job))
    return memory.Memory(*(i.index for i in indexers)), indexers


def test_who_refers_to_a_dataset_comes_from_the_index_not_a_listing():
    known, indexers = _memory(INDEX, FINETUNE, _body("EmbeddingDataset", "ds"))
    assert known.referrers("EmbeddingDataset", "ns", "ds") == [
        ("EmbeddingIndex", "ns", "ix"),
        ("FineTuneJob", "ns", "ft"),
    ]
    assert known.referrers("FineTuneJob", "ns", "ft") == [("EmbeddingIndex", "ns", "ix")]
    assert known.referrers("EmbeddingDataset", "ns", "qs") == [("EmbeddingIndex", "ns", "ix")]
    assert known.referrers("EmbeddingDataset", "ns", "other") == []
    # An edit that drops a reference drops it from the index (kopf replaces the object's values).
    edited = _body("EmbeddingIndex", "ix", {"model": {"name": "m"}, "source": {"datasetRef": {"name": "ds"}}})
    indexers[1].replace(("ns", "ix", "uid-ix"), memory.index_references(edited))
    assert known.referrers("FineTuneJob", "ns", "ft") == []
    assert known.referrers("EmbeddingDataset", "ns", "qs") == []


def test_a_resource_is_read_from_memory_without_its_managed_fields():
    known, _ = _memory(INDEX)
    got = known.body("EmbeddingIndex", "ns", "ix")
    assert got["spec"] == INDEX["spec"] and "managedFields" not in got["metadata"]
    assert known.body("EmbeddingIndex", "ns", "missing") is None


def test_our_status_write_is_seen_before_its_watch_event_arrives():
    known, indexers = _memory(_body("EmbeddingDataset", "ds", status={"phase": "Pending"}, rv="5"))
    answer = _body("EmbeddingDataset", "ds", status={"phase": "Running"}, rv="6")
    known.wrote(("EmbeddingDataset", "ns", "ds"), answer)
    assert known.body("EmbeddingDataset", "ns", "ds")["status"] == {"phase": "Running"}
    # The watch catches up: memory is the watch's again (and a status written by someone else wins).
    indexers[0].replace(
        ("ns", "ds", "uid-ds"),
        memory.index_resource(_body("EmbeddingDataset", "ds", status={"phase": "Failed"}, rv="7")),
    )
    assert known.body("EmbeddingDataset", "ns", "ds")["status"] == {"phase": "Failed"}
    assert len(known) == 0


def test_the_event_of_our_own_status_write_needs_no_reconcile():
    known, _ = _memory()
    key = ("EmbeddingDataset", "ns", "ds")
    after = _body("EmbeddingDataset", "ds", {"source": {"beir": {"path": "a"}}}, {"phase": "Running"}, rv="6")
    assert not known.unchanged(key, after)  # never reconciled
    known.reconciled(key, after)
    # Our write comes back with a new resourceVersion and kopf's own annotation: nothing changed.
    echo = _body(
        "EmbeddingDataset",
        "ds",
        {"source": {"beir": {"path": "a"}}},
        {"phase": "Running"},
        rv="7",
        annotations={"embedops.dev/last-handled-configuration": "{}"},
    )
    assert known.unchanged(key, echo)
    for change in (
        _body("EmbeddingDataset", "ds", {"source": {"beir": {"path": "b"}}}, {"phase": "Running"}),
        _body(
            "EmbeddingDataset",
            "ds",
            {"source": {"beir": {"path": "a"}}},
            {"phase": "Running"},
            annotations={"embedops.dev/rerun": "1"},
        ),
        _body("EmbeddingDataset", "ds", {"source": {"beir": {"path": "a"}}}, {"phase": "Failed"}),
    ):
        assert not known.unchanged(key, change)
    known.forget(key)
    assert not known.unchanged(key, echo) and len(known) == 0


def test_jobs_are_indexed_by_their_owners_uid():
    job = {"metadata": {"name": "j", "namespace": "ns", "uid": "ju", "labels": {"embedops.dev/owner-uid": "uid-ds"}}}
    known, _ = _memory(jobs_=[job])
    assert [j["metadata"]["name"] for j in known.jobs("uid-ds")] == ["j"]
    assert known.jobs("uid-other") == []
    assert memory.index_job({"metadata": {"name": "x", "labels": {}}}) is None


# -- pods and logs: read only when something changed -------------------------------------------


class FakeApi:
    def __init__(self):
        self.pods: list = []
        self.tail = 'progress={"task": "Training steps", "done": 1, "rate": 1.0}'
        self.calls: list[str] = []
        self.now = 1000.0

    def list_pods(self, namespace, job):
        self.calls.append("pods")
        return self.pods

    def read_tail(self, namespace, pod):
        self.calls.append("log")
        return self.tail


def _job(status, uid="ju"):
    return {"metadata": {"name": "j", "namespace": "ns", "uid": uid}, "spec": {}, "status": status}


def _observer(api, recheck=2.0):
    return jobs.JobObserver(
        recheck_seconds=recheck,
        progress_seconds=120,
        clock=lambda: api.now,
        list_pods=api.list_pods,
        read_tail=api.read_tail,
    )


def test_pods_are_listed_when_the_jobs_status_changes_and_logs_read_when_it_starts_and_then_when_due():
    api = FakeApi()
    observer = _observer(api)
    assert observer.observe([_job({})])[1] is None and api.calls == []  # no pod yet: nothing to list
    api.pods = [{"metadata": {"name": "p"}, "status": {"phase": "Running"}}]
    got, look = observer.observe([_job({"active": 1, "ready": 1})])
    assert got["j"].state == "Running" and got["j"].report.progress.done == 1
    assert api.calls == ["pods", "log"] and look == 120
    api.now += 60
    for _ in range(5):  # nothing changed: nothing read
        got, look = observer.observe([_job({"active": 1, "ready": 1})])
    assert api.calls == ["pods", "log"] and look == 60 and got["j"].report.progress.done == 1
    api.now += 60  # progress is due
    observer.observe([_job({"active": 1, "ready": 1})])
    assert api.calls == ["pods", "log", "log"]
    api.pods = [{"metadata": {"name": "p"}, "status": {"phase": "Succeeded"}}]
    done = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    got, look = observer.observe([_job(done)])
    assert got["j"].state == "Succeeded" and look is None and api.calls[-1] == "pods"
    api.now += 3600
    observer.observe([_job(done)])
    assert api.calls.count("pods") == 2  # a finished Job's pods never change
    observer.forget("ju")
    assert len(observer) == 0


def test_a_pending_pod_is_looked_at_again_less_and_less_often():
    api = FakeApi()
    api.pods = [{"metadata": {"name": "p"}, "status": {"phase": "Pending"}}]
    observer = _observer(api, recheck=2.0)
    looks = []
    for _ in range(4):
        _, look = observer.observe([_job({"active": 1})])
        looks.append(look)
        api.now += look
    assert looks == [2.0, 4.0, 8.0, 16.0] and api.calls == ["pods"] * 4


# -- locks --------------------------------------------------------------------------------------


def test_the_lock_map_holds_only_the_keys_in_use():
    locks = KeyedLocks()
    for i in range(100):
        with locks.hold(("EmbeddingIndex", "ns", f"ix{i}")):
            assert len(locks) == 1
    assert len(locks) == 0


def test_a_key_is_held_by_one_thread_at_a_time():
    locks, inside, most = KeyedLocks(), [0], [0]

    def work():
        with locks.hold("k"):
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            time.sleep(0.01)
            inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1 and len(locks) == 0
