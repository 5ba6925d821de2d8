"""What each worker returns: small JSON documents, written to a pod's termination message.

They live apart from the workers so that the operator, whose image has no torch, can read
them; a worker module imports its own as `Result`.
"""

from __future__ import annotations

import json
from typing import ClassVar, Literal

from pydantic import Field

from embedops.api.common import ApiModel
from embedops.api.conditions import Reason
from embedops.api.dataset import DatasetCounts
from embedops.api.finetune import ModelArtifact, ValidationScores
from embedops.api.generate import GenerationCounts
from embedops.api.index import IndexVersion, ProbeResult, VersionState
from embedops.api.scores import RetrievalScores


class StepRefused(ValueError):
    """A step that will not run, for a reason the resource shows as its own (api.conditions.WORKER_FAILURES)
    rather than as "its Job failed"; like any invalid input it is not retried (exit 2) unless `transient`
    (exit 3: the pod is retried up to the Job's backoffLimit, then the resource shows the reason)."""

    reason: ClassVar[Reason]

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class TargetConflict(StepRefused):
    """The target is not this index's to build, replace or drop: another index owns it, or a view or table
    embedops did not create has its name, or depends on its view."""

    reason = Reason.TARGET_CONFLICT


class EmptySource(StepRefused):
    """The source has no row with text: a version of it would serve nothing."""

    reason = Reason.EMPTY_SOURCE


class GenerationFailed(StepRefused):
    """spec.generate gave nothing to train on: transient when no request reached the generator (an endpoint
    down, a network policy: a retry may find it up), else what the generator wrote did not pass the filters,
    or the sample is too small to hold queries out (a rerun asks the same)."""

    reason = Reason.GENERATION_FAILED


class SourceNotThere(FileNotFoundError):
    """A dataset's source path does not exist (yet): on a shared workspace another Job may still be
    writing it, so a pod retries (exit 3) instead of failing for good at once."""


# Kubernetes keeps at most this many bytes of a container's termination message.
TERMINATION_MESSAGE_BYTES = 4096


class PrepareResult(ApiModel):
    """The EmbeddingDatasetStatus fields this step determines."""

    counts: DatasetCounts
    fingerprint: str
    location: str
    invalid_samples: list[str]
    prepared_at: str
    generation: GenerationCounts | None = None


class TrainResult(ApiModel):
    """The FineTuneJobStatus fields this step determines.

    No `model` means none was published: no checkpoint beat the base model on the validation queries.
    """

    model: ModelArtifact | None = None
    base_metrics: RetrievalScores
    tuned_metrics: RetrievalScores | None = None
    ndcg_gain: float | None = None
    validation: ValidationScores | None = None
    train_pairs: int
    planned_steps: int | None = None
    steps: int
    world_size: int = 1
    global_batch_size: int | None = None
    resumed_from_step: int | None = None
    start_time: str
    completion_time: str
    duration_seconds: float


class RankResult(ApiModel):
    """What a training process other than rank 0 reports (on its stdout only: rank 0's TrainResult is the job's)."""

    rank: int
    world_size: int
    steps: int


class EmbedResult(ApiModel):
    """The version this shard wrote into, and how far it is."""

    version: int
    table: str
    state: str = Field(description="The version's state: Building while shards are still running, then Ready.")
    rows: int = Field(description="Rows of the version committed by all shards.")
    shard_rows: int = Field(description="Rows of this shard committed.")
    embedded: int = Field(description="Rows embedded by this run (the rest were committed before a restart).")
    skipped_rows: int = Field(
        default=0,
        description="Rows of this shard never embedded: their text is NULL, empty, or only whitespace or zero-width "
        "characters (once the shard is done, shardRows + skippedRows are all its rows).",
    )
    skipped_ids: list[str] = Field(default_factory=list, description="The ids of the first few skipped rows.")
    resumed: bool
    reused: bool = Field(default=False, description="An existing finished version was returned; nothing was embedded.")
    seconds: float = Field(description="Wall time of the step, model loading and ANN build included.")
    rows_per_second: float = Field(description="Rows embedded and committed per second of embedding.")


class PublishResult(ApiModel):
    candidate: int = Field(description="The version gated.")
    probe: ProbeResult | None = Field(default=None, description="The candidate's probe, when it was probed.")
    note_reason: Literal[Reason.GATE_FAILED, Reason.ROLLED_BACK, Reason.PINNED] | None = Field(
        default=None, description="Why the candidate is not live: GateFailed, RolledBack or Pinned."
    )
    note: str | None = Field(default=None, description="The same, for people.")
    live_version: int | None = None
    dropped: list[int] = Field(default_factory=list, description="Versions dropped by retention.")
    versions: list[IndexVersion] = Field(default_factory=list, description="The catalog's versions after the step.")
    versions_truncated: bool = Field(
        default=False, description="Older versions were left out to fit the termination message."
    )


class SyncResult(ApiModel):
    """What one sync of a version with its source table did."""

    version: int = Field(description="The version synced.")
    state: str = Field(description="Its state after the sync (a sync stops when its version is dropped).")
    synced_at: str | None = Field(
        default=None, description="RFC 3339 start of the diff applied; None when the sync stopped early."
    )
    found: int = Field(description="Rows the diff found new, changed or gone.")
    inserted: int = Field(description="Rows new in the version.")
    updated: int = Field(description="Rows embedded again (their text changed).")
    deleted: int = Field(description="Rows removed (gone from the table, or left with no text).")
    pending: int = Field(default=0, description="Rows found and not applied.")
    rows: int = Field(description="Rows of the version after the sync.")
    changed_fraction: float = Field(description="Share of the version's rows changed since it was built.")
    ann_stale: bool = Field(
        default=False, description="An IVFFlat version changed past the share its lists hold up to."
    )
    rehashed: bool = Field(
        default=False, description="The version had no content hashes (an earlier release's): every row was embedded."
    )
    skipped_rows: int = Field(default=0, description="Rows of the table with no text to embed (NULL or blank).")
    skipped_ids: list[str] = Field(default_factory=list, description="The ids of the first few skipped rows.")
    diff_seconds: float = Field(description="Seconds of the diff query.")
    seconds: float = Field(description="Wall time of the sync, model loading included.")

    @property
    def embedded(self) -> int:
        return self.inserted + self.updated


class CleanupResult(ApiModel):
    dropped: list[str] = Field(default_factory=list, description="Tables dropped.")


def termination_message(result: ApiModel) -> str:
    """The result as compact JSON that fits a termination message.

    Only a publish result can grow (one entry per retained version): older versions lose
    their last probe first, then are left out, newest kept. Nothing a status needs is lost
    for the live version.
    """
    doc = result.model_dump(mode="json", by_alias=True, exclude_none=True)

    def encoded() -> str:
        return json.dumps(doc, separators=(",", ":"), sort_keys=True)

    versions = doc.get("versions")
    if len(encoded().encode()) > TERMINATION_MESSAGE_BYTES and isinstance(versions, list):
        for v in versions:
            if v.get("state") != VersionState.LIVE:
                v.pop("probe", None)
        while len(encoded().encode()) > TERMINATION_MESSAGE_BYTES and len(versions) > 1:
            drop = next((v for v in reversed(versions) if v.get("state") != VersionState.LIVE), None)
            if drop is None:
                break
            versions.remove(drop)
        doc["versionsTruncated"] = True
    text = encoded()
    if len(text.encode()) > TERMINATION_MESSAGE_BYTES:
        raise ValueError(f"result of {len(text.encode())} bytes does not fit a termination message")
    return text


def error_message(reason: str, message: str) -> str:
    """A failed worker's termination message: what the planner shows in the resource's conditions.

    Cut to fit the bytes Kubernetes keeps (a cut JSON document would not parse), counting bytes
    of the encoded document: a non-ASCII character takes up to 6 escaped.
    """

    def encoded(text: str) -> str:
        return json.dumps({"error": {"reason": reason, "message": text}}, separators=(",", ":"))

    message = message[:3000]
    while len(encoded(message).encode()) > TERMINATION_MESSAGE_BYTES:
        message = message[: len(message) * 3 // 4]
    return encoded(message)


def describe_error(text: str | None) -> str | None:
    """`reason: message` of a worker's error document, or the log tail Kubernetes kept instead."""
    if not text or not text.strip():
        return None
    if (parsed := _error_document(text)) is not None:
        return f"{parsed[0]}: {parsed[1]}"
    return text.strip().splitlines()[-1][:500]


def error_reason(text: str | None) -> str | None:
    """The reason of a worker's error document; None for anything else (a log tail, nothing)."""
    parsed = _error_document(text) if text else None
    return parsed[0] if parsed is not None else None


def _error_document(text: str) -> tuple[str, str] | None:
    try:
        err = json.loads(text)["error"]
        return str(err["reason"]), str(err["message"])
    except (json.JSONDecodeError, KeyError, TypeError):
        return None
