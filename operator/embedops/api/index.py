"""EmbeddingIndex: a corpus re-embedded into versioned pgvector tables behind one stable view."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, FiniteFloat, JsonValue, StringConstraints, field_validator, model_validator
from pydantic.json_schema import JsonDict

from embedops.api import times
from embedops.api.common import (
    MAX_INT,
    MAX_INTERVAL_MINUTES,
    ApiModel,
    BaseStatus,
    Database,
    LocalObjectReference,
    PodScheduling,
    Resources,
    Scheduling,
    SqlName,
    cel_rules,
    check_exactly_one,
    exactly_one_rule,
)
from embedops.api.scores import RetrievalScores

# The encoder's arithmetic, for embedding and for drift (which must match how a version was built).
Precision = Literal["auto", "fp32", "bf16"]

_IMMUTABLE: list[JsonValue] = [
    {"rule": "self == oldSelf", "message": "is immutable; create a new EmbeddingIndex instead"}
]


class IndexModel(ApiModel):
    """Exactly one of `fineTuneJobRef` or `name`."""

    model_config = ApiModel.model_config | {"json_schema_extra": exactly_one_rule("model", "fineTuneJobRef", "name")}

    fine_tune_job_ref: LocalObjectReference | None = Field(
        default=None,
        description="Follow a FineTuneJob: every model it publishes is built into a new version, probed and cut over "
        "if it passes.",
    )
    name: str | None = Field(default=None, min_length=1, description="A fixed model: a bundled model name or a path.")

    @model_validator(mode="after")
    def _one(self) -> IndexModel:
        check_exactly_one(self, "model", "fine_tune_job_ref", "name")
        return self


class TableSource(ApiModel):
    """A Postgres table holding the documents."""

    schema_name: SqlName = Field(
        default="public", alias="schema", description="Schema of the table. Default: `public`."
    )
    table: SqlName = Field(description="Table holding one document a row.")
    id_column: SqlName = Field(default="id", description="Unique, ordered key column. Default: `id`.")
    text_column: SqlName = Field(default="text", description="Column with the text to embed. Default: `text`.")
    title_column: SqlName | None = Field(
        default=None, description="Optional title column, prepended to the text as the datasets do."
    )


class IndexSource(ApiModel):
    """Exactly one of `table` or `datasetRef`."""

    model_config = ApiModel.model_config | {"json_schema_extra": exactly_one_rule("source", "table", "datasetRef")}

    table: TableSource | None = Field(default=None, description="Documents in a table of the index's database.")
    dataset_ref: LocalObjectReference | None = Field(
        default=None, description="Documents of an EmbeddingDataset's corpus."
    )

    @model_validator(mode="after")
    def _one(self) -> IndexSource:
        check_exactly_one(self, "source", "table", "dataset_ref")
        return self

    @property
    def kind(self) -> Literal["table", "dataset"]:
        """Which one is set: what the workers dispatch on."""
        return "table" if self.table is not None else "dataset"


# Versions are numbered up to this, so that `<name>_v<N>` always fits Postgres's 63-byte names.
MAX_VERSION = 99_999
# Schemas an index never writes into: Postgres's own, and embedops' catalog.
RESERVED_SCHEMAS = ("information_schema", "embedops")
_RESERVED_RULE: JsonDict = {
    "rule": "!self.startsWith('pg_') && !(self in " + str(list(RESERVED_SCHEMAS)).replace('"', "'") + ")",
    "message": "is reserved (pg_*, information_schema, embedops: Postgres's own schemas and embedops' catalog)",
}
# Lower case: the objects embedops creates are named as applications will write them unquoted.
TARGET_NAME_PATTERN = r"^[a-z_][a-z0-9_]*$"
TargetName = Annotated[str, StringConstraints(pattern=TARGET_NAME_PATTERN)]


class Target(ApiModel):
    """The stable name applications query; versions live beside it as `<name>_v<N>` tables."""

    model_config = cel_rules(_IMMUTABLE)

    schema_name: TargetName = Field(
        default="public",
        alias="schema",
        max_length=63,
        description="Schema of the view and its tables (lower case; not pg_*, information_schema or embedops). "
        "Default: `public`.",
        json_schema_extra={"x-kubernetes-validations": [_RESERVED_RULE]},
    )
    name: TargetName = Field(
        max_length=63 - len(f"_v{MAX_VERSION}"),
        description="Name of the view applications query (`id`, `embedding` columns): lower case, at most 56 "
        "characters, so that every version table `<name>_v<N>` (N up to 99999) fits Postgres's 63-byte names. "
        "Immutable.",
    )

    @field_validator("schema_name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.startswith("pg_") or value in RESERVED_SCHEMAS:
            raise ValueError(_RESERVED_RULE["message"])
        return value


_EF_RULE: JsonDict = {
    "rule": "(has(self.efConstruction) ? self.efConstruction : 64) >= 2 * (has(self.m) ? self.m : 16)",
    "message": "ann.efConstruction must be at least twice ann.m (pgvector refuses smaller)",
}


class AnnSpec(ApiModel):
    """Approximate nearest-neighbour index built on every version."""

    model_config = cel_rules([_EF_RULE])

    method: Literal["hnsw", "ivfflat"] = Field(default="hnsw", description="hnsw or ivfflat. Default: hnsw.")
    metric: Literal["cosine", "l2", "inner_product"] = Field(
        default="cosine", description="Distance the index serves. Default: cosine."
    )
    vector_type: Literal["vector", "halfvec"] = Field(
        default="vector",
        description="Column type: vector (float32, up to 2,000 dims indexed) or halfvec (float16, up to 4,000). "
        "Default: vector.",
    )
    m: int = Field(default=16, ge=2, le=100, description="HNSW graph degree. Default: 16 (pgvector's).")
    ef_construction: int = Field(default=64, ge=4, le=1000, description="HNSW build beam. Default: 64 (pgvector's).")
    lists: int | None = Field(
        default=None,
        ge=1,
        le=32768,
        description="IVFFlat lists (pgvector allows up to 32768). Default: rows/1000 (at least 1), sqrt(rows) above "
        "1M rows.",
    )
    ef_search: int = Field(
        default=40,
        ge=1,
        le=1000,
        description="HNSW search beam used by probes and the serving pods' /search. Default: 40.",
    )
    probes: int = Field(
        default=10,
        ge=1,
        le=32768,
        description="IVFFlat lists searched by probes and the serving pods' /search. Default: 10.",
    )

    @model_validator(mode="after")
    def _pgvector_bounds(self) -> AnnSpec:
        if self.ef_construction < 2 * self.m:
            raise ValueError(_EF_RULE["message"])
        return self


class EmbedSpec(ApiModel):
    """How the corpus is embedded."""

    batch_size: int = Field(default=64, ge=1, le=MAX_INT, description="Texts per encoder batch. Default: 64.")
    max_seq_length: int = Field(default=256, ge=8, le=8192, description="Tokens kept per text. Default: 256.")
    commit_rows: int = Field(
        default=2048,
        ge=1,
        le=MAX_INT,
        description="Rows written and committed together; a killed run resumes after the last commit. Default: 2048.",
    )
    shards: int = Field(
        default=1, ge=1, le=1000, description="Pods that embed in parallel (an Indexed Job). Default: 1."
    )
    precision: Precision = Field(
        default="auto",
        description=(
            "Arithmetic of the encoder: `auto` is bf16 on a CUDA GPU that supports it and float32 otherwise; "
            "`fp32` always float32; `bf16` needs a GPU. Default: auto."
        ),
    )


class ProbeSpec(ApiModel):
    """Retrieval probe: queries with known relevant ids, run through SQL against a version."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!(has(self.datasetRef) && has(self.path))",
                    "message": "set at most one of probe.datasetRef or probe.path",
                }
            ]
        }
    }

    dataset_ref: LocalObjectReference | None = Field(
        default=None,
        description="Use this EmbeddingDataset's held-out queries; ids must match the index's ids. Default: the "
        "source dataset.",
    )
    path: str | None = Field(
        default=None,
        description='JSONL probe set, one `{"query": str, "relevant": [id, ...]}` a line, instead of a dataset.',
    )
    k: int = Field(default=10, ge=1, le=1000, description="Depth of recall@k. Default: 10.")
    min_recall: FiniteFloat = Field(
        default=0.0, ge=0, le=1, description="Gate: a version with recall@k below this is never cut over. Default: 0."
    )
    max_regression: FiniteFloat = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Gate: a new version's recall@k may be at most this much below the live one's. Default: 0.02.",
    )
    max_queries: int | None = Field(default=None, ge=1, le=MAX_INT, description="Probe at most this many queries.")
    interval_minutes: int = Field(
        default=30,
        ge=1,
        le=MAX_INTERVAL_MINUTES,
        description="Re-probe the live version this often (at most a year). Default: 30.",
    )

    @model_validator(mode="after")
    def _one_set(self) -> ProbeSpec:
        if self.dataset_ref is not None and self.path is not None:
            raise ValueError("set at most one of probe.datasetRef or probe.path")
        return self


class DriftSpec(ApiModel):
    """Drift between the live version's stored embeddings and a fresh embedding of the source now."""

    enabled: bool = Field(default=True, description="Measure drift on a schedule. Default: true.")
    sample_size: int = Field(default=1000, ge=10, le=100_000, description="Rows sampled on each side. Default: 1000.")
    threshold: FiniteFloat = Field(
        default=0.015,
        ge=0,
        description="Drift score (MMD², see docs) above which the index is Degraded. Default: 0.015.",
    )
    interval_minutes: int = Field(
        default=60, ge=1, le=MAX_INTERVAL_MINUTES, description="Measure this often (at most a year). Default: 60."
    )


# Past this share of rows inserted, updated or deleted since a version was built, an IVFFlat
# index's lists (k-means centroids of the rows it was built on) no longer describe the data:
# recall at the same `probes` falls. HNSW takes inserts and deletes as they come.
IVFFLAT_STALE_FRACTION = 0.2


class SyncSpec(ApiModel):
    """Keeping the live version in step with a `source.table` as its rows change (a dataset source is fixed)."""

    interval_minutes: int = Field(
        default=5,
        ge=0,
        le=MAX_INTERVAL_MINUTES,
        description="Sync this often: new, changed and deleted rows are embedded or removed. 0 turns the schedule "
        "off (a sync still runs on demand, and before every cut-over). Default: 5.",
    )
    mode: Literal["diff", "trigger"] = Field(
        default="diff",
        description="`diff`: each sync compares the table's (id, content hash) with the version's, in one query, "
        "with no DDL on the table. `trigger`: row triggers on the table (firing only when an embedded column "
        "changes) fill a queue table that each sync drains. Default: diff.",
    )
    rebuild_after_changed_fraction: FiniteFloat | None = Field(
        default=None,
        gt=0,
        le=1,
        description="With an IVFFlat index: build a new version once this share of the live version's rows changed "
        "since it was built (its lists were trained on the old rows). Unset: the index only says so, past "
        f"{IVFFLAT_STALE_FRACTION:.0%}.",
    )

    @property
    def scheduled(self) -> bool:
        return self.interval_minutes > 0


# The Text Embeddings Inference images `engine: tei` runs by default: the CPU build, or with
# spec.serving.resources.gpus the CUDA build (Ampere and later: A100, L4, H100).
SEARCH_MAX_K = 1000  # the most rows one /search of a serving pod (and `kubectl embedops search -k`) returns
TEI_IMAGE_CPU = "ghcr.io/huggingface/text-embeddings-inference:cpu-1.8"
TEI_IMAGE_GPU = "ghcr.io/huggingface/text-embeddings-inference:1.8"


class ServingSpec(ApiModel):
    """A query-embedding Deployment per version and one stable Service per index (docs/operator.md, "Querying an
    index"): the Service names the live version's pods, switched with the view."""

    engine: Literal["embedops", "tei"] = Field(
        default="embedops",
        description="embedops: the worker image running `embedops serve` (TEI's /embed, OpenAI's /v1/embeddings, "
        "and /search of the view); tei: Hugging Face Text Embeddings Inference. Default: embedops.",
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        description=f"The serving image. Default: the operator's worker image (embedops), {TEI_IMAGE_CPU} or with "
        f"GPUs {TEI_IMAGE_GPU} (tei).",
    )
    replicas: int = Field(default=1, ge=1, le=1000, description="Pods of the live version. Default: 1.")
    ready_timeout_seconds: int = Field(
        default=600,
        ge=1,
        le=86_400,
        description="How long a version's Deployment may take to become Ready (its progressDeadlineSeconds); "
        "past it the cut-over is blocked with reason ServingFailed. Default: 600.",
    )
    resources: Resources = Field(
        default_factory=Resources, description="Resources of each serving pod (gpus: 0 unless set)."
    )
    scheduling: PodScheduling = Field(default_factory=PodScheduling, description="Scheduling of the serving pods.")


class EmbeddingIndexSpec(ApiModel):
    """Desired state of an EmbeddingIndex."""

    # `self == oldSelf` on `database` only runs when both old and new have it; without this,
    # removing it and adding another server in a second update would move the index.
    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!has(oldSelf.database) || has(self.database)",
                    "message": "database cannot be removed once set; create a new EmbeddingIndex instead",
                }
            ]
        }
    }

    model: IndexModel = Field(description="The model whose embeddings the index holds.")
    source: IndexSource = Field(description="The documents to embed.")
    database: Database = Field(
        default_factory=Database,
        description="Postgres + pgvector server of the index. Immutable.",
        json_schema_extra={"x-kubernetes-validations": _IMMUTABLE},
    )
    target: Target = Field(description="Stable view name applications query.")
    ann: AnnSpec = Field(default_factory=AnnSpec, description="ANN index settings.")
    embedding: EmbedSpec = Field(default_factory=EmbedSpec, description="Embedding settings.")
    probe: ProbeSpec = Field(default_factory=ProbeSpec, description="Retrieval probe and cut-over gate.")
    drift: DriftSpec = Field(default_factory=DriftSpec, description="Drift measurement.")
    sync: SyncSpec = Field(default_factory=SyncSpec, description="Incremental sync with a source table.")
    keep_versions: int = Field(
        default=2, ge=1, le=20, description="Versions kept (the live one included) for rollback. Default: 2."
    )
    pinned_version: int | None = Field(
        default=None,
        ge=1,
        le=MAX_VERSION,
        description="Serve exactly this version; new models are built but not cut over.",
    )
    deletion_policy: Literal["Retain", "Delete"] = Field(
        default="Retain",
        description="On deletion, Retain keeps the view and version tables; Delete drops them. Default: Retain.",
    )
    resources: Resources = Field(default_factory=Resources, description="Resources of each embedding pod.")
    scheduling: Scheduling = Field(default_factory=Scheduling, description="Scheduling of the embedding Jobs.")
    serving: ServingSpec | None = Field(
        default=None,
        description="Serve query embeddings with each version's model: a Deployment per version and a Service "
        "switched with the view. Unset: none (the default).",
    )


class ProbeResult(RetrievalScores):
    """One probe of one version: its retrieval scores at the probe's k, and the gate's verdict."""

    version: int = Field(description="Version probed.")
    k: int = Field(description="Depth of recall@k.")
    recall_at_k: float = Field(alias="recallAtK", description="Recall@k.")
    passed: bool | None = Field(default=None, description="Whether the version passed the cut-over gate.")
    reason: str | None = Field(default=None, description="Why the gate passed or failed.")
    checked_at: str = Field(description="RFC 3339 time of the probe.")


class DriftResult(ApiModel):
    """One drift measurement."""

    version: int = Field(description="Version measured.")
    score: float = Field(description="MMD² (RBF kernel, median heuristic) between the two samples.")
    centroid_distance: float = Field(description="Cosine distance between the two samples' mean vectors.")
    drifted_components: float = Field(description="Share of dimensions whose Wasserstein distance exceeds 0.1 std.")
    reference_rows: int = Field(description="Rows in the reference sample.")
    current_rows: int = Field(description="Rows in the current sample.")
    drifted: bool = Field(description="score above spec.drift.threshold.")
    checked_at: str = Field(description="RFC 3339 time of the measurement.")


class VersionState(StrEnum):
    """Where a version table is in its life (the catalog's `state` column and `status.versions[].state`)."""

    BUILDING = "Building"  # being embedded
    READY = "Ready"  # built and indexed, not serving (not yet cut over, or waiting for a pin)
    LIVE = "Live"  # the view serves it: at most one per target
    RETIRED = "Retired"  # served before; kept for rollback
    FAILED = "Failed"  # its build was abandoned


# The versions an index keeps and can serve (cut over, pin, roll back to).
RETAINED_STATES = frozenset({VersionState.READY, VersionState.LIVE, VersionState.RETIRED})


class IndexVersion(ApiModel):
    """One versioned table."""

    version: int = Field(description="Version number, increasing from 1.")
    table: str = Field(description="Table holding the version's embeddings.")
    model: str = Field(description="Model the version was embedded with.")
    model_fingerprint: str | None = Field(default=None, description="Fingerprint of that model.")
    dimensions: int | None = Field(default=None, description="Embedding size.")
    rows: int = Field(default=0, description="Rows embedded.")
    state: VersionState = Field(description="Lifecycle state.")
    created_at: str | None = Field(default=None, description="RFC 3339 creation time.")
    synced_at: str | None = Field(
        default=None, description="RFC 3339 start of the last sync with the source table applied to it."
    )
    probe: ProbeResult | None = Field(default=None, description="Last probe of this version.")


def live_version(versions: Iterable[IndexVersion]) -> IndexVersion | None:
    """The version the view serves, if any: the one way to find it in a list of versions."""
    return next((v for v in versions if v.state == VersionState.LIVE), None)


class ReindexProgress(ApiModel):
    """Progress of the version being built."""

    version: int = Field(description="Version being built.")
    rows_done: int = Field(description="Rows committed.")
    rows_total: int | None = Field(default=None, description="Rows to embed, when known.")
    rows_per_second: float | None = Field(default=None, description="Recent throughput.")


class SyncStatus(ApiModel):
    """The last sync of the live version with its source table."""

    version: int = Field(description="Version synced.")
    last_sync_time: str | None = Field(
        default=None,
        description="RFC 3339 time the last complete sync's diff started: every change made before it is in the "
        "version.",
    )
    rows_embedded: int = Field(description="Rows embedded by the last sync (new or changed text).")
    rows_deleted: int = Field(description="Rows removed by the last sync (gone from the table, or left without text).")
    pending_rows: int = Field(
        default=0, description="Rows the last sync found changed and did not apply (it stopped early)."
    )
    skipped_rows: int = Field(default=0, description="Rows of the table with no text to embed (NULL or blank).")
    lag_seconds: float = Field(
        description="Seconds the last sync took, from its start to its last commit: a change is searchable at "
        "most intervalMinutes plus this after it was made."
    )
    changed_fraction: float = Field(
        default=0.0, description="Share of the version's rows inserted, updated or deleted since it was built."
    )


class ServingStatus(ApiModel):
    """The query-embedding Service of an index with spec.serving."""

    service: str = Field(description="The Service applications send queries to (port `http`, 8080).")
    version: int | None = Field(default=None, description="The version whose pods the Service selects.")
    engine: str = Field(description="embedops or tei.")


class EmbeddingIndexStatus(BaseStatus):
    """Observed state of an EmbeddingIndex."""

    live_version: int | None = Field(default=None, description="Version the view points at.")
    live_model: str | None = Field(default=None, description="Model of the live version.")
    rows: int | None = Field(default=None, description="Rows in the live version.")
    versions: list[IndexVersion] = Field(default_factory=list, description="Retained versions, newest first.")
    probe: ProbeResult | None = Field(default=None, description="Latest probe of the live version.")
    drift: DriftResult | None = Field(default=None, description="Latest drift measurement of the live version.")
    reindex: ReindexProgress | None = Field(default=None, description="Progress of a version being built.")
    sync: SyncStatus | None = Field(default=None, description="Last sync of the live version with its source table.")

    def synced_since(self, live: IndexVersion) -> str | None:
        """Since when the live version holds every change of its table: the latest of its last sync (status.sync,
        when it synced this version), the last sync applied to it (versions[].syncedAt: the cut-over's catch-up)
        and its build (createdAt). The planner schedules the next sync from it; the metrics export it."""
        own = self.sync.last_sync_time if self.sync is not None and self.sync.version == live.version else None
        stamps = [t for t in (own, live.synced_at, live.created_at) if t]
        return max(stamps, key=lambda t: times.parse_time(t) or times.utcnow(), default=None)

    serving: ServingStatus | None = Field(
        default=None, description="The query-embedding Service (spec.serving) and the version it selects."
    )
    ann_rebuild_of: int | None = Field(
        default=None,
        description="The version whose IVFFlat lists went stale (spec.sync.rebuildAfterChangedFraction): the "
        "version built since rebuilt its rows.",
    )
