"""`kubectl embedops` without a cluster: kubectl's flags, its output formats and its one-line errors,
against fake API answers (the e2e test in tests/e2e/test_plugin.py runs it on a real API server)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import MaxRetryError, NewConnectionError

from embedops import kubectl
from embedops.api.kinds import KINDS

FORBIDDEN = {
    "kind": "Status",
    "status": "Failure",
    "reason": "Forbidden",
    "code": 403,
    "message": 'embeddingindexes.embedops.dev "ix" is forbidden: User "alice" cannot patch resource '
    '"embeddingindexes" in API group "embedops.dev" in the namespace "search"',
}


def _obj(kind: str, name: str, ns: str = "search", spec: dict[str, Any] | None = None, **status: Any) -> dict:
    return {
        "apiVersion": "embedops.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": ns, "generation": 1},
        "spec": spec or {},
        **({"status": status} if status else {}),
    }


def _error(status: int, reason: str, body: dict[str, Any] | None = None, **headers: str) -> ApiException:
    err = ApiException(status=status, reason=reason)
    err.body = json.dumps(body) if body else None
    err.headers = {k.replace("_", "-"): v for k, v in headers.items()}
    return err


class FakeCustom:
    """CustomObjectsApi's four calls the plugin makes, over a list of objects; `fail` answers a verb."""

    def __init__(self, objects: list[dict[str, Any]], fail: dict[str, Exception] | None = None) -> None:
        self.objects = objects
        self.fail = fail or {}
        self.patches: list[tuple[str, str, dict[str, Any]]] = []

    def _check(self, verb: str) -> None:
        if verb in self.fail:
            raise self.fail[verb]

    def _of(self, plural: str, ns: str | None) -> list[dict[str, Any]]:
        return [
            o for o in self.objects if KINDS[o["kind"]].plural == plural and ns in (None, o["metadata"]["namespace"])
        ]

    def get_namespaced_custom_object(self, group, version, ns, plural, name):
        self._check("get")
        found = [o for o in self._of(plural, ns) if o["metadata"]["name"] == name]
        if not found:
            raise _error(404, "Not Found")
        return found[0]

    def list_namespaced_custom_object(self, group, version, ns, plural):
        self._check("list")
        return {"items": self._of(plural, ns)}

    def list_cluster_custom_object(self, group, version, plural):
        self._check("list")
        return {"items": self._of(plural, None)}

    def patch_namespaced_custom_object(self, group, version, ns, plural, name, patch):
        self._check("patch")
        self.patches.append((plural, name, patch))
        return {}


@pytest.fixture
def cluster(monkeypatch):
    """Install a fake API for main(): the kubeconfig context's namespace is `search`."""

    def install(objects: list[dict[str, Any]], fail: dict[str, Exception] | None = None) -> FakeCustom:
        fake = FakeCustom(objects, fail)
        monkeypatch.setattr(
            kubectl, "connect", lambda kubeconfig, context: (kubectl.Api(fake, "https://k:6443"), "search")
        )
        return fake

    return install


READY = {"conditions": [{"type": "Ready", "status": "True", "reason": "Serving", "message": "serving v2"}]}
PROBE = {"k": 10, "recallAtK": 0.91, "mrrAt10": 0.8, "ndcgAt10": 0.7, "queries": 100, "passed": True}


# -- arguments ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["-n", "ops", "status"],
        ["status", "-n", "ops"],
        ["status", "--namespace=ops"],
        ["--context", "prod", "status", "-n", "ops"],
    ],
)
def test_global_flags_go_before_or_after_the_command(argv):
    args = kubectl.parse(argv)
    assert (args.command, args.namespace) == ("status", "ops")


def test_flags_before_the_command_are_kept_when_it_does_not_repeat_them():
    args = kubectl.parse(["--kubeconfig", "/k", "--context", "c", "-o", "yaml", "versions", "ix"])
    assert (args.kubeconfig, args.context, args.output, args.index, args.all_namespaces) == (
        "/k",
        "c",
        "yaml",
        "ix",
        False,
    )
    assert kubectl.parse(["versions", "-A"]).all_namespaces is True


def test_usage_errors_are_one_line_with_kubectls_exit_code(capsys):
    for argv in (
        ["status", "--bogus"],
        ["pin", "ix", "2", "-o", "json"],
        ["-A", "rerun", "ix"],
        ["status", "-o", "csv"],
    ):
        with pytest.raises(SystemExit) as exit_:
            kubectl.parse(argv)
        assert exit_.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "--help' for usage." in err and "Traceback" not in err


# -- output ---------------------------------------------------------------------------------------


def test_status_in_the_namespace_given_after_the_command(cluster, capsys):
    cluster([_obj("EmbeddingIndex", "ix", "ops", **READY), _obj("EmbeddingIndex", "other", "search", **READY)])
    assert kubectl.main(["status", "-n", "ops"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["KIND", "NAME", "READY", "PHASE", "REASON", "MESSAGE"]
    assert [line.split()[1] for line in out[1:]] == ["ix"]


def test_all_namespaces_adds_the_namespace_column_and_wide_the_transition(cluster, capsys):
    cluster([_obj("EmbeddingIndex", "ix", "ops", **READY), _obj("FineTuneJob", "ft", "search", phase="Running")])
    assert kubectl.main(["status", "-A", "-o", "wide"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["NAMESPACE", "KIND"] and "SINCE" in out[0] and "GENERATION" in out[0]
    assert sorted(line.split()[0] for line in out[1:]) == ["ops", "search"]


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_output_json_and_yaml_print_the_objects_as_kubectl_get_does(cluster, capsys, fmt):
    ix = _obj("EmbeddingIndex", "ix", **READY)
    cluster([ix, _obj("EmbeddingDataset", "ds", **READY)])
    load = json.loads if fmt == "json" else yaml.safe_load
    assert kubectl.main(["status", "ix", "-o", fmt]) == 0
    assert load(capsys.readouterr().out) == ix
    assert kubectl.main(["status", "-o", fmt]) == 0
    listed = load(capsys.readouterr().out)
    assert listed["kind"] == "List" and [o["metadata"]["name"] for o in listed["items"]] == ["ds", "ix"]


def test_no_resources_and_no_status_at_all_say_so_on_stderr(cluster, capsys):
    cluster([])
    assert kubectl.main(["status", "-n", "empty"]) == 0
    assert capsys.readouterr().err.strip() == "No resources found in empty namespace."
    cluster([_obj("EmbeddingIndex", "ix", "lost"), _obj("EmbeddingIndex", "iy", "lost")])
    assert kubectl.main(["status", "-n", "lost"]) == 0
    captured = capsys.readouterr()
    assert (
        "the operator may not watch that namespace" in captured.err and "namespace lost have no status" in captured.err
    )
    assert captured.out.splitlines()[1].split()[2:5] == ["-", "-", "-"]
    assert kubectl.main(["status", "eix/ix", "-n", "lost"]) == 0
    assert "hint: EmbeddingIndex/ix in namespace lost has no status at all" in capsys.readouterr().err


def test_versions_show_each_versions_last_probe_and_mark_the_live_ones():
    index = _obj(
        "EmbeddingIndex",
        "ix",
        liveVersion=2,
        probe={**PROBE, "version": 2, "recallAtK": 0.42, "passed": False, "checkedAt": "2026-12-01T10:00:00Z"},
        versions=[
            {
                "version": 2,
                "state": "Live",
                "rows": 600,
                "model": "m2",
                "probe": {**PROBE, "version": 2, "checkedAt": "2026-11-27T10:00:00Z"},
            },
            {
                "version": 1,
                "state": "Retired",
                "rows": 600,
                "model": "m1",
                "probe": {**PROBE, "version": 1, "checkedAt": "2026-11-20T10:00:00Z"},
            },
            {"version": 3, "state": "Building", "rows": 0, "model": "m3"},
        ],
    )
    rows = kubectl.versions(kubectl.Api(FakeCustom([index])), "search", kubectl.parse(["versions", "ix"]))
    assert rows[0].split() == ["VERSION", "STATE", "ROWS", "RECALL", "GATE", "PROBED", "PROBE", "MODEL"]
    # The live version shows its live probe only, not the recall it had at cut-over beside it.
    assert rows[1].split() == ["v2", "Live", "600", "0.4200@10", "fail", "2026-12-01T10:00:00Z", "live", "m2"]
    assert rows[2].split() == ["v1", "Retired", "600", "0.9100@10", "pass", "2026-11-20T10:00:00Z", "gate", "m1"]
    assert rows[3].split() == ["v3", "Building", "0", "-", "-", "-", "-", "m3"]


def test_versions_of_every_index_name_the_index():
    indexes = [_obj("EmbeddingIndex", n, versions=[{"version": 1, "state": "Live", "model": "m"}]) for n in ("a", "b")]
    rows = kubectl.versions(kubectl.Api(FakeCustom(indexes)), "search", kubectl.parse(["versions", "-o", "wide"]))
    assert rows[0].split()[:2] == ["INDEX", "VERSION"] and "NDCG@10" in rows[0]
    assert [r.split()[0] for r in rows[1:]] == ["a", "b"]


def test_rerun_of_a_dataset_names_every_job_and_index_that_runs_again(cluster, capsys):
    fake = cluster(
        [
            _obj("EmbeddingDataset", "ds"),
            _obj("FineTuneJob", "ft", spec={"datasetRef": {"name": "ds"}}),
            _obj("FineTuneJob", "unrelated", spec={"datasetRef": {"name": "other"}}),
            _obj("EmbeddingIndex", "follows-ft", spec={"model": {"fineTuneJobRef": {"name": "ft"}}}),
            _obj("EmbeddingIndex", "probes-ds", spec={"probe": {"datasetRef": {"name": "ds"}}}),
            _obj("EmbeddingIndex", "elsewhere", "ops", spec={"probe": {"datasetRef": {"name": "ds"}}}),
        ]
    )
    assert kubectl.main(["rerun", "eds/ds"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "EmbeddingDataset/ds will be prepared again, and with it these 3, which use it:"
    assert sorted(line.split()[0] for line in out[1:]) == [
        "EmbeddingIndex/follows-ft",
        "EmbeddingIndex/probes-ds",
        "FineTuneJob/ft",
    ]
    assert [p[1] for p in fake.patches] == ["ds"]


# -- errors ---------------------------------------------------------------------------------------


def test_forbidden_is_kubectls_one_line(cluster, capsys):
    cluster([_obj("EmbeddingIndex", "ix")], fail={"patch": _error(403, "Forbidden", FORBIDDEN)})
    assert kubectl.main(["probe", "ix"]) == 1
    err = capsys.readouterr().err
    assert err == f"Error from server (Forbidden): {FORBIDDEN['message']}\n"


def test_forbidden_without_a_body_names_the_verb_resource_and_namespace(cluster, capsys):
    cluster([], fail={"list": _error(403, "Forbidden")})
    assert kubectl.main(["status", "-n", "ops"]) == 1
    assert capsys.readouterr().err == (
        "Error from server (Forbidden): cannot list embeddingdatasets.embedops.dev in the namespace 'ops': "
        "403 Forbidden\n"
    )


def test_not_found_unauthorized_and_missing_crds(cluster, capsys):
    cluster([])
    assert kubectl.main(["versions", "ix"]) == 1
    assert capsys.readouterr().err == "Error from server (NotFound): no EmbeddingIndex named 'ix' in namespace search\n"
    cluster([], fail={"get": _error(401, "Unauthorized")})
    assert kubectl.main(["status", "ix"]) == 1
    assert capsys.readouterr().err == "error: You must be logged in to the server (Unauthorized)\n"
    cluster(
        [],
        fail={
            "list": _error(
                404, "Not Found", {"reason": "NotFound", "message": "the server could not find the requested resource"}
            )
        },
    )
    assert kubectl.main(["status"]) == 1
    assert "(are the embedops.dev CRDs installed?)" in capsys.readouterr().err


def test_an_unreachable_server_is_one_line(cluster, capsys):
    refused = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")
    cluster([], fail={"list": MaxRetryError(None, "/apis", reason=refused)})
    assert kubectl.main(["status"]) == 1
    assert capsys.readouterr().err == (
        "error: The connection to the server https://k:6443 was refused - did you specify the right host or port?\n"
    )


def test_no_kubeconfig_and_no_service_account_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "none"))
    assert kubectl.main(["status"]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("error: no kubeconfig and not in a pod: set KUBECONFIG or --kubeconfig") and err.count("\n") == 1
    )


def test_an_unknown_context_is_named(tmp_path, capsys):
    config = tmp_path / "config"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "a",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "a", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    assert kubectl.main(["status", "--kubeconfig", str(config), "--context", "prod"]) == 1
    assert capsys.readouterr().err == "error: context 'prod' does not exist\n"
    assert kubectl.main(["status", "--kubeconfig", str(config)]) == 1
    assert "The connection to the server https://127.0.0.1:1 was refused" in capsys.readouterr().err


def test_too_many_requests_is_asked_again_after_retry_after(cluster, capsys, monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(kubectl.time, "sleep", slept.append)
    fake = cluster([_obj("EmbeddingIndex", "ix", **READY)])
    answers = iter([_error(429, "Too Many Requests", Retry_After="2"), _error(429, "Too Many Requests")])
    listed = fake.list_namespaced_custom_object

    def flaky(*args):
        if (err := next(answers, None)) is not None:
            raise err
        return listed(*args)

    fake.list_namespaced_custom_object = flaky
    assert kubectl.main(["status"]) == 0 and slept == [2.0, 1.0]
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["EmbeddingIndex", "ix"]
    cluster([], fail={"list": _error(429, "Too Many Requests", {"reason": "TooManyRequests", "message": "slow"})})
    assert kubectl.main(["status"]) == 1 and len(slept) == 2 + kubectl.RETRIES
    assert capsys.readouterr().err == "Error from server (TooManyRequests): slow\n"


def test_sync_asks_for_a_sync_of_a_table_index_and_refuses_a_dataset_one(cluster, capsys):
    fake = cluster(
        [
            _obj("EmbeddingIndex", "tab", spec={"source": {"table": {"table": "docs"}}}),
            _obj("EmbeddingIndex", "ds", spec={"source": {"datasetRef": {"name": "ds"}}}),
        ]
    )
    assert kubectl.main(["sync", "tab"]) == 0
    assert "will be synced" in capsys.readouterr().out
    ((plural, name, patch),) = fake.patches
    assert (plural, name) == ("embeddingindexes", "tab")
    assert list(patch["metadata"]["annotations"]) == ["embedops.dev/sync"]
    with pytest.raises(SystemExit, match="no source.table"):
        kubectl.main(["sync", "ds"])
    assert len(fake.patches) == 1


# -- search: the index's query Service through the API server's service proxy ---------------------


class FakeProxyResponse:
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.data = (json.dumps(body) if not isinstance(body, str) else body).encode()

    def read(self) -> None:
        pass


class FakeApiClient:
    """ApiClient's two calls the proxy makes: the request as serialized (its path), and one answer."""

    def __init__(self, status: int, body: Any) -> None:
        self.answer = FakeProxyResponse(status, body)
        self.requests: list[tuple[str, str, Any]] = []

    def param_serialize(self, method, resource_path, path_params=None, header_params=None, body=None, **_):
        path = resource_path.replace("{namespace}", path_params["namespace"])
        return method, "https://k:6443" + path, header_params, body, None

    def call_api(self, method, url, header_params=None, body=None, post_params=None, _request_timeout=None):
        self.requests.append((method, url, body))
        return self.answer


SERVED_INDEX = _obj(
    "EmbeddingIndex", "docs", spec={"target": {"schema": "app", "name": "docs"}, "serving": {"engine": "embedops"}}
)
FOUND = {
    "version": 3,
    "model_fingerprint": "sha256:abc",
    "view": "app.docs",
    "hits": [{"id": "17", "distance": 0.125}, {"id": "4", "distance": 0.25}],
}


def _searching(cluster, status: int, body: Any, index: dict[str, Any] = SERVED_INDEX) -> FakeApiClient:
    fake = cluster([index])
    fake.api_client = FakeApiClient(status, body)
    return fake.api_client


def test_search_posts_to_the_query_service_through_the_proxy_and_prints_id_tab_distance(cluster, capsys):
    client = _searching(cluster, 200, FOUND)
    assert kubectl.main(["search", "docs", "what causes fever", "-k", "2"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["17\t0.125000", "4\t0.250000"]
    assert err == "# app.docs v3 (sha256:abc)\n"
    assert client.requests == [
        (
            "POST",
            "https://k:6443/api/v1/namespaces/search/services/docs-query:http/proxy/search",
            {"query": "what causes fever", "k": 2},
        )
    ]
    assert kubectl.parse(["search", "docs", "q"]).k == 10


def test_search_asks_the_service_the_operator_named_for_a_long_index_name(cluster, capsys):
    from embedops.builders import serving

    name = "a-very-long-index-name-for-the-search-of-the-whole-scientific-corpus"  # 68 characters
    index = _obj("EmbeddingIndex", name, spec={"target": {"name": "docs"}, "serving": {}})
    client = _searching(cluster, 200, FOUND, index)
    assert kubectl.main(["search", name, "q"]) == 0
    capsys.readouterr()
    ((_, url, _),) = client.requests
    service = serving.service_name(name)
    assert len(service) <= 63 and f"/services/{service}:http/proxy/search" in url


@pytest.mark.parametrize(
    ("index", "status", "body", "message"),
    [
        (
            _obj("EmbeddingIndex", "docs", spec={"target": {"name": "docs"}}),
            200,
            FOUND,
            "error: spec.serving is not set: the operator serves no query model for docs "
            "(docs/operator.md, Querying an index)",
        ),
        (
            _obj("EmbeddingIndex", "docs", spec={"serving": {"engine": "tei"}}),
            200,
            FOUND,
            "error: engine tei has no /search: ",
        ),
        (
            SERVED_INDEX,
            503,
            {"kind": "Status", "status": "Failure", "message": 'no endpoints available for service "docs-query"'},
            "error: no Ready pod behind Service docs-query yet",
        ),
        (
            SERVED_INDEX,
            409,
            {
                "error": "the view app.docs serves v4 (model fingerprint sha256:def); this server serves v3's model",
                "error_type": "Conflict",
                "live_version": 4,
            },
            "error: Service docs-query and the view disagree: the view app.docs serves v4",
        ),
        (
            SERVED_INDEX,
            403,
            {"kind": "Status", "reason": "Forbidden", "message": 'services "docs-query" is forbidden: User "bob"'},
            'Error from server (Forbidden): services "docs-query" is forbidden',
        ),
        (
            SERVED_INDEX,
            404,
            {"kind": "Status", "reason": "NotFound", "message": 'services "docs-query" not found'},
            "Error from server (NotFound): Service docs-query is not in namespace search",
        ),
        (
            SERVED_INDEX,
            503,
            {"error": "cannot search app.docs: the database is down", "error_type": "Unavailable"},
            "error: Service docs-query answered 503: cannot search app.docs: the database is down",
        ),
    ],
)
def test_search_errors_are_one_line(cluster, capsys, index, status, body, message):
    client = _searching(cluster, status, body, index)
    assert kubectl.main(["search", "docs", "q"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(message) and err.count("\n") == 1, err
    if "spec" in message or "tei" in message:
        assert client.requests == []  # nothing asked of a Service that cannot answer


def test_search_of_a_missing_index_and_a_bad_k(cluster, capsys):
    _searching(cluster, 200, FOUND)
    assert kubectl.main(["search", "nope", "q"]) == 1
    assert (
        capsys.readouterr().err == "Error from server (NotFound): no EmbeddingIndex named 'nope' in namespace search\n"
    )
    assert kubectl.main(["search", "docs", "q", "-k", "0"]) == 1
    assert capsys.readouterr().err == "error: -k must be from 1 to 1000\n"
