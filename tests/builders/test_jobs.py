"""The pure builders: worker Jobs from specs, with no cluster."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from embedops import steps
from embedops.api.common import Resources, Scheduling, SecretKeySelector
from embedops.builders import naming
from embedops.builders.jobs import Owner, WorkerStep, worker_job
from embedops.settings import OperatorSettings

OWNER = Owner(kind="FineTuneJob", name="scifact-minilm", namespace="team-a", uid="0f9d1c9e-1111-2222-3333-444455556666")
SETTINGS = OperatorSettings(worker_image="registry.example/embedops-worker:1.2.3", workspace_claim="ws")


TRAIN = steps.TrainStep(spec={"datasetRef": {"name": "ds"}}, dataset_dir="/workspace/ds", output_dir="/workspace/x")


def _train_step(owner: Owner = OWNER, **overrides) -> WorkerStep:
    args = dict(owner=owner, key="abc123", config=TRAIN, gpus=1)
    args.update(overrides)
    return WorkerStep(**args)


def _embed_step(owner: Owner = OWNER, shards: int = 1, **overrides) -> WorkerStep:
    config = steps.EmbedStep(
        target={"name": "docs"}, source={"table": {"table": "docs"}}, model="m", embedding={"shards": shards}
    )
    return WorkerStep(owner=owner, key="k", config=config, **overrides)


def test_training_job_requests_gpus_and_passes_scheduling_through():
    scheduling = Scheduling.model_validate(
        {
            "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                        ]
                    }
                }
            },
            "priorityClassName": "ml-batch",
            "queueName": "team-a-gpus",
            "backoffLimit": 4,
            "activeDeadlineSeconds": 7200,
            "ttlSecondsAfterFinished": 600,
            "suspend": True,
            "serviceAccountName": "trainer",
        }
    )
    job = worker_job(_train_step(gpus=2, scheduling=scheduling, resources=Resources(cpu="8", memory="32Gi")), SETTINGS)
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"] == {
        "requests": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "2"},
        "limits": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "2"},
    }
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert pod["affinity"] == scheduling.affinity
    assert pod["priorityClassName"] == "ml-batch"
    assert pod["serviceAccountName"] == "trainer"
    # The user's toleration, plus the one every GPU pool's taint needs.
    assert {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"], spec["ttlSecondsAfterFinished"], spec["suspend"]) == (
        4,
        7200,
        600,
        True,
    )
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a-gpus"
    # Kueue reads the label from the Job; the pods do not need it.
    assert "kueue.x-k8s.io/queue-name" not in spec["template"]["metadata"]["labels"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]


def test_job_identity_owner_labels_and_command():
    job = worker_job(_train_step(), SETTINGS)
    meta = job["metadata"]
    assert meta["name"] == worker_job(_train_step(), SETTINGS)["metadata"]["name"]  # deterministic
    assert meta["name"].startswith("scifact-minilm-train-") and len(meta["name"]) <= 63
    assert meta["namespace"] == "team-a"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "embedops.dev/v1alpha1",
            "kind": "FineTuneJob",
            "name": "scifact-minilm",
            "uid": OWNER.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    labels = meta["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "embedops"
    assert labels["app.kubernetes.io/instance"] == "scifact-minilm"
    assert labels["app.kubernetes.io/component"] == "train"
    assert labels[naming.LABEL_OWNER_UID] == OWNER.uid
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/embedops-worker:1.2.3"
    cmd = container["command"]
    assert cmd[:3] == ["embedops", "worker", "train"]
    # The one place a step becomes text, and it reads back as the same step.
    assert steps.parse("train", json.loads(cmd[cmd.index("--spec-json") + 1])) == TRAIN
    assert cmd[cmd.index("--result") + 1] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    # Invalid config or data fails the Job at once instead of retrying.
    invalid, disrupted = job["spec"]["podFailurePolicy"]["rules"]
    assert invalid["action"] == "FailJob" and invalid["onExitCodes"]["values"] == [2]
    assert disrupted == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}


def test_new_inputs_mean_a_new_job_name():
    a = worker_job(_train_step(key="k1"), SETTINGS)["metadata"]["name"]
    b = worker_job(_train_step(key="k2"), SETTINGS)["metadata"]["name"]
    assert a != b


def test_long_owner_names_fit_and_stay_distinct():
    long_a = Owner(kind="EmbeddingIndex", name="a" * 200 + "-one", namespace="ns", uid="u1")
    long_b = Owner(kind="EmbeddingIndex", name="a" * 200 + "-two", namespace="ns", uid="u2")
    na, nb = worker_job(_embed_step(long_a), SETTINGS), worker_job(_embed_step(long_b), SETTINGS)
    assert len(na["metadata"]["name"]) <= 63 and len(nb["metadata"]["name"]) <= 63
    assert na["metadata"]["name"] != nb["metadata"]["name"]
    assert len(na["metadata"]["labels"]["app.kubernetes.io/instance"]) <= 63


def test_dsn_comes_from_the_secret_and_never_from_the_command():
    step = _embed_step(shards=4, dsn_secret=SecretKeySelector(name="pg", key="uri"))
    job = worker_job(step, SETTINGS)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "EMBEDOPS_DSN", "valueFrom": {"secretKeyRef": {"name": "pg", "key": "uri"}}} in container["env"]
    assert "postgres" not in json.dumps(container["command"])
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 4, 4)
    assert "nvidia.com/gpu" not in json.dumps(container.get("resources", {}))  # no GPUs unless asked
    assert "tolerations" not in job["spec"]["template"]["spec"]


def test_worker_pods_run_locked_down_with_the_workspace_mounted():
    job = worker_job(_train_step(), SETTINGS)
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = pod["containers"][0]["securityContext"]
    assert sc == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert {"name": "workspace", "persistentVolumeClaim": {"claimName": "ws"}} in pod["volumes"]
    assert {"name": "workspace", "mountPath": "/workspace"} in pod["containers"][0]["volumeMounts"]


def test_settings_from_environment():
    s = OperatorSettings.from_env(
        {"EMBEDOPS_WORKER_IMAGE": "x/y:1", "EMBEDOPS_RECONCILE_SECONDS": "2", "UNRELATED": "z"}
    )
    assert s.worker_image == "x/y:1" and s.reconcile_seconds == 2.0


def test_worker_pods_get_the_operators_default_cpu_and_memory():
    """The CPU limit is what a worker sizes its tokenizer pool by; a spec's own values win."""
    settings = SETTINGS.model_copy(update={"worker_cpu": "6", "worker_memory": "24Gi"})
    job = worker_job(_train_step(gpus=1), settings)
    resources = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "6", "memory": "24Gi", "nvidia.com/gpu": "1"} == resources["limits"]
    own = worker_job(_train_step(gpus=0, resources=Resources(cpu="2")), settings)
    assert own["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "2", "memory": "24Gi"}
    none = worker_job(_train_step(gpus=0), SETTINGS.model_copy(update={"worker_cpu": ""}))
    assert "resources" not in none["spec"]["template"]["spec"]["containers"][0]
    assert OperatorSettings.from_env({"EMBEDOPS_WORKER_CPU": "12"}).worker_cpu == "12"


def test_worker_resources_take_requests_and_limits_and_a_resource_still_sets_its_own():
    settings = OperatorSettings.from_env(
        {"EMBEDOPS_WORKER_RESOURCES": '{"requests": {"cpu": 2, "memory": "8Gi"}, "limits": {"memory": "12Gi"}}'}
    )
    job = worker_job(_train_step(gpus=0), settings)
    resources = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources == {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "12Gi"}}  # no worker_cpu 4
    own = worker_job(_train_step(gpus=1, resources=Resources(cpu="6")), settings)
    resources = own["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "6", "memory": "8Gi", "nvidia.com/gpu": "1"}
    assert resources["limits"] == {"cpu": "6", "memory": "12Gi", "nvidia.com/gpu": "1"}


def test_worker_resources_refuse_keys_other_than_requests_and_limits():
    with pytest.raises(ValidationError, match="only requests and limits"):
        OperatorSettings.from_env({"EMBEDOPS_WORKER_RESOURCES": '{"cpu": "2"}'})
    with pytest.raises(ValidationError, match="metadata and spec"):
        OperatorSettings.from_env({"EMBEDOPS_WORKER_POD_TEMPLATE": '{"volumes": []}'})


def test_worker_pods_pull_with_the_operators_image_pull_secrets():
    settings = OperatorSettings.from_env({"EMBEDOPS_WORKER_IMAGE_PULL_SECRETS": "regcred, mirror"})
    pod = worker_job(_train_step(), settings)["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
    assert "imagePullSecrets" not in worker_job(_train_step(), SETTINGS)["spec"]["template"]["spec"]


POD_TEMPLATE = {
    "metadata": {"labels": {"team": "search"}, "annotations": {"sidecar.istio.io/inject": "false"}},
    "spec": {
        "containers": [
            {
                "name": "worker",
                "env": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}, {"name": "HOME", "value": "/nope"}],
                "envFrom": [{"secretRef": {"name": "hf-token"}}],
                "volumeMounts": [{"name": "certs", "mountPath": "/etc/ssl/custom", "readOnly": True}],
                "resources": {"limits": {"ephemeral-storage": "20Gi"}},
            },
        ],
        "initContainers": [{"name": "log-shipper", "image": "fluent-bit:3", "restartPolicy": "Always"}],
        "volumes": [{"name": "certs", "configMap": {"name": "ca-bundle"}}, {"name": "tmp", "hostPath": {"path": "/x"}}],
        "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
        "nodeSelector": {"pool": "batch", "cloud.google.com/gke-accelerator": "nvidia-l4"},
        "imagePullSecrets": [{"name": "mirror"}],
        "dnsPolicy": "ClusterFirst",
    },
}


def test_the_worker_pod_template_merges_under_what_the_operator_renders():
    settings = OperatorSettings.from_env(
        {"EMBEDOPS_WORKER_POD_TEMPLATE": json.dumps(POD_TEMPLATE), "EMBEDOPS_WORKER_IMAGE_PULL_SECRETS": "regcred"}
    )
    scheduling = Scheduling.model_validate({"nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}})
    job = worker_job(_train_step(gpus=1, scheduling=scheduling), settings)
    template = job["spec"]["template"]
    assert template["metadata"]["labels"]["team"] == "search"
    assert template["metadata"]["labels"][naming.LABEL_STEP] == "train"  # the operator's labels kept
    assert template["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    pod = template["spec"]
    assert [c["name"] for c in pod["containers"]] == ["worker"]  # merged by name, the worker first
    (worker,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["HTTPS_PROXY"] == "http://proxy:3128" and env["HOME"] == "/tmp"  # the operator's value wins
    assert worker["env"][0]["name"] == "HF_HUB_OFFLINE"  # the operator's first: a template variable may use them
    assert worker["envFrom"] == [{"secretRef": {"name": "hf-token"}}]
    assert {"name": "certs", "mountPath": "/etc/ssl/custom", "readOnly": True} in worker["volumeMounts"]
    assert worker["resources"]["limits"]["ephemeral-storage"] == "20Gi"
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert worker["image"] == settings.worker_image and worker["command"][:2] == ["embedops", "worker"]
    assert pod["initContainers"] == POD_TEMPLATE["spec"]["initContainers"]  # a native sidecar: the Job still ends
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["certs"] == {"name": "certs", "configMap": {"name": "ca-bundle"}}
    assert volumes["tmp"] == {"name": "tmp", "emptyDir": {}}  # a volume the operator renders is replaced whole
    assert {"key": "spot", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"] == {"pool": "batch", "cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
    assert pod["dnsPolicy"] == "ClusterFirst"  # a field the operator does not set is taken as it is
    assert pod["restartPolicy"] == "Never"
    assert settings.worker_pod_template == POD_TEMPLATE  # merged into a copy


def test_no_pod_template_leaves_the_pod_as_rendered():
    job = worker_job(_train_step(), SETTINGS.model_copy(update={"worker_pod_template": {}}))
    assert job == worker_job(_train_step(), SETTINGS)


def test_a_train_step_on_several_gpus_runs_one_process_per_gpu_under_torchrun():
    cmd = worker_job(_train_step(gpus=4), SETTINGS)["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[:8] == [
        "embedops", "torchrun", "--standalone", "--nproc_per_node=4", "--no-python", "embedops", "worker", "train",
    ]  # fmt: skip
    assert steps.parse("train", json.loads(cmd[cmd.index("--spec-json") + 1])) == TRAIN
    # One GPU, or another worker on several, runs the worker itself.
    for step in (_train_step(gpus=1), _embed_step(gpus=2)):
        assert worker_job(step, SETTINGS)["spec"]["template"]["spec"]["containers"][0]["command"][0] == "embedops"
