"""The lifecycle of the three kinds: observed state in, a plan out. The only copy of it.

Pure functions, carried out by two executors:
- the operator (embedops.handlers.executor) gathers the observations from the API server (the
  resource, the Jobs it owns with their pods' results, the statuses of the resources it
  references), creates the planned Jobs, writes the status and posts the events;
- local mode (embedops.local) runs each planned Job's worker in-process, records its result as
  the Job's outcome, and plans again until nothing new is planned.

Reconciliation is level-based: the plan is derived from what exists now, not from which
event arrived, so a restarted operator, a missed event or a duplicate one all lead to the
same plan. Every Job's name is a hash of its owner and its inputs (builders.naming), so
"create" is idempotent, and `status.inputsHash` records which inputs the last finished run
used, so a Job deleted after it finished (ttlSecondsAfterFinished) is not run again.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, assert_never

from pydantic import BaseModel, ValidationError

from embedops import modelzoo, steps
from embedops import status as statuses
from embedops.api import times
from embedops.api.common import BaseStatus, JobStatus, Scheduling
from embedops.api.conditions import PUBLISH_NOTES, SCHEDULED_FAILURES, WAITING, WORKER_FAILURES, Reason
from embedops.api.dataset import EmbeddingDatasetSpec
from embedops.api.finetune import TRAINJOB_API, FineTuneJobSpec, FineTuneJobStatus, LauncherStatus
from embedops.api.index import (
    RETAINED_STATES,
    DriftResult,
    EmbeddingIndexSpec,
    EmbeddingIndexStatus,
    IndexVersion,
    ProbeResult,
    ProbeSpec,
    ReindexProgress,
    ServingStatus,
    SyncStatus,
    VersionState,
    live_version,
)
from embedops.api.kinds import KINDS, format_validation_error, validate_spec
from embedops.builders import naming, serving
from embedops.builders.jobs import KUEUE_QUEUE_LABEL, Owner, WorkerStep
from embedops.results import EmbedResult, PrepareResult, PublishResult, SyncResult, TrainResult
from embedops.settings import OperatorSettings

RERUN_ANNOTATION = "embedops.dev/rerun"
PROBE_ANNOTATION = "embedops.dev/probe"  # an RFC 3339 time: probe the live version now if not probed since
SYNC_ANNOTATION = "embedops.dev/sync"  # an RFC 3339 time: sync the live version with its table now if not since

JobState = Literal["Pending", "Running", "Succeeded", "Failed"]


@dataclass(frozen=True)
class ObservedJob:
    """A Job the resource owns, as an executor observed it."""

    name: str
    state: JobState  # Pending: no pod has started (suspended, queued, unschedulable, pulling its image)
    results: dict[int, dict[str, Any]] = field(default_factory=dict)  # completion index -> result JSON
    error: str | None = None  # why it failed, from a pod's termination message or the Job's condition
    reason: str | None = None  # the failed worker's own reason (its error document), where it wrote one
    suspended: bool = False  # its spec.suspend
    step: str | None = None  # its embedops.dev/step label
    queue: str | None = None  # its Kueue queue: Kueue, not the operator, then decides when it runs
    waiting: tuple[Reason, str] | None = None  # why its pods cannot start (Unschedulable, ...), and the detail
    report: JobStatus | None = None  # its times and pod counts
    kind: Literal["Job", "TrainJob"] = "Job"  # a batch/v1 Job, or a Kubeflow Trainer TrainJob (a train step's)


@dataclass(frozen=True)
class ObservedDeployment:
    """A query-embedding Deployment of an index (spec.serving), as an executor observed it."""

    name: str
    spec_hash: str | None  # the builder's embedops.dev/spec-hash: what it was last applied as
    ready: bool  # rolled out as applied: every replica updated and available (true at 0 replicas too)
    failed: str | None = None  # why its rollout failed (ProgressDeadlineExceeded, ReplicaFailure), when it did


@dataclass(frozen=True)
class ObservedService:
    """An index's query-embedding Service."""

    name: str
    spec_hash: str | None
    version: int | None  # the version its selector names


@dataclass(frozen=True)
class Observed:
    """Everything a plan is made from."""

    body: dict[str, Any]
    jobs: dict[str, ObservedJob] = field(default_factory=dict)
    # Status of a referenced resource by (kind, name), same namespace; absent when it does not exist.
    related: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    now: dt.datetime = field(default_factory=times.utcnow)
    trainjob_api: bool = False  # the cluster serves Kubeflow Trainer's TrainJob (trainer.kubeflow.org/v1alpha1)
    # An index's serving objects (spec.serving) by name: its Deployments, and its Service.
    deployments: dict[str, ObservedDeployment] = field(default_factory=dict)
    services: dict[str, ObservedService] = field(default_factory=dict)


@dataclass(frozen=True)
class Layout:
    """Where the planned steps read and write, and how they reach the database."""

    inputs: str  # relative paths in specs (sources, probe sets, models) resolve against this folder
    outputs: str  # a step writes under <outputs>/<kind plural>/<name>/<inputs hash>/
    # True: each resource names the Secret holding its database's DSN (a cluster). False: the
    # executor hands every step its one database (local mode: --dsn or the embedded server).
    database_secrets: bool = True
    # True: an index's spec.serving becomes Deployments and a Service, and gates its cut-overs (a cluster).
    # False: local mode, where `embedops serve -f` serves the live model on loopback instead.
    serving: bool = True

    @classmethod
    def workspace(cls, settings: OperatorSettings) -> Layout:
        """The operator's: everything on the workspace volume, outputs under `embedops/`."""
        return cls(inputs=settings.workspace_path, outputs=f"{settings.workspace_path}/embedops")

    def resolve(self, path: str) -> str:
        return path if posixpath.isabs(path) else posixpath.join(self.inputs, path)

    def workdir(self, plural: str, name: str, key: str) -> str:
        return posixpath.join(self.outputs, plural, name, key)


@dataclass
class Plan:
    status: BaseStatus | None = None  # None: leave status as it is
    create: list[WorkerStep] = field(default_factory=list)  # Jobs to start (an executor renders or runs them)
    delete: list[str] = field(default_factory=list)  # names of owned Jobs to delete (superseded runs)
    suspend: dict[str, bool] = field(default_factory=dict)  # owned Job -> its spec.suspend from now on
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    apply: list[dict[str, Any]] = field(default_factory=list)  # manifests to create or update (server-side apply)
    remove: list[tuple[str, str]] = field(default_factory=list)  # owned (kind, name) to delete: Deployment, Service


@dataclass(frozen=True)
class _Context:
    obs: Observed
    settings: OperatorSettings
    layout: Layout
    status_cls: type[BaseStatus]

    @property
    def body(self) -> dict[str, Any]:
        return self.obs.body

    @property
    def generation(self) -> int | None:
        generation = self.body.get("metadata", {}).get("generation")
        return int(generation) if generation is not None else None

    @cached_property
    def current(self) -> Any:
        """The status as stored (read once; every builder copies it before changing anything)."""
        return statuses.parse(self.status_cls, self.body.get("status"))

    def metadata(self, field: str, key: str) -> str | None:
        """A label (`field="labels"`) or annotation of the resource."""
        return (self.body.get("metadata", {}).get(field) or {}).get(key)

    @property
    def at(self) -> statuses.At:
        """The generation and time every status of this plan is built at."""
        return statuses.At(self.generation, self.obs.now)

    @property
    def rerun(self) -> str:
        return self.metadata("annotations", RERUN_ANNOTATION) or ""

    def finished(self, key: str) -> bool:
        """The last finished run used these inputs and the status reflects this generation."""
        current = self.current
        return bool(current.inputs_hash == key and current.observed_generation == self.generation)


class _Stop(Exception):
    """Planning ends early with this plan (a missing dependency, an invalid spec)."""

    def __init__(self, plan: Plan):
        self.plan = plan


# -- plans every kind makes -----------------------------------------------------------------------


def owner_of(body: dict[str, Any]) -> Owner:
    meta = body["metadata"]
    return Owner(
        kind=body["kind"], name=meta["name"], namespace=meta.get("namespace") or "default", uid=meta.get("uid", "")
    )


def target_owner(owner: Owner) -> steps.TargetOwner:
    """The owner an index's steps claim its target for (store.catalog records one per target)."""
    return steps.TargetOwner(namespace=owner.namespace, name=owner.name, uid=owner.uid)


def _parse_spec(ctx: _Context) -> Any:
    try:
        return validate_spec(ctx.body["kind"], ctx.body.get("spec"))
    except ValidationError as err:
        raise _Stop(_failed(ctx, Reason.INVALID_SPEC, "; ".join(format_validation_error(err, prefix="spec")))) from err


def _failed(ctx: _Context, reason: Reason, message: str) -> Plan:
    """A terminal failure, with one Warning event when it is new."""
    base = ctx.current
    status = statuses.failed(ctx.status_cls, reason, message, ctx.at, base)
    unchanged = statuses.same_condition(base, status, statuses.READY)
    return Plan(status=status, events=[] if unchanged else [("Warning", reason, message)])


def _waiting(ctx: _Context, reason: Reason, message: str) -> Plan:
    """Nothing runs: the resource waits for another (phase Pending, not Running)."""
    return Plan(status=statuses.progressing(ctx.current, reason, message, ctx.at, phase="Pending"))


def _related(ctx: _Context, kind: str, name: str) -> Any:
    """The status of a referenced resource that must be Ready; stops planning while it is not."""
    raw = ctx.obs.related.get((kind, name))
    if raw is None:
        raise _Stop(_waiting(ctx, Reason.DEPENDENCY_NOT_FOUND, f"{kind} {name} does not exist"))
    status = statuses.parse(KINDS[kind].status_model, raw)
    if statuses.is_ready(status):
        return status
    if status.phase == "Failed":
        # Said where people look (the FineTuneJob of a failed dataset), not only on the failed one.
        cause = status.condition(statuses.READY)
        why = f"{cause.reason}: {cause.message}" if cause is not None else "no reason given"
        raise _Stop(_waiting(ctx, Reason.DEPENDENCY_FAILED, f"{kind} {name} failed ({why}); fix it to go on"))
    raise _Stop(_waiting(ctx, Reason.DEPENDENCY_NOT_READY, f"waiting for {kind} {name} to be Ready"))


def _require_secret(ctx: _Context, ref: Any, field_path: str) -> None:
    if ctx.layout.database_secrets and ref is None:
        raise _Stop(_failed(ctx, Reason.MISSING_DATABASE, f"{field_path} is required in a cluster"))


def _single_result(ctx: _Context, job: ObservedJob, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate(job.results.get(0))
    except ValidationError as err:
        raise _Stop(
            _failed(
                ctx,
                Reason.BAD_WORKER_RESULT,
                f"Job {job.name} finished without a readable result: {err.error_count()} problems",
            )
        ) from err


def _run_step(ctx: _Context, step: WorkerStep, running: Reason) -> Plan | ObservedJob:
    """Drive one Job: the plan that creates it, reports it running or failed; or the Job, once it succeeded."""
    name = step.name
    job = ctx.obs.jobs.get(name)
    if job is None:
        status = statuses.running(
            ctx.current, running, f"{step.launcher} {name} created", ctx.at, JobStatus(name=name, step=step.step)
        )
        # A run of the same step for inputs that no longer apply would only hold nodes, GPUs or
        # a Kueue quota (and an embed Job would keep writing a version nobody wants).
        superseded = sorted(
            j.name
            for j in ctx.obs.jobs.values()
            if j.step == step.step and j.name != name and j.state in ("Pending", "Running")
        )
        events = [("Normal", "JobCreated", f"created {step.launcher} {name}")]
        events += [("Normal", "JobSuperseded", f"deleted Job {old}: its inputs changed") for old in superseded]
        return Plan(status=status, create=[step], delete=superseded, events=events)
    if job.state in ("Pending", "Running"):
        return _in_progress(ctx, job, step, running)
    if job.state == "Failed":
        reason, message = _job_failure(job)
        status = statuses.step_failed(ctx.current, reason, message, ctx.at, inputs_hash=step.key, job=job.report)
        unchanged = statuses.same_condition(ctx.current, status, statuses.READY)
        return Plan(status=status, events=[] if unchanged else [("Warning", reason, message)])
    return job


def _job_failure(job: ObservedJob) -> tuple[Reason, str]:
    """Why a Job failed, in the resource's words: the worker's own reason where it is one of the API's
    (TargetConflict, EmptySource), else JobFailed with the worker's (or the Job's) message."""
    if job.reason in WORKER_FAILURES:
        detail = (job.error or "").removeprefix(f"{job.reason}: ")
        return Reason(job.reason), f"{job.kind} {job.name}: {detail}"
    return Reason.JOB_FAILED, f"{job.kind} {job.name} failed: {job.error or 'no message'}"


def _in_progress(ctx: _Context, job: ObservedJob, step: WorkerStep, running: Reason) -> Plan:
    """A Job not finished yet: what holds it, in words, and the suspension the spec asks for.

    A Job in a Kueue queue is suspended and resumed by Kueue (admission, preemption), so the
    operator leaves its `suspend` alone; any other Job follows `spec.scheduling.suspend`, resumed
    in place rather than created again.
    """
    plan = Plan()
    suspended = job.suspended
    if job.queue is None and job.suspended != step.scheduling.suspend:
        suspended = plan.suspend[job.name] = step.scheduling.suspend
        plan.events.append(
            (
                "Normal",
                "JobSuspended" if suspended else "JobResumed",
                f"{'suspended' if suspended else 'resumed'} Job {job.name}",
            )
        )
    if suspended and job.queue is not None:
        reason, message, phase = (
            Reason.QUEUED,
            f"{job.kind} {job.name} waits for Kueue to admit it (queue {job.queue})",
            "Queued",
        )
    elif suspended:
        reason, message, phase = Reason.SUSPENDED, f"{job.kind} {job.name} is suspended", "Suspended"
    elif job.waiting is not None:
        detail = f"{job.kind} {job.name} cannot start its pod: {job.waiting[1]}"
        reason, message, phase = job.waiting[0], detail, "Pending"
    elif job.state == "Pending":
        reason, message, phase = running, f"{job.kind} {job.name} is pending", "Pending"
    else:
        reason, message, phase = running, f"{job.kind} {job.name} is running", "Running"
    plan.status = statuses.running(
        ctx.current, reason, message, ctx.at, job.report or JobStatus(name=job.name, step=step.step), phase=phase
    )
    if reason in WAITING and not statuses.same_condition(ctx.current, plan.status, statuses.PROGRESSING):
        plan.events.append(("Warning", reason, message))  # once, when the wait begins or its cause changes
    return plan


def _done(status: BaseStatus, key: str, job: ObservedJob, extra: list[tuple[str, str, str]] | None = None) -> Plan:
    """A finished run: its status, remembered by its inputs, and the Ready condition as an event."""
    statuses.finished(status, key, job.report)
    ready = status.condition(statuses.READY)
    assert ready is not None, "a finished status says whether it is Ready"
    return Plan(
        status=status,
        events=[("Normal" if ready.status == "True" else "Warning", ready.reason, ready.message), *(extra or [])],
    )


def _identity(spec: Any) -> dict[str, Any]:
    """What a dataset's or job's run depends on: its spec, but not whether its Job is suspended."""
    running = spec.scheduling.model_copy(update={"suspend": False})
    return naming.identity(spec.model_copy(update={"scheduling": running}))


def _scheduling(ctx: _Context, scheduling: Scheduling) -> Scheduling:
    """The spec's scheduling, with the Kueue queue of the resource's label when the spec names none."""
    label = ctx.metadata("labels", KUEUE_QUEUE_LABEL)
    return scheduling.model_copy(update={"queue_name": label}) if label and not scheduling.queue_name else scheduling


# -- EmbeddingDataset ---------------------------------------------------------------------------

# The folder of a dataset's generation cache, beside its runs' folders (named by inputs hashes).
GENERATIONS = "generations"


def plan_dataset(ctx: _Context) -> Plan:
    spec: EmbeddingDatasetSpec = _parse_spec(ctx)
    database = spec.source.database
    if database is not None:
        _require_secret(ctx, database.dsn_secret_ref, f"spec.source.{spec.source.kind}.database.dsnSecretRef")
    corpus = _related(ctx, "EmbeddingDataset", spec.source.dataset_ref.name) if spec.source.dataset_ref else None
    key = naming.step_key("prepare", _identity(spec), *([corpus.fingerprint] if corpus else []), ctx.rerun)
    if ctx.finished(key):
        return Plan()
    name = ctx.body["metadata"]["name"]
    endpoint = spec.generate.endpoint if spec.generate else None
    step = WorkerStep(
        owner=owner_of(ctx.body),
        key=key,
        config=steps.PrepareStep(
            spec=spec,
            base_dir=ctx.layout.inputs,
            output_dir=ctx.layout.workdir("embeddingdatasets", name, key),
            # Beside the runs' folders, not in one: a rerun or a changed spec reuses what was generated.
            cache_dir=ctx.layout.workdir("embeddingdatasets", name, GENERATIONS) if spec.generate else None,
            corpus_dir=corpus.location if corpus else None,
        ),
        resources=spec.resources,
        scheduling=_scheduling(ctx, spec.scheduling),
        gpus=spec.resources.gpus or 0,
        dsn_secret=database.dsn_secret_ref if database else None,
        api_key_secret=endpoint.api_key_secret_ref if endpoint else None,
    )
    job = _run_step(ctx, step, Reason.PREPARING)
    if isinstance(job, Plan):
        return job
    return _done(statuses.dataset_prepared(_single_result(ctx, job, PrepareResult), ctx.at), key, job)


# -- FineTuneJob --------------------------------------------------------------------------------


_RFC1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def _trainjob_named(ctx: _Context) -> Literal["TrainJob"]:
    """A TrainJob's name (the FineTuneJob's, then `-train-<hash>`) must be an RFC 1035 label: no dot, a letter first."""
    name = ctx.body["metadata"]["name"]
    if not _RFC1035.fullmatch(name):
        message = f"metadata.name {name!r}: a TrainJob's name starts with it and must be an RFC 1035 label"
        raise _Stop(_failed(ctx, Reason.INVALID_SPEC, message + " (lower-case letters, digits, '-'; a letter first)"))
    return "TrainJob"


def _launcher(ctx: _Context, spec: FineTuneJobSpec) -> tuple[Literal["Job", "TrainJob"], str]:
    """What runs the training pods, and why; a TrainJob asked for (or needed) where none is served stops here."""
    nodes, served = spec.resources.nodes, ctx.obs.trainjob_api
    missing = f"this cluster serves no {TRAINJOB_API} TrainJob API (install Kubeflow Trainer v2)"
    match spec.launcher:
        case "job":
            return "Job", "spec.launcher is job"
        case "trainjob" if served:
            return _trainjob_named(ctx), "spec.launcher is trainjob"
        case "trainjob":
            raise _Stop(_failed(ctx, Reason.INVALID_SPEC, f"spec.launcher is trainjob, but {missing}"))
        case "auto" if nodes == 1:
            return "Job", "spec.launcher is auto and spec.resources.nodes is 1: one pod"
        case "auto" if served:
            return _trainjob_named(
                ctx
            ), f"spec.launcher is auto and spec.resources.nodes is {nodes}: a TrainJob spans nodes"
        case "auto":
            raise _Stop(
                _failed(
                    ctx,
                    Reason.INVALID_SPEC,
                    f"spec.resources.nodes is {nodes}: training across nodes runs as a Kubeflow Trainer TrainJob, "
                    f"but {missing}, or set spec.resources.nodes to 1",
                )
            )
        case _:
            assert_never(spec.launcher)


def plan_finetune(ctx: _Context) -> Plan:
    spec: FineTuneJobSpec = _parse_spec(ctx)
    dataset = _related(ctx, "EmbeddingDataset", spec.dataset_ref.name)
    key = naming.step_key("train", _identity(spec), dataset.fingerprint, ctx.rerun)
    if ctx.finished(key):
        return Plan()
    launcher, why = _launcher(ctx, spec)
    gpus = spec.resources.gpus if spec.resources.gpus is not None else 1
    step = WorkerStep(
        owner=owner_of(ctx.body),
        key=key,
        config=steps.TrainStep(
            spec=spec,
            dataset_dir=dataset.location,
            base_dir=ctx.layout.inputs,
            output_dir=ctx.layout.workdir("finetunejobs", ctx.body["metadata"]["name"], key),
        ),
        resources=spec.resources,
        scheduling=_scheduling(ctx, spec.scheduling),
        gpus=gpus,
        launcher=launcher,
        nodes=spec.resources.nodes if launcher == "TrainJob" else 1,
    )
    shown = LauncherStatus(kind=launcher, name=step.name, nodes=step.nodes, processes_per_node=max(gpus, 1), reason=why)
    job = _run_step(ctx, step, Reason.TRAINING)
    if isinstance(job, Plan):
        if isinstance(job.status, FineTuneJobStatus):
            job.status = statuses.with_launcher(job.status, shown)
        return job
    finished = statuses.finetune_finished(_single_result(ctx, job, TrainResult), spec, ctx.at)
    return _done(statuses.with_launcher(finished, shown), key, job)


# -- EmbeddingIndex -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _IndexInputs:
    model: str | None  # path or bundled name the workers load; None while a followed job has no model
    model_id: str | None  # what identifies the embeddings: the model's fingerprint, or its name
    dataset_dir: str | None
    dataset_fingerprint: str | None
    probe: ProbeSpec  # spec.probe as the workers take it, its path resolved
    probe_dataset_dir: str | None  # the prepared dataset whose held-out queries are probed, without a path


def _index_model(ctx: _Context, spec: EmbeddingIndexSpec) -> tuple[str | None, str | None]:
    if (name := spec.model.name) is not None:
        model = name if modelzoo.is_bundled(name) else ctx.layout.resolve(name)
        return model, model
    assert spec.model.fine_tune_job_ref is not None, "the spec names exactly one of the two"
    ref = spec.model.fine_tune_job_ref.name
    raw = ctx.obs.related.get(("FineTuneJob", ref))
    if raw is None:
        raise _Stop(_waiting(ctx, Reason.DEPENDENCY_NOT_FOUND, f"FineTuneJob {ref} does not exist"))
    job = statuses.parse(FineTuneJobStatus, raw)
    # Only a model that passed its own evaluation is followed; the index keeps what it serves otherwise.
    if job.model is not None and statuses.is_ready(job):
        return job.model.location, job.model.fingerprint
    return None, None


def _followed(spec: EmbeddingIndexSpec) -> str:
    """The FineTuneJob an index follows (spec.model.fineTuneJobRef), by name."""
    return spec.model.fine_tune_job_ref.name if spec.model.fine_tune_job_ref is not None else ""


def _index_inputs(ctx: _Context, spec: EmbeddingIndexSpec) -> _IndexInputs:
    """The model and data an index is built from now."""
    model, model_id = _index_model(ctx, spec)
    dataset_dir = fingerprint = None
    if spec.source.dataset_ref is not None:
        ds = _related(ctx, "EmbeddingDataset", spec.source.dataset_ref.name)
        dataset_dir, fingerprint = ds.location, ds.fingerprint
    probe = spec.probe
    probe_dataset_dir = None
    if spec.probe.path:
        probe = probe.model_copy(update={"path": ctx.layout.resolve(spec.probe.path)})
    elif spec.probe.dataset_ref is not None:
        probe_dataset_dir = _related(ctx, "EmbeddingDataset", spec.probe.dataset_ref.name).location
    elif dataset_dir is not None:
        probe_dataset_dir = dataset_dir
    else:
        raise _Stop(
            _failed(
                ctx,
                Reason.NO_PROBE_SET,
                "spec.probe: set probe.path or probe.datasetRef (a table source has no held-out queries)",
            )
        )
    return _IndexInputs(model, model_id, dataset_dir, fingerprint, probe, probe_dataset_dir)


def _index_step(
    ctx: _Context,
    key: str,
    spec: EmbeddingIndexSpec,
    config: steps.AnyStep,
    *,
    ttl: int | None = None,
    deadline: int | None = None,
) -> WorkerStep:
    """Every index step runs for the index (the target's owner), with its resources, scheduling and database."""
    scheduling = _scheduling(ctx, spec.scheduling)
    if deadline is not None:
        limit = scheduling.active_deadline_seconds
        scheduling = scheduling.model_copy(update={"active_deadline_seconds": min(deadline, limit or deadline)})
    owner = owner_of(ctx.body)
    return WorkerStep(
        owner=owner,
        key=key,
        config=config.model_copy(update={"owner": target_owner(owner)}),
        resources=spec.resources,
        scheduling=scheduling,
        gpus=spec.resources.gpus or 0,
        dsn_secret=spec.database.dsn_secret_ref,
        ttl_seconds=ttl,
    )


def _embed_step(ctx: _Context, spec: EmbeddingIndexSpec, inputs: _IndexInputs, rebuild_of: int | None) -> WorkerStep:
    # What the version's vectors and layout depend on; batch size, commit size and shard count
    # only change how fast it is built, and search settings only what probes measure. The store
    # records the same identity with each version (embeddings_key), so it reuses a version only
    # for what the planner also calls the same embeddings.
    vectors = (
        inputs.model_id,
        naming.identity(spec.source),
        inputs.dataset_fingerprint,
        naming.identity(spec.ann, exclude={"ef_search", "probes"}),
        naming.identity(spec.embedding, include={"max_seq_length", "precision"}),
        # A rebuild of a version whose IVFFlat lists went stale: new lists, so new embeddings (not reused).
        *((f"ann-rebuild-of-v{rebuild_of}",) if rebuild_of is not None else ()),
    )
    key = naming.step_key("embed", *vectors, naming.identity(spec.target), ctx.rerun)
    config = steps.EmbedStep(
        target=spec.target,
        source=spec.source,
        dataset_dir=inputs.dataset_dir,
        model=inputs.model,
        ann=spec.ann,
        embedding=spec.embedding,
        # A version already built from the same model and source is reused, unless the user asked
        # for a fresh one with the rerun annotation (the table's rows changed, say).
        reuse=not ctx.rerun,
        embeddings_key=naming.inputs_hash("embeddings", naming.STEP_VERSIONS["embed"], *vectors),
    )
    return _index_step(ctx, key, spec, config)


def _candidate(job: ObservedJob) -> EmbedResult | None:
    """The version an embed Job built (or reused): the shard result that saw it finished."""
    results = [EmbedResult.model_validate(r) for r in job.results.values() if "version" in r]
    done = [r for r in results if r.state != VersionState.BUILDING]
    return done[0] if done else None


def _reindex_progress(job: ObservedJob) -> ReindexProgress | None:
    """What the shards that finished so far report (the operator has no database connection)."""
    results = [EmbedResult.model_validate(r) for r in job.results.values() if "version" in r]
    if not results:
        return None
    rates = [r.rows_per_second for r in results if r.rows_per_second]
    return ReindexProgress(
        version=results[0].version,
        rows_done=sum(r.shard_rows for r in results),
        rows_per_second=round(sum(rates), 2) if rates else None,
    )


def _due(last: str | None, minutes: int, now: dt.datetime) -> bool:
    when = times.parse_time(last)
    return when is None or now - when >= dt.timedelta(minutes=minutes)


def _slot(now: dt.datetime, minutes: int) -> str:
    """The schedule slot `now` falls in: one probe (or drift) Job per slot, whatever restarts."""
    return "s" + str(int(now.timestamp() // (minutes * 60)))


def plan_index(ctx: _Context) -> Plan:
    spec: EmbeddingIndexSpec = _parse_spec(ctx)
    _require_secret(ctx, spec.database.dsn_secret_ref, "spec.database.dsnSecretRef")
    current: EmbeddingIndexStatus = ctx.current
    rebuild_of = _ann_rebuild_of(spec, current)
    wanted: dict[int, str] = {}  # the version a cut-over waits for to be served, and its model
    try:
        plan = _plan_index(ctx, spec, current, rebuild_of, wanted)
    except _Stop as stop:
        plan = stop.plan
    if ctx.layout.serving:
        _serve(ctx, spec, current, plan, wanted)
    if isinstance(plan.status, EmbeddingIndexStatus):
        plan.status.ann_rebuild_of = rebuild_of
    elif plan.status is None and rebuild_of != current.ann_rebuild_of:
        plan.status = current.model_copy(update={"ann_rebuild_of": rebuild_of}, deep=True)
    return plan


def _ann_rebuild_of(spec: EmbeddingIndexSpec, current: EmbeddingIndexStatus) -> int | None:
    """The version a rebuild replaces because its IVFFlat lists went stale: the live one, once its last sync
    says its changed share passed spec.sync.rebuildAfterChangedFraction; else the one such a rebuild
    replaced before (kept in status, so the rebuilt version's embed step keeps its name)."""
    limit, sync = spec.sync.rebuild_after_changed_fraction, current.sync
    stale = (
        limit is not None
        and spec.ann.method == "ivfflat"
        and sync is not None
        and sync.version == current.live_version
        and sync.changed_fraction > limit
    )
    return current.live_version if stale else current.ann_rebuild_of


def _plan_index(
    ctx: _Context,
    spec: EmbeddingIndexSpec,
    current: EmbeddingIndexStatus,
    rebuild_of: int | None,
    wanted: dict[int, str],
) -> Plan:
    inputs = _index_inputs(ctx, spec)
    if inputs.model is None:
        if current.live_version is None:
            return _waiting(ctx, Reason.WAITING_FOR_MODEL, f"FineTuneJob {_followed(spec)} has no Ready model yet")
        return _schedule(ctx, spec, current, inputs)

    if (pin := _unretained_pin(ctx, spec, current)) is not None:
        return pin
    embed = _embed_step(ctx, spec, inputs, rebuild_of)
    publish_key = naming.step_key(
        "publish",
        embed.key,
        naming.identity(spec.probe, exclude={"interval_minutes"}),
        naming.identity(spec.ann, include={"ef_search", "probes"}),
        spec.pinned_version,
        spec.keep_versions,
    )
    if current.inputs_hash == publish_key and current.active_job is None:
        return _schedule(ctx, spec, current, inputs)

    job = _run_step(ctx, embed, Reason.EMBEDDING)
    if isinstance(job, Plan):
        embed_job = ctx.obs.jobs.get(embed.name)
        if embed_job is not None and embed_job.state != "Failed" and isinstance(job.status, EmbeddingIndexStatus):
            statuses.reindexing(job.status, _reindex_progress(embed_job))
        return _syncing(ctx, spec, current, job)
    built = _candidate(job)
    if built is None:
        return _failed(
            ctx, Reason.BAD_WORKER_RESULT, f"Job {job.name} finished but no shard reported a finished version"
        )

    return _publish(ctx, spec, current, inputs, built, publish_key, wanted)


def _publish(
    ctx: _Context,
    spec: EmbeddingIndexSpec,
    current: EmbeddingIndexStatus,
    inputs: _IndexInputs,
    built: EmbedResult,
    publish_key: str,
    wanted: dict[int, str],
) -> Plan:
    """Probe the version built and cut over if it passes (or to the pinned one), once its query model is served."""
    config = steps.PublishStep(
        target=spec.target,
        version=built.version,
        model=inputs.model,
        probe=inputs.probe,
        dataset_dir=inputs.probe_dataset_dir,
        ann=spec.ann,
        keep_versions=spec.keep_versions,
        pinned_version=spec.pinned_version,
        catch_up=steps.CatchUp(table=spec.source.table, embedding=spec.embedding) if spec.source.table else None,
    )
    publish = _index_step(ctx, publish_key, spec, config)
    if (served := _served_next(ctx, spec, current, built, inputs)) is not None:
        wanted[served[0]] = served[1]  # kept up while the publish Job runs, not only until it starts
        if publish.name not in ctx.obs.jobs and (blocked := _serving_gate(ctx, spec, current, *served)):
            return _syncing(ctx, spec, current, blocked)
    job = _run_step(ctx, publish, Reason.PUBLISHING)
    if isinstance(job, Plan):
        if isinstance(job.status, EmbeddingIndexStatus):
            statuses.reindexing(job.status, None)
        return _syncing(ctx, spec, current, job)
    result = _single_result(ctx, job, PublishResult)
    notes = (
        [("Warning" if result.note_reason == Reason.GATE_FAILED else "Normal", result.note_reason, result.note or "")]
        if result.note_reason
        else []
    )
    published = statuses.index_published(spec, result, ctx.at, drift=current.drift, sync=current.sync)
    return _done(published, publish_key, job, notes)


# -- EmbeddingIndex: serving (spec.serving) ------------------------------------------------------


def _serving(ctx: _Context, spec: EmbeddingIndexSpec) -> serving.Serving:
    assert spec.serving is not None
    return serving.Serving(
        owner=owner_of(ctx.body),
        spec=spec.serving,
        target=spec.target,
        dsn_secret=spec.database.dsn_secret_ref,
        ann=spec.ann,
    )


def _served(ctx: _Context, spec: EmbeddingIndexSpec, version: int, model: str, replicas: int) -> dict[str, Any]:
    """The Deployment manifest of one version's query model."""
    served = serving.ServedVersion(version=version, model=model, replicas=replicas, bundled=modelzoo.is_bundled(model))
    return serving.deployment(_serving(ctx, spec), served, ctx.settings)


def _as_rendered(ctx: _Context, manifest: dict[str, Any]) -> ObservedDeployment | None:
    """The Deployment `manifest` renders, as observed, when it was last applied as rendered; else None."""
    seen = ctx.obs.deployments.get(manifest["metadata"]["name"])
    return seen if seen is not None and seen.spec_hash == serving.spec_hash(manifest) else None


def _served_next(
    ctx: _Context, spec: EmbeddingIndexSpec, current: EmbeddingIndexStatus, built: EmbedResult, inputs: _IndexInputs
) -> tuple[int, str] | None:
    """The version a publish step may make live (the pinned one, else the one just built) and its model, when its
    query model must be served before and while the step runs; None: no serving, or that version is live."""
    if spec.serving is None or not ctx.layout.serving:
        return None
    version = spec.pinned_version if spec.pinned_version is not None else built.version
    if version == current.live_version:
        return None  # no cut-over: the Service already selects it
    if version == built.version:
        return version, inputs.model or ""
    return version, next((v.model for v in current.versions if v.version == version), "")


def _serving_gate(
    ctx: _Context, spec: EmbeddingIndexSpec, current: EmbeddingIndexStatus, version: int, model: str
) -> Plan | None:
    """Blue/green: the version a publish step may make live must be served, its Deployment Ready with its model,
    before the publish Job starts; None: it is."""
    assert spec.serving is not None
    manifest = _served(ctx, spec, version, model, spec.serving.replicas)
    name = manifest["metadata"]["name"]
    seen = _as_rendered(ctx, manifest)
    if seen is not None and seen.ready:
        return None
    if seen is not None and seen.failed:
        message = (
            f"Deployment {name} (v{version}'s query model) failed: {seen.failed}; the cut-over to v{version} waits"
        )
        if current.live_version is not None:
            status = current.model_copy(deep=True)
            statuses.degraded(status, Reason.SERVING_FAILED, message, ctx.at)
            return Plan(status=status)  # its event: plan() posts one for each change of Degraded
        status = statuses.progressing(current, Reason.SERVING_FAILED, message, ctx.at, phase="Pending")
        unchanged = statuses.same_condition(current, status, statuses.PROGRESSING)
        return Plan(status=status, events=[] if unchanged else [("Warning", Reason.SERVING_FAILED, message)])
    message = f"waiting for Deployment {name} to serve v{version}'s model (Ready) before the cut-over"
    return Plan(status=statuses.progressing(current, Reason.SERVING_NOT_READY, message, ctx.at, phase="Pending"))


def _serve(
    ctx: _Context, spec: EmbeddingIndexSpec, current: EmbeddingIndexStatus, plan: Plan, wanted: dict[int, str]
) -> None:
    """The serving objects the plan's outcome asks for, added to it: a Deployment per retained version (the live
    one and the one a cut-over waits for at spec.serving.replicas, the others kept at zero replicas for a quick
    rollback), and the Service selecting the live version. What is no longer wanted is removed."""
    result = plan.status if isinstance(plan.status, EmbeddingIndexStatus) else current
    live = result.live_version
    wanted_deployments = _deployments(ctx, spec, result, wanted)
    wanted_service = serving.service(_serving(ctx, spec), live) if spec.serving and live is not None else None
    plan.apply += [m for m in wanted_deployments.values() if _as_rendered(ctx, m) is None]
    plan.remove += [("Deployment", name) for name in sorted(ctx.obs.deployments) if name not in wanted_deployments]
    service_name = serving.service_name(ctx.body["metadata"]["name"])
    seen_service = ctx.obs.services.get(service_name)
    kept = service_name if wanted_service is not None else None
    plan.remove += [("Service", name) for name in sorted(ctx.obs.services) if name != kept]
    if wanted_service is not None and (
        seen_service is None or seen_service.spec_hash != serving.spec_hash(wanted_service)
    ):
        plan.apply.append(wanted_service)
        plan.events += _switch_events(seen_service, current.live_version, live, service_name)
    shown = ServingStatus(service=service_name, version=live, engine=spec.serving.engine) if spec.serving else None
    if shown != result.serving:
        if plan.status is None:
            plan.status = current.model_copy(deep=True)
        assert isinstance(plan.status, EmbeddingIndexStatus)
        plan.status.serving = shown


def _deployments(
    ctx: _Context, spec: EmbeddingIndexSpec, result: EmbeddingIndexStatus, wanted: dict[int, str]
) -> dict[str, dict[str, Any]]:
    """The Deployment manifests of an index's retained versions (and of the one a cut-over waits for), by name."""
    if spec.serving is None:
        return {}
    models = {v.version: v.model for v in result.versions if v.state in RETAINED_STATES}
    models.update(wanted)
    out = {}
    for version, model in sorted(models.items()):
        replicas = spec.serving.replicas if version == result.live_version or version in wanted else 0
        manifest = _served(ctx, spec, version, model, replicas)
        out[manifest["metadata"]["name"]] = manifest
    return out


def _live_serving_failure(ctx: _Context, spec: EmbeddingIndexSpec, live: IndexVersion) -> list[tuple[Reason, str]]:
    """The live version's Deployment, as last rendered (an edit of spec.serving: resources, scheduling), failing
    to roll out: Degraded beside Ready, since the pods of its last rollout (if any) keep serving."""
    if spec.serving is None or not ctx.layout.serving:
        return []
    manifest = _served(ctx, spec, live.version, live.model, spec.serving.replicas)
    name = manifest["metadata"]["name"]
    seen = _as_rendered(ctx, manifest)
    if seen is None or not seen.failed:
        return []
    message = (
        f"Deployment {name} (the live v{live.version}'s query model) failed to roll out: {seen.failed}; "
        "the pods of its last rollout, if any, keep serving"
    )
    return [(Reason.SERVING_FAILED, message)]


def _switch_events(
    seen: ObservedService | None, recorded: int | None, live: int | None, name: str
) -> list[tuple[str, str, str]]:
    """A Service that selected another version than the view served (edited by hand, or left by a failed write)
    is a Warning; the switch that goes with a cut-over or rollback is Normal."""
    if seen is not None and seen.version != recorded:
        return [
            (
                "Warning",
                "ServingMismatch",
                f"Service {name} selected v{seen.version} while the view serves v{recorded}: switched to v{live}",
            )
        ]
    if seen is None or seen.version != live:
        return [("Normal", "ServingSwitched", f"Service {name} selects v{live}'s query model, as the view does")]
    return []


def _probe_requested(ctx: _Context, current: EmbeddingIndexStatus) -> str | None:
    """The time of a probe asked for with the PROBE_ANNOTATION (`kubectl embedops probe`) and not yet run."""
    requested = ctx.metadata("annotations", PROBE_ANNOTATION)
    try:
        when = times.parse_time(requested)
    except ValueError:
        return None
    last = times.parse_time(current.probe.checked_at) if current.probe else None
    return requested if when is not None and (last is None or last < when) else None


def _unretained_pin(ctx: _Context, spec: EmbeddingIndexSpec, current: EmbeddingIndexStatus) -> Plan | None:
    """spec.pinnedVersion naming a version the index does not keep: say so, serve on, build nothing."""
    kept = sorted(v.version for v in current.versions if v.state in RETAINED_STATES)
    if spec.pinned_version is None or not current.versions or spec.pinned_version in kept:
        return None
    message = (
        f"spec.pinnedVersion {spec.pinned_version} is not a version this index keeps "
        f"({', '.join(f'v{v}' for v in kept) or 'none'}); v{current.live_version} keeps serving"
    )
    return Plan(
        status=statuses.pin_not_retained(current, message, ctx.at)
    )  # its event: plan() posts one for each change of Degraded


def _scheduled_steps(
    ctx: _Context, spec: EmbeddingIndexSpec, current: EmbeddingIndexStatus, inputs: _IndexInputs, live: IndexVersion
) -> list[WorkerStep]:
    """The probe and drift runs of the live version that are due now (or asked for).

    A scheduled Job gets the interval as its deadline: a probe that takes longer than the time
    to the next one has failed, and must not pile up behind it.
    """
    now, ttl = ctx.obs.now, ctx.settings.periodic_job_ttl_seconds
    planned: list[WorkerStep] = []
    last_probe, last_drift = _last_runs(current, live)
    minutes = spec.probe.interval_minutes
    requested = _probe_requested(ctx, current)
    if requested or _due(last_probe, minutes, now):
        probe = steps.ProbeStep(
            target=spec.target,
            version=live.version,
            model=live.model,
            probe=inputs.probe,
            dataset_dir=inputs.probe_dataset_dir,
            ann=spec.ann,
        )
        key = "r" + naming.inputs_hash(requested) if requested else _slot(now, minutes)
        planned.append(_index_step(ctx, key, spec, probe, ttl=ttl, deadline=minutes * 60))
    minutes = spec.drift.interval_minutes
    if spec.drift.enabled and _due(last_drift, minutes, now):
        drift = steps.DriftStep(
            target=spec.target,
            version=live.version,
            model=live.model,
            source=spec.source,
            dataset_dir=inputs.dataset_dir,
            drift=spec.drift,
            embedding=spec.embedding,
        )
        planned.append(_index_step(ctx, _slot(now, minutes), spec, drift, ttl=ttl, deadline=minutes * 60))
    if (sync := _sync_step(ctx, spec, current, live)) is not None:
        planned.append(sync)
    return planned


def _sync_requested(ctx: _Context, current: EmbeddingIndexStatus) -> str | None:
    """The time of a sync asked for with the SYNC_ANNOTATION (`embedops sync`, `kubectl embedops sync`) and not
    yet run."""
    requested = ctx.metadata("annotations", SYNC_ANNOTATION)
    try:
        when = times.parse_time(requested)
        last = times.parse_time(current.sync.last_sync_time) if current.sync else None
    except ValueError:
        return None
    # Times are whole seconds: a sync that started in the second asked for may have started before the ask
    # (its Job is named by the request, so it runs once).
    return requested if when is not None and (last is None or last <= when) else None


def _sync_step(
    ctx: _Context, spec: EmbeddingIndexSpec, current: EmbeddingIndexStatus, live: IndexVersion
) -> WorkerStep | None:
    """The sync of the live version with its source table, when it is due (or asked for); a dataset source is
    fixed by its fingerprint (a new one builds a new version), so only a table is synced."""
    if spec.source.table is None:
        return None
    requested = _sync_requested(ctx, current)
    minutes = spec.sync.interval_minutes
    if not requested and not (spec.sync.scheduled and _due(current.synced_since(live), minutes, ctx.obs.now)):
        return None
    sync = steps.SyncStep(
        target=spec.target,
        version=live.version,
        model=live.model,
        table=spec.source.table,
        embedding=spec.embedding,
        sync=spec.sync,
        ann=spec.ann,
    )
    key = "r" + naming.inputs_hash(requested) if requested else _slot(ctx.obs.now, minutes)
    # A sync longer than its interval is not failed (a large change takes its time): one runs at a time.
    return _index_step(ctx, key, spec, sync, ttl=ctx.settings.periodic_job_ttl_seconds)


def _syncing(ctx: _Context, spec: EmbeddingIndexSpec, current: EmbeddingIndexStatus, plan: Plan) -> Plan:
    """While a new version is built and published, the live one keeps following its table."""
    live = live_version(current.versions)
    if live is None or plan.status is None or not isinstance(plan.status, EmbeddingIndexStatus):
        return plan
    sync = _sync_step(ctx, spec, current, live)
    ran = _run_scheduled(ctx, [sync] if sync is not None else [], current, live, kinds=("sync",))
    plan.create += ran.plan.create
    plan.events += ran.plan.events
    plan.status.sync = ran.sync
    if ran.sync_rows is not None:
        plan.status.rows = ran.sync_rows
    return plan


def _last_runs(current: EmbeddingIndexStatus, live: IndexVersion) -> tuple[str | None, str | None]:
    """When the live version was last probed, and last measured for drift.

    A version's first drift measurement comes one interval after it was built: right away, the
    stored vectors and the source embedded again would match by construction.
    """
    probed = current.probe.checked_at if current.probe else None
    drift = current.drift
    return probed, drift.checked_at if drift is not None and drift.version == live.version else live.created_at


def next_due(body: dict[str, Any], now: dt.datetime) -> dt.datetime | None:
    """The next time the plan for `body` would start a Job with nothing else changed (a probe or drift run of
    an index's live version); None: never. An executor sets its timer by it instead of planning on a sweep."""
    if body.get("kind") != "EmbeddingIndex":
        return None
    try:
        spec = EmbeddingIndexSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return None  # an invalid spec waits for an edit
    current = statuses.parse(EmbeddingIndexStatus, body.get("status"))
    live = live_version(current.versions)
    if live is None:
        return None
    last_probe, last_drift = _last_runs(current, live)
    dues = [_next_run(last_probe, spec.probe.interval_minutes, now)]
    if spec.drift.enabled:
        dues.append(_next_run(last_drift, spec.drift.interval_minutes, now))
    if spec.source.table is not None and spec.sync.scheduled:
        dues.append(_next_run(current.synced_since(live), spec.sync.interval_minutes, now))
    return min(dues)


def _next_run(last: str | None, minutes: int, now: dt.datetime) -> dt.datetime:
    """`minutes` after `last`; once that is past, the start of the next schedule slot.

    Overdue means the planner has had its chance at `now`: it started the run (a Job whose end
    is a watch event), one is still going, or this slot's run failed. Scheduled Jobs are named
    by their slot (`_slot`), so the next new run can only start with the next slot.
    """
    interval = dt.timedelta(minutes=minutes)
    try:
        when = times.parse_time(last)
    except ValueError:
        when = None
    if when is not None and when + interval > now:
        return when + interval
    seconds = interval.total_seconds()
    return dt.datetime.fromtimestamp((now.timestamp() // seconds + 1) * seconds, dt.UTC)


@dataclass
class _Scheduled:
    """What the scheduled runs of the live version came to: Jobs to start, new measurements, failures."""

    plan: Plan
    probe: ProbeResult | None
    drift: DriftResult | None
    sync: SyncStatus | None
    sync_rows: int | None = None  # the live version's rows after its last sync
    problems: list[tuple[Reason, str]] = field(default_factory=list)


def _run_scheduled(
    ctx: _Context,
    planned: list[WorkerStep],
    current: EmbeddingIndexStatus,
    live: IndexVersion,
    kinds: tuple[str, ...] = tuple(SCHEDULED_FAILURES),
) -> _Scheduled:
    out = _Scheduled(Plan(), current.probe, current.drift, current.sync)
    for step in planned:
        if step.name not in ctx.obs.jobs and not any(
            j.step == step.step and j.state in ("Pending", "Running") for j in ctx.obs.jobs.values()
        ):
            out.plan.create.append(step)  # one probe (one drift) at a time
            out.plan.events.append(("Normal", "JobCreated", f"created Job {step.name}"))
    slots = {step.step: step.name for step in planned}
    for kind in kinds:
        job = _last_finished(ctx, kind, slots.get(kind), since=live.created_at)
        if job is None:
            continue
        if job.state == "Failed":
            out.problems.append((SCHEDULED_FAILURES[kind], f"Job {job.name} failed: {job.error or 'no message'}"))
        elif 0 in job.results and kind == "probe":
            out.probe = ProbeResult.model_validate(job.results[0])
        elif 0 in job.results and kind == "drift":
            out.drift = DriftResult.model_validate(job.results[0])
        elif 0 in job.results:
            result = SyncResult.model_validate(job.results[0])
            if result.version == live.version:
                out.sync = statuses.synced(result, current.sync)
                out.sync_rows = result.rows
    return out


def _last_finished(ctx: _Context, step: str, slot: str | None, *, since: str | None) -> ObservedJob | None:
    """The newest finished probe (or drift) Job of the live version: this slot's, else the last one that ended.

    A run that failed (its deadline passed, its pod crashed) stays the index's latest word until a
    later run of the same step ends, although a new slot's Job has another name: otherwise a probe
    that hits its deadline would be replaced by the next one unseen.
    """
    jobs = ctx.obs.jobs
    if slot is not None and slot in jobs and jobs[slot].state in ("Succeeded", "Failed"):
        return jobs[slot]
    done = [
        j
        for j in jobs.values()
        if j.step == step
        and j.state in ("Succeeded", "Failed")
        and j.report is not None
        and j.report.start_time is not None
        and (since is None or j.report.start_time >= since)
    ]
    return max(done, key=lambda j: j.report.start_time or "" if j.report else "", default=None)


def _schedule(ctx: _Context, spec: EmbeddingIndexSpec, current: EmbeddingIndexStatus, inputs: _IndexInputs) -> Plan:
    """Steady state: re-probe the live version and measure its drift when they are due."""
    live = live_version(current.versions)
    if live is None:
        return Plan()
    ran = _run_scheduled(ctx, _scheduled_steps(ctx, spec, current, inputs, live), current, live)
    ran.problems += _live_serving_failure(ctx, spec, live)
    degraded = current.condition(statuses.DEGRADED)
    serving_recovered = (
        degraded is not None
        and degraded.status == "True"
        and degraded.reason == Reason.SERVING_FAILED
        and all(reason != Reason.SERVING_FAILED for reason, _ in ran.problems)
    )
    unchanged = (
        ran.probe == current.probe
        and ran.drift == current.drift
        and ran.sync == current.sync
        and not ran.problems
        and not serving_recovered
    )
    if unchanged and current.observed_generation == ctx.generation:
        return ran.plan
    versions = current.versions
    if ran.sync_rows is not None:  # a sync changed the live version's rows
        versions = [v.model_copy(update={"rows": ran.sync_rows}) if v is live else v for v in versions]
    refreshed = statuses.index_observed(
        spec, versions, ctx.at, probe=ran.probe, drift=ran.drift, inputs_hash=current.inputs_hash, sync=ran.sync
    )
    note = current.condition(statuses.PROGRESSING)
    if note is not None and note.reason in PUBLISH_NOTES:
        statuses.note(refreshed, Reason(note.reason), note.message, ctx.at)
    for reason, message in ran.problems:
        statuses.degraded(refreshed, reason, message, ctx.at)
    ran.plan.status = refreshed
    return ran.plan


# -- entry point --------------------------------------------------------------------------------

PLANNERS = {"EmbeddingDataset": plan_dataset, "FineTuneJob": plan_finetune, "EmbeddingIndex": plan_index}


def plan(obs: Observed, settings: OperatorSettings, layout: Layout | None = None) -> Plan:
    """The plan for one resource of any of the three kinds."""
    kind = obs.body["kind"]
    if kind not in KINDS:
        raise ValueError(f"not an embedops kind: {kind}")
    ctx = _Context(obs, settings, layout or Layout.workspace(settings), KINDS[kind].status_model)
    try:
        result = PLANNERS[kind](ctx)
    except _Stop as stop:
        result = stop.plan
    if result.status is not None:
        result.status.carry_transition_times(ctx.current)
        result.events += _degraded_transition(ctx.current, result.status, result.events)
    return result


def _degraded_transition(
    old: BaseStatus, new: BaseStatus, planned: list[tuple[str, str, str]]
) -> list[tuple[str, str, str]]:
    """One event for each change of Degraded, unless the plan already posts it: what SREs are paged on
    must be in `kubectl describe` too."""
    before, after = old.condition(statuses.DEGRADED), new.condition(statuses.DEGRADED)
    was = before if before is not None and before.status == "True" else None
    now = after if after is not None and after.status == "True" else None
    # A new failed probe (or drift) Job is news although the reason stays: its own event, not one old one.
    recurring = was is not None and now is not None and now.reason in SCHEDULED_FAILURES.values()
    changed = was is None or (
        now is not None and (was.reason != now.reason or (recurring and was.message != now.message))
    )
    if now is not None and changed and all(e[1:] != (now.reason, now.message) for e in planned):
        return [("Warning", now.reason, now.message)]
    if was is not None and now is None:
        return [("Normal", "Recovered", f"no longer degraded ({was.reason}: {was.message})")]
    return []


def related_statuses(
    body: dict[str, Any], read: Callable[[str, str], dict[str, Any] | None]
) -> dict[tuple[str, str], dict[str, Any]]:
    """`Observed.related` for `body`: the statuses of the resources it references that exist, as `read(kind,
    name)` finds them (the API server, or local mode's state folder)."""
    found = {ref: read(*ref) for ref in references(body)}
    return {ref: obj.get("status") or {} for ref, obj in found.items() if obj is not None}


def references(body: dict[str, Any]) -> list[tuple[str, str]]:
    """The (kind, name) pairs a resource's plan reads the status of."""
    spec = body.get("spec") or {}
    refs: list[tuple[str, str]] = []
    kind = body.get("kind")
    if kind == "FineTuneJob" and (name := (spec.get("datasetRef") or {}).get("name")):
        refs.append(("EmbeddingDataset", name))
    if kind == "EmbeddingDataset" and (name := ((spec.get("source") or {}).get("datasetRef") or {}).get("name")):
        refs.append(("EmbeddingDataset", name))
    if kind == "EmbeddingIndex":
        if name := ((spec.get("model") or {}).get("fineTuneJobRef") or {}).get("name"):
            refs.append(("FineTuneJob", name))
        parts = ((spec.get(part) or {}).get("datasetRef") or {} for part in ("source", "probe"))
        refs += [("EmbeddingDataset", ref["name"]) for ref in parts if ref.get("name")]
    return refs
