"""A query-embedding Deployment's rollout and a Service's selected version, decided from what the API server says."""

from __future__ import annotations

from embedops.handlers.observe import observe_deployment, observe_service


def _deployment(wanted: int = 2, generation: int = 2, **status) -> dict:
    return {
        "metadata": {"name": "ix-serve-v1", "generation": generation, "annotations": {"embedops.dev/spec-hash": "h"}},
        "spec": {"replicas": wanted},
        "status": {"observedGeneration": 2, **status},
    }


def test_ready_means_rolled_out_as_applied():
    done = observe_deployment(_deployment(wanted=2, updatedReplicas=2, availableReplicas=2, replicas=2))
    assert done.ready and done.failed is None and done.spec_hash == "h"
    # A newer spec the controller has not seen, an old pod still there, too few available: not ready.
    assert not observe_deployment(_deployment(generation=3, updatedReplicas=2, availableReplicas=2)).ready
    assert not observe_deployment(_deployment(updatedReplicas=2, availableReplicas=3, replicas=3)).ready
    assert not observe_deployment(_deployment(updatedReplicas=2, availableReplicas=1, replicas=2)).ready
    assert observe_deployment(_deployment(wanted=0)).ready  # kept at zero


def test_a_passed_progress_deadline_or_a_replica_failure_is_a_failure():
    stalled = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "too slow"}
    got = observe_deployment(_deployment(updatedReplicas=1, conditions=[stalled]))
    assert not got.ready and got.failed == "ProgressDeadlineExceeded: too slow"
    quota = {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": "exceeded quota"}
    assert observe_deployment(_deployment(conditions=[quota])).failed == "FailedCreate: exceeded quota"


def test_a_services_version_is_read_from_its_selector():
    svc = {"metadata": {"name": "ix-query"}, "spec": {"selector": {"embedops.dev/version": "4"}}}
    assert observe_service(svc).version == 4 and observe_service(svc).spec_hash is None
    assert observe_service({"metadata": {"name": "x"}, "spec": {"selector": {}}}).version is None
