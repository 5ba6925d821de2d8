"""A real control plane for the e2e tests: kube-apiserver, etcd, kube-controller-manager,
kube-scheduler and kwok fake nodes, started by hack/cluster.sh for the session.

kwok plays the kubelet: a scheduled pod goes Running, and a test ends it with the exit code
and termination message it wants (annotations, see hack/cluster.sh). Two fake nodes: one
with 2 `nvidia.com/gpu` (tainted, as GPU pools are) and one with CPUs only.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The operator's settings are read when its handlers are imported: set them first.
METRICS_PORT = _free_port()
os.environ.update(
    {
        "EMBEDOPS_RECONCILE_SECONDS": "1",
        "EMBEDOPS_METRICS_PORT": str(METRICS_PORT),
        "EMBEDOPS_WORKER_IMAGE": "embedops-worker:test",
    }
)

pytestmark = pytest.mark.e2e


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 60, interval: float = 0.25) -> Any:
    """Poll `fn` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as err:  # noqa: BLE001 - keep polling, report the last error
            last = err
        else:
            if last:
                return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> Iterator[dict[str, str]]:
    folder = tmp_path_factory.mktemp("cluster") / "c"
    started = time.monotonic()
    subprocess.run([str(ROOT / "hack/cluster.sh"), "up", str(folder)], check=True)
    print(f"control plane up in {time.monotonic() - started:.1f}s")
    env = dict(line.split("=", 1) for line in (folder / "env").read_text().splitlines() if "=" in line)
    os.environ["KUBECONFIG"] = env["KUBECONFIG"]
    # The kubernetes client reads $KUBECONFIG once, at import, and kopf's login calls
    # load_kube_config() with that default: point it at this cluster too.
    from kubernetes.config import kube_config

    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = env["KUBECONFIG"]
    try:
        yield env
    finally:
        subprocess.run([str(ROOT / "hack/cluster.sh"), "down", str(folder)], check=False)


@pytest.fixture(scope="session")
def api(cluster):
    from kubernetes import client, config

    config.load_kube_config(config_file=cluster["KUBECONFIG"])
    return client.ApiClient()


@pytest.fixture(scope="session")
def crds(api):
    """The generated CRDs, applied and Established."""
    from kubernetes import client

    ext = client.ApiextensionsV1Api(api)
    names = []
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        ext.create_custom_resource_definition(doc)
        names.append(doc["metadata"]["name"])

    def established():
        return all(
            any(
                c.type == "Established" and c.status == "True"
                for c in ext.read_custom_resource_definition(n).status.conditions or []
            )
            for n in names
        )

    wait_for("CRDs Established", established, timeout=30)
    return names


@pytest.fixture(scope="session")
def nodes(api):
    """Two kwok nodes: gpu-0 (2 GPUs, tainted nvidia.com/gpu) and cpu-0 (no GPUs)."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    common = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    for name, gpus in (("gpu-0", "2"), ("cpu-0", None)):
        capacity = dict(common, **({"nvidia.com/gpu": gpus} if gpus else {}))
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {
                    "kubernetes.io/hostname": name,
                    "type": "kwok",
                    **({"nvidia.com/gpu.present": "true"} if gpus else {}),
                },
            },
            "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]} if gpus else {},
            "status": {"capacity": capacity, "allocatable": capacity},
        }
        core.create_node(node)
    wait_for(
        "kwok nodes Ready",
        lambda: all(
            any(c.type == "Ready" and c.status == "True" for c in core.read_node(n).status.conditions or [])
            for n in ("gpu-0", "cpu-0")
        ),
        timeout=30,
    )
    return ["gpu-0", "cpu-0"]


@pytest.fixture
def namespace(api, crds, nodes) -> Iterator[str]:
    """A fresh namespace with the workspace claim (bound to a PV) the worker pods mount."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    core.create_persistent_volume(
        {
            "metadata": {"name": f"ws-{name}"},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "hostPath": {"path": f"/tmp/embedops-ws-{name}"},
                "claimRef": {"namespace": name, "name": "embedops-workspace"},
            },
        }
    )
    core.create_namespaced_persistent_volume_claim(
        name,
        {
            "metadata": {"name": "embedops-workspace"},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "volumeName": f"ws-{name}",
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    wait_for(
        "workspace claim Bound",
        lambda: core.read_namespaced_persistent_volume_claim("embedops-workspace", name).status.phase == "Bound",
        timeout=30,
    )
    # The default ServiceAccount must exist before pods can be created in the namespace.
    wait_for("default ServiceAccount", lambda: core.read_namespaced_service_account("default", name), timeout=30)
    yield name
    core.delete_namespace(name)  # from now on nothing (a Job's controller) creates pods in it
    # Pods of a test whose worker never ended (kwok's kubelet holds them Running until told) would keep
    # their node's GPUs while the namespace terminates: removed at once, so the next test finds them free.
    for pod in core.list_namespaced_pod(name).items:
        with contextlib.suppress(client.ApiException):
            core.delete_namespaced_pod(pod.metadata.name, name, grace_period_seconds=0)
    core.delete_persistent_volume(f"ws-{name}")


@contextmanager
def running_operator(namespace: str, **settings: str) -> Iterator[Any]:
    """The operator (kopf, in this process) watching `namespace`."""
    import kopf.testing

    from embedops.handlers import executor

    saved = executor.SETTINGS
    if settings:
        executor.SETTINGS = executor.SETTINGS.model_copy(update=settings)
    try:
        with kopf.testing.KopfRunner(
            ["run", "--standalone", "--namespace", namespace, "-m", "embedops.handlers"],
            timeout=60,
        ) as runner:
            yield runner
    finally:
        executor.SETTINGS = saved
    assert runner.exception is None, runner.output
    assert "Traceback" not in runner.output, runner.output


@pytest.fixture
def operator(namespace):
    with running_operator(namespace) as runner:
        yield runner


class Kube:
    """Small helpers over the kubernetes client for the tests."""

    def __init__(self, api, namespace: str):
        from kubernetes import client

        self.api, self.ns = api, namespace
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def apply(self, doc: dict[str, Any]) -> dict[str, Any]:
        from embedops.api.kinds import KINDS

        doc = dict(doc, metadata=dict(doc["metadata"], namespace=self.ns))
        return self.custom.create_namespaced_custom_object(
            "embedops.dev", "v1alpha1", self.ns, KINDS[doc["kind"]].plural, doc
        )

    def get(self, kind: str, name: str) -> dict[str, Any]:
        from embedops.api.kinds import KINDS

        return self.custom.get_namespaced_custom_object("embedops.dev", "v1alpha1", self.ns, KINDS[kind].plural, name)

    def patch(self, kind: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        from embedops.api.kinds import KINDS

        return self.custom.patch_namespaced_custom_object(
            "embedops.dev", "v1alpha1", self.ns, KINDS[kind].plural, name, patch
        )

    def condition(self, kind: str, name: str, type_: str = "Ready") -> dict[str, Any] | None:
        status = self.get(kind, name).get("status") or {}
        return next((c for c in status.get("conditions") or [] if c["type"] == type_), None)

    def wait_ready(self, kind: str, name: str, timeout: float = 60) -> dict[str, Any]:
        wait_for(
            f"{kind} {name} Ready", lambda: (self.condition(kind, name) or {}).get("status") == "True", timeout=timeout
        )
        return self.get(kind, name)

    def jobs(self, step: str | None = None) -> list[Any]:
        selector = "app.kubernetes.io/managed-by=embedops" + (f",embedops.dev/step={step}" if step else "")
        return self.batch.list_namespaced_job(self.ns, label_selector=selector).items

    def wait_job(self, step: str, timeout: float = 60) -> Any:
        return wait_for(f"a {step} Job", lambda: next(iter(self.jobs(step)), None), timeout=timeout)

    def pods(self, job: str) -> list[Any]:
        return self.core.list_namespaced_pod(self.ns, label_selector=f"batch.kubernetes.io/job-name={job}").items

    def wait_running_pods(self, job: str, count: int = 1, timeout: float = 60) -> list[Any]:
        return wait_for(
            f"{count} running pod(s) of Job {job}",
            lambda: pods if len(pods := [p for p in self.pods(job) if p.status.phase == "Running"]) >= count else None,
            timeout=timeout,
        )

    def finish(self, pod: str, message: str, exit_code: int = 0) -> None:
        """End a Running pod as kwok's kubelet would, with this termination message."""
        self.core.patch_namespaced_pod(
            pod,
            self.ns,
            {
                "metadata": {
                    "annotations": {"kwok.embedops.dev/exit-code": str(exit_code), "kwok.embedops.dev/message": message}
                }
            },
        )

    def events(self, involved: str | None = None) -> list[Any]:
        items = self.core.list_namespaced_event(self.ns).items
        return [e for e in items if involved is None or e.involved_object.name == involved]


@pytest.fixture
def kube(api, namespace) -> Kube:
    return Kube(api, namespace)


def run_pod_command(kube: Kube, pod: Any, workdir: Path) -> str:
    """Run a worker pod's command on this machine, as the kubelet would: its env resolved, its result returned."""
    container = pod.spec.containers[0]
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    if "PYTHONPATH" in os.environ:  # a checkout that is not the environment's editable install (a git worktree)
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    for var in container.env or []:
        if var.value is not None:
            env[var.name] = var.value
        elif var.value_from.secret_key_ref is not None:
            ref = var.value_from.secret_key_ref
            secret = kube.core.read_namespaced_secret(ref.name, kube.ns)
            env[var.name] = base64.b64decode(secret.data[ref.key]).decode()
        elif var.value_from.field_ref is not None:
            path = var.value_from.field_ref.field_path  # metadata.annotations['...']
            key = path.split("'")[1]
            env[var.name] = pod.metadata.annotations[key]
    command = list(container.command)
    result = workdir / f"{pod.metadata.name}.termination-log"
    command[command.index("--result") + 1] = str(result)  # the kubelet's /dev/termination-log
    proc = subprocess.run(command, env=env, cwd=workdir, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if "EMBEDOPS_DSN" in env:
        assert env["EMBEDOPS_DSN"] not in proc.stdout + proc.stderr  # the DSN is never logged
    return result.read_text()


def new_job(kube: Kube, step: str, known: set[str], timeout: float = 90) -> Any:
    """The next Job of `step` that is not in `known` (the Jobs already run)."""
    return wait_for(
        f"a new {step} Job",
        lambda: next((j for j in kube.jobs(step) if j.metadata.name not in known), None),
        timeout,
    )


def run_next_job(kube: Kube, step: str, workdir: Path, known: set[str]) -> dict[str, Any]:
    """Run the pod of the next new Job of `step` here (run_pod_command) and end it with its result; the result."""
    job = new_job(kube, step, known)
    known.add(job.metadata.name)
    (pod,) = kube.wait_running_pods(job.metadata.name)
    message = run_pod_command(kube, pod, workdir)
    kube.finish(pod.metadata.name, message)
    return dict(json.loads(message))
