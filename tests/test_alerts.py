"""The Prometheus alerts and Grafana dashboard shipped with the chart (charts/embedops/files/).

promtool checks and unit-tests the rules (tests/alerts/alerts_test.yaml); the Python checks keep
the rules, the runbooks (docs/runbooks/) and the dashboard in step with docs/metrics.md.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "charts" / "embedops" / "files" / "alerts.yaml"
RULE_TESTS = ROOT / "tests" / "alerts" / "alerts_test.yaml"
DASHBOARD = ROOT / "charts" / "embedops" / "files" / "dashboard.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"
RUNBOOKS = ROOT / "docs" / "runbooks"
RUNBOOK_URL = "https://github.com/embedops/embedops/blob/main/docs/runbooks/{}.md"

# Not metric names: PromQL keywords, aggregation modifiers, and label names in by/on clauses
# (stripped before tokenising, but listed for safety).
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}


def _documented() -> dict[str, set[str]]:
    """Series name -> labels, from the table in docs/metrics.md (a histogram's three series each)."""
    rows = re.findall(r"^\| (embedops_\w+) \| (\w+) \| ([^|]+) \|", METRICS_DOC.read_text(), flags=re.M)
    out = {}
    for name, type_, labels in rows:
        names = {label.strip() for label in labels.split(",")}
        if type_ == "histogram":
            out |= {f"{name}_bucket": names | {"le"}, f"{name}_sum": names, f"{name}_count": names}
        else:
            out[name] = names
    return out


def _metric(series: str) -> str:
    """The documented metric a series belongs to (a histogram's name for its _bucket/_sum/_count)."""
    base = re.sub(r"_(bucket|sum|count)$", "", series)
    return base if f"{base}_bucket" in _documented() else series


def _selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names in its matcher) for every vector selector of a PromQL expression."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (count_values' label, legends)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery durations
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    found = []
    for m in re.finditer(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?", expr):
        name, matchers = m.group(1), m.group(2) or ""
        if name in _KEYWORDS or re.match(r"\s*\(", expr[m.end(1) :]):  # keywords and function calls
            continue
        found.append((name, set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))))
    return found


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def _alerts() -> list[dict]:
    return [rule for rule in _rules() if "alert" in rule]


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not on PATH (install Prometheus' promtool to check the alert rules)")
    return path


# -- promtool ------------------------------------------------------------------------------------


def test_promtool_check_rules():
    out = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_unit_tests():
    out = subprocess.run([_promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


# -- rules ---------------------------------------------------------------------------------------


EXPECTED_ALERTS = {
    "EmbedopsRecallBelowThreshold",
    "EmbedopsDriftAboveThreshold",
    "EmbedopsProbesStale",
    "EmbedopsIndexStale",
    "EmbedopsReindexStalled",
    "EmbedopsRecallDropped",
    "EmbedopsTrainingUnschedulable",
    "EmbedopsFineTuneFailed",
    "EmbedopsResourceDegraded",
    "EmbedopsIndexGateFailed",
    "EmbedopsOperatorDown",
    "EmbedopsReconcileErrors",
}


def test_expected_alerts_exist():
    assert {rule["alert"] for rule in _alerts()} == EXPECTED_ALERTS


@pytest.mark.parametrize("alert", sorted(EXPECTED_ALERTS))
def test_alert_has_severity_annotations_and_runbook(alert):
    rule = next(r for r in _alerts() if r["alert"] == alert)
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    annotations = rule["annotations"]
    assert annotations["summary"] and annotations["description"]
    assert annotations["runbook_url"] == RUNBOOK_URL.format(alert)
    runbook = RUNBOOKS / f"{alert}.md"
    assert runbook.is_file(), f"missing runbook {runbook.relative_to(ROOT)}"
    assert runbook.read_text().startswith(f"# {alert}")
    assert f"({alert}.md)" in (RUNBOOKS / "README.md").read_text(), "runbook not listed in docs/runbooks/README.md"
    if alert != "EmbedopsOperatorDown":  # per-resource alerts say which resource
        text = annotations["summary"] + annotations["description"]
        assert "$labels.namespace" in text or "$labels.kind" in text


def test_every_runbook_belongs_to_an_alert():
    pages = {p.stem for p in RUNBOOKS.glob("*.md")} - {"README"}
    assert pages == EXPECTED_ALERTS


def test_rules_only_use_documented_metrics_and_labels():
    documented = _documented()
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    assert all(":" in name for name in recorded), "recording rules are named level:metric:operation"
    seen = set()
    for rule in _rules():
        for name, labels in _selectors(rule["expr"]):
            seen.add(name)
            if name == "up" or name in recorded:
                continue
            assert name in documented, f"{rule.get('alert') or rule.get('record')}: {name} is not in docs/metrics.md"
            assert labels <= documented[name], f"{name}: labels {labels - documented[name]} are not documented"
    # The tokenizer must see the metrics each alert is about (guards the check above).
    assert {
        "embedops_index_probe_recall_ratio",
        "embedops_index_cutover_recall_ratio",
        "embedops_index_max_regression_ratio",
        "embedops_index_min_recall_ratio",
        "embedops_index_probe_version",
        "embedops_index_live_version",
        "embedops_index_drift_score",
        "embedops_index_drift_version",
        "embedops_index_drift_threshold",
        "embedops_index_reindex_rows",
        "embedops_index_probe_timestamp_seconds",
        "embedops_index_probe_interval_seconds",
        "embedops_index_sync_timestamp_seconds",
        "embedops_index_sync_interval_seconds",
        "embedops_resource_waiting_since_timestamp_seconds",
        "embedops_finetune_gpus",
        "embedops_resource_condition",
        "embedops_resource_condition_reason",
        "embedops_index_gate_failures_total",
        "embedops_reconcile_total",
        "up",
    } <= seen


def _grouping_labels(expr: str) -> set[str]:
    """Label names in by / without / on / ignoring / group_left / group_right clauses."""
    clauses = re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr)
    return {label.strip() for clause in clauses for label in clause.split(",") if label.strip()}


def test_rules_group_and_join_on_documented_labels():
    """`by (namespace, index)` after a label rename matches nothing and silences an alert: catch it."""
    known = set().union(*_documented().values()) | {"job", "instance"}
    for rule in _rules():
        unknown = _grouping_labels(rule["expr"]) - known
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: labels {unknown} are on no metric"


def test_annotations_only_query_documented_metrics():
    for alert in _alerts():
        for text in alert["annotations"].values():
            for name in re.findall(r"\b(embedops_\w+)", text):
                assert name in _documented(), f"{alert['alert']}: {name} is not in docs/metrics.md"


def test_alerts_about_a_resource_carry_its_labels():
    """Every alert about a resource fires with namespace, kind and name (what Alertmanager routes
    and groups on), as the promtool cases of each alert expect."""
    expected = {}
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            for alert in check.get("exp_alerts", []):
                expected.setdefault(check["alertname"], []).append(set(alert["exp_labels"]))
    assert set(expected) == EXPECTED_ALERTS, "every alert has a firing case"
    for alert, label_sets in expected.items():
        if alert in {"EmbedopsOperatorDown", "EmbedopsReconcileErrors"}:
            continue
        for labels in label_sets:
            assert {"namespace", "kind", "name"} <= labels and not labels & {"index", "finetunejob"}, alert


def test_selector_parser():
    expr = (
        "max by (namespace, index) (last_over_time(embedops_index_min_recall[5m])) and on (namespace) "
        'count_values by (namespace) ("version", foo:bar) or up{job=~".*x.*"} == 0 offset 2h and time() > 3'
    )
    assert _selectors(expr) == [("embedops_index_min_recall", set()), ("foo:bar", set()), ("up", {"job"})]


# -- dashboard -----------------------------------------------------------------------------------


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(panels: list[dict]) -> list[dict]:
    out = []
    for panel in panels:
        out.append(panel)
        out += _panels(panel.get("panels", []))
    return out


def test_dashboard_identity_and_variables():
    dash = _dashboard()
    assert dash["uid"] == "embedops"
    assert dash["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    # Grafana variable -> the label it lists (the variable keeps the name `index` of earlier releases).
    for name, label in (("namespace", "namespace"), ("index", "name")):
        var = variables[name]
        assert var["type"] == "query"
        assert var["datasource"]["uid"] == "${datasource}"
        m = re.fullmatch(r"label_values\((\w+)(\{[^}]*\})?, *(\w+)\)", var["query"]["query"])
        assert m, var["query"]["query"]
        assert m.group(1) in _documented(), f"variable {name}: {m.group(1)} is not in docs/metrics.md"
        assert m.group(3) == label and label in _documented()[m.group(1)]


def test_dashboard_panels_use_the_datasource_variable_and_documented_metrics():
    documented = _documented()
    panels = [p for p in _panels(_dashboard()["panels"]) if p["type"] != "row"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids are unique"
    used = set()
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"])["uid"] == "${datasource}", panel["title"]
            selectors = _selectors(target["expr"])
            assert selectors, f"{panel['title']}: no metric in {target['expr']}"
            for name, labels in selectors:
                assert name in documented, f"{panel['title']}: {name} is not in docs/metrics.md"
                assert labels <= documented[name], f"{panel['title']}: {name} has no labels {labels - documented[name]}"
                used.add(_metric(name))
            assert not _grouping_labels(target["expr"]) - set().union(*documented.values()), panel["title"]
    everything = {_metric(name) for name in documented}
    assert used == everything, f"not on the dashboard: {sorted(everything - used)}"
