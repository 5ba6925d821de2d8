"""Status builders shared by local mode and the operator: worker results in, status objects out.

Both paths must write the same status structure, so the mapping from a worker's result
to conditions, phase and fields lives here, once.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel

from embedops.api.common import BaseStatus
from embedops.api.dataset import EmbeddingDatasetStatus
from embedops.api.finetune import FineTuneJobSpec, FineTuneJobStatus
from embedops.api.index import DriftResult, EmbeddingIndexSpec, EmbeddingIndexStatus, IndexVersion, ProbeResult

S = TypeVar("S", bound=BaseStatus)


def _copy_fields(result: BaseModel, status_cls: type[S]) -> S:
    """Build a status from the result fields it shares with the status model."""
    shared = set(status_cls.model_fields) & set(type(result).model_fields)
    return status_cls.model_validate({f: getattr(result, f) for f in shared})


def progressing(status_cls: type[S], reason: str, message: str, generation: int | None) -> S:
    status = status_cls(observed_generation=generation, phase="Running")
    status.set_condition("Ready", "False", reason, message, generation=generation)
    status.set_condition("Progressing", "True", reason, message, generation=generation)
    return status


def failed(status_cls: type[S], reason: str, message: str, generation: int | None, base: S | None = None) -> S:
    """A terminal failure: Ready=False, Degraded=True, with a reason a person can act on."""
    status = base.model_copy(deep=True) if base is not None else status_cls()
    status.observed_generation = generation
    status.phase = "Failed"
    status.set_condition("Ready", "False", reason, message, generation=generation)
    status.set_condition("Progressing", "False", reason, message, generation=generation)
    status.set_condition("Degraded", "True", reason, message, generation=generation)
    return status


def _ready(status: S, reason: str, message: str, generation: int | None, phase: str = "Ready") -> S:
    status.observed_generation = generation
    status.phase = phase
    status.set_condition("Ready", "True", reason, message, generation=generation)
    status.set_condition("Progressing", "False", reason, message, generation=generation)
    status.set_condition("Degraded", "False", reason, message, generation=generation)
    return status


def dataset_prepared(result: BaseModel, generation: int | None) -> EmbeddingDatasetStatus:
    status = _copy_fields(result, EmbeddingDatasetStatus)
    counts = status.counts
    message = (
        f"{counts.train_pairs} training pairs, {counts.test_queries} test queries, {counts.corpus} documents"
        + (f"; {counts.invalid_rows} invalid rows skipped" if counts.invalid_rows else "")
        if counts
        else "prepared"
    )
    return _ready(status, "Prepared", message, generation)


def finetune_finished(result: BaseModel, spec: FineTuneJobSpec, generation: int | None) -> FineTuneJobStatus:
    status = _copy_fields(result, FineTuneJobStatus)
    base, tuned = status.base_metrics, status.tuned_metrics
    message = f"nDCG@10 {base.ndcg_at_10:.4f} -> {tuned.ndcg_at_10:.4f}" if base and tuned else "trained"
    if spec.evaluation.require_improvement and base and tuned and tuned.ndcg_at_10 <= base.ndcg_at_10:
        return failed(FineTuneJobStatus, "NoImprovement", message + " (not above the base model)", generation, status)
    return _ready(status, "Trained", message, generation, phase="Succeeded")


def index_observed(
    spec: EmbeddingIndexSpec,
    versions: list[IndexVersion],
    generation: int | None,
    probe: ProbeResult | None = None,
    drift: DriftResult | None = None,
) -> EmbeddingIndexStatus:
    """The index's status from its catalog and latest measurements; Degraded when drift or recall says so."""
    live = next((v for v in versions if v.state == "Live"), None)
    status = EmbeddingIndexStatus(
        versions=sorted(versions, key=lambda v: v.version, reverse=True),
        live_version=live.version if live else None,
        live_model=live.model if live else None,
        rows=live.rows if live else None,
        probe=probe,
        drift=drift,
    )
    if live is None:
        reason = probe.reason if probe and probe.passed is False else "no version passed the probe gate yet"
        return failed(EmbeddingIndexStatus, "NoLiveVersion", reason, generation, status)
    problems = []
    if probe is not None and probe.version == live.version and probe.recall_at_k < spec.probe.min_recall:
        problems.append(f"recall@{probe.k} {probe.recall_at_k:.4f} below {spec.probe.min_recall}")
    if drift is not None and drift.score > spec.drift.threshold:  # today's threshold, not the measurement's
        problems.append(f"drift {drift.score:.4f} above {spec.drift.threshold}")
    message = f"serving v{live.version} ({live.rows} rows)"
    status = _ready(status, "Serving", message, generation)
    if problems:
        status.phase = "Degraded"
        status.set_condition("Degraded", "True", "QualityDegraded", "; ".join(problems), generation=generation)
    return status


def index_published(spec: EmbeddingIndexSpec, published: BaseModel, generation: int | None,
                    drift: DriftResult | None = None) -> EmbeddingIndexStatus:
    """The index's status after a publish step (embedops.workers.publish.Result)."""
    versions = published.versions
    live = next((v for v in versions if v.state == "Live"), None)
    status = index_observed(spec, versions, generation, probe=live.probe if live else published.probe, drift=drift)
    if published.note_reason and live is not None:
        status.set_condition("Progressing", "False", published.note_reason, published.note or "", generation=generation)
    return status
