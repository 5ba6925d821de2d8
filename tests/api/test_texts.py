"""What `kubectl get` and `kubectl explain` say about the API matches what embedops does (issue 17, items 5 and 10)."""

from __future__ import annotations

import re
from pathlib import Path

from embedops.api.common import BaseStatus, Scheduling
from embedops.api.kinds import KINDS

SOURCE = Path(__file__).resolve().parents[2] / "operator" / "embedops"


def test_kubectl_get_shows_the_ready_reason_of_every_kind():
    for kind in KINDS.values():
        columns = {name: path for name, _, path, _, _ in kind.printer_columns}
        assert columns["Reason"] == '.status.conditions[?(@.type=="Ready")].reason', kind.kind


def test_suspend_is_described_as_what_it_does_now():
    text = Scheduling.model_fields["suspend"].description or ""
    assert "Create the Job suspended" not in text and "never replaced" in text


def test_every_phase_the_planner_writes_is_listed_in_the_phase_description():
    written = set()
    for path in (SOURCE / "status.py", SOURCE / "reconcile.py"):
        written |= set(re.findall(r'phase\s*=\s*"([A-Z][a-z]+)"', path.read_text(encoding="utf-8")))
        written |= set(re.findall(r'"(Queued|Suspended|Pending|Running)"\n?\s*\)?', path.read_text(encoding="utf-8")))
    described = BaseStatus.model_fields["phase"].description or ""
    assert written, "no phase found in the planner: the pattern is stale"
    assert {p for p in written if p not in described} == set()
