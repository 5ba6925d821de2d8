"""The condition vocabulary (embedops.api.conditions) is the one the docs and the Argo CD health check know."""

from __future__ import annotations

import pathlib
import re

from embedops.api.conditions import PUBLISH_NOTES, TERMINAL, ConditionType, Reason

ROOT = pathlib.Path(__file__).resolve().parents[2]
LUA = (ROOT / "charts" / "embedops" / "files" / "argocd" / "health.lua").read_text(encoding="utf-8")
DOCS = (ROOT / "docs" / "operator.md").read_text(encoding="utf-8")


def _lua_set(name: str) -> set[str]:
    body = re.search(rf"local {name} = \{{(.*?)\}}", LUA, re.S).group(1)
    return set(re.findall(r"(\w+) = true", body))


def _status_section() -> str:
    return DOCS[DOCS.index("## Status") : DOCS.index("## Deletion")]


def test_the_health_check_knows_the_terminal_reasons_and_the_publish_notes():
    assert _lua_set("terminal") == set(TERMINAL)
    assert _lua_set("notes") == set(PUBLISH_NOTES)
    compared = set(re.findall(r'reason == "(\w+)"', LUA))
    assert compared and compared <= set(Reason)
    assert set(re.findall(r'condition\(st, "(\w+)"\)', LUA)) == set(ConditionType)


def test_every_reason_is_documented_and_the_docs_name_no_other():
    rows = [line for line in _status_section().splitlines() if line.startswith("| `")]
    # The reason column: the first of a (reason, meaning) table, the second of (condition, reason, meaning).
    documented = {word for row in rows for word in re.findall(r"`(\w+)`", row.split("|")[-3])}
    assert documented == set(Reason), documented ^ set(Reason)
