"""The three kinds: their names, models, printer columns, and parsing of whole manifests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from embedops.api.common import (
    API_VERSION,
    GROUP,
    K8S_NAME_PATTERN,
    K8S_NAMESPACE_PATTERN,
    SQL_NAME_PATTERN,
    VERSION,
    BaseStatus,
    ObjectMeta,
)
from embedops.api.dataset import EmbeddingDatasetSpec, EmbeddingDatasetStatus
from embedops.api.finetune import FineTuneJobSpec, FineTuneJobStatus
from embedops.api.index import TARGET_NAME_PATTERN, EmbeddingIndexSpec, EmbeddingIndexStatus


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    spec_model: type[BaseModel]
    status_model: type[BaseStatus]
    description: str
    # (name, type, JSONPath, description, priority)
    printer_columns: tuple[tuple[str, str, str, str, int], ...] = field(default=())


_READY = ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status', "Ready condition", 0)
_PHASE = ("Phase", "string", ".status.phase", "Summary of the state", 0)
# Why it is (not) Ready, in one word: Unschedulable, DependencyFailed, TargetConflict, ...
_REASON = ("Reason", "string", '.status.conditions[?(@.type=="Ready")].reason', "Reason of the Ready condition", 0)
_AGE = ("Age", "date", ".metadata.creationTimestamp", "Age", 0)

DATASET = Kind(
    kind="EmbeddingDataset",
    plural="embeddingdatasets",
    singular="embeddingdataset",
    short_names=("eds",),
    spec_model=EmbeddingDatasetSpec,
    status_model=EmbeddingDatasetStatus,
    description="Domain training data for embedding models: where it lives, how it is validated, split and enriched "
    "with hard negatives.",
    printer_columns=(
        _READY,
        _PHASE,
        _REASON,
        ("Pairs", "integer", ".status.counts.trainPairs", "Training pairs", 0),
        ("Test", "integer", ".status.counts.testQueries", "Held-out queries", 0),
        ("Invalid", "integer", ".status.counts.invalidRows", "Rows rejected by validation", 1),
        ("Fingerprint", "string", ".status.fingerprint", "Content fingerprint", 1),
        _AGE,
    ),
)
FINETUNE = Kind(
    kind="FineTuneJob",
    plural="finetunejobs",
    singular="finetunejob",
    short_names=("ftj",),
    spec_model=FineTuneJobSpec,
    status_model=FineTuneJobStatus,
    description="Fine-tunes a base sentence-transformers model on an EmbeddingDataset in a GPU Job, and scores it "
    "against the base model on held-out queries.",
    printer_columns=(
        _READY,
        _PHASE,
        _REASON,
        ("Base-nDCG", "number", ".status.baseMetrics.ndcgAt10", "Base model nDCG@10", 0),
        ("Tuned-nDCG", "number", ".status.tunedMetrics.ndcgAt10", "Tuned model nDCG@10", 0),
        ("Duration", "number", ".status.durationSeconds", "Seconds of training and evaluation", 1),
        _AGE,
    ),
)
INDEX = Kind(
    kind="EmbeddingIndex",
    plural="embeddingindexes",
    singular="embeddingindex",
    short_names=("eix",),
    spec_model=EmbeddingIndexSpec,
    status_model=EmbeddingIndexStatus,
    description="A corpus re-embedded into versioned pgvector tables behind one stable view, probed, cut over "
    "atomically and watched for drift.",
    printer_columns=(
        _READY,
        _PHASE,
        _REASON,
        ("Live", "integer", ".status.liveVersion", "Version the view serves", 0),
        ("Rows", "integer", ".status.rows", "Rows in the live version", 0),
        ("Recall", "number", ".status.probe.recallAtK", "Probe recall@k of the live version", 0),
        ("Drift", "number", ".status.drift.score", "Drift score of the live version", 1),
        ("Synced", "date", ".status.sync.lastSyncTime", "Start of the last sync with the source table", 0),
        _AGE,
    ),
)

KINDS: dict[str, Kind] = {k.kind: k for k in (DATASET, FINETUNE, INDEX)}
# Dependency order: datasets feed jobs, jobs feed indexes.
ORDER = ("EmbeddingDataset", "FineTuneJob", "EmbeddingIndex")


# What a manifest may hold at the top level (`status` is ignored, as `kubectl apply` ignores it).
TOP_LEVEL_FIELDS = ("apiVersion", "kind", "metadata", "spec", "status")


class InvalidResource(ValueError):
    """A manifest that is not a valid embedops resource; the message names the offending field."""

    def __init__(self, where: str, problems: list[str]):
        self.where = where
        self.problems = problems
        super().__init__(f"{where}: " + "; ".join(problems))


# The name patterns of the API, in words.
_PATTERNS = {
    K8S_NAME_PATTERN: "a lower-case RFC 1123 name (a-z, 0-9, '-' and '.', starting and ending with a letter or digit)",
    K8S_NAMESPACE_PATTERN: "a lower-case RFC 1123 label (a-z, 0-9 and '-', starting and ending with a letter or digit)",
    SQL_NAME_PATTERN: "an SQL name (letters, digits and underscores, not starting with a digit)",
    TARGET_NAME_PATTERN: "a lower-case SQL name (a-z, 0-9 and underscores, not starting with a digit)",
}


def format_validation_error(err: ValidationError, prefix: str = "spec") -> list[str]:
    """Turn pydantic's errors into `spec.field.path: message` lines (camelCase, as the user wrote them)."""
    lines = []
    for e in err.errors():
        path = ".".join([prefix, *(str(p) for p in e["loc"])]) if e["loc"] else prefix
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "string_pattern_mismatch" and e["ctx"]["pattern"] in _PATTERNS:
            msg = f"{e['input']!r} is not {_PATTERNS[e['ctx']['pattern']]}"
        lines.append(f"{path}: {msg}")
    return lines


@dataclass
class Resource:
    """A parsed manifest of one of the three kinds."""

    kind: Kind
    name: str
    namespace: str
    spec: Any
    metadata: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.kind.kind}/{self.namespace}/{self.name}"


def validate_spec(kind: str, spec: Any) -> Any:
    """A spec as its model, with the API server's strictness: `"3"` is not an integer, `"yes"` not a boolean.

    Validated as JSON (what the API server stores), so YAML-only values such as dates arrive as
    their text; raises pydantic's ValidationError.
    """
    return KINDS[kind].spec_model.model_validate_json(json.dumps(spec or {}, default=str), strict=True)


def parse_spec(kind: str, spec: dict[str, Any] | None, where: str) -> Any:
    """Validate a spec dict into its model, raising InvalidResource that names each bad field."""
    try:
        return validate_spec(kind, spec)
    except ValidationError as err:
        raise InvalidResource(where, format_validation_error(err)) from None


def parse_manifest(doc: dict[str, Any], where: str = "manifest") -> Resource:
    """Parse one Kubernetes manifest of an embedops kind, as strictly as the API server would."""
    if not isinstance(doc, dict):
        raise InvalidResource(where, ["not a mapping"])
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if api_version != API_VERSION:
        raise InvalidResource(where, [f"apiVersion: expected {API_VERSION}, got {api_version!r}"])
    if kind not in KINDS:
        raise InvalidResource(where, [f"kind: expected one of {', '.join(ORDER)}, got {kind!r}"])
    problems = [f"{key}: unknown field" for key in doc if key not in TOP_LEVEL_FIELDS]
    try:
        meta = ObjectMeta.model_validate_json(json.dumps(doc.get("metadata") or {}, default=str), strict=True)
    except ValidationError as err:
        raise InvalidResource(where, problems + format_validation_error(err, prefix="metadata")) from None
    where = f"{where} ({kind}/{meta.name})"
    if problems:
        raise InvalidResource(where, problems)
    spec = parse_spec(kind, doc.get("spec"), where)
    return Resource(
        kind=KINDS[kind],
        name=meta.name,
        namespace=meta.namespace or "default",
        spec=spec,
        metadata=meta.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True),
    )


__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "ORDER",
    "VERSION",
    "InvalidResource",
    "Kind",
    "Resource",
    "format_validation_error",
    "parse_manifest",
    "parse_spec",
    "validate_spec",
]
