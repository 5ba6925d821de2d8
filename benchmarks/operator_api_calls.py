"""What the operator costs the API server: requests per resource per minute at rest, and per spec edit.

    python benchmarks/operator_api_calls.py --sizes 10 100 300 --window 120

Starts the real control plane (hack/cluster.sh: kube-apiserver, etcd, controller-manager,
scheduler, kwok nodes that make every pod Running), and for each size N:

  - a fresh namespace with the workspace claim; N/2 EmbeddingDatasets whose prepare Job runs (its
    pod Running, never finishing) and N/2 EmbeddingIndexes, each waiting for one of them;
  - the operator in this process (kopf's KopfRunner, as tests/e2e run it), with its defaults
    (EMBEDOPS_RECONCILE_SECONDS=30) unless the environment says otherwise;
  - once every resource shows its waiting status, a settle period, then every request the operator
    makes over `--window` seconds is counted: the kubernetes client's `ApiClient.call_api` of the
    operator's own client (the benchmark's client is not counted) and kopf's `api.request` (its
    watches and patches; a watch is one request however long it streams);
  - one spec edit (a dataset's source path: its running Job is superseded by a new one) and one
    edit of a waiting index (its probe's minRecall): the requests made by the reconciles of that
    resource and of the resources that refer to it, until 15 s pass (a periodic sweep's own
    reconciles are left out: they are the steady state above), and how many reconciles ran, and
    how many of them wrote anything.

The figures are measured on whatever machine this runs on; the table says which.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("EMBEDOPS_METRICS_PORT", "0")
os.environ.setdefault("EMBEDOPS_WORKER_IMAGE", "embedops-worker:bench")

WRITES = {"POST", "PUT", "PATCH", "DELETE"}


class Counter:
    """Every request of the operator, with the reconcile (if any) and the thread that made it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[float, str, str, tuple[str, str, str] | None, str]] = []
        self.reconciles: list[tuple[float, tuple[str, str, str], str, int]] = []  # (t, key, thread, writes)
        self.local = threading.local()

    def record(self, method: str, path: str) -> None:
        key = getattr(self.local, "key", None)
        if key is not None:
            self.local.writes += method.upper() in WRITES
        with self.lock:
            self.requests.append((time.monotonic(), method.upper(), path, key, threading.current_thread().name))

    def between(self, start: float, end: float) -> list[tuple[float, str, str, Any, str]]:
        with self.lock:
            return [r for r in self.requests if start <= r[0] < end]


COUNTER = Counter()


def instrument() -> None:
    """Count the operator's requests: its kubernetes client's calls and kopf's."""
    from kopf._cogs.clients import api as kopf_api
    from kubernetes.client import ApiClient

    from embedops.handlers import executor, kube

    call_api = ApiClient.call_api

    def counted_call_api(self, method, url, *args, **kwargs):  # the client's signature since v33
        if self is kube._api:
            COUNTER.record(method, url)
        return call_api(self, method, url, *args, **kwargs)

    ApiClient.call_api = counted_call_api
    request = kopf_api.request

    async def counted_request(method, url, *args, **kwargs):
        COUNTER.record(method, url)
        return await request(method, url, *args, **kwargs)

    kopf_api.request = counted_request
    reconcile_resource = executor.reconcile_resource

    def counted_reconcile(kind, namespace, name):
        COUNTER.local.key, COUNTER.local.writes = (kind, namespace, name), 0
        try:
            return reconcile_resource(kind, namespace, name)
        finally:
            with COUNTER.lock:
                COUNTER.reconciles.append(
                    (time.monotonic(), (kind, namespace, name), threading.current_thread().name, COUNTER.local.writes)
                )
            COUNTER.local.key = None

    executor.reconcile_resource = counted_reconcile


# -- the cluster ----------------------------------------------------------------------------------


def wait_for(what: str, fn, timeout: float = 600, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if got := fn():
                return got
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


def setup_cluster(api) -> None:
    from kubernetes import client

    ext = client.ApiextensionsV1Api(api)
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        ext.create_custom_resource_definition(yaml.safe_load(path.read_text()))
    core = client.CoreV1Api(api)
    capacity = {"cpu": "100000", "memory": "100Ti", "pods": "100000"}
    core.create_node(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": "cpu-0",
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {"kubernetes.io/hostname": "cpu-0", "type": "kwok"},
            },
            "status": {"capacity": capacity, "allocatable": capacity},
        }
    )
    wait_for(
        "the kwok node Ready",
        lambda: any(c.type == "Ready" and c.status == "True" for c in core.read_node("cpu-0").status.conditions or []),
    )
    time.sleep(2)  # the CRDs Established


def make_namespace(api) -> str:
    from kubernetes import client

    core = client.CoreV1Api(api)
    name = f"bench-{uuid.uuid4().hex[:6]}"
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
    wait_for("default ServiceAccount", lambda: core.read_namespaced_service_account("default", name))
    return name


def resources(n: int) -> list[dict[str, Any]]:
    docs = []
    for i in range(n // 2):
        docs.append(
            {
                "apiVersion": "embedops.dev/v1alpha1",
                "kind": "EmbeddingDataset",
                "metadata": {"name": f"ds{i}"},
                "spec": {"source": {"beir": {"path": f"data/set{i}"}}},
            }
        )
        docs.append(
            {
                "apiVersion": "embedops.dev/v1alpha1",
                "kind": "EmbeddingIndex",
                "metadata": {"name": f"ix{i}"},
                "spec": {
                    "model": {"name": "all-MiniLM-L6-v2"},
                    "source": {"datasetRef": {"name": f"ds{i}"}},
                    "target": {"name": f"docs{i}"},
                    "database": {"dsnSecretRef": {"name": "pg"}},
                    "probe": {"minRecall": 0.5},
                },
            }
        )
    return docs


PLURALS = {"EmbeddingDataset": "embeddingdatasets", "EmbeddingIndex": "embeddingindexes"}


def settled(custom, ns: str, n: int) -> bool:
    """Every dataset Running (its pod started), every index waiting for its dataset."""
    ds = custom.list_namespaced_custom_object("embedops.dev", "v1alpha1", ns, "embeddingdatasets")["items"]
    ix = custom.list_namespaced_custom_object("embedops.dev", "v1alpha1", ns, "embeddingindexes")["items"]
    running = sum((d.get("status") or {}).get("phase") == "Running" for d in ds)
    waiting = sum(
        any(c.get("reason") == "DependencyNotReady" for c in (x.get("status") or {}).get("conditions") or [])
        for x in ix
    )
    print(f"  settling: {running}/{n // 2} datasets Running, {waiting}/{n // 2} indexes waiting", flush=True)
    return running == n // 2 and waiting == n // 2


# -- one size ---------------------------------------------------------------------------------------


def edit_cost(custom, ns: str, kind: str, name: str, patch: dict[str, Any], related: set[str]) -> dict[str, Any]:
    """Requests and reconciles that follow one spec edit, by the reconciles of the edited resource and its referrers."""
    start = time.monotonic()
    custom.patch_namespaced_custom_object("embedops.dev", "v1alpha1", ns, PLURALS[kind], name, patch)
    time.sleep(15)
    end = time.monotonic()
    keys = {name} | related
    mine = [
        r
        for r in COUNTER.between(start, end)
        if r[3] is not None and r[3][1] == ns and r[3][2] in keys and r[4] != "embedops-sweep"
    ]
    with COUNTER.lock:
        recs = [
            r
            for r in COUNTER.reconciles
            if start <= r[0] < end and r[1][1] == ns and r[1][2] in keys and r[2] != "embedops-sweep"
        ]
    by = collections.Counter(f"{m} {_short(p)}" for _, m, p, _, _ in mine)
    return {"requests": len(mine), "reconciles": len(recs), "writing": sum(1 for r in recs if r[3]), "by": by}


def _short(path: str) -> str:
    parts = [p for p in path.split("?")[0].split("/") if p]
    kinds = {"jobs", "pods", "events", "log", "status", "embeddingdatasets", "embeddingindexes", "finetunejobs"}
    return "/".join(p if p in kinds else "*" for p in parts[-3:])


def measure(api, n: int, window: float, settle: float) -> dict[str, Any]:
    import kopf.testing
    from kubernetes import client

    custom = client.CustomObjectsApi(api)
    ns = make_namespace(api)
    for doc in resources(n):
        custom.create_namespaced_custom_object("embedops.dev", "v1alpha1", ns, PLURALS[doc["kind"]], doc)
    print(f"N={n}: {n} resources created in {ns}", flush=True)
    started = time.monotonic()
    with kopf.testing.KopfRunner(
        ["run", "--standalone", "--namespace", ns, "-m", "embedops.handlers"], timeout=120
    ) as runner:
        wait_for("the resources to settle", lambda: settled(custom, ns, n), timeout=1800, interval=5)
        to_settle = time.monotonic() - started
        time.sleep(settle)
        cpu0, start = time.process_time(), time.monotonic()
        time.sleep(window)
        cpu, end = time.process_time() - cpu0, time.monotonic()
        rest = COUNTER.between(start, end)
        minutes = (end - start) / 60
        by = collections.Counter(f"{m} {_short(p)}" for _, m, p, _, _ in rest)
        dataset = edit_cost(
            custom, ns, "EmbeddingDataset", "ds0", {"spec": {"source": {"beir": {"path": "data/moved"}}}}, {"ix0"}
        )
        index = edit_cost(custom, ns, "EmbeddingIndex", "ix1", {"spec": {"probe": {"minRecall": 0.6}}}, set())
    assert runner.exception is None, runner.output[-3000:]
    client.CoreV1Api(api).delete_namespace(ns)
    return {
        "n": n,
        "settle_s": to_settle,
        "rest": len(rest),
        "per_resource_minute": len(rest) / n / minutes,
        "cpu_share": cpu / (end - start),
        "rest_by": by,
        "dataset_edit": dataset,
        "index_edit": index,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 300])
    parser.add_argument("--window", type=float, default=120.0, help="seconds of steady state counted")
    parser.add_argument("--settle", type=float, default=35.0, help="seconds waited after every resource settled")
    parser.add_argument("--label", default="", help="a name for this code version in the table")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="embedops-bench-")) / "c"
    subprocess.run([str(ROOT / "hack/cluster.sh"), "up", str(folder)], check=True)
    try:
        env = dict(line.split("=", 1) for line in (folder / "env").read_text().splitlines() if "=" in line)
        os.environ["KUBECONFIG"] = env["KUBECONFIG"]
        from kubernetes import client, config
        from kubernetes.config import kube_config

        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = env["KUBECONFIG"]  # kopf's login reads this default
        config.load_kube_config(config_file=env["KUBECONFIG"])
        api = client.ApiClient()
        setup_cluster(api)
        import embedops.handlers  # noqa: F401 - registers the handlers before they are counted

        instrument()
        rows = [measure(api, n, args.window, args.settle) for n in args.sizes]
    finally:
        subprocess.run([str(ROOT / "hack/cluster.sh"), "down", str(folder)], check=False)
    report(rows, args)


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    from embedops.handlers import executor

    print(
        f"\n{args.label or 'operator'}: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"EMBEDOPS_RECONCILE_SECONDS={executor.SETTINGS.reconcile_seconds:g}, window {args.window:g} s"
    )
    print(
        "| N | settled in | requests at rest | per resource per minute | operator CPU | dataset edit: "
        "requests (reconciles, writing) | index edit: requests (reconciles, writing) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        d, i = r["dataset_edit"], r["index_edit"]
        print(
            f"| {r['n']} | {r['settle_s']:.0f} s | {r['rest']} | {r['per_resource_minute']:.2f} | "
            f"{100 * r['cpu_share']:.0f} % | {d['requests']} ({d['reconciles']}, {d['writing']}) | "
            f"{i['requests']} ({i['reconciles']}, {i['writing']}) |"
        )
    for r in rows:
        print(f"N={r['n']} at rest: {dict(r['rest_by'].most_common(8))}")
        print(f"N={r['n']} dataset edit: {dict(r['dataset_edit']['by'].most_common())}")
        print(f"N={r['n']} index edit: {dict(r['index_edit']['by'].most_common())}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
