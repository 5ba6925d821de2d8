"""The Helm chart, checked by real tools: helm lint and template, the API server's server-side
dry-run and diff, and the operator running with nothing but the chart's RBAC.

The ServiceMonitor and PrometheusRule kinds come from the Prometheus Operator's own CRDs
(fetched from its Go module, pinned below), so their manifests are validated for real too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import ROOT, _free_port, wait_for
from tests.e2e.test_operator import run_lifecycle

CHART = ROOT / "charts" / "embedops"
PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
# Every permission the operator has; the lifecycle test below shows they suffice, and a change
# here is a deliberate one. No Secrets, no Pods created, nothing deleted but superseded Jobs.
RULES = [
    {"apiGroups": ["embedops.dev"], "resources": ["embeddingdatasets", "finetunejobs", "embeddingindexes"],
     "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["embedops.dev"],
     "resources": ["embeddingdatasets/status", "finetunejobs/status", "embeddingindexes/status"], "verbs": ["patch"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
ALL_ON = ["--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.prometheusRule.enabled=true",
          "--set", "metrics.dashboard.enabled=true"]


def _run(cmd: list[str], env: dict[str, str] | None = None, check: bool = True,
         stdin: str | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120, env=env)
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(cmd[:4])} ... failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="session")
def tools(cluster) -> dict[str, str]:
    env = dict(os.environ, KUBECONFIG=cluster["KUBECONFIG"], KUBECACHEDIR=cluster["KUBECACHEDIR"],
               HELM_CACHE_HOME=str(Path(cluster["KUBECONFIG"]).parent / "helm-cache"),
               HELM_CONFIG_HOME=str(Path(cluster["KUBECONFIG"]).parent / "helm-config"))
    return {"helm": f"{cluster['EMBEDOPS_KUBE_BIN']}/helm", "kubectl": f"{cluster['EMBEDOPS_KUBE_BIN']}/kubectl",
            "env": env}


def helm(tools, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return _run([tools["helm"], *args], env=tools["env"], check=check)


def kubectl(tools, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return _run([tools["kubectl"], *args], env=tools["env"], check=check, stdin=stdin)


def render(tools, namespace: str, *args: str) -> str:
    return helm(tools, "template", "embedops", str(CHART), "--namespace", namespace, *args).stdout


@pytest.fixture(scope="session")
def monitoring_crds(tools, crds):
    """The Prometheus Operator's ServiceMonitor and PrometheusRule CRDs, from its Go module."""
    done = _run(["go", "mod", "download", "-json", PROMETHEUS_OPERATOR],
                env=dict(os.environ, GOFLAGS="-mod=mod"))
    folder = Path(json.loads(done.stdout)["Dir"]) / "example" / "prometheus-operator-crd"
    for kind in ("servicemonitors", "prometheusrules"):
        kubectl(tools, "apply", "--server-side", "-f", str(folder / f"monitoring.coreos.com_{kind}.yaml"))
    kubectl(tools, "wait", "--for=condition=Established", "--timeout=30s",
            "crd/servicemonitors.monitoring.coreos.com", "crd/prometheusrules.monitoring.coreos.com")


def test_chart_lints_with_defaults_and_everything_on(tools):
    helm(tools, "lint", "--strict", str(CHART))
    helm(tools, "lint", "--strict", str(CHART), *ALL_ON, "--set", "watchNamespaces={a,b}")


def test_values_schema_rejects_a_misspelt_value(tools):
    done = helm(tools, "template", "x", str(CHART), "--set", "metrics.serviceMonitor.enabeld=true", check=False)
    assert done.returncode != 0 and "enabeld" in done.stderr


def test_rendered_manifests(tools):
    docs = [d for d in yaml.safe_load_all(render(tools, "ops", *ALL_ON)) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["CustomResourceDefinition"] * 3 + [
        "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "PrometheusRule", "Service",
        "ServiceAccount", "ServiceMonitor"])
    crd = next(d for d in docs if d["kind"] == "CustomResourceDefinition")
    assert crd["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "-1"
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # The CRDs the chart ships are the generated ones, unchanged but for labels and annotations.
    shipped = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "CustomResourceDefinition"}
    generated = {d["metadata"]["name"]: d["spec"] for d in map(yaml.safe_load, map(Path.read_text,
                                                                                 sorted((ROOT / "crds").glob("*.yaml"))))}
    assert shipped == generated
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deploy["spec"]["strategy"]["type"] == "Recreate" and deploy["spec"]["replicas"] == 1
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert container["resources"]["requests"] and container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["image"] == "ghcr.io/embedops/operator:0.1.0"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["EMBEDOPS_WORKER_IMAGE"] == "ghcr.io/embedops/worker:0.1.0"
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    alerts = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]
    dashboard = next(d for d in docs if d["kind"] == "ConfigMap")
    assert json.loads(dashboard["data"]["embedops.json"])["uid"] == "embedops"

    assert next(d for d in docs if d["kind"] == "ClusterRole")["rules"] == RULES

    scoped = [d for d in yaml.safe_load_all(render(tools, "ops", "--set", "watchNamespaces={a,b}")) if d]
    assert all(d["rules"] == RULES for d in scoped if d["kind"] == "Role")
    roles = sorted((d["kind"], d["metadata"]["namespace"]) for d in scoped if d["kind"].startswith(("Role", "Cluster")))
    assert roles == [("Role", "a"), ("Role", "b"), ("RoleBinding", "a"), ("RoleBinding", "b")]
    assert [a for a in next(d for d in scoped if d["kind"] == "Deployment")["spec"]["template"]["spec"][
        "containers"][0]["args"] if a.startswith("--namespace")] == ["--namespace=a", "--namespace=b"]


def test_chart_applies_and_stays_in_sync(tools, monitoring_crds, nodes):
    """Server-side dry-run, then a real apply, then `kubectl diff`: nothing the server fills in
    differs from the chart (what Argo CD would otherwise show as a perpetual OutOfSync)."""
    ns = f"ops-{uuid.uuid4().hex[:6]}"
    kubectl(tools, "create", "namespace", ns)
    manifests = render(tools, ns, *ALL_ON)
    apply = ["apply", "--server-side", "--force-conflicts", "--field-manager=argocd-controller", "-f", "-"]
    kubectl(tools, *apply, "--dry-run=server", stdin=manifests)
    kubectl(tools, *apply, stdin=manifests)
    diff = kubectl(tools, "diff", "--server-side", "--force-conflicts", "--field-manager=argocd-controller", "-f", "-",
                   stdin=manifests, check=False)
    assert diff.returncode == 0, f"the server changed what the chart applied:\n{diff.stdout}{diff.stderr}"
    # The Deployment is schedulable as rendered (kwok plays the kubelet: no container runs).
    kubectl(tools, "rollout", "status", "-n", ns, "deployment/embedops", "--timeout=60s")
    kubectl(tools, "delete", "namespace", ns, "--wait=false")
    kubectl(tools, "delete", "clusterrole,clusterrolebinding", "embedops", "--ignore-not-found")


def _token_kubeconfig(tools, cluster, namespace: str, account: str, path: Path) -> Path:
    token = kubectl(tools, "create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": {"server": cluster["EMBEDOPS_KUBE_SERVER"],
                                               "certificate-authority": cluster["EMBEDOPS_KUBE_CA"]}}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": account, "namespace": namespace}}],
    }))
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
    for verb, what, where in (("get", "secrets", kube.ns), ("list", "secrets", kube.ns),
                              ("delete", "pods", kube.ns), ("create", "pods", kube.ns),
                              ("delete", "embeddingindexes.embedops.dev", kube.ns),
                              ("list", "embeddingindexes.embedops.dev", "default"),
                              ("list", "jobs", "default")):
        done = kubectl(tools, "auth", "can-i", verb, what, "-n", where, f"--as={who}", check=False)
        assert done.stdout.strip() == "no", f"{who} can {verb} {what} in {where}"

    kubeconfig = _token_kubeconfig(tools, cluster, release_ns, account, tmp_path / "kubeconfig")
    health, metrics = _free_port(), _free_port()
    log = tmp_path / "operator.log"
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), EMBEDOPS_RECONCILE_SECONDS="1",
               EMBEDOPS_METRICS_PORT=str(metrics))
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "embedops.cli", "operator", "-n", kube.ns,
                                 f"--health-port={health}"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for("the operator's /healthz", lambda: urllib.request.urlopen(
            f"http://127.0.0.1:{health}/healthz", timeout=2).status == 200, timeout=60)
        run_lifecycle(kube)
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5).read().decode()
        assert f'embedops_index_live_version{{index="ix",namespace="{kube.ns}"}} 1.0' in text
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
