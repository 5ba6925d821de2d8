"""The generated CRDs: up to date, structural, documented, and in agreement with the models.

The API server and the operator must accept the same specs, and the CRDs only get there through
hack/gen_crds.py; these tests catch a stale `crds/`, a schema the API server would refuse, and
drift between schema and model, without a cluster.

What only a real API server can check is left to the e2e test (a later issue). It will start a
kube-apiserver + etcd (envtest's binaries, or a kind cluster), `kubectl apply --server-side -f crds/`
and wait for each CRD's `Established` condition — which is where CEL rules are compiled and their
estimated cost is checked — then apply `examples/` with `--dry-run=server`, and assert that the
rules fire: a second source set, or a changed `spec.target` or `spec.database`, is refused with
the rule's message.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import subprocess
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from embedops.api import crd as crdgen
from embedops.api.common import API_VERSION, GROUP, VERSION
from embedops.api.kinds import KINDS, InvalidResource, Kind, parse_manifest

ROOT = Path(__file__).resolve().parents[2]
Schema = dict[str, Any]

_TYPES = {"object", "array", "string", "integer", "number", "boolean"}
# Everything else — $ref, $defs, definitions, anyOf/oneOf/allOf/not, title, default, nullable,
# const, uniqueItems, format — is either not structural or not something the generator should emit.
_KEYWORDS = {
    "type",
    "description",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
}
_ENUM_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool}
# CEL keywords; Kubernetes makes properties with these names reachable only as `__name__`.
_CEL_RESERVED = {
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
}
# Short names kubectl already resolves; ours must not shadow them.
_BUILTIN_SHORT_NAMES = {
    "cm",
    "cs",
    "csr",
    "crd",
    "crds",
    "deploy",
    "ds",
    "ep",
    "eps",
    "ev",
    "hpa",
    "ing",
    "limits",
    "netpol",
    "no",
    "ns",
    "pc",
    "pdb",
    "po",
    "pv",
    "pvc",
    "quota",
    "rc",
    "rs",
    "sa",
    "sc",
    "sts",
    "svc",
}


def _load(path: Path) -> Schema:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def crds() -> dict[str, Schema]:
    """The committed CRDs by kind: what ships is what is checked (staleness is its own test)."""
    return {kind.kind: _load(ROOT / "crds" / crdgen.file_name(kind)) for kind in KINDS.values()}


def _schema(crd: Schema) -> Schema:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _nodes(node: Schema, path: str = "") -> Iterator[tuple[str, Schema, list[Schema]]]:
    """Every schema node with its dotted path and its ancestors (outermost first)."""
    stack: list[tuple[str, Schema, list[Schema]]] = [(path, node, [])]
    while stack:
        where, current, parents = stack.pop()
        yield where, current, parents
        below = [*parents, current]
        for name, sub in current.get("properties", {}).items():
            stack.append((f"{where}.{name}".lstrip("."), sub, below))
        if isinstance(current.get("items"), dict):
            stack.append((f"{where}[]", current["items"], below))
        if isinstance(current.get("additionalProperties"), dict):
            stack.append((f"{where}.*", current["additionalProperties"], below))


def _at(schema: Schema, path: str) -> Schema:
    node = schema
    for name in filter(None, path.split(".")):
        node = node["properties"][name]
    return node


# --- generation -----------------------------------------------------------------------------------


def _gen_crds_module() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("gen_crds", ROOT / "hack" / "gen_crds.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_crds_are_what_the_models_generate():
    done = subprocess.run(
        [sys.executable, "hack/gen_crds.py", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"crds/ is stale; run `python hack/gen_crds.py`:\n{done.stderr}"


def test_check_names_each_stale_file_and_writing_fixes_them(tmp_path, capsys):
    gen = _gen_crds_module()
    assert gen.main(["--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(crdgen.generate())
    assert gen.main(["--check", "--out", str(tmp_path)]) == 0

    edited, removed = (tmp_path / crdgen.file_name(KINDS[k]) for k in ("FineTuneJob", "EmbeddingIndex"))
    edited.write_text(edited.read_text(encoding="utf-8").replace("minimum: 1", "minimum: 2"), encoding="utf-8")
    removed.unlink()
    leftover = tmp_path / f"{GROUP}_oldkinds.yaml"
    leftover.write_text(crdgen.HEADER + "kind: CustomResourceDefinition\n", encoding="utf-8")
    foreign = tmp_path / "values.yaml"
    foreign.write_text("replicas: 1\n", encoding="utf-8")
    capsys.readouterr()

    assert gen.main(["--check", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    for path, why in ((edited, "differs"), (removed, "missing"), (leftover, "no longer generated")):
        assert f"{path}: {why}" in err
    assert "values.yaml" not in err

    assert gen.main(["--out", str(tmp_path)]) == 0
    assert gen.main(["--check", "--out", str(tmp_path)]) == 0
    assert not leftover.exists() and foreign.exists()


def test_output_is_deterministic_and_headed():
    first, second = crdgen.generate(), crdgen.generate()
    assert first == second
    for text in first.values():
        assert text.startswith("# Generated by hack/gen_crds.py from operator/embedops/api — do not edit.\n")


def test_unions_the_api_server_cannot_express_stop_generation():
    class Either(BaseModel):
        value: int | str

    with pytest.raises(ValueError, match=r"x\.value: only `X \| None` unions"):
        crdgen.structural_schema(Either, "x")


# --- the CRD envelope -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS.values(), ids=lambda k: k.kind)
def test_crd_envelope(crds, kind: Kind):
    crd = crds[kind.kind]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1" and crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{kind.plural}.{GROUP}"
    spec = crd["spec"]
    assert spec["group"] == GROUP and spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": kind.kind,
        "listKind": f"{kind.kind}List",
        "plural": kind.plural,
        "singular": kind.singular,
        "shortNames": list(kind.short_names),
        "categories": ["embedops"],
    }
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == (VERSION, True, True)
    assert version["subresources"] == {"status": {}}
    assert [(c["name"], c.get("priority", 0)) for c in version["additionalPrinterColumns"]] == [
        (c[0], c[4]) for c in kind.printer_columns
    ]

    root = _schema(crd)
    assert root["description"] == kind.description
    assert root["required"] == ["spec"]
    assert root["properties"]["metadata"] == {"type": "object"}
    assert {"apiVersion", "kind", "spec", "status"} <= root["properties"].keys()


def test_short_names_are_unique_and_do_not_shadow_builtins():
    names = [n for k in KINDS.values() for n in (*k.short_names, k.plural, k.singular)]
    assert len(names) == len(set(names))
    assert not {n for k in KINDS.values() for n in k.short_names} & _BUILTIN_SHORT_NAMES


# --- structural schema ----------------------------------------------------------------------------


def _structural_problems(root: Schema) -> list[str]:
    problems = []
    for where, node, _ in _nodes(root):
        where = where or "<root>"
        problems += _keyword_problems(where, node)
        problems += _type_problems(where, node)
        problems += _map_problems(where, node)
        problems += _undescribed(where, node)
    return problems


def _keyword_problems(where: str, node: Schema) -> list[str]:
    problems = []
    unknown = {k for k in node if k not in _KEYWORDS and not k.startswith("x-kubernetes-")}
    if unknown:
        problems.append(f"{where}: keywords {sorted(unknown)} are not allowed")
    for bound, base in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node and (node[bound] is not True or base not in node):
            problems.append(f"{where}: {bound} must be `true` next to {base} (OpenAPI v3.0)")
    if node.get("x-kubernetes-preserve-unknown-fields", True) is not True:
        problems.append(f"{where}: x-kubernetes-preserve-unknown-fields must be true or absent")
    return problems


def _type_problems(where: str, node: Schema) -> list[str]:
    problems = []
    type_ = node.get("type")
    if type_ not in _TYPES and not (
        node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-int-or-string")
    ):
        problems.append(f"{where}: no valid type ({type_!r})")
    if "properties" in node and type_ != "object":
        problems.append(f"{where}: properties on a {type_}")
    if (type_ == "array") != isinstance(node.get("items"), dict):
        problems.append(f"{where}: arrays, and only arrays, have one items schema")
    if not set(node.get("required", [])) <= node.get("properties", {}).keys():
        problems.append(f"{where}: required names a missing property")
    if "enum" in node and not all(isinstance(v, _ENUM_TYPES.get(type_, ())) for v in node["enum"]):
        problems.append(f"{where}: enum values are not {type_}")
    return problems


def _map_problems(where: str, node: Schema) -> list[str]:
    if "additionalProperties" not in node:
        return []
    problems = []
    if not isinstance(node["additionalProperties"], dict):
        problems.append(f"{where}: additionalProperties must be a schema, for maps only")
    if "properties" in node or node.get("type") != "object":
        problems.append(f"{where}: additionalProperties and properties are mutually exclusive")
    return problems


def _undescribed(where: str, node: Schema) -> list[str]:
    return [
        f"{where}.{name}: no description (kubectl explain shows nothing)"
        for name, sub in node.get("properties", {}).items()
        if (where != "<root>" or name != "metadata") and not str(sub.get("description", "")).strip()
    ]


@pytest.mark.parametrize("kind", KINDS.values(), ids=lambda k: k.kind)
def test_schema_is_structural_and_every_property_is_described(crds, kind: Kind):
    assert _structural_problems(_schema(crds[kind.kind])) == []


def test_structural_check_catches_what_pydantic_emits():
    """The check above is only worth something if raw pydantic output fails it."""
    raw = KINDS["EmbeddingIndex"].spec_model.model_json_schema(by_alias=True)
    problems = "\n".join(_structural_problems(raw))
    for expected in ("'$defs'", "'$ref'", "'anyOf'", "'title'", "'default'", "additionalProperties must be a schema"):
        assert expected in problems


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


def _fields(model: type[BaseModel], node: Schema, path: str) -> Iterator[tuple[str, Any, Schema, Schema]]:
    """(path, pydantic field, its CRD node, the parent object node) for every field, recursively."""
    for name, field in model.model_fields.items():
        alias = field.alias or name
        assert alias in node["properties"], f"{path}.{alias}: model field missing from the CRD"
        prop = node["properties"][alias]
        yield f"{path}.{alias}", field, prop, node
        for sub in _models_in(field.annotation):
            yield from _fields(sub, prop["items"] if prop["type"] == "array" else prop, f"{path}.{alias}")


@pytest.mark.parametrize("kind", KINDS.values(), ids=lambda k: k.kind)
def test_properties_match_model_fields_and_defaults_are_documented_not_served(crds, kind: Kind):
    root = _schema(crds[kind.kind])
    for part, model in (("spec", kind.spec_model), ("status", kind.status_model)):
        node = root["properties"][part]
        assert node["properties"].keys() == {f.alias or n for n, f in model.model_fields.items()}
        for path, field, prop, parent in _fields(model, node, part):
            assert (path.rsplit(".", 1)[1] in parent.get("required", [])) == field.is_required(), path
            if not field.is_required() and field.default is not None and field.default_factory is None:
                assert re.search(r"\bDefault\b", prop["description"]), f"{path}: default {field.default!r} undocumented"


def test_number_bounds_use_openapi_v3_0_booleans(crds):
    spec = _schema(crds["FineTuneJob"])["properties"]["spec"]
    rate = _at(spec, "training.learningRate")
    assert (rate["minimum"], rate["exclusiveMinimum"]) == (0, True) and "maximum" not in rate
    warmup = _at(spec, "training.warmupRatio")
    assert (warmup["minimum"], warmup["maximum"], warmup["exclusiveMaximum"]) == (0, 1, True)
    assert "exclusiveMinimum" not in warmup


def test_maps_and_passthrough_objects(crds):
    scheduling = _at(_schema(crds["FineTuneJob"]), "spec.scheduling")
    assert scheduling["properties"]["nodeSelector"]["additionalProperties"] == {"type": "string"}
    affinity = scheduling["properties"]["affinity"]
    assert affinity["type"] == "object" and affinity["x-kubernetes-preserve-unknown-fields"] is True


# --- printer columns ------------------------------------------------------------------------------

_SEGMENT = re.compile(r"\.([A-Za-z0-9_]+)(\[\?\(@\.([A-Za-z0-9_]+)==\"[^\"]*\"\)\])?")
# Filled in by the API server's ObjectMeta, which the CRD schema does not describe.
_METADATA = {".metadata.creationTimestamp": "string", ".metadata.name": "string", ".metadata.namespace": "string"}
_COLUMN_TYPES = {
    "integer": {"integer"},
    "number": {"number", "integer"},
    "string": {"string"},
    "boolean": {"boolean"},
    "date": {"string"},
}


def _column_target(root: Schema, path: str) -> Schema:
    if path in _METADATA:
        return {"type": _METADATA[path]}
    segments = list(_SEGMENT.finditer(path))
    assert "".join(m.group(0) for m in segments) == path, f"{path}: unsupported JSONPath"
    node = root
    for m in segments:
        assert m.group(1) in node.get("properties", {}), f"{path}: no field {m.group(1)!r}"
        node = node["properties"][m.group(1)]
        if m.group(2):
            assert node["type"] == "array", f"{path}: filter on a non-list {m.group(1)!r}"
            node = node["items"]
            assert m.group(3) in node["properties"], f"{path}: filter on missing field {m.group(3)!r}"
    return node


@pytest.mark.parametrize("kind", KINDS.values(), ids=lambda k: k.kind)
def test_printer_columns_point_at_fields_of_their_type(crds, kind: Kind):
    version = crds[kind.kind]["spec"]["versions"][0]
    for column in version["additionalPrinterColumns"]:
        target = _column_target(version["schema"]["openAPIV3Schema"], column["jsonPath"])
        assert target["type"] in _COLUMN_TYPES[column["type"]], column
        assert column["description"]


# --- CEL rules ------------------------------------------------------------------------------------

_EXPECTED_RULES = [
    (
        "EmbeddingDataset",
        "spec.source",
        "[has(self.beir), has(self.pairs), has(self.postgres), has(self.documents), has(self.table), "
        "has(self.datasetRef)].filter(x, x).size() == 1",
    ),
    (
        "EmbeddingDataset",
        "spec",
        "has(self.generate) || !(has(self.source.documents) || has(self.source.table) || has(self.source.datasetRef))",
    ),
    ("EmbeddingDataset", "spec.generate", "[has(self.endpoint), has(self.model)].filter(x, x).size() == 1"),
    ("EmbeddingIndex", "spec.model", "[has(self.fineTuneJobRef), has(self.name)].filter(x, x).size() == 1"),
    ("EmbeddingIndex", "spec.source", "[has(self.table), has(self.datasetRef)].filter(x, x).size() == 1"),
    ("EmbeddingIndex", "spec.target", "self == oldSelf"),
    ("EmbeddingIndex", "spec.database", "self == oldSelf"),
    ("EmbeddingIndex", "spec", "!has(oldSelf.database) || has(self.database)"),
]


@pytest.mark.parametrize("kind, path, rule", _EXPECTED_RULES, ids=lambda v: v if isinstance(v, str) else None)
def test_cel_rules_are_on_their_nodes(crds, kind: str, path: str, rule: str):
    rules = _at(_schema(crds[kind]), path).get("x-kubernetes-validations", [])
    assert rule in [r["rule"] for r in rules]


def _rule_problems(root: Schema) -> list[str]:
    problems = []
    for where, node, parents in _nodes(root):
        for rule in node.get("x-kubernetes-validations", []):
            problems += _one_rule_problems(where, node, parents, rule)
    return problems


def _one_rule_problems(where: str, node: Schema, parents: list[Schema], rule: dict[str, str]) -> list[str]:
    problems = []
    text, message = rule["rule"], rule.get("message", "")
    if not message.strip() or "\n" in message:
        problems.append(f"{where}: {text!r} needs a one-line message")
    # Properties, not methods (`self.startsWith(...)`).
    for name in re.findall(r"\b(?:self|oldSelf)\.([A-Za-z_][A-Za-z0-9_]*)\b(?!\()", text):
        if name not in node.get("properties", {}):
            problems.append(f"{where}: {text!r} names {name!r}, not a property here")
        elif name in _CEL_RESERVED:
            problems.append(f"{where}: {text!r} must spell {name!r} as __{name}__")
    if "oldSelf" in text and any(p.get("type") == "array" for p in parents):
        problems.append(f"{where}: transition rule under a list cannot correlate old and new items")
    return problems + _unbounded_cost(where, node, parents, text)


def _unbounded_cost(where: str, node: Schema, parents: list[Schema], text: str) -> list[str]:
    """The API server refuses rules whose estimated cost is unbounded: every list or map the rule runs
    once per element of (its ancestors), or walks (what it reads beyond `has()`), needs a size bound."""
    walked = (
        [node]
        if re.search(r"\b(?:self|oldSelf)\b(?!\.)", text)
        else [
            node["properties"][name]
            for name in re.findall(r"(?<!has\()\b(?:self|oldSelf)\.([A-Za-z_][A-Za-z0-9_]*)", text)
            if name in node.get("properties", {})
        ]
    )
    problems = []
    for sized in [*parents, *(n for w in walked for _, n, _ in _nodes(w))]:
        if sized.get("type") == "array" and "maxItems" not in sized:
            problems.append(f"{where}: a list around or under a CEL rule needs maxItems")
        if isinstance(sized.get("additionalProperties"), dict) and "maxProperties" not in sized:
            problems.append(f"{where}: a map around or under a CEL rule needs maxProperties")
    return problems


@pytest.mark.parametrize("kind", KINDS.values(), ids=lambda k: k.kind)
def test_cel_rules_name_real_fields_and_have_bounded_cost(crds, kind: Kind):
    assert _rule_problems(_schema(crds[kind.kind])) == []


def test_rule_check_catches_unbounded_lists_and_typos():
    root = {
        "type": "object",
        "description": "d",
        "properties": {
            "items": {
                "type": "array",
                "description": "d",
                "items": {
                    "type": "object",
                    "description": "d",
                    "properties": {"a": {"type": "string", "description": "d"}},
                    "x-kubernetes-validations": [{"rule": "has(self.b) || self.a == oldSelf.a", "message": "m"}],
                },
            }
        },
    }
    problems = "\n".join(_rule_problems(root))
    assert "names 'b'" in problems and "needs maxItems" in problems and "transition rule under a list" in problems


# --- examples -------------------------------------------------------------------------------------


def _examples() -> list[tuple[str, Schema]]:
    return [
        (f"{path.relative_to(ROOT)}:{doc['kind']}/{doc['metadata']['name']}", doc)
        for path in sorted((ROOT / "examples").rglob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and doc.get("apiVersion") == API_VERSION
    ]


_EXAMPLES = _examples()
_needs_examples = pytest.mark.skipif(not _EXAMPLES, reason="no embedops manifests under examples/")


@_needs_examples
@pytest.mark.parametrize("where, doc", _EXAMPLES, ids=[w for w, _ in _EXAMPLES])
def test_examples_are_valid_for_the_model(where: str, doc: Schema):
    parse_manifest(doc, where)


@_needs_examples
@pytest.mark.parametrize("where, doc", _EXAMPLES, ids=[w for w, _ in _EXAMPLES])
def test_examples_are_valid_for_the_crd_schema(crds, where: str, doc: Schema):
    # Only in environments that have jsonschema; the project does not depend on it.
    jsonschema = pytest.importorskip("jsonschema")
    # OpenAPI v3.0's boolean exclusiveMinimum/Maximum is draft 4's.
    jsonschema.Draft4Validator(_schema(crds[doc["kind"]])).validate(doc)


@_needs_examples
@pytest.mark.parametrize(
    "path, value",
    [
        ("training.epochs", 0),
        ("training.learningRate", 0),
        ("training.precision", "int8"),
        ("datasetRef.name", "Not_A_Name"),
    ],
)
def test_crd_schema_and_model_reject_the_same_values(crds, path: str, value: Any):
    jsonschema = pytest.importorskip("jsonschema")
    jobs = [d for _, d in _EXAMPLES if d["kind"] == "FineTuneJob"]
    if not jobs:
        pytest.skip("no FineTuneJob example")
    bad = copy.deepcopy(jobs[0])
    *parents, leaf = path.split(".")
    node = bad["spec"]
    for name in parents:
        node = node.setdefault(name, {})
    node[leaf] = value
    with pytest.raises(InvalidResource):
        parse_manifest(bad)
    assert list(jsonschema.Draft4Validator(_schema(crds["FineTuneJob"])).iter_errors(bad))
