"""The Argo CD health check (charts/embedops/files/argocd/health.lua), run by a real Lua 5.1.

Argo CD runs health scripts with gopher-lua, a Lua 5.1: tests/argocd/run_health.lua sets the
global `obj` and runs the script with the libraries Argo CD opens. The samples are in Argo CD's
own resource_customizations test layout (tests/argocd/<Kind>/health_test.yaml + testdata/), and
the statuses the operator really writes (embedops.status, embedops.reconcile) are run too, so a
new reason or condition in the operator cannot silently fall through the script.
"""

from __future__ import annotations

import datetime as dt
import math
import pathlib
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from embedops import status as statuses
from embedops.api.index import (
    DriftResult,
    EmbeddingIndexSpec,
    IndexVersion,
    ProbeResult,
)
from embedops.api.kinds import KINDS
from embedops.reconcile import Observed, ObservedJob, plan
from embedops.settings import OperatorSettings

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "charts" / "embedops" / "files" / "argocd" / "health.lua"
HARNESS = ROOT / "tests" / "argocd" / "run_health.lua"
SAMPLES = ROOT / "tests" / "argocd"
LUA = shutil.which("lua5.1")
needs_lua = pytest.mark.skipif(
    LUA is None, reason="lua5.1 is not installed (apt-get install lua5.1); Argo CD runs health scripts as Lua 5.1"
)
HEALTH = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


# -- running the script -------------------------------------------------------------------------


def _lua_string(text: str) -> str:
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if 32 <= byte < 127 and char not in '"\\':
            out.append(char)
        else:
            out.append(f"\\{byte:03d}")  # always three digits: a digit after it cannot join the escape
    return '"' + "".join(out) + '"'


def to_lua(value: Any) -> str:
    """A Lua 5.1 expression of a JSON value, as Argo CD converts objects: null is nil (absent)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a JSON number: {value}")
        return repr(value)
    if isinstance(value, str):
        return _lua_string(value)
    if isinstance(value, (list, tuple)):
        return "{" + "".join(f"[{i}]={to_lua(v)}," for i, v in enumerate(value, 1) if v is not None) + "}"
    if isinstance(value, dict):
        return "{" + "".join(f"[{_lua_string(str(k))}]={to_lua(v)}," for k, v in value.items() if v is not None) + "}"
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def health(obj: dict[str, Any], tmp_path: pathlib.Path, script: pathlib.Path = SCRIPT) -> tuple[str, str]:
    """(status, message) of one object, from lua5.1."""
    path = tmp_path / "obj.lua"
    path.write_text("return " + to_lua(obj) + "\n")
    proc = subprocess.run([LUA, str(HARNESS), str(script), str(path)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    status, _, message = proc.stdout.partition("\n")
    return status, message


# -- the samples --------------------------------------------------------------------------------


def _samples() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (test_file.parent.name, case["inputPath"], case["healthStatus"])
        for test_file in sorted(SAMPLES.glob("*/health_test.yaml"))
        for case in yaml.safe_load(test_file.read_text(encoding="utf-8"))["tests"]
    ]


SAMPLE_CASES = _samples()


@needs_lua
@pytest.mark.parametrize(
    ("kind", "input_path", "expected"), SAMPLE_CASES, ids=[f"{k}/{pathlib.Path(p).stem}" for k, p, _ in SAMPLE_CASES]
)
def test_sample(kind: str, input_path: str, expected: dict[str, str], tmp_path: pathlib.Path) -> None:
    obj = yaml.safe_load((SAMPLES / kind / input_path).read_text(encoding="utf-8"))
    assert obj["kind"] == kind
    status, message = health(obj, tmp_path)
    assert status == expected["status"]
    assert message == expected["message"]


def test_every_sample_file_is_listed_once() -> None:
    listed = sorted(f"{kind}/{path}" for kind, path, _ in SAMPLE_CASES)
    on_disk = sorted(f"{p.parent.parent.name}/testdata/{p.name}" for p in SAMPLES.glob("*/testdata/*.yaml"))
    assert listed == on_disk
    assert all(expected["status"] in HEALTH for _, _, expected in SAMPLE_CASES)


def test_samples_are_objects_the_api_accepts() -> None:
    """Samples stay realistic as the API changes; only the odd_* ones are malformed on purpose."""
    for kind, input_path, _ in SAMPLE_CASES:
        if pathlib.Path(input_path).stem.startswith("odd_"):
            continue
        obj = yaml.safe_load((SAMPLES / kind / input_path).read_text(encoding="utf-8"))
        model = KINDS[kind]
        model.spec_model.model_validate(obj["spec"])
        model.status_model.model_validate(obj.get("status") or {})


def test_every_crd_kind_has_healthy_progressing_and_degraded_samples() -> None:
    crds = [yaml.safe_load(p.read_text(encoding="utf-8")) for p in (ROOT / "crds").glob("*.yaml")]
    kinds = {crd["spec"]["names"]["kind"] for crd in crds}
    assert kinds == set(KINDS)
    for kind in kinds:
        seen = {expected["status"] for k, _, expected in SAMPLE_CASES if k == kind}
        assert {"Healthy", "Progressing", "Degraded", "Suspended"} <= seen, (kind, seen)


# -- what the operator really writes ------------------------------------------------------------

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
SETTINGS = OperatorSettings(worker_image="w:1")
INDEX_SPEC = {
    "model": {"fineTuneJobRef": {"name": "ft"}},
    "source": {"datasetRef": {"name": "ds"}},
    "target": {"name": "docs"},
    "database": {"dsnSecretRef": {"name": "pg"}},
    "probe": {"minRecall": 0.5},
    "drift": {"threshold": 0.02},
}
SPECS = {
    "EmbeddingDataset": {"source": {"beir": {"path": "data/scifact"}}},
    "FineTuneJob": {"datasetRef": {"name": "ds"}},
    "EmbeddingIndex": INDEX_SPEC,
}


def _body(kind: str, spec: dict[str, Any], status: dict[str, Any] | None = None, generation: int = 2) -> dict[str, Any]:
    out = {
        "apiVersion": "embedops.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x", "namespace": "ns", "uid": "uid-x", "generation": generation},
        "spec": spec,
    }
    if status is not None:
        out["status"] = status
    return out


def _planned(
    kind: str, spec: dict[str, Any], jobs: dict[str, ObservedJob] | None = None, related: dict | None = None
) -> dict[str, Any]:
    """The object with the status the operator's plan writes for it."""
    body = _body(kind, spec)
    p = plan(Observed(body, jobs=jobs or {}, related=related or {}, now=NOW), SETTINGS)
    body["status"] = p.status.to_wire()
    return body


def _job_states(kind: str, state: str, spec: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A resource (with no dependencies) whose single Job is in `state`."""
    body = _body(kind, spec or SPECS[kind])
    first = plan(Observed(body, now=NOW), SETTINGS)
    name = first.create[0].name
    body["status"] = first.status.to_wire()
    job = ObservedJob(name, state, **extra)  # type: ignore[arg-type]
    body["status"] = plan(Observed(body, jobs={name: job}, now=NOW), SETTINGS).status.to_wire()
    return body


@needs_lua
def test_operator_written_dataset_statuses(tmp_path: pathlib.Path) -> None:
    kind = "EmbeddingDataset"
    assert health(_body(kind, SPECS[kind]), tmp_path) == (
        "Progressing",
        "Waiting for the operator to reconcile the resource",
    )
    created = _planned(kind, SPECS[kind])
    status, message = health(created, tmp_path)
    assert status == "Progressing" and message.startswith("Job ") and message.endswith(" created")
    assert health(_job_states(kind, "Running"), tmp_path)[0] == "Progressing"
    suspended = {**SPECS[kind], "scheduling": {"suspend": True}}
    status, message = health(_job_states(kind, "Pending", suspended, suspended=True), tmp_path)
    assert status == "Suspended" and message.endswith(" is suspended")
    queued = {**SPECS[kind], "scheduling": {"queueName": "gpus"}}
    status, message = health(_job_states(kind, "Pending", queued, suspended=True, queue="gpus"), tmp_path)
    assert status == "Progressing" and message.endswith(" waits for Kueue to admit it (queue gpus)")
    status, message = health(_job_states(kind, "Failed", error="exit code 3: bad rows"), tmp_path)
    assert status == "Degraded" and message.endswith("failed: exit code 3: bad rows")
    status, message = health(_job_states(kind, "Succeeded", results={0: {"bad": 1}}), tmp_path)
    assert status == "Degraded" and "without a readable result" in message
    prepared = {
        "counts": {"corpus": 10, "trainPairs": 5, "testQueries": 3},
        "fingerprint": "f" * 64,
        "location": "/workspace/x",
        "invalidSamples": [],
        "preparedAt": "2026-11-25T11:00:00Z",
    }
    assert health(_job_states(kind, "Succeeded", results={0: prepared}), tmp_path) == (
        "Healthy",
        "5 training pairs, 3 test queries, 10 documents",
    )
    invalid = _planned(kind, {"source": {}})
    assert health(invalid, tmp_path)[0] == "Degraded" and invalid["status"]["conditions"][0]["reason"] == "InvalidSpec"
    no_db = _planned(kind, {"source": {"postgres": {"table": "pairs"}}})
    assert health(no_db, tmp_path) == (
        "Degraded",
        "spec.source.postgres.database.dsnSecretRef is required in a cluster",
    )
    # A spec change the operator has not seen yet.
    stale = dict(no_db, metadata={**no_db["metadata"], "generation": 3})
    assert health(stale, tmp_path)[0] == "Progressing"


@needs_lua
def test_operator_written_finetune_statuses(tmp_path: pathlib.Path) -> None:
    kind = "FineTuneJob"
    assert health(_planned(kind, SPECS[kind]), tmp_path) == ("Progressing", "EmbeddingDataset ds does not exist")
    not_ready = {("EmbeddingDataset", "ds"): {"conditions": []}}
    assert health(_planned(kind, SPECS[kind], related=not_ready), tmp_path) == (
        "Progressing",
        "waiting for EmbeddingDataset ds to be Ready",
    )
    failed = statuses.failed(KINDS[kind].status_model, "NoImprovement", "nDCG@10 0.6 -> 0.5", statuses.At(2, NOW))
    assert health(_body(kind, SPECS[kind], failed.to_wire()), tmp_path) == ("Degraded", "nDCG@10 0.6 -> 0.5")


def _versions(state: str = "Live") -> list[IndexVersion]:
    return [
        IndexVersion.model_validate(
            {
                "version": 2,
                "table": "docs_v2",
                "model": "/m",
                "rows": 10,
                "state": state,
                "createdAt": "2026-11-25T11:00:00Z",
            }
        )
    ]


def _probe(recall: float) -> ProbeResult:
    return ProbeResult.model_validate(
        {
            "version": 2,
            "k": 10,
            "recallAtK": recall,
            "mrrAt10": 0.5,
            "ndcgAt10": 0.5,
            "queries": 3,
            "checkedAt": "2026-11-25T12:00:00Z",
        }
    )


def _drift(drifted: bool) -> DriftResult:
    return DriftResult.model_validate(
        {
            "version": 2,
            "score": 0.05 if drifted else 0.001,
            "centroidDistance": 0.01,
            "driftedComponents": 0.1,
            "referenceRows": 100,
            "currentRows": 100,
            "drifted": drifted,
            "checkedAt": "2026-11-25T12:00:00Z",
        }
    )


@needs_lua
def test_operator_written_index_statuses(tmp_path: pathlib.Path) -> None:
    kind = "EmbeddingIndex"
    spec = EmbeddingIndexSpec.model_validate(INDEX_SPEC)

    def check(status_model: Any) -> tuple[str, str]:
        return health(_body(kind, INDEX_SPEC, status_model.to_wire()), tmp_path)

    assert check(statuses.index_observed(spec, _versions(), statuses.At(2, NOW), probe=_probe(0.9))) == (
        "Healthy",
        "serving v2 (10 rows)",
    )
    assert check(statuses.index_observed(spec, _versions(), statuses.At(2, NOW), probe=_probe(0.2))) == (
        "Degraded",
        "recall@10 0.2000 below 0.5",
    )
    assert check(statuses.index_observed(spec, _versions(), statuses.At(2, NOW), drift=_drift(True))) == (
        "Degraded",
        "drift 0.0500 above 0.02",
    )
    assert check(statuses.index_observed(spec, _versions("Ready"), statuses.At(2, NOW)))[0] == "Degraded"
    gate = statuses.index_observed(spec, _versions(), statuses.At(2, NOW), probe=_probe(0.9))
    gate.set_condition("Progressing", "False", "GateFailed", "v3 not cut over: low recall", generation=2, now=NOW)
    assert check(gate) == ("Healthy", "serving v2 (10 rows); v3 not cut over: low recall")
    # The dependencies, the model and the spec checks, as planned.
    assert health(_planned(kind, INDEX_SPEC), tmp_path) == ("Progressing", "FineTuneJob ft does not exist")
    waiting = _planned(
        kind,
        INDEX_SPEC,
        related={("FineTuneJob", "ft"): {"conditions": []}, ("EmbeddingDataset", "ds"): {"conditions": []}},
    )
    assert health(waiting, tmp_path)[0] == "Progressing"
    no_db = _planned(kind, {k: v for k, v in INDEX_SPEC.items() if k != "database"})
    assert health(no_db, tmp_path) == ("Degraded", "spec.database.dsnSecretRef is required in a cluster")
    table = {**INDEX_SPEC, "model": {"name": "all-MiniLM-L6-v2"}, "source": {"table": {"table": "docs"}}}
    status, message = health(_planned(kind, table), tmp_path)
    assert status == "Degraded" and message.startswith("spec.probe: set probe.path or probe.datasetRef")


# -- the harness and the docs -------------------------------------------------------------------


@needs_lua
def test_values_reach_lua_as_argo_cd_passes_them(tmp_path: pathlib.Path) -> None:
    probe = tmp_path / "probe.lua"
    probe.write_text(
        "local s = obj.status\n"
        "local c = s.conditions[1]\n"
        'return {status = "Healthy", message = table.concat({type(s.phase), tostring(#s.list), '
        'tostring(s.flag), tostring(s.n + 1), tostring(#s.empty), c.message}, "|")}\n'
    )
    tricky = 'a "quoted" \\ back]]slash\nnew line → ünïcode 1\0012'
    obj = {
        "kind": "X",
        "status": {
            "phase": None,
            "list": [1, 2, 3],
            "flag": False,
            "n": 2,
            "empty": [],
            "conditions": [{"message": tricky}],
        },
    }
    assert health(obj, tmp_path, probe) == ("Healthy", f"nil|3|false|3|0|{tricky}")


@needs_lua
def test_the_script_is_lua_5_1_and_needs_no_more_than_argo_cd_gives_it(tmp_path: pathlib.Path) -> None:
    proc = subprocess.run([LUA, "-e", f"assert(loadfile({_lua_string(str(SCRIPT))}))"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    source = SCRIPT.read_text(encoding="utf-8")
    assert not re.search(r"\b(goto|io\.|os\.|require|dofile|loadfile|loadstring)\b", source)
    # A non-table status, a missing metadata, a condition list that is a map: no errors.
    for odd in (
        {"status": "weird"},
        {"status": {"conditions": {"a": 1}, "observedGeneration": 1}},
        {"metadata": {"generation": "2"}, "status": {"observedGeneration": 2, "phase": "Failed"}},
    ):
        assert health(odd, tmp_path)[0] in HEALTH


def test_docs_carry_the_script_verbatim() -> None:
    """docs/argocd.md's argocd-cm snippet is the script itself, for all three kinds."""
    doc = (ROOT / "docs" / "argocd.md").read_text(encoding="utf-8")
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", doc, re.S) if "resource.customizations" in b]
    cms = [b for b in blocks if isinstance(b, dict) and b.get("kind") == "ConfigMap"]
    assert cms, "no argocd-cm ConfigMap snippet in docs/argocd.md"
    data = cms[0]["data"]
    script = SCRIPT.read_text(encoding="utf-8")
    for kind in KINDS:
        assert data[f"resource.customizations.health.embedops.dev_{kind}"] == script, kind
