"""The CRDs' transition rules (CEL on `oldSelf`), applied to an update as the API server applies them.

On a cluster the API server refuses an update that changes an immutable field
(`EmbeddingIndex.spec.target`, `spec.database`): moving an index would orphan its view, its
tables and its catalog row. Local mode has no API server, so it checks each manifest against the
resource it stored with these rules, read from the schema the CRDs are generated from
(embedops.api.crd): a rule added to a model is enforced here with no change to this module, and
a rule of a form this module cannot evaluate fails `rules()` (and its test) instead of being
skipped.

The API server runs a transition rule only where the field is in both the old and the new
object, as written (the CRDs carry no defaults), so both are compared as written.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from embedops.api import crd
from embedops.api.kinds import KINDS

_IMMUTABLE = "self == oldSelf"
_KEPT = re.compile(r"!has\(oldSelf\.(\w+)\) \|\| has\(self\.\1\)")  # a field that cannot be removed once set
_ABSENT = object()


@dataclass(frozen=True)
class Rule:
    path: tuple[str, ...]  # wire names under spec
    kept: bool  # True: may not be removed; False: may not change
    message: str  # the CRD's message

    @property
    def field(self) -> str:
        return ".".join(("spec", *self.path))


@functools.cache
def rules(kind: str) -> tuple[Rule, ...]:
    """Every transition rule of a kind's spec, from its structural schema."""
    return tuple(_rules(crd.structural_schema(KINDS[kind].spec_model, "spec"), ()))


def _rules(node: dict[str, Any], path: tuple[str, ...]) -> list[Rule]:
    found = [_rule(cel, path) for cel in node.get("x-kubernetes-validations", []) if "oldSelf" in cel["rule"]]
    for name, child in node.get("properties", {}).items():
        found += _rules(child, (*path, name))
    if "items" in node or "additionalProperties" in node:
        nested = _rules(node.get("items") or node["additionalProperties"], (*path, "*"))
        if nested:
            raise NotImplementedError(f"spec.{'.'.join(path)}: transition rules inside lists or maps")
    return found


def _rule(cel: dict[str, str], path: tuple[str, ...]) -> Rule:
    if cel["rule"] == _IMMUTABLE:
        return Rule(path, kept=False, message=cel["message"])
    if match := _KEPT.fullmatch(cel["rule"]):
        return Rule((*path, match.group(1)), kept=True, message=cel["message"])
    raise NotImplementedError(f"spec.{'.'.join(path)}: local mode cannot evaluate the rule {cel['rule']!r}")


def _at(spec: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        if not isinstance(spec, dict) or name not in spec:
            return _ABSENT
        spec = spec[name]
    return spec


def refused(kind: str, old: dict[str, Any], new: dict[str, Any]) -> list[tuple[Rule, Any, Any]]:
    """The rules an update from spec `old` to spec `new` (both as written) breaks, with the two values."""
    broken = []
    for rule in rules(kind):
        before, after = _at(old, rule.path), _at(new, rule.path)
        if before is _ABSENT:
            continue
        if (rule.kept and after is _ABSENT) or (not rule.kept and after is not _ABSENT and after != before):
            broken.append((rule, before, None if after is _ABSENT else after))
    return broken
