"""The Helm chart, checked by real tools: helm lint and template, the API server's server-side
dry-run and diff, the operator running with nothing but the chart's RBAC, people's access through
the built-in view and edit roles, helm install, upgrade and uninstall (a re-install under another
release name keeps the CRDs and the resources; monitoring objects wait for their API).

The ServiceMonitor and PrometheusRule kinds come from the Prometheus Operator's own CRDs
(fetched from its Go module, pinned below), so their manifests are validated for real too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from embedops import steps
from embedops.builders.jobs import Owner, WorkerStep, worker_job
from embedops.settings import OperatorSettings
from tests.e2e.conftest import ROOT, _free_port, wait_for
from tests.e2e.test_operator import run_lifecycle

CHART = ROOT / "charts" / "embedops"
PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
# Every permission the operator has; the lifecycle test below shows they suffice, and a change
# here is a deliberate one. No Secrets, no Pods created, nothing deleted but superseded Jobs and an
# index's own query-embedding Deployments and Service (spec.serving).
RULES = [
    {
        "apiGroups": ["embedops.dev"],
        "resources": ["embeddingdatasets", "finetunejobs", "embeddingindexes"],
        "verbs": ["get", "list", "watch", "patch"],
    },
    {
        "apiGroups": ["embedops.dev"],
        "resources": ["embeddingdatasets/status", "finetunejobs/status", "embeddingindexes/status"],
        "verbs": ["patch"],
    },
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {
        "apiGroups": ["trainer.kubeflow.org"],
        "resources": ["trainjobs"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
]
ALL_ON = [
    "--set",
    "metrics.serviceMonitor.enabled=true",
    "--set",
    "metrics.prometheusRule.enabled=true",
    "--set",
    "metrics.dashboard.enabled=true",
]
# What `helm template` needs to render the ServiceMonitor and PrometheusRule: the chart renders
# them only where the cluster serves these kinds (helm install reads the cluster's API versions).
MONITORING_APIS = [
    "--api-versions",
    "monitoring.coreos.com/v1/ServiceMonitor",
    "--api-versions",
    "monitoring.coreos.com/v1/PrometheusRule",
]
KINDS = ["embeddingdatasets", "finetunejobs", "embeddingindexes"]
# What people get through the built-in roles (rbac.aggregateClusterRoles): read everything, write
# the specs with edit or admin, never the status, which is the operator's.
VIEW_RULES = [
    {
        "apiGroups": ["embedops.dev"],
        "resources": KINDS + [f"{k}/status" for k in KINDS],
        "verbs": ["get", "list", "watch"],
    }
]
EDIT_RULES = [
    {
        "apiGroups": ["embedops.dev"],
        "resources": KINDS,
        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"],
    },
    {"apiGroups": ["embedops.dev"], "resources": [f"{k}/status" for k in KINDS], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["services/proxy"], "verbs": ["get", "create"]},  # kubectl embedops search
]


def _run(
    cmd: list[str], env: dict[str, str] | None = None, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120, env=env)
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(cmd[:4])} ... failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="session")
def tools(cluster) -> dict[str, str]:
    env = dict(
        os.environ,
        KUBECONFIG=cluster["KUBECONFIG"],
        KUBECACHEDIR=cluster["KUBECACHEDIR"],
        HELM_CACHE_HOME=str(Path(cluster["KUBECONFIG"]).parent / "helm-cache"),
        HELM_CONFIG_HOME=str(Path(cluster["KUBECONFIG"]).parent / "helm-config"),
    )
    return {
        "helm": f"{cluster['EMBEDOPS_KUBE_BIN']}/helm",
        "kubectl": f"{cluster['EMBEDOPS_KUBE_BIN']}/kubectl",
        "env": env,
    }


def helm(tools, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return _run([tools["helm"], *args], env=tools["env"], check=check)


def kubectl(tools, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return _run([tools["kubectl"], *args], env=tools["env"], check=check, stdin=stdin)


def render(tools, namespace: str, *args: str) -> str:
    return helm(tools, "template", "embedops", str(CHART), "--namespace", namespace, *args).stdout


def docs_of(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def named(docs: list[dict], kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def container_of(docs: list[dict]) -> dict:
    (container,) = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def _apply_monitoring_crds(tools) -> None:
    """The Prometheus Operator's ServiceMonitor and PrometheusRule CRDs, from its Go module."""
    done = _run(["go", "mod", "download", "-json", PROMETHEUS_OPERATOR], env=dict(os.environ, GOFLAGS="-mod=mod"))
    folder = Path(json.loads(done.stdout)["Dir"]) / "example" / "prometheus-operator-crd"
    for kind in ("servicemonitors", "prometheusrules"):
        kubectl(tools, "apply", "--server-side", "-f", str(folder / f"monitoring.coreos.com_{kind}.yaml"))
    kubectl(
        tools,
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/servicemonitors.monitoring.coreos.com",
        "crd/prometheusrules.monitoring.coreos.com",
    )


@pytest.fixture(scope="session")
def monitoring_crds(tools, crds):
    _apply_monitoring_crds(tools)


def test_chart_lints_with_defaults_and_everything_on(tools):
    helm(tools, "lint", "--strict", str(CHART))
    helm(tools, "lint", "--strict", str(CHART), *ALL_ON, "--set", "watchNamespaces={a,b}")


def test_values_schema_rejects_a_misspelt_value(tools):
    done = helm(tools, "template", "x", str(CHART), "--set", "metrics.serviceMonitor.enabeld=true", check=False)
    assert done.returncode != 0 and "enabeld" in done.stderr


def test_rendered_manifests(tools):
    docs = docs_of(render(tools, "ops", *ALL_ON, *MONITORING_APIS))
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        ["CustomResourceDefinition"] * 3
        + ["ClusterRole"] * 3
        + [
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "PrometheusRule",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
        ]
    )
    crd = next(d for d in docs if d["kind"] == "CustomResourceDefinition")
    assert crd["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "-1"
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # The CRDs the chart ships are the generated ones, unchanged but for labels and annotations.
    shipped = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "CustomResourceDefinition"}
    generated = {
        d["metadata"]["name"]: d["spec"]
        for d in map(yaml.safe_load, map(Path.read_text, sorted((ROOT / "crds").glob("*.yaml"))))
    }
    assert shipped == generated
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deploy["spec"]["strategy"]["type"] == "Recreate" and deploy["spec"]["replicas"] == 1
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["resources"]["requests"] and container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["image"] == "ghcr.io/embedops/operator:0.1.0"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["EMBEDOPS_WORKER_IMAGE"] == "ghcr.io/embedops/worker:0.1.0"
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    alerts = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]
    dashboard = next(d for d in docs if d["kind"] == "ConfigMap")
    assert json.loads(dashboard["data"]["embedops.json"])["uid"] == "embedops"

    assert named(docs, "ClusterRole", "embedops")["rules"] == RULES
    assert "relabelings" not in next(d for d in docs if d["kind"] == "ServiceMonitor")["spec"]["endpoints"][0]

    scoped = docs_of(render(tools, "ops", "--set", "watchNamespaces={a,b}"))
    assert all(d["rules"] == RULES for d in scoped if d["kind"] == "Role")
    roles = sorted(
        (d["kind"], d["metadata"].get("namespace", "")) for d in scoped if d["kind"].startswith(("Role", "Cluster"))
    )
    # Nothing cluster-wide for the operator; the users' roles grant nothing until a namespace binds view or edit.
    assert roles == [
        ("ClusterRole", ""),
        ("ClusterRole", ""),
        ("Role", "a"),
        ("Role", "b"),
        ("RoleBinding", "a"),
        ("RoleBinding", "b"),
    ]
    assert [
        a
        for a in next(d for d in scoped if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0][
            "args"
        ]
        if a.startswith("--namespace")
    ] == ["--namespace=a", "--namespace=b"]


def test_users_roles_aggregate_into_view_edit_and_admin(tools):
    docs = docs_of(render(tools, "ops"))
    view, edit = named(docs, "ClusterRole", "embedops-view"), named(docs, "ClusterRole", "embedops-edit")
    assert view["rules"] == VIEW_RULES and edit["rules"] == EDIT_RULES

    def aggregated_to(role: dict) -> dict[str, str]:
        prefix = "rbac.authorization.k8s.io/aggregate-to-"
        return {k.removeprefix(prefix): v for k, v in role["metadata"]["labels"].items() if k.startswith(prefix)}

    assert aggregated_to(view) == {"view": "true"} and aggregated_to(edit) == {"edit": "true", "admin": "true"}
    for off in ("rbac.aggregateClusterRoles=false", "rbac.create=false"):
        docs = docs_of(render(tools, "ops", "--set", off))
        assert [d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRole"] == (
            [] if "create" in off else ["embedops"]
        ), off


def test_names_images_security_contexts_and_env_from_values(tools):
    digest = "sha256:" + "0" * 64
    docs = docs_of(
        render(
            tools,
            "ops",
            "--set",
            "fullnameOverride=vectors",
            "--set",
            f"image.digest={digest}",
            "--set",
            f"worker.image.digest={digest}",
            "--set",
            "worker.resources.cpu=8",
            "--set",
            "worker.resources.memory=16Gi",
            "--set",
            "extraEnv[0].name=HTTPS_PROXY,extraEnv[0].value=http://proxy:3128",
            "--set",
            "podSecurityContext.runAsUser=null",
            "--set",
            "podSecurityContext.fsGroup=2000",
            "--set",
            "securityContext.readOnlyRootFilesystem=false",
            "--set",
            "podAnnotations.a=b",
            "--set",
            "podLabels.team=search",
            *ALL_ON,
            *MONITORING_APIS,
        )
    )
    names = {d["metadata"]["name"] for d in docs if d["kind"] != "CustomResourceDefinition"}
    # The users' roles keep their names whatever the release: bindings to them outlive a reinstall.
    assert names == {"vectors", "embedops-view", "embedops-edit", "vectors-dashboard"}
    container = container_of(docs)
    assert container["image"] == f"ghcr.io/embedops/operator@{digest}"
    env = container["env"]
    assert {e["name"]: e.get("value") for e in env}["EMBEDOPS_WORKER_IMAGE"] == f"ghcr.io/embedops/worker@{digest}"
    assert [(e["name"], e["value"]) for e in env if e["name"] in ("EMBEDOPS_WORKER_CPU", "EMBEDOPS_WORKER_MEMORY")] == [
        ("EMBEDOPS_WORKER_CPU", "8"),
        ("EMBEDOPS_WORKER_MEMORY", "16Gi"),
    ]
    assert env[-1] == {"name": "HTTPS_PROXY", "value": "http://proxy:3128"}
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]
    assert pod["spec"]["securityContext"] == {
        "runAsNonRoot": True,
        "runAsGroup": 65532,
        "fsGroup": 2000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["securityContext"]["readOnlyRootFilesystem"] is False
    assert pod["metadata"]["annotations"] == {"a": "b"} and pod["metadata"]["labels"]["team"] == "search"
    # The operator-down alert matches job=~".*embedops.*"; the job is the Service's name.
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["relabelings"] == [{"targetLabel": "job", "replacement": "vectors-embedops"}]

    renamed = docs_of(render(tools, "ops", "--set", "nameOverride=vectors"))
    assert {d["metadata"]["name"] for d in renamed if d["kind"] == "Deployment"} == {"embedops-vectors"}
    deploy = next(d for d in renamed if d["kind"] == "Deployment")
    # Helm's conventions: the name label is the chart's name, the component says what it is.
    assert deploy["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "vectors",
        "app.kubernetes.io/instance": "embedops",
    }
    assert deploy["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    assert {d["metadata"]["name"] for d in renamed if d["kind"] == "ClusterRole"} >= {"embedops-view", "embedops-edit"}

    # Unset, the worker defaults are the operator's; an empty value means none.
    assert not [e for e in container_of(docs_of(render(tools, "ops")))["env"] if "WORKER_CPU" in e["name"]]
    env = container_of(docs_of(render(tools, "ops", "--set", "worker.resources.cpu=")))["env"]
    assert {"name": "EMBEDOPS_WORKER_CPU", "value": ""} in env


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "extraEnv[0].name=EMBEDOPS_WORKER_CPU,extraEnv[0].value=2"], "worker.resources.cpu"),
        (["--set", "image.digest=latest"], "/image/digest"),
        (["--set", "worker.resources.cpu=four"], "/worker/resources/cpu"),
        (["--set", "worker.resources.gpus=1"], "gpus"),
        (["--set", "fullnameOverride=Vectors"], "/fullnameOverride"),
        (["--set", "worker.resources.cpu=2,worker.resources.requests.cpu=2"], "not both"),
        (["--set", "worker.resources.requests.cpu=four"], "/worker/resources/requests/cpu"),
        (["--set", "worker.podTemplate.volumes[0].name=x"], "volumes"),
        (["--set", "worker.imagePullSecrets[0]=regcred"], "/worker/imagePullSecrets/0"),
    ],
)
def test_values_that_the_chart_refuses(tools, args, message):
    done = helm(tools, "template", "x", str(CHART), *args, check=False)
    assert done.returncode != 0 and message in done.stderr, done.stderr


def test_monitoring_objects_are_rendered_only_with_their_api(tools):
    """Without the Prometheus Operator's kinds the install goes on without them (the notes say
    so); `helm template --api-versions` renders them for GitOps. The dashboard is a ConfigMap."""
    kinds = [d["kind"] for d in docs_of(render(tools, "ops", *ALL_ON))]
    assert "ServiceMonitor" not in kinds and "PrometheusRule" not in kinds and "ConfigMap" in kinds
    kinds = [
        d["kind"]
        for d in docs_of(render(tools, "ops", *ALL_ON, "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"))
    ]
    assert "ServiceMonitor" in kinds and "PrometheusRule" not in kinds
    kinds = [d["kind"] for d in docs_of(render(tools, "ops", *ALL_ON, *MONITORING_APIS))]
    assert "ServiceMonitor" in kinds and "PrometheusRule" in kinds


def test_helm_template_says_what_it_left_out_and_can_be_forced(tools):
    """A GitOps repo rendered by `helm template` in CI has no cluster to ask: what is left out is
    named in the output, and metrics.forceMonitoringObjects renders it anyway."""
    text = render(tools, "ops", *ALL_ON)
    assert "# PrometheusRule left out: metrics.prometheusRule.enabled is true" in text
    assert "# ServiceMonitor left out" in text and "metrics.forceMonitoringObjects=true" in text
    forced = render(tools, "ops", *ALL_ON, "--set", "metrics.forceMonitoringObjects=true")
    kinds = [d["kind"] for d in docs_of(forced)]
    assert "ServiceMonitor" in kinds and "PrometheusRule" in kinds and "left out" not in forced
    assert "left out" not in render(tools, "ops")  # nothing enabled, nothing to say


def test_worker_pod_values_reach_the_jobs_the_operator_builds(tools):
    """worker.resources (requests/limits), worker.imagePullSecrets and worker.podTemplate become
    the operator's settings, and the worker Jobs it builds from them carry them."""
    template = {
        "metadata": {"annotations": {"sidecar.istio.io/inject": "false"}},
        "spec": {
            "containers": [{"name": "worker", "envFrom": [{"secretRef": {"name": "hf-token"}}]}],
            "initContainers": [{"name": "log-shipper", "image": "fluent/fluent-bit:3.2", "restartPolicy": "Always"}],
            "volumes": [{"name": "certs", "configMap": {"name": "ca-bundle"}}],
            "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }
    values = {
        "worker": {
            "resources": {"requests": {"cpu": 2, "memory": "8Gi"}, "limits": {"memory": "8Gi"}},
            "imagePullSecrets": [{"name": "regcred"}],
            "podTemplate": template,
        },
        "extraEnvFrom": [{"secretRef": {"name": "proxy-settings"}}],
    }
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(values, f)
        f.flush()
        container = container_of(docs_of(render(tools, "ops", "-f", f.name)))
    assert container["envFrom"] == [{"secretRef": {"name": "proxy-settings"}}]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert "EMBEDOPS_WORKER_CPU" not in env
    settings = OperatorSettings.from_env(env)
    assert settings.worker_image_pull_secrets == ("regcred",) and settings.worker_pod_template == template
    owner = Owner(kind="FineTuneJob", name="ft", namespace="default", uid="0f9d1c9e-1111-2222-3333-444455556666")
    config = steps.TrainStep(spec={"datasetRef": {"name": "ds"}}, dataset_dir="/workspace/d", output_dir="/workspace/m")
    job = worker_job(WorkerStep(owner=owner, key="k", config=config), settings)
    pod = job["spec"]["template"]
    assert pod["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    spec = pod["spec"]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["containers"][0]["resources"] == {
        "requests": {"cpu": "2", "memory": "8Gi"},
        "limits": {"memory": "8Gi"},
    }
    assert spec["containers"][0]["envFrom"] == [{"secretRef": {"name": "hf-token"}}]
    assert {"name": "certs", "configMap": {"name": "ca-bundle"}} in spec["volumes"]
    assert {"key": "spot", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    # What the merge gives is a Job the API server takes (a native sidecar included).
    kubectl(tools, "apply", "--server-side", "--dry-run=server", "-f", "-", stdin=json.dumps(job))


def test_the_deprecated_worker_cpu_and_memory_still_work_and_the_notes_say_so(tools):
    done = helm(
        tools,
        "install",
        "x",
        str(CHART),
        "--dry-run=client",
        "--set",
        "worker.resources.cpu=8,worker.resources.memory=16Gi",
    )
    assert "DEPRECATED: worker.resources.cpu and worker.resources.memory" in done.stdout
    assert "DEPRECATED" not in helm(tools, "install", "x", str(CHART), "--dry-run=client").stdout


def test_chart_applies_and_stays_in_sync(tools, monitoring_crds, nodes):
    """Server-side dry-run, then a real apply, then `kubectl diff`: nothing the server fills in
    differs from the chart (what Argo CD would otherwise show as a perpetual OutOfSync)."""
    ns = f"ops-{uuid.uuid4().hex[:6]}"
    kubectl(tools, "create", "namespace", ns)
    manifests = render(tools, ns, *ALL_ON, *MONITORING_APIS)
    apply = ["apply", "--server-side", "--force-conflicts", "--field-manager=argocd-controller", "-f", "-"]
    kubectl(tools, *apply, "--dry-run=server", stdin=manifests)
    # What the newer values render passes the server's validation too (not applied: other names).
    kubectl(
        tools,
        *apply,
        "--dry-run=server",
        stdin=render(
            tools,
            ns,
            *ALL_ON,
            *MONITORING_APIS,
            "--set",
            "fullnameOverride=vectors",
            "--set",
            "nameOverride=vectors",
            "--set",
            f"image.digest=sha256:{'0' * 64}",
            "--set",
            "extraEnv[0].name=HTTPS_PROXY,extraEnv[0].value=http://p",
            "--set",
            "podSecurityContext.fsGroup=2000",
            "--set",
            "extraEnvFrom[0].secretRef.name=proxy-settings",
            "--set",
            "worker.resources.requests.cpu=2,worker.resources.limits.memory=16Gi",
            "--set",
            "worker.imagePullSecrets[0].name=regcred",
        ),
    )
    kubectl(tools, *apply, stdin=manifests)
    diff = kubectl(
        tools,
        "diff",
        "--server-side",
        "--force-conflicts",
        "--field-manager=argocd-controller",
        "-f",
        "-",
        stdin=manifests,
        check=False,
    )
    assert diff.returncode == 0, f"the server changed what the chart applied:\n{diff.stdout}{diff.stderr}"
    # The Deployment is schedulable as rendered (kwok plays the kubelet: no container runs).
    kubectl(tools, "rollout", "status", "-n", ns, "deployment/embedops", "--timeout=60s")
    kubectl(tools, "delete", "namespace", ns, "--wait=false")
    kubectl(tools, "delete", "clusterrole,clusterrolebinding", "embedops", "--ignore-not-found")
    kubectl(tools, "delete", "clusterrole", "embedops-view", "embedops-edit", "--ignore-not-found")


def _token_kubeconfig(tools, cluster, namespace: str, account: str, path: Path) -> Path:
    token = kubectl(tools, "create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "sa",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": cluster["EMBEDOPS_KUBE_SERVER"],
                            "certificate-authority": cluster["EMBEDOPS_KUBE_CA"],
                        },
                    }
                ],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [{"name": "sa", "context": {"cluster": "c", "user": account, "namespace": namespace}}],
            }
        )
    )
    return path


def test_operator_runs_a_full_lifecycle_under_the_charts_rbac(tools, cluster, kube, tmp_path):
    """Install the chart's ServiceAccount and RBAC (watching the test namespace only), run the
    operator with that account's token, and take the three resources through their lifecycle."""
    release_ns = f"rel-{uuid.uuid4().hex[:6]}"
    kubectl(tools, "create", "namespace", release_ns)
    docs = [d for d in yaml.safe_load_all(render(tools, release_ns, "--set", f"watchNamespaces={{{kube.ns}}}")) if d]
    rbac = [d for d in docs if d["kind"] in ("ServiceAccount", "Role", "RoleBinding")]
    assert len(rbac) == 3
    kubectl(tools, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(rbac))
    account = next(d for d in rbac if d["kind"] == "ServiceAccount")["metadata"]["name"]
    who = f"system:serviceaccount:{release_ns}:{account}"

    # Least privilege: what the operator must never be able to do.
    for verb, what, where in (
        ("get", "secrets", kube.ns),
        ("list", "secrets", kube.ns),
        ("delete", "pods", kube.ns),
        ("create", "pods", kube.ns),
        ("delete", "embeddingindexes.embedops.dev", kube.ns),
        ("list", "embeddingindexes.embedops.dev", "default"),
        ("list", "jobs", "default"),
    ):
        done = kubectl(tools, "auth", "can-i", verb, what, "-n", where, f"--as={who}", check=False)
        assert done.stdout.strip() == "no", f"{who} can {verb} {what} in {where}"

    kubeconfig = _token_kubeconfig(tools, cluster, release_ns, account, tmp_path / "kubeconfig")
    health, metrics = _free_port(), _free_port()
    log = tmp_path / "operator.log"
    env = dict(
        os.environ, KUBECONFIG=str(kubeconfig), EMBEDOPS_RECONCILE_SECONDS="1", EMBEDOPS_METRICS_PORT=str(metrics)
    )
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "embedops.cli", "operator", "-n", kube.ns, f"--health-port={health}"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            "the operator's /healthz",
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=2).status == 200,
            timeout=60,
        )
        run_lifecycle(kube, serving=True)  # the serving Deployment and Service applied with the chart's rights
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5).read().decode()
        assert f'embedops_index_live_version{{kind="EmbeddingIndex",name="ix",namespace="{kube.ns}"}} 1.0' in text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        kubectl(tools, "delete", "namespace", release_ns, "--wait=false", check=False)
    output = log.read_text()
    assert "Forbidden" not in output and " 403" not in output, output
    assert "Traceback" not in output, output


INDEX = yaml.safe_dump(
    {
        "apiVersion": "embedops.dev/v1alpha1",
        "kind": "EmbeddingIndex",
        "metadata": {"name": "ix"},
        "spec": {
            "model": {"name": "sentence-transformers/all-MiniLM-L6-v2"},
            "source": {"table": {"table": "docs"}},
            "target": {"name": "docs"},
            "database": {"dsnSecretRef": {"name": "pg"}},
            "probe": {"path": "probe.jsonl"},
        },
    }
)


def as_account(tools, kubeconfig: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """kubectl with a ServiceAccount's own token: what that account may do, no impersonation."""
    return _run([tools["kubectl"], *args], env=dict(tools["env"], KUBECONFIG=str(kubeconfig)), check=False, stdin=stdin)


def _can(tools, kubeconfig: Path, verb: str, what: str) -> bool:
    return as_account(tools, kubeconfig, "auth", "can-i", verb, what).stdout.strip() == "yes"


def test_namespace_edit_and_view_users_get_the_kinds(tools, cluster, crds, tmp_path):
    """A ServiceAccount bound to the built-in `edit` role in a namespace creates, gets and lists an
    EmbeddingIndex there, and one bound to `view` lists it but cannot create one: the chart's
    ClusterRoles reach them through kube-controller-manager's clusterrole-aggregation controller."""
    suffix = uuid.uuid4().hex[:6]
    ns, release = f"team-{suffix}", f"users-{suffix}"
    index = "embeddingindexes.embedops.dev"
    roles = [
        d
        for d in docs_of(helm(tools, "template", release, str(CHART), "--namespace", "ops").stdout)
        if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith(("-view", "-edit"))
    ]
    assert len(roles) == 2
    kubectl(tools, "create", "namespace", ns)
    for account, role in (("editor", "edit"), ("viewer", "view")):
        kubectl(tools, "create", "serviceaccount", account, "-n", ns)
        kubectl(
            tools,
            "create",
            "rolebinding",
            account,
            f"--clusterrole={role}",
            f"--serviceaccount={ns}:{account}",
            "-n",
            ns,
        )
    kubectl(tools, "create", "rolebinding", "carol", "--clusterrole=admin", "--user=carol", "-n", ns)
    editor = _token_kubeconfig(tools, cluster, ns, "editor", tmp_path / "editor")
    viewer = _token_kubeconfig(tools, cluster, ns, "viewer", tmp_path / "viewer")
    # Without the chart's roles (unless another test's are still there) edit grants nothing on the kinds.
    others = kubectl(
        tools,
        "get",
        "clusterrole",
        "-o",
        "name",
        "-l",
        "app.kubernetes.io/part-of=embedops,rbac.authorization.k8s.io/aggregate-to-edit=true",
    ).stdout
    if not others.strip():
        assert not _can(tools, editor, "list", index) and not _can(tools, viewer, "list", index)
    try:
        kubectl(tools, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(roles))
        wait_for(
            "edit and view to aggregate the chart's roles",
            lambda: _can(tools, editor, "create", index) and _can(tools, viewer, "list", index),
            timeout=30,
        )

        created = as_account(tools, editor, "create", "-f", "-", stdin=INDEX)
        assert created.returncode == 0, created.stderr
        assert (
            as_account(tools, editor, "get", "embeddingindex", "ix", "-o", "name").stdout.strip()
            == "embeddingindex.embedops.dev/ix"
        )
        for account in (editor, viewer):
            listed = as_account(tools, account, "get", "embeddingindexes", "-o", "name")
            assert listed.returncode == 0 and listed.stdout.split() == ["embeddingindex.embedops.dev/ix"], listed.stderr
            assert as_account(tools, account, "get", "embeddingindex", "ix", "--subresource=status").returncode == 0
        for kind in ("embeddingdatasets", "finetunejobs"):
            assert _can(tools, editor, "deletecollection", f"{kind}.embedops.dev") and _can(
                tools, viewer, "watch", f"{kind}.embedops.dev"
            )

        refused = as_account(tools, viewer, "create", "-f", "-", stdin=INDEX.replace("name: ix", "name: iy"))
        assert refused.returncode != 0 and "forbidden" in refused.stderr, refused.stderr
        # The status is the operator's, even for editors.
        patched = as_account(
            tools,
            editor,
            "patch",
            "embeddingindex",
            "ix",
            "--subresource=status",
            "--type=merge",
            "-p",
            '{"status": {"phase": "Ready"}}',
        )
        assert patched.returncode != 0 and "forbidden" in patched.stderr, patched.stderr
        # admin aggregates edit's labels too; neither reaches another namespace.
        can = kubectl(tools, "auth", "can-i", "delete", index, "-n", ns, "--as=carol", check=False)
        assert can.stdout.strip() == "yes"
        can = kubectl(
            tools,
            "auth",
            "can-i",
            "list",
            index,
            "-n",
            "default",
            f"--as=system:serviceaccount:{ns}:editor",
            check=False,
        )
        assert can.stdout.strip() == "no"
    finally:
        kubectl(tools, "delete", "clusterrole", *(r["metadata"]["name"] for r in roles), "--ignore-not-found")
        kubectl(tools, "delete", "namespace", ns, "--wait=false")
    if not others.strip():
        wait_for("the rules to leave edit", lambda: not _can(tools, editor, "list", index), timeout=30)


def _crds_by_name(tools) -> dict[str, dict]:
    found = json.loads(kubectl(tools, "get", "crd", "-o", "json").stdout)["items"]
    return {c["metadata"]["name"]: c for c in found if c["spec"]["group"] == "embedops.dev"}


def _owner(crd: dict) -> tuple[str, str]:
    annotations = crd["metadata"].get("annotations") or {}
    return annotations.get("meta.helm.sh/release-name", ""), annotations.get("meta.helm.sh/release-namespace", "")


def test_a_release_of_another_name_takes_over_the_kept_crds(tools, crds):
    """helm uninstall keeps the CRDs (helm.sh/resource-policy: keep) and so every resource; the
    kept CRDs still name the uninstalled release, which a plain install of another release name
    refuses, and `--take-ownership` adopts (docs/install.md#crds-and-who-owns-them)."""
    suffix = uuid.uuid4().hex[:6]
    first, second, data = f"first-{suffix}", f"second-{suffix}", f"data-{suffix}"
    kubectl(tools, "create", "namespace", data)
    kubectl(tools, "apply", "-n", data, "-f", "-", stdin=INDEX)
    index_uid = json.loads(kubectl(tools, "get", "embeddingindex", "ix", "-n", data, "-o", "json").stdout)["metadata"][
        "uid"
    ]
    crd_uids = {name: c["metadata"]["uid"] for name, c in _crds_by_name(tools).items()}
    assert len(crd_uids) == 3

    def survived(owner: tuple[str, str]) -> None:
        kept = _crds_by_name(tools)
        assert {name: c["metadata"]["uid"] for name, c in kept.items()} == crd_uids
        assert {_owner(c) for c in kept.values()} == {owner}
        assert (
            json.loads(kubectl(tools, "get", "embeddingindex", "ix", "-n", data, "-o", "json").stdout)["metadata"][
                "uid"
            ]
            == index_uid
        )

    try:
        # The session's CRDs were created through the API, as `kubectl apply -f crds/` leaves them:
        # the first release adopts them too.
        helm(tools, "install", first, str(CHART), "-n", first, "--create-namespace", "--take-ownership")
        survived((first, first))
        uninstalled = helm(tools, "uninstall", first, "-n", first)
        assert "kept due to the resource policy" in uninstalled.stdout
        survived((first, first))

        refused = helm(tools, "install", second, str(CHART), "-n", second, "--create-namespace", check=False)
        assert refused.returncode != 0 and f'current value is "{first}"' in refused.stderr, refused.stderr
        helm(tools, "install", second, str(CHART), "-n", second, "--create-namespace", "--take-ownership")
        survived((second, second))
        # The users' roles the docs tell people to bind have the same names under the new release.
        for role in ("embedops-view", "embedops-edit"):
            got = json.loads(kubectl(tools, "get", "clusterrole", role, "-o", "json").stdout)
            assert got["metadata"]["labels"]["app.kubernetes.io/instance"] == second
        # Now the CRDs are the second release's: a plain upgrade keeps managing them.
        helm(tools, "upgrade", second, str(CHART), "-n", second)
        manifest = docs_of(helm(tools, "get", "manifest", second, "-n", second).stdout)
        assert sorted(d["metadata"]["name"] for d in manifest if d["kind"] == "CustomResourceDefinition") == sorted(
            crd_uids
        )
        helm(tools, "uninstall", second, "-n", second)
        survived((second, second))
    finally:
        for release in (first, second):
            helm(tools, "uninstall", release, "-n", release, "--ignore-not-found", check=False)
        kubectl(tools, "delete", "namespace", first, second, data, "--wait=false", "--ignore-not-found")


def test_monitoring_toggles_wait_for_the_prometheus_operator(tools, crds):
    """With the ServiceMonitor, PrometheusRule and dashboard turned on where the Prometheus
    Operator's CRDs are absent, helm install succeeds without the first two and says so; once the
    CRDs are installed, helm upgrade creates them."""
    monitoring = ["crd/servicemonitors.monitoring.coreos.com", "crd/prometheusrules.monitoring.coreos.com"]
    present = kubectl(tools, "get", *monitoring, "--ignore-not-found", "-o", "name").stdout.split()
    if present:  # another test installed them: take them away for this one
        kubectl(tools, "delete", *monitoring, "--ignore-not-found")
    release = f"mon-{uuid.uuid4().hex[:6]}"
    args = [release, str(CHART), "-n", release, "--set", "crds.enabled=false", *ALL_ON]
    try:
        installed = helm(tools, "install", *args, "--create-namespace")
        assert "WARNING: metrics.serviceMonitor.enabled is true" in installed.stdout
        assert "WARNING: metrics.prometheusRule.enabled is true" in installed.stdout
        kinds = [d["kind"] for d in docs_of(helm(tools, "get", "manifest", release, "-n", release).stdout)]
        assert "ServiceMonitor" not in kinds and "PrometheusRule" not in kinds and "ConfigMap" in kinds

        _apply_monitoring_crds(tools)
        upgraded = helm(tools, "upgrade", *args)
        assert "WARNING" not in upgraded.stdout
        kubectl(tools, "get", "-n", release, f"servicemonitor/{release}-embedops", f"prometheusrule/{release}-embedops")
    finally:
        helm(tools, "uninstall", release, "-n", release, "--ignore-not-found", check=False)
        kubectl(tools, "delete", "namespace", release, "--wait=false", "--ignore-not-found")
        if present:
            _apply_monitoring_crds(tools)
