"""The planned steps: what the planner decides one worker run is, as a typed value end to end.

embedops.reconcile builds these; a plan carries them (builders.jobs.WorkerStep wraps one with
the pod's resources and scheduling); local mode hands one to embedops.workers.runner as it is,
and the operator renders it into a Job whose pod gets it back as JSON in its argv (the one
place a step is text: `embedops worker NAME --spec-json ...`, parsed by `parse`). Each worker
takes its step as its config, so a field added here reaches the worker without a copy.

This module imports only the API models: the planner, the operator image (no torch, no
database driver) and the workers all use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from embedops.api.common import ApiModel
from embedops.api.dataset import EmbeddingDatasetSpec
from embedops.api.finetune import FineTuneJobSpec
from embedops.api.index import (
    AnnSpec,
    DriftSpec,
    EmbedSpec,
    IndexSource,
    ProbeSpec,
    SyncSpec,
    TableSource,
    Target,
)

_DEVICE = "`cpu` or `cuda`; default cuda when available."


class Step(ApiModel):
    """One run of one worker. `NAME` is the worker (`embedops worker NAME`) and the Job's step label."""

    NAME: ClassVar[str]


class PrepareStep(Step):
    NAME: ClassVar[str] = "prepare"

    spec: EmbeddingDatasetSpec = Field(description="The EmbeddingDataset spec.")
    base_dir: Path = Field(description="Relative paths in the spec resolve against this folder.")
    output_dir: Path = Field(description="Where the prepared dataset is written.")
    cache_dir: Path | None = Field(
        default=None, description="The generation cache of `spec.generate` (kept across runs). Unset: no cache."
    )
    corpus_dir: Path | None = Field(
        default=None, description="The prepared dataset whose corpus a `source.datasetRef` reads."
    )

    @model_validator(mode="after")
    def _corpus_dir_for_a_dataset_ref(self) -> PrepareStep:
        if self.spec.source.dataset_ref is not None and self.corpus_dir is None:
            raise ValueError("corpus_dir is required for a source.datasetRef")
        return self

    @property
    def uses_database(self) -> bool:
        return self.spec.source.database is not None


class TrainStep(Step):
    NAME: ClassVar[str] = "train"

    spec: FineTuneJobSpec = Field(description="The FineTuneJob spec.")
    dataset_dir: Path = Field(description="The prepared dataset (the EmbeddingDataset's location).")
    output_dir: Path = Field(description="Where checkpoints/, model/ and evaluation.json are written.")
    base_dir: Path | None = Field(default=None, description="Relative model paths resolve against this folder.")
    device: str | None = Field(default=None, description=_DEVICE)

    uses_database: ClassVar[bool] = False


class TargetOwner(ApiModel):
    """The EmbeddingIndex a step works for: the catalog records one owner per target, and a step for
    another index never builds, replaces or drops that target's objects."""

    namespace: str = Field(description="The index's namespace.")
    name: str = Field(description="The index's name.")
    uid: str = Field(default="", description="Its uid (a re-created index of the same name is the same owner).")

    def same_index(self, other: TargetOwner) -> bool:
        """Namespace and name identify an index: one deleted (deletionPolicy Retain) and created again under
        the same name takes its target back."""
        return (self.namespace, self.name) == (other.namespace, other.name)

    def __str__(self) -> str:
        return f"EmbeddingIndex {self.namespace}/{self.name}"


class IndexStep(Step):
    """A step on one index's tables: every one of them reaches the database."""

    target: Target = Field(description="The index's view and schema.")
    owner: TargetOwner | None = Field(
        default=None, description="The index the step works for (unset: a worker run by hand, which claims nothing)."
    )

    uses_database: ClassVar[bool] = True


class ModelStep(IndexStep):
    """A step that encodes text with the model a version is (or is being) built with."""

    model: str = Field(min_length=1, description="Bundled model name or path: the model the version is built with.")
    device: str | None = Field(default=None, description=_DEVICE)


class VersionStep(ModelStep):
    """A step on one version of an index: probe and drift (the live one by default), publish."""

    version: int | None = Field(default=None, ge=1, description="The version. Default: the live one.")


def _dataset_dir_for(source: IndexSource, dataset_dir: Path | None) -> None:
    if source.dataset_ref is not None and dataset_dir is None:
        raise ValueError("dataset_dir is required for a source.datasetRef")


class EmbedStep(ModelStep):
    NAME: ClassVar[str] = "embed"

    source: IndexSource = Field(description="The documents to embed.")
    dataset_dir: Path | None = Field(
        default=None, description="The prepared dataset folder of a `source.datasetRef` (its corpus is embedded)."
    )
    ann: AnnSpec = Field(default_factory=AnnSpec, description="Vector type, metric and ANN index of the version.")
    embedding: EmbedSpec = Field(default_factory=EmbedSpec, description="Batch, sequence length, commit size, shards.")
    shard: int = Field(
        default=0, ge=0, description="This pod's shard of `embedding.shards`, 0-based (the Job completion index)."
    )
    finalize: bool = Field(
        default=True, description="Build the ANN index and mark the version Ready if every shard is done."
    )
    maintenance_work_mem: str | None = Field(
        default=None, description="Postgres memory for the ANN build, e.g. `4GB`. Default: estimated from the rows."
    )
    reuse: bool = Field(
        default=True,
        description="Return a finished version already built with this model, source and vector settings instead of "
        "building it again (a model that comes back after a rollback is not re-embedded).",
    )
    embeddings_key: str | None = Field(
        default=None,
        description="What the vectors are (the planner's embed identity: model, source, vector type, metric, ANN "
        "build, sequence length, precision), recorded with the version: only a version with the same key is reused.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> EmbedStep:
        _dataset_dir_for(self.source, self.dataset_dir)
        if self.shard >= self.embedding.shards:
            raise ValueError(f"shard {self.shard} is not below the {self.embedding.shards} shards")
        return self


class CatchUp(ApiModel):
    """What a cut-over brings its version in step with first, in the same lock: the index's source table,
    embedded as the version was built (store.sync)."""

    table: TableSource = Field(description="The index's source table.")
    embedding: EmbedSpec = Field(default_factory=EmbedSpec, description="The index's embedding settings.")


class _Probing(VersionStep):
    """What probing a version takes: the probe set and the search settings."""

    catch_up: CatchUp | None = Field(
        default=None,
        description="Sync the version with the source table right before a cut-over to it (None: a dataset "
        "source, whose corpus is fixed, or sync turned off).",
    )

    probe: ProbeSpec = Field(
        default_factory=ProbeSpec, description="The index's probe: k, query cap, gate thresholds, and a JSONL `path`."
    )
    ann: AnnSpec = Field(default_factory=AnnSpec, description="The index's ANN settings (efSearch, probes).")
    dataset_dir: Path | None = Field(
        default=None, description="Prepared dataset whose held-out queries are probed, when `probe.path` is unset."
    )

    @model_validator(mode="after")
    def _one_probe_set(self) -> _Probing:
        if (self.dataset_dir is None) == (self.probe.path is None):
            raise ValueError("exactly one of dataset_dir or probe.path must be set")
        return self


class ProbeStep(_Probing):
    NAME: ClassVar[str] = "probe"

    promote: bool = Field(default=False, description="Cut over to the version when it passes the gate.")


class PublishStep(_Probing):
    NAME: ClassVar[str] = "publish"

    version: int = Field(ge=1, description="The candidate version (what the embed step built or found).")
    pinned_version: int | None = Field(default=None, ge=1, description="Serve exactly this version.")
    keep_versions: int = Field(default=2, ge=1, le=20, description="Versions kept, the live one included.")


class DriftStep(VersionStep):
    NAME: ClassVar[str] = "drift"

    source: IndexSource = Field(description="The index's documents.")
    dataset_dir: Path | None = Field(default=None, description="The prepared dataset folder of a `source.datasetRef`.")
    drift: DriftSpec = Field(
        default_factory=DriftSpec, description="The index's drift settings: sample size, threshold."
    )
    embedding: EmbedSpec = Field(
        default_factory=EmbedSpec,
        description="The index's embedding settings: the current sample is encoded as the version was built "
        "(sequence length, precision), in batches of its batch size.",
    )
    current: Literal["same_ids", "random"] = Field(
        default="same_ids", description="Current sample: the reference ids' text now, or a random source sample."
    )
    seed: int | None = Field(default=None, description="Seed of the samples. Default: a new sample each run.")

    @model_validator(mode="after")
    def _dataset_dir(self) -> DriftStep:
        _dataset_dir_for(self.source, self.dataset_dir)
        return self


class SyncStep(VersionStep):
    NAME: ClassVar[str] = "sync"

    version: int = Field(ge=1, description="The version synced (the live one).")
    table: TableSource = Field(description="The index's source table.")
    embedding: EmbedSpec = Field(
        default_factory=EmbedSpec,
        description="The index's embedding settings: changed rows are encoded as the version was built, "
        "commitRows at a time.",
    )
    sync: SyncSpec = Field(default_factory=SyncSpec, description="The index's sync settings (mode).")
    ann: AnnSpec = Field(default_factory=AnnSpec, description="The index's ANN settings (whose lists go stale).")


class CleanupStep(IndexStep):
    NAME: ClassVar[str] = "cleanup"

    drop_tables: bool = Field(
        default=True,
        description="Drop the view and the version tables (deletionPolicy Delete); false (Retain, sync mode "
        "trigger): only the source table's triggers and their queue.",
    )


AnyStep = PrepareStep | TrainStep | EmbedStep | PublishStep | ProbeStep | DriftStep | SyncStep | CleanupStep
STEPS: dict[str, type[AnyStep]] = {
    cls.NAME: cls
    for cls in (PrepareStep, TrainStep, EmbedStep, PublishStep, ProbeStep, DriftStep, SyncStep, CleanupStep)
}


def parse(name: str, raw: Any, *, shard: int | None = None, device: str | None = None) -> AnyStep:
    """The step of worker `name` from its wire form, as the pod of completion index `shard` on `device` runs it
    (`for_pod`). KeyError for an unknown worker, pydantic's ValidationError for a bad step."""
    return for_pod(STEPS[name].model_validate(raw), shard=shard, device=device)


def for_pod(step: AnyStep, *, shard: int | None = None, device: str | None = None) -> AnyStep:
    """`step` as the pod of completion index `shard` (an Indexed Job's pod: it overrides the step's) on
    `device` (where the step names none) runs it; validated again, so a shard beyond the step's is refused."""
    fields = type(step).model_fields
    update: dict[str, Any] = {}
    if shard is not None and "shard" in fields:
        update["shard"] = shard
    if device is not None and "device" in fields and getattr(step, "device", None) is None:
        update["device"] = device
    return type(step).model_validate({**step.model_dump(), **update}) if update else step
