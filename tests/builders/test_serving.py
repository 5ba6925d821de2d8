"""The query-embedding Deployment and Service of spec.serving, as rendered."""

from __future__ import annotations

from embedops.api.index import TEI_IMAGE_GPU, AnnSpec, ServingSpec, Target
from embedops.builders import serving
from embedops.builders.jobs import Owner
from embedops.settings import OperatorSettings

SETTINGS = OperatorSettings(worker_image="w:1")
OWNER = Owner(kind="EmbeddingIndex", name="docs", namespace="ns", uid="u1")
TARGET = Target.model_validate({"schema": "search", "name": "docs"})


def _serving(**spec) -> serving.Serving:
    return serving.Serving(owner=OWNER, spec=ServingSpec.model_validate(spec), target=TARGET, dsn_secret=None)


def test_the_embedops_engine_serves_one_versions_model_locked_down_and_probed():
    from embedops.api.common import SecretKeySelector

    s = serving.Serving(
        owner=OWNER,
        spec=ServingSpec.model_validate({"resources": {"gpus": 1, "cpu": "2"}, "readyTimeoutSeconds": 120}),
        target=TARGET,
        dsn_secret=SecretKeySelector(name="pg"),
        ann=AnnSpec(ef_search=100, probes=4),
    )
    d = serving.deployment(s, serving.ServedVersion(3, "/workspace/m", replicas=2), SETTINGS)
    assert d["metadata"]["name"] == "docs-serve-v3" and d["metadata"]["ownerReferences"][0]["uid"] == "u1"
    spec = d["spec"]
    assert spec["replicas"] == 2 and spec["progressDeadlineSeconds"] == 120
    assert spec["selector"]["matchLabels"] == {"embedops.dev/owner-uid": "u1", "embedops.dev/version": "3"}
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "w:1"
    assert c["command"] == [
        "embedops", "serve", "--model", "/workspace/m", "--version", "3",
        "--host", "0.0.0.0", "--port", "8080", "--search-target", "search.docs",
        "--ef-search", "100", "--probes", "4",
    ]  # fmt: skip
    assert {"name": "EMBEDOPS_DSN", "valueFrom": {"secretKeyRef": {"name": "pg", "key": "dsn"}}} in c["env"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["resources"]["limits"] == {"cpu": "2", "nvidia.com/gpu": "1"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert c["securityContext"]["readOnlyRootFilesystem"] and pod["securityContext"]["runAsNonRoot"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["readOnly"] is True
    assert spec["template"]["metadata"]["labels"]["embedops.dev/version"] == "3"


def test_tei_gets_its_image_and_a_bundled_model_copied_into_a_folder():
    d = serving.deployment(
        _serving(engine="tei", resources={"gpus": 1}),
        serving.ServedVersion(1, "all-MiniLM-L6-v2", replicas=1, bundled=True),
        SETTINGS,
    )
    pod = d["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == TEI_IMAGE_GPU and "command" not in c
    assert c["args"][:2] == ["--model-id", "/models/1"]
    (init,) = pod["initContainers"]
    assert init["image"] == "w:1" and init["command"][-2:] == ["all-MiniLM-L6-v2", "/models/1"]


def test_the_service_selects_one_version_and_its_hash_follows_the_selector():
    s = _serving()
    one, two = serving.service(s, 1), serving.service(s, 2)
    assert one["metadata"]["name"] == "docs-query"
    assert one["spec"]["selector"] == {"embedops.dev/owner-uid": "u1", "embedops.dev/version": "1"}
    assert one["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http"}]
    assert serving.spec_hash(one) != serving.spec_hash(two)
    assert (
        serving.deployment_name("x" * 70, 12).endswith("-serve-v12")
        and len(serving.deployment_name("x" * 70, 12)) <= 63
    )


def test_every_volume_a_container_mounts_is_in_the_pod_for_each_engine_and_model_kind():
    """The API server refuses a Deployment mounting a volume its pod lacks (found on the control plane: the
    embedops engine with a bundled model mounted TEI's copy of it)."""
    for engine in ("embedops", "tei"):
        for served in (
            serving.ServedVersion(1, "all-MiniLM-L6-v2", 1, bundled=True),
            serving.ServedVersion(2, "/m", 1),
        ):
            pod = serving.deployment(_serving(engine=engine), served, SETTINGS)["spec"]["template"]["spec"]
            volumes = {v["name"] for v in pod["volumes"]}
            for c in pod["containers"] + pod.get("initContainers", []):
                assert {m["name"] for m in c["volumeMounts"]} <= volumes, (engine, served, c["name"])
            copied = engine == "tei" and served.bundled
            assert ("models" in volumes) is copied and ("initContainers" in pod) is copied
