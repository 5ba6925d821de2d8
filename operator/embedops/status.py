"""Status builders: what a resource's status says, from the planner's observations and the workers' results.

Every status the planner writes, in a cluster or in local mode, is built here, so one place
decides what `Ready`, `Progressing` and `Degraded` mean for each kind, and which phase shows.
The words themselves come from embedops.api.conditions.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from embedops.api.common import BaseStatus, JobStatus
from embedops.api.conditions import ConditionType, Reason
from embedops.api.dataset import EmbeddingDatasetStatus
from embedops.api.finetune import FineTuneJobSpec, FineTuneJobStatus, LauncherStatus
from embedops.api.index import (
    IVFFLAT_STALE_FRACTION,
    DriftResult,
    EmbeddingIndexSpec,
    EmbeddingIndexStatus,
    IndexVersion,
    ProbeResult,
    ReindexProgress,
    SyncStatus,
    VersionState,
    live_version,
)
from embedops.results import PublishResult, SyncResult

S = TypeVar("S", bound=BaseStatus)

READY, PROGRESSING, DEGRADED = ConditionType.READY, ConditionType.PROGRESSING, ConditionType.DEGRADED


@dataclass(frozen=True)
class At:
    """When a status is built: the resource's generation it observes, and the planner's time (Observed.now),
    which every condition's lastTransitionTime comes from, so a plan is a function of what was observed."""

    generation: int | None
    now: dt.datetime


def parse(status_cls: type[S], raw: dict[str, Any] | None) -> S:
    """A status as stored, or an empty one when it cannot be read (an older operator's, say)."""
    try:
        return status_cls.model_validate(raw or {})
    except ValidationError:
        return status_cls()


def is_ready(status: BaseStatus) -> bool:
    ready = status.condition(READY)
    return ready is not None and ready.status == "True"


def same_condition(a: BaseStatus, b: BaseStatus, type_: ConditionType) -> bool:
    ca, cb = a.condition(type_), b.condition(type_)
    return (
        ca is not None and cb is not None and (ca.status, ca.reason, ca.message) == (cb.status, cb.reason, cb.message)
    )


def _copy_fields(result: BaseModel, status_cls: type[S]) -> S:
    """Build a status from the result fields it shares with the status model."""
    shared = set(status_cls.model_fields) & set(type(result).model_fields)
    return status_cls.model_validate({f: getattr(result, f) for f in shared})


def progressing(base: S, reason: Reason, message: str, at: At, *, phase: str = "Running") -> S:
    """Work under way, keeping what the last finished run published (a model, a live version).

    `phase` says what a person would call it: Running, Pending (its pods cannot start yet),
    Queued (waiting for Kueue) or Suspended.
    """
    status = base.model_copy(deep=True)
    status.observed_generation = at.generation
    status.phase = phase
    if not is_ready(base):
        status.set_condition(READY, "False", reason, message, generation=at.generation, now=at.now)
    status.set_condition(PROGRESSING, "True", reason, message, generation=at.generation, now=at.now)
    degraded = base.condition(DEGRADED)
    if base.phase == VersionState.FAILED and degraded is not None and degraded.status == "True":
        # The failure this run follows (a fixed spec, a rerun) is no longer the resource's state.
        status.set_condition(DEGRADED, "False", reason, message, generation=at.generation, now=at.now)
    return status


def failed(status_cls: type[S], reason: Reason, message: str, at: At, base: S | None = None) -> S:
    """A terminal failure: Ready=False, Degraded=True, with a reason a person can act on."""
    status = base.model_copy(deep=True) if base is not None else status_cls()
    status.observed_generation = at.generation
    status.phase = "Failed"
    status.active_job = None
    status.set_condition(READY, "False", reason, message, generation=at.generation, now=at.now)
    status.set_condition(PROGRESSING, "False", reason, message, generation=at.generation, now=at.now)
    status.set_condition(DEGRADED, "True", reason, message, generation=at.generation, now=at.now)
    return status


def running(base: S, reason: Reason, message: str, at: At, job: JobStatus, *, phase: str = "Running") -> S:
    """A step's Job created or under way: progressing, naming the Job (`activeJob`, `job`)."""
    status = progressing(base, reason, message, at, phase=phase)
    status.active_job = job.name
    status.job = job
    return status


def step_failed(base: S, reason: Reason, message: str, at: At, *, inputs_hash: str, job: JobStatus | None) -> S:
    """A step's Job failed: a terminal failure remembered by the inputs it ran with, so it is not run again
    until they change (or the rerun annotation does)."""
    status = failed(type(base), reason, message, at, base)
    status.inputs_hash = inputs_hash
    status.job = job
    return status


def finished(status: S, inputs_hash: str, job: JobStatus | None) -> S:
    """A finished run's status, remembered by the inputs it used (`inputsHash`) and its Job's times."""
    status.inputs_hash = inputs_hash
    status.job = job
    return status


def reindexing(status: EmbeddingIndexStatus, progress: ReindexProgress | None) -> EmbeddingIndexStatus:
    """An index while its embed Job runs: what the finished shards report (None once it is published)."""
    status.reindex = progress
    return status


def pin_not_retained(base: EmbeddingIndexStatus, message: str, at: At) -> EmbeddingIndexStatus:
    """spec.pinnedVersion names a version the index does not keep: it serves on, Degraded says so."""
    status = base.model_copy(deep=True)
    status.observed_generation = at.generation
    degraded(status, Reason.VERSION_NOT_RETAINED, message, at)
    return status


def _ready(status: S, reason: Reason, message: str, at: At, phase: str = "Ready") -> S:
    status.observed_generation = at.generation
    status.phase = phase
    status.set_condition(READY, "True", reason, message, generation=at.generation, now=at.now)
    status.set_condition(PROGRESSING, "False", reason, message, generation=at.generation, now=at.now)
    status.set_condition(DEGRADED, "False", reason, message, generation=at.generation, now=at.now)
    return status


def dataset_prepared(result: BaseModel, at: At) -> EmbeddingDatasetStatus:
    status = _copy_fields(result, EmbeddingDatasetStatus)
    counts = status.counts
    message = (
        f"{counts.train_pairs} training pairs, {counts.test_queries} test queries, {counts.corpus} documents"
        + (f"; {counts.invalid_rows} invalid rows skipped" if counts.invalid_rows else "")
        if counts
        else "prepared"
    )
    if (g := status.generation) is not None:
        message += f"; {g.train_queries} of {g.queries_generated} generated queries trained on" + (
            ", and the fine-tuning gate compares on generated queries (the source has no labelled pairs)"
            if g.validation_on == "generated"
            else ""
        )
    return _ready(status, Reason.PREPARED, message, at)


def finetune_finished(result: BaseModel, spec: FineTuneJobSpec, at: At) -> FineTuneJobStatus:
    status = _copy_fields(result, FineTuneJobStatus)
    base, tuned, validation = status.base_metrics, status.tuned_metrics, status.validation
    if status.model is None and validation is not None:
        best = (
            f"best {validation.best_ndcg_at_10:.4f} at step {validation.best_step}"
            if validation.best_ndcg_at_10 is not None
            else "no checkpoint scored"
        )
        return failed(
            FineTuneJobStatus,
            Reason.NO_IMPROVEMENT,
            f"no checkpoint beat the base model on {validation.queries} validation queries (nDCG@10 base "
            f"{validation.base_ndcg_at_10:.4f}, {best}); no model published",
            at,
            status,
        )
    message = f"nDCG@10 {base.ndcg_at_10:.4f} -> {tuned.ndcg_at_10:.4f}" if base and tuned else "trained"
    if spec.evaluation.require_improvement and base and tuned and tuned.ndcg_at_10 <= base.ndcg_at_10:
        return failed(FineTuneJobStatus, Reason.NO_IMPROVEMENT, message + " (not above the base model)", at, status)
    return _ready(status, Reason.TRAINED, message, at, phase="Succeeded")


def with_launcher(status: FineTuneJobStatus, launcher: LauncherStatus) -> FineTuneJobStatus:
    """A FineTuneJob's status with what runs its training pods, and why."""
    status.launcher = launcher
    return status


def index_observed(
    spec: EmbeddingIndexSpec,
    versions: list[IndexVersion],
    at: At,
    probe: ProbeResult | None = None,
    drift: DriftResult | None = None,
    inputs_hash: str | None = None,
    sync: SyncStatus | None = None,
) -> EmbeddingIndexStatus:
    """The index's status from its catalog and latest measurements; Degraded when drift or recall says so, or
    when the live IVFFlat version's rows changed past what its lists hold up to."""
    live = live_version(versions)
    status = EmbeddingIndexStatus(
        versions=sorted(versions, key=lambda v: v.version, reverse=True),
        live_version=live.version if live else None,
        live_model=live.model if live else None,
        rows=live.rows if live else None,
        probe=probe,
        drift=drift,
        inputs_hash=inputs_hash,
        sync=sync,
    )
    if live is None:
        gated = probe.reason if probe and probe.passed is False else None
        reason = gated or "no version passed the probe gate yet"
        return failed(EmbeddingIndexStatus, Reason.NO_LIVE_VERSION, reason, at, status)
    problems = []
    if probe is not None and probe.version == live.version and probe.recall_at_k < spec.probe.min_recall:
        problems.append(f"recall@{probe.k} {probe.recall_at_k:.4f} below {spec.probe.min_recall}")
    # Only the live version's own measurements count (an earlier version's drift says nothing of it),
    # judged by today's threshold, not the measurement's.
    if drift is not None and drift.version == live.version and drift.score > spec.drift.threshold:
        problems.append(f"drift {drift.score:.4f} above {spec.drift.threshold}")
    message = f"serving v{live.version} ({live.rows} rows)"
    status = _ready(status, Reason.SERVING, message, at)
    if problems:
        status.phase = "Degraded"
        status.set_condition(
            DEGRADED, "True", Reason.QUALITY_DEGRADED, "; ".join(problems), generation=at.generation, now=at.now
        )
    elif (stale := _stale_lists(spec, live, sync)) is not None:
        degraded(status, Reason.ANN_INDEX_STALE, stale, at)
    return status


def _stale_lists(spec: EmbeddingIndexSpec, live: IndexVersion, sync: SyncStatus | None) -> str | None:
    """Why the live IVFFlat version's lists no longer describe its rows, if they do not."""
    if spec.ann.method != "ivfflat" or sync is None or sync.version != live.version:
        return None
    limit = spec.sync.rebuild_after_changed_fraction or IVFFLAT_STALE_FRACTION
    if sync.changed_fraction <= limit:
        return None
    then = (
        "a new version is built"
        if spec.sync.rebuild_after_changed_fraction
        else "set sync.rebuildAfterChangedFraction, or the rerun annotation, to build a new version"
    )
    return (
        f"{sync.changed_fraction:.0%} of v{live.version}'s rows changed since its IVFFlat lists were built "
        f"(past {limit:.0%}): recall at the same probes falls; {then}"
    )


def synced(result: SyncResult, previous: SyncStatus | None) -> SyncStatus:
    """status.sync after a sync Job: its counts, and the time of its diff (the previous one's when it stopped
    early and applied only part of it)."""
    last = result.synced_at or (previous.last_sync_time if previous and previous.version == result.version else None)
    return SyncStatus(
        version=result.version,
        last_sync_time=last,
        rows_embedded=result.embedded,
        rows_deleted=result.deleted,
        pending_rows=result.pending,
        skipped_rows=result.skipped_rows,
        lag_seconds=result.seconds,
        changed_fraction=result.changed_fraction,
    )


def index_published(
    spec: EmbeddingIndexSpec,
    published: PublishResult,
    at: At,
    drift: DriftResult | None = None,
    sync: SyncStatus | None = None,
) -> EmbeddingIndexStatus:
    """The index's status after a publish step."""
    versions = published.versions
    live = live_version(versions)
    status = index_observed(spec, versions, at, probe=live.probe if live else published.probe, drift=drift, sync=sync)
    if published.note_reason and live is not None:
        note(status, published.note_reason, published.note or "", at)
    return status


def note(status: EmbeddingIndexStatus, reason: Reason, message: str, at: At) -> None:
    """What the last publish step decided (GateFailed, RolledBack, Pinned), beside a serving index."""
    status.set_condition(PROGRESSING, "False", reason, message, generation=at.generation, now=at.now)


def degraded(status: EmbeddingIndexStatus, reason: Reason, message: str, at: At) -> None:
    """Something is wrong beside a serving index (a failed probe or drift Job, a pin to a version it does not
    keep): it keeps serving, Degraded says why, and so does its phase."""
    status.phase = "Degraded"
    status.set_condition(DEGRADED, "True", reason, message, generation=at.generation, now=at.now)
