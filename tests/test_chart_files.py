"""The chart's files, without a cluster: the derived ones (values README, Argo CD values) are
regenerated with their sources, and the default values fit the schema, each described."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_derived_chart_files_are_up_to_date():
    done = subprocess.run(
        [sys.executable, "hack/gen_chart.py", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_argo_cd_values_carry_the_health_script_for_each_kind():
    chart = ROOT / "charts" / "embedops"
    cm = yaml.safe_load((chart / "files" / "argocd" / "argo-cd-values.yaml").read_text())["configs"]["cm"]
    script = (chart / "files" / "argocd" / "health.lua").read_text()
    assert cm == {
        f"resource.customizations.health.embedops.dev_{kind}": script
        for kind in ("EmbeddingDataset", "FineTuneJob", "EmbeddingIndex")
    }


def test_default_values_fit_the_schema_and_every_value_is_described():
    """What helm checks at install, without helm: values.yaml against values.schema.json; and the
    chart README's table (hack/gen_chart.py) has a description for every value."""
    import jsonschema

    spec = importlib.util.spec_from_file_location("gen_chart", ROOT / "hack" / "gen_chart.py")
    gen_chart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_chart)
    chart = ROOT / "charts" / "embedops"
    schema = json.loads((chart / "values.schema.json").read_text())
    values = yaml.safe_load((chart / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(values)
    rows = gen_chart._rows(schema, values, "", schema["definitions"])
    assert [name for name, _, text in rows if not text] == []
    assert {
        "image.digest",
        "worker.resources.cpu",
        "worker.resources.memory",
        "worker.resources.requests",
        "worker.resources.limits",
        "worker.imagePullSecrets",
        "worker.podTemplate.spec",
        "extraEnv",
        "extraEnvFrom",
        "metrics.forceMonitoringObjects",
        "podSecurityContext",
        "securityContext",
        "nameOverride",
        "fullnameOverride",
        "rbac.aggregateClusterRoles",
    } <= {r[0] for r in rows}
