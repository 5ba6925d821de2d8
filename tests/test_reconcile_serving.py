"""spec.serving in the planner: a Deployment per version, blue/green with the view. The version a cut-over would
serve must be Ready before the publish Job starts; the Service follows the live version the publish recorded;
rollbacks and pins switch both; a failed Deployment blocks the cut-over; an edited Service is a Warning."""

from __future__ import annotations

import datetime as dt

from embedops.builders import serving
from embedops.reconcile import Layout, Observed, ObservedDeployment, ObservedJob, ObservedService, plan
from tests.test_reconcile import NOW, SETTINGS, _embed_result, _publish_result, body, ready

SPEC = {
    "model": {"name": "/m"},
    "source": {"table": {"table": "docs"}},
    "target": {"name": "docs"},
    "database": {"dsnSecretRef": {"name": "pg"}},
    "probe": {"path": "probe.jsonl"},
    "drift": {"enabled": False},
    "sync": {"intervalMinutes": 0},
    "serving": {"replicas": 2},
}


def rolled_out(p, ready_: bool = True, failed: str | None = None) -> dict[str, ObservedDeployment]:
    """The Deployments a plan applied, as the cluster then shows them."""
    return {
        m["metadata"]["name"]: ObservedDeployment(
            m["metadata"]["name"], serving.spec_hash(m), ready=ready_, failed=failed
        )
        for m in p.apply
        if m["kind"] == "Deployment"
    }


def services_of(p) -> dict[str, ObservedService]:
    return {
        m["metadata"]["name"]: ObservedService(
            m["metadata"]["name"], serving.spec_hash(m), int(m["spec"]["selector"][serving.LABEL_VERSION])
        )
        for m in p.apply
        if m["kind"] == "Service"
    }


def test_a_version_is_cut_over_only_once_its_query_model_is_served_and_the_service_follows_the_view():
    ix = body("EmbeddingIndex", "ix", SPEC)
    (embed,) = plan(Observed(ix, now=NOW), SETTINGS).create
    jobs = {embed.name: ObservedJob(embed.name, "Succeeded", {0: _embed_result(1)}, step="embed")}

    # Built: the publish Job waits for v1's Deployment, rendered at the spec's replicas.
    waiting = plan(Observed(ix, jobs=jobs, now=NOW), SETTINGS)
    assert waiting.create == []
    assert waiting.status.condition("Progressing").reason == "ServingNotReady"
    (deployment,) = waiting.apply
    assert deployment["metadata"]["name"] == "ix-serve-v1" and deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["template"]["spec"]["containers"][0]["command"][:6] == [
        "embedops",
        "serve",
        "--model",
        "/m",
        "--version",
        "1",
    ]
    deployments = rolled_out(waiting, ready_=False)
    assert plan(Observed(ix, jobs=jobs, deployments=deployments, now=NOW), SETTINGS).create == []

    # Ready: the publish Job starts; nothing is applied again.
    deployments = rolled_out(waiting)
    started = plan(Observed(ix, jobs=jobs, deployments=deployments, now=NOW), SETTINGS)
    (publish,) = started.create
    assert publish.step == "publish" and started.apply == []
    ix["status"] = started.status.to_wire()

    # While the publish Job runs, v1's Deployment stays as it is (the cut-over may land at any moment).
    jobs[publish.name] = ObservedJob(publish.name, "Running", {}, step="publish")
    running = plan(Observed(ix, jobs=jobs, deployments=deployments, now=NOW), SETTINGS)
    assert running.create == [] and running.apply == [] and running.remove == []

    # The reconcile that records v1 live points the Service at v1's pods.
    jobs[publish.name] = ObservedJob(publish.name, "Succeeded", {0: _publish_result(1)}, step="publish")
    done = plan(Observed(ix, jobs=jobs, deployments=deployments, now=NOW), SETTINGS)
    assert ready(done) == ("True", "Serving") and done.status.live_version == 1
    (service,) = done.apply
    assert service["kind"] == "Service" and service["metadata"]["name"] == "ix-query"
    assert service["spec"]["selector"] == {"embedops.dev/owner-uid": "uid-ix", "embedops.dev/version": "1"}
    assert done.status.serving.version == 1 and done.status.serving.service == "ix-query"
    assert ("Normal", "ServingSwitched", "Service ix-query selects v1's query model, as the view does") in done.events
    ix["status"] = done.status.to_wire()

    # Steady state: nothing to apply, no status write.
    services = services_of(done)
    steady = plan(Observed(ix, jobs=jobs, deployments=deployments, services=services, now=NOW), SETTINGS)
    assert steady.apply == [] and steady.remove == [] and steady.status is None

    # A Service edited by hand is switched back, with a Warning.
    edited = {"ix-query": ObservedService("ix-query", "other", 7)}
    fixed = plan(Observed(ix, jobs=jobs, deployments=deployments, services=edited, now=NOW), SETTINGS)
    assert [m["kind"] for m in fixed.apply] == ["Service"]
    assert any(e[:2] == ("Warning", "ServingMismatch") and "selected v7" in e[2] for e in fixed.events)


def _serving_v1() -> tuple[dict, dict, dict, dict]:
    ix = body("EmbeddingIndex", "ix", SPEC)
    (embed,) = plan(Observed(ix, now=NOW), SETTINGS).create
    jobs = {embed.name: ObservedJob(embed.name, "Succeeded", {0: _embed_result(1)}, step="embed")}
    deployments = rolled_out(plan(Observed(ix, jobs=jobs, now=NOW), SETTINGS))
    (publish,) = plan(Observed(ix, jobs=jobs, deployments=deployments, now=NOW), SETTINGS).create
    jobs[publish.name] = ObservedJob(publish.name, "Succeeded", {0: _publish_result(1)}, step="publish")
    done = plan(Observed(ix, jobs=jobs, deployments=deployments, now=NOW), SETTINGS)
    ix["status"] = done.status.to_wire()
    return ix, jobs, deployments, services_of(done)


def test_a_failed_deployment_blocks_the_cut_over_with_its_reason_and_a_fix_unblocks_it():
    ix, jobs, deployments, services = _serving_v1()
    ix["spec"] = {**SPEC, "model": {"name": "/m2"}}
    ix["metadata"]["generation"] = 2
    (embed,) = plan(Observed(ix, jobs=jobs, deployments=deployments, services=services, now=NOW), SETTINGS).create
    jobs[embed.name] = ObservedJob(embed.name, "Succeeded", {0: _embed_result(2)}, step="embed")
    waiting = plan(Observed(ix, jobs=jobs, deployments=deployments, services=services, now=NOW), SETTINGS)
    assert [m["metadata"]["name"] for m in waiting.apply] == ["ix-serve-v2"]
    assert waiting.apply[0]["spec"]["template"]["spec"]["containers"][0]["command"][3] == "/m2"
    failed = {**deployments, **rolled_out(waiting, ready_=False, failed="ProgressDeadlineExceeded: no node")}
    blocked = plan(Observed(ix, jobs=jobs, deployments=failed, services=services, now=NOW), SETTINGS)
    assert blocked.create == [] and blocked.apply == []
    assert ready(blocked) == ("True", "Serving") and blocked.status.live_version == 1
    degraded = blocked.status.condition("Degraded")
    assert (degraded.status, degraded.reason) == ("True", "ServingFailed")
    assert "ix-serve-v2" in degraded.message and "ProgressDeadlineExceeded: no node" in degraded.message
    assert [e[:2] for e in blocked.events] == [("Warning", "ServingFailed")]
    assert blocked.status.serving.version == 1  # the Service stays with the view

    # An edit of spec.serving renders v2's Deployment anew, which is waited for again, then cut over.
    ix["spec"] = {**ix["spec"], "serving": {"replicas": 2, "scheduling": {"nodeSelector": {"pool": "cpu"}}}}
    ix["status"] = blocked.status.to_wire()
    again = plan(Observed(ix, jobs=jobs, deployments=failed, services=services, now=NOW), SETTINGS)
    assert again.create == [] and {m["metadata"]["name"] for m in again.apply} >= {"ix-serve-v2"}
    assert again.status.condition("Progressing").reason == "ServingNotReady"
    now_ready = {**failed, **rolled_out(again)}
    started = plan(Observed(ix, jobs=jobs, deployments=now_ready, services=services, now=NOW), SETTINGS)
    (publish,) = started.create
    assert publish.step == "publish"
    ix["status"] = started.status.to_wire()

    # While it runs, both Deployments stay up and the Service stays on v1; its result switches the Service.
    jobs[publish.name] = ObservedJob(publish.name, "Running", {}, step="publish")
    running = plan(Observed(ix, jobs=jobs, deployments=now_ready, services=services, now=NOW), SETTINGS)
    assert running.apply == [] and running.remove == []
    two = _publish_result(2)
    two["versions"].append({**_publish_result(1)["versions"][0], "state": "Retired"})
    jobs[publish.name] = ObservedJob(publish.name, "Succeeded", {0: two}, step="publish")
    done = plan(Observed(ix, jobs=jobs, deployments=now_ready, services=services, now=NOW), SETTINGS)
    assert done.remove == [] and done.status.live_version == 2
    applied = {m["metadata"]["name"]: m for m in done.apply}
    assert applied["ix-query"]["spec"]["selector"]["embedops.dev/version"] == "2"
    assert applied["ix-serve-v1"]["spec"]["replicas"] == 0  # kept for a rollback, at zero replicas


def test_the_live_deployment_failing_its_rollout_is_degraded_beside_ready_and_recovers():
    ix, jobs, deployments, services = _serving_v1()
    # spec.serving edited (a node pool no node has): v1's Deployment is applied anew and cannot roll out.
    ix["spec"] = {**SPEC, "serving": {"replicas": 2, "scheduling": {"nodeSelector": {"pool": "gone"}}}}
    ix["metadata"]["generation"] = 2
    edited = plan(Observed(ix, jobs=jobs, deployments=deployments, services=services, now=NOW), SETTINGS)
    assert [m["metadata"]["name"] for m in edited.apply] == ["ix-serve-v1"] and edited.create == []
    ix["status"] = edited.status.to_wire()
    failed = rolled_out(edited, ready_=False, failed="ProgressDeadlineExceeded: no node")
    stuck = plan(Observed(ix, jobs=jobs, deployments=failed, services=services, now=NOW), SETTINGS)
    assert ready(stuck)[0] == "True" and stuck.status.live_version == 1 and stuck.apply == []
    degraded = stuck.status.condition("Degraded")
    assert (degraded.status, degraded.reason) == ("True", "ServingFailed")
    assert "ix-serve-v1" in degraded.message and "live v1" in degraded.message and "no node" in degraded.message
    assert [e[:2] for e in stuck.events] == [("Warning", "ServingFailed")]
    ix["status"] = stuck.status.to_wire()

    # Fixed and rolled out: Degraded clears, with a Recovered event.
    ix["spec"] = SPEC
    ix["metadata"]["generation"] = 3
    fixed = plan(Observed(ix, jobs=jobs, deployments=failed, services=services, now=NOW), SETTINGS)
    ix["status"] = fixed.status.to_wire()
    recovered = plan(Observed(ix, jobs=jobs, deployments=rolled_out(fixed), services=services, now=NOW), SETTINGS)
    status = recovered.status if recovered.status is not None else fixed.status
    assert status.condition("Degraded").status == "False"
    assert any(e[1] == "Recovered" for e in fixed.events + recovered.events)

    # Only the pods' failure clears it: a failed rollout reported, then the same generation rolled out.
    ix["spec"] = {**SPEC, "serving": {"replicas": 2, "scheduling": {"nodeSelector": {"pool": "gone"}}}}
    ix["status"] = stuck.status.to_wire()
    ix["metadata"]["generation"] = 2
    later = plan(Observed(ix, jobs=jobs, deployments=rolled_out(edited), services=services, now=NOW), SETTINGS)
    assert later.status.condition("Degraded").status == "False"


def test_a_rollback_scales_the_old_version_up_first_and_versions_not_live_are_kept_at_zero():
    ix, jobs, deployments, services = _serving_v1()
    # v2 live, v1 retired: v1's Deployment is kept at zero replicas.
    two = _publish_result(2)
    two["versions"].append({**_publish_result(1)["versions"][0], "state": "Retired"})
    ix["status"]["versions"] = two["versions"]
    ix["status"]["liveVersion"] = 2
    steady = plan(Observed(ix, jobs=jobs, deployments=deployments, services=services, now=NOW), SETTINGS)
    replicas = {m["metadata"]["name"]: m["spec"]["replicas"] for m in steady.apply if m["kind"] == "Deployment"}
    assert replicas == {"ix-serve-v1": 0, "ix-serve-v2": 2}
    assert [m["spec"]["selector"]["embedops.dev/version"] for m in steady.apply if m["kind"] == "Service"] == ["2"]
    # (the Service had selected v1 while the status said v2: a Warning)
    assert any(e[1] == "ServingMismatch" for e in steady.events)
    ix["status"] = steady.status.to_wire()
    deployments, services = rolled_out(steady), services_of(steady)

    # Pin v1 (kubectl embedops rollback): v1 scales up, and only then is the publish Job started.
    ix["spec"] = {**SPEC, "pinnedVersion": 1}
    ix["metadata"]["generation"] = 3
    waiting = plan(Observed(ix, jobs=jobs, deployments=deployments, services=services, now=NOW), SETTINGS)
    assert waiting.create == [] and waiting.status.condition("Progressing").reason == "ServingNotReady"
    assert [(m["metadata"]["name"], m["spec"]["replicas"]) for m in waiting.apply] == [("ix-serve-v1", 2)]
    deployments = {**deployments, **rolled_out(waiting)}
    (publish,) = plan(Observed(ix, jobs=jobs, deployments=deployments, services=services, now=NOW), SETTINGS).create
    assert publish.step == "publish" and publish.config.pinned_version == 1


def test_serving_removed_deletes_its_objects_and_local_mode_plans_none():
    ix, jobs, deployments, services = _serving_v1()
    ix["spec"] = {k: v for k, v in SPEC.items() if k != "serving"}
    off = plan(Observed(ix, jobs=jobs, deployments=deployments, services=services, now=NOW), SETTINGS)
    assert off.apply == [] and off.remove == [("Deployment", "ix-serve-v1"), ("Service", "ix-query")]
    assert off.status.serving is None

    local = Layout(inputs="/in", outputs="/out", database_secrets=False, serving=False)
    ix = body("EmbeddingIndex", "ix", {**SPEC, "database": {}})
    (embed,) = plan(Observed(ix, now=NOW), SETTINGS, local).create
    jobs = {embed.name: ObservedJob(embed.name, "Succeeded", {0: _embed_result(1)}, step="embed")}
    (publish,) = plan(Observed(ix, jobs=jobs, now=NOW + dt.timedelta(seconds=1)), SETTINGS, local).create
    assert publish.step == "publish"
