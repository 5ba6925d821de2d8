"""The chart's derived files (values README, Argo CD values) are regenerated with their sources."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_derived_chart_files_are_up_to_date():
    done = subprocess.run([sys.executable, "hack/gen_chart.py", "--check"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_argo_cd_values_carry_the_health_script_for_each_kind():
    chart = ROOT / "charts" / "embedops"
    cm = yaml.safe_load((chart / "files" / "argocd" / "argo-cd-values.yaml").read_text())["configs"]["cm"]
    script = (chart / "files" / "argocd" / "health.lua").read_text()
    assert cm == {f"resource.customizations.health.embedops.dev_{kind}": script
                  for kind in ("EmbeddingDataset", "FineTuneJob", "EmbeddingIndex")}
