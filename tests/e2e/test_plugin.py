"""`kubectl embedops` against the real API server: it reads status and writes only the spec and annotations."""

from __future__ import annotations

import json

import yaml

from embedops.kubectl import main
from tests.e2e.test_operator import INDEX

VERSIONS = [
    {
        "version": 2,
        "table": "docs_v2",
        "model": "/workspace/m2",
        "rows": 600,
        "state": "Live",
        "probe": {
            "version": 2,
            "k": 10,
            "recallAtK": 0.91,
            "mrrAt10": 0.8,
            "ndcgAt10": 0.8,
            "queries": 100,
            "passed": True,
            "checkedAt": "2026-11-27T10:00:00Z",
        },
    },
    {"version": 1, "table": "docs_v1", "model": "/workspace/m1", "rows": 600, "state": "Retired"},
]


def _serving(kube) -> None:
    kube.apply(json.loads(json.dumps(INDEX)))
    kube.custom.patch_namespaced_custom_object_status(
        "embedops.dev",
        "v1alpha1",
        kube.ns,
        "embeddingindexes",
        "ix",
        {
            "status": {
                "liveVersion": 2,
                "versions": VERSIONS,
                "phase": "Ready",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "Serving",
                        "message": "serving v2 (600 rows)",
                        "lastTransitionTime": "2026-11-27T10:00:00Z",
                    }
                ],
            }
        },
    )


def test_the_plugin_reads_status_and_pins_rolls_back_reruns_and_probes(kube, capsys):
    _serving(kube)
    ns = ["-n", kube.ns]
    assert main([*ns, "status"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["KIND", "NAME", "READY", "PHASE", "REASON", "MESSAGE"]
    assert out[1].split()[:5] == ["EmbeddingIndex", "ix", "True", "Ready", "Serving"]
    assert main([*ns, "versions", "eix/ix"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:7] == ["v2", "Live", "600", "0.9100@10", "pass", "2026-11-27T10:00:00Z", "gate"]
    assert lines[2].split()[:2] == ["v1", "Retired"]

    assert main([*ns, "pin", "ix", "9"]) == 1
    assert "ix keeps v2, v1: v9 cannot be served" in capsys.readouterr().err
    assert main([*ns, "rollback", "ix"]) == 0
    assert kube.get("EmbeddingIndex", "ix")["spec"]["pinnedVersion"] == 1
    assert main([*ns, "unpin", "ix"]) == 0
    assert "pinnedVersion" not in kube.get("EmbeddingIndex", "ix")["spec"]

    assert main([*ns, "rerun", "ix"]) == 0 and main([*ns, "probe", "ix"]) == 0
    annotations = kube.get("EmbeddingIndex", "ix")["metadata"]["annotations"]
    assert {"embedops.dev/rerun", "embedops.dev/probe"} <= set(annotations)
    assert main([*ns, "status", "nothing"]) == 1
    assert "no EmbeddingDataset or FineTuneJob or EmbeddingIndex named 'nothing'" in capsys.readouterr().err
    # The status was written by the (absent) operator only: the plugin touched spec and annotations.
    assert kube.get("EmbeddingIndex", "ix")["status"]["liveVersion"] == 2


def test_kubectls_flags_after_the_command_and_output_json(kube, capsys):
    _serving(kube)
    assert main(["status", "-n", kube.ns]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["EmbeddingIndex", "ix"]
    assert main(["status", "ix", "-o", "json", "--namespace", kube.ns]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == kube.get("EmbeddingIndex", "ix")
    assert main(["versions", "-A", "-o", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["kind"] == "List" and (kube.ns, "ix") in {
        (o["metadata"]["namespace"], o["metadata"]["name"]) for o in listed["items"]
    }
    # Resources the operator never saw (none runs here, as in a namespace it does not watch) say so.
    kube.apply({**json.loads(json.dumps(INDEX)), "metadata": {"name": "unseen"}})
    assert main(["status", "unseen", "-n", kube.ns]) == 0
    assert f"EmbeddingIndex/unseen in namespace {kube.ns} has no status at all" in capsys.readouterr().err
    assert main(["status", "-n", "default"]) == 0
    assert capsys.readouterr().err.strip() == "No resources found in default namespace."


def _reader_kubeconfig(kube, cluster, path) -> str:
    """A ServiceAccount that may get and list the kinds in the namespace, and change nothing."""
    from kubernetes import client

    rbac = client.RbacAuthorizationV1Api(kube.api)
    kube.core.create_namespaced_service_account(kube.ns, {"metadata": {"name": "reader"}})
    rule = {"apiGroups": ["embedops.dev"], "resources": ["*"], "verbs": ["get", "list", "watch"]}
    rbac.create_namespaced_role(kube.ns, {"metadata": {"name": "reader"}, "rules": [rule]})
    rbac.create_namespaced_role_binding(
        kube.ns,
        {
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": kube.ns}],
        },
    )
    token = kube.core.create_namespaced_service_account_token(
        "reader", kube.ns, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    server = {"server": cluster["EMBEDOPS_KUBE_SERVER"], "certificate-authority": cluster["EMBEDOPS_KUBE_CA"]}
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "reader",
                "clusters": [{"name": "c", "cluster": server}],
                "users": [{"name": "reader", "user": {"token": token}}],
                "contexts": [{"name": "reader", "context": {"cluster": "c", "user": "reader", "namespace": kube.ns}}],
            }
        )
    )
    return str(path)


def test_a_user_without_the_right_gets_kubectls_one_line_forbidden(kube, cluster, capsys, tmp_path):
    _serving(kube)
    config = _reader_kubeconfig(kube, cluster, tmp_path / "reader")
    assert main(["status", "--kubeconfig", config]) == 0  # the context's namespace
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["EmbeddingIndex", "ix"]
    assert main(["probe", "ix", "--kubeconfig", config]) == 1
    err = capsys.readouterr().err
    who = f"system:serviceaccount:{kube.ns}:reader"
    assert err == (
        f'Error from server (Forbidden): embeddingindexes.embedops.dev "ix" is forbidden: User "{who}" cannot '
        f'patch resource "embeddingindexes" in API group "embedops.dev" in the namespace "{kube.ns}"\n'
    )
    assert main(["--kubeconfig", config, "status", "-A"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error from server (Forbidden): ") and "cannot list resource" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "embedops.dev/probe" not in (kube.get("EmbeddingIndex", "ix")["metadata"].get("annotations") or {})
