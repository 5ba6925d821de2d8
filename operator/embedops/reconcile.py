"""What the operator should do about one resource: observed state in, a plan out.

Pure functions. The kopf handlers (embedops.handlers) gather the observations (the resource,
the Jobs it owns with their pods' results, the statuses of the resources it references),
call `plan`, and carry the plan out: create the Jobs, write the status, post the events.

Reconciliation is level-based: the plan is derived from what exists now, not from which
event arrived, so a restarted operator, a missed event or a duplicate one all lead to the
same plan. Every Job's name is a hash of its owner and its inputs (resources.naming), so
"create" is idempotent, and `status.inputsHash` records which inputs the last finished run
used, so a Job deleted after it finished (ttlSecondsAfterFinished) is not run again.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from embedops import status as statuses
from embedops.api.common import BaseStatus
from embedops.api.dataset import EmbeddingDatasetSpec, EmbeddingDatasetStatus
from embedops.api.finetune import FineTuneJobSpec, FineTuneJobStatus
from embedops.api.index import DriftResult, EmbeddingIndexSpec, EmbeddingIndexStatus, ProbeResult, ReindexProgress
from embedops.api.kinds import KINDS, format_validation_error
from embedops.builders import naming
from embedops.builders.jobs import Owner, WorkerStep, worker_job
from embedops.results import EmbedResult, PrepareResult, PublishResult, TrainResult
from embedops.settings import OperatorSettings

RERUN_ANNOTATION = "embedops.dev/rerun"

JobState = Literal["Pending", "Running", "Succeeded", "Failed"]


@dataclass(frozen=True)
class ObservedJob:
    """A Job the resource owns, as the handlers read it."""

    name: str
    state: JobState
    results: dict[int, dict[str, Any]] = field(default_factory=dict)  # completion index -> result JSON
    error: str | None = None  # why it failed, from a pod's termination message or the Job's condition
    suspended: bool = False
    step: str | None = None  # its embedops.dev/step label


@dataclass(frozen=True)
class Observed:
    """Everything a plan is made from."""

    body: dict[str, Any]
    jobs: dict[str, ObservedJob] = field(default_factory=dict)
    # Status of a referenced resource by (kind, name), same namespace; absent when it does not exist.
    related: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))


@dataclass
class Plan:
    status: BaseStatus | None = None  # None: leave status as it is
    create: list[dict[str, Any]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)  # names of owned Jobs to delete (superseded runs)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)


class _Stop(Exception):
    """Planning ends early with this plan (a missing dependency, an invalid spec)."""

    def __init__(self, plan: Plan):
        self.plan = plan


# -- helpers ------------------------------------------------------------------------------------


def owner_of(body: dict[str, Any]) -> Owner:
    meta = body["metadata"]
    return Owner(kind=body["kind"], name=meta["name"], namespace=meta.get("namespace") or "default",
                 uid=meta.get("uid", ""))


def _generation(body: dict[str, Any]) -> int | None:
    return body.get("metadata", {}).get("generation")


def _current_status(body: dict[str, Any], status_cls: type[BaseStatus]) -> BaseStatus:
    """The status as stored, or an empty one when it cannot be read (an older operator's, say)."""
    try:
        return status_cls.model_validate(body.get("status") or {})
    except ValidationError:
        return status_cls()


def _parse_spec(body: dict[str, Any], spec_cls: type, status_cls: type[BaseStatus]) -> Any:
    try:
        return spec_cls.model_validate(body.get("spec") or {})
    except ValidationError as err:
        message = "; ".join(format_validation_error(err, prefix="spec"))
        raise _Stop(_failed(body, status_cls, "InvalidSpec", message, warn=True)) from err


def _failed(body: dict[str, Any], status_cls: type[BaseStatus], reason: str, message: str, *,
            warn: bool = True) -> Plan:
    base = _current_status(body, status_cls)
    status = statuses.failed(status_cls, reason, message, _generation(body), base)
    status.active_job = None
    unchanged = _same_condition(base, status, "Ready")
    events = [] if unchanged or not warn else [("Warning", reason, message)]
    return Plan(status=status, events=events)


def _waiting(body: dict[str, Any], status_cls: type[BaseStatus], reason: str, message: str) -> Plan:
    base = _current_status(body, status_cls)
    status = _progressing(base, reason, message, _generation(body))
    return Plan(status=status)


def _progressing(base: BaseStatus, reason: str, message: str, generation: int | None) -> BaseStatus:
    """Progressing, keeping what the last finished run published (a model, a live version)."""
    status = base.model_copy(deep=True)
    status.observed_generation = generation
    status.phase = "Running"
    ready = base.condition("Ready")
    if ready is None or ready.status != "True":
        status.set_condition("Ready", "False", reason, message, generation=generation)
    status.set_condition("Progressing", "True", reason, message, generation=generation)
    degraded = base.condition("Degraded")
    if base.phase == "Failed" and degraded is not None and degraded.status == "True":
        # The failure this run follows (a fixed spec, a rerun) is no longer the resource's state.
        status.set_condition("Degraded", "False", reason, message, generation=generation)
    return status


def _same_condition(a: BaseStatus, b: BaseStatus, type_: str) -> bool:
    ca, cb = a.condition(type_), b.condition(type_)
    return ca is not None and cb is not None and (ca.status, ca.reason, ca.message) == (cb.status, cb.reason, cb.message)


def _related(obs: Observed, kind: str, name: str, status_cls: type[BaseStatus], dependant_cls: type[BaseStatus]
             ) -> BaseStatus:
    """The status of a referenced resource that must be Ready; stops planning while it is not."""
    raw = obs.related.get((kind, name))
    if raw is None:
        raise _Stop(_waiting(obs.body, dependant_cls, "DependencyNotFound", f"{kind} {name} does not exist"))
    try:
        status = status_cls.model_validate(raw)
    except ValidationError:
        status = status_cls()
    ready = status.condition("Ready")
    if ready is None or ready.status != "True":
        raise _Stop(_waiting(obs.body, dependant_cls, "DependencyNotReady", f"waiting for {kind} {name} to be Ready"))
    return status


def _rerun(body: dict[str, Any]) -> str:
    return (body.get("metadata", {}).get("annotations") or {}).get(RERUN_ANNOTATION, "")


def _workdir(settings: OperatorSettings, plural: str, name: str, key: str) -> str:
    return f"{settings.workspace_path}/embedops/{plural}/{name}/{key}"


def _single_result(job: ObservedJob, model: type, body: dict[str, Any], status_cls: type[BaseStatus]) -> Any:
    raw = job.results.get(0)
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise _Stop(_failed(body, status_cls, "BadWorkerResult",
                            f"Job {job.name} finished without a readable result: {err.error_count()} problems")) from err


def _run_step(obs: Observed, status_cls: type[BaseStatus], step: WorkerStep, settings: OperatorSettings,
              running_reason: str) -> tuple[Plan | None, ObservedJob | None]:
    """Drive one Job: create it, report it running, or hand back the finished Job."""
    owner = owner_of(obs.body)
    name = step.job_name(owner)
    job = obs.jobs.get(name)
    base = _current_status(obs.body, status_cls)
    gen = _generation(obs.body)
    if job is None:
        status = _progressing(base, running_reason, f"Job {name} created", gen)
        status.active_job = name
        # A run of the same step for inputs that no longer apply would only hold nodes, GPUs or
        # a Kueue quota (and an embed Job would keep writing a version nobody wants).
        superseded = sorted(j.name for j in obs.jobs.values()
                            if j.step == step.step and j.name != name and j.state in ("Pending", "Running"))
        events = [("Normal", "JobCreated", f"created Job {name}")]
        events += [("Normal", "JobSuperseded", f"deleted Job {old}: its inputs changed") for old in superseded]
        return Plan(status=status, create=[worker_job(owner, step, settings)], delete=superseded,
                    events=events), None
    if job.state in ("Pending", "Running"):
        reason = "Suspended" if job.suspended else running_reason
        message = f"Job {name} is suspended" if job.suspended else f"Job {name} is {job.state.lower()}"
        status = _progressing(base, reason, message, gen)
        status.active_job = name
        return Plan(status=status), None
    if job.state == "Failed":
        plan = _failed(obs.body, status_cls, "JobFailed", f"Job {name} failed: {job.error or 'no message'}")
        plan.status.inputs_hash = step.key
        return plan, None
    return None, job


# -- EmbeddingDataset ---------------------------------------------------------------------------


def plan_dataset(obs: Observed, settings: OperatorSettings) -> Plan:
    body = obs.body
    spec: EmbeddingDatasetSpec = _parse_spec(body, EmbeddingDatasetSpec, EmbeddingDatasetStatus)
    pg = spec.source.postgres
    if pg is not None and pg.database.dsn_secret_ref is None:
        raise _Stop(_failed(body, EmbeddingDatasetStatus, "MissingDatabase",
                            "spec.source.postgres.database.dsnSecretRef is required in a cluster"))
    key = naming.inputs_hash(spec.to_wire(), _rerun(body))
    current = _current_status(body, EmbeddingDatasetStatus)
    if current.inputs_hash == key and current.observed_generation == _generation(body):
        return Plan()
    name = body["metadata"]["name"]
    step = WorkerStep(
        step="prepare", worker="prepare", key=key,
        config={"spec": spec.to_wire(), "baseDir": settings.workspace_path,
                "outputDir": _workdir(settings, "embeddingdatasets", name, key)},
        resources=spec.resources, scheduling=spec.scheduling, gpus=spec.resources.gpus or 0,
        dsn_secret=pg.database.dsn_secret_ref if pg else None,
    )
    plan, job = _run_step(obs, EmbeddingDatasetStatus, step, settings, "Preparing")
    if plan is not None:
        return plan
    result = _single_result(job, PrepareResult, body, EmbeddingDatasetStatus)
    status = statuses.dataset_prepared(result, _generation(body))
    status.inputs_hash = key
    return Plan(status=status, events=[("Normal", "Prepared", status.condition("Ready").message)])


# -- FineTuneJob --------------------------------------------------------------------------------


def plan_finetune(obs: Observed, settings: OperatorSettings) -> Plan:
    body = obs.body
    spec: FineTuneJobSpec = _parse_spec(body, FineTuneJobSpec, FineTuneJobStatus)
    dataset = _related(obs, "EmbeddingDataset", spec.dataset_ref.name, EmbeddingDatasetStatus, FineTuneJobStatus)
    key = naming.inputs_hash(spec.to_wire(), dataset.fingerprint, _rerun(body))
    current = _current_status(body, FineTuneJobStatus)
    if current.inputs_hash == key and current.observed_generation == _generation(body):
        return Plan()
    name = body["metadata"]["name"]
    gpus = spec.resources.gpus if spec.resources.gpus is not None else 1
    step = WorkerStep(
        step="train", worker="train", key=key,
        config={"spec": spec.to_wire(), "datasetDir": dataset.location, "baseDir": settings.workspace_path,
                "outputDir": _workdir(settings, "finetunejobs", name, key)},
        resources=spec.resources, scheduling=spec.scheduling, gpus=gpus,
    )
    plan, job = _run_step(obs, FineTuneJobStatus, step, settings, "Training")
    if plan is not None:
        return plan
    result = _single_result(job, TrainResult, body, FineTuneJobStatus)
    status = statuses.finetune_finished(result, spec, _generation(body))
    status.inputs_hash = key
    ready = status.condition("Ready")
    kind = "Normal" if ready.status == "True" else "Warning"
    return Plan(status=status, events=[(kind, ready.reason, ready.message)])


# -- EmbeddingIndex -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _IndexInputs:
    model: str | None  # path or bundled name the workers load; None while a followed job has no model
    model_id: str | None  # what identifies the embeddings: the model's fingerprint, or its name
    dataset_dir: str | None
    dataset_fingerprint: str | None
    probe_set: dict[str, str]


def _index_inputs(obs: Observed, spec: EmbeddingIndexSpec, settings: OperatorSettings) -> _IndexInputs:
    """The model and data an index is built from now."""
    model = model_id = None
    if spec.model.fine_tune_job_ref is not None:
        ref = spec.model.fine_tune_job_ref.name
        raw = obs.related.get(("FineTuneJob", ref))
        if raw is None:
            raise _Stop(_waiting(obs.body, EmbeddingIndexStatus, "DependencyNotFound", f"FineTuneJob {ref} does not exist"))
        job = _lenient(FineTuneJobStatus, raw)
        ready = job.condition("Ready")
        # Only a model that passed its own evaluation is followed; the index keeps what it serves otherwise.
        if job.model is not None and ready is not None and ready.status == "True":
            model, model_id = job.model.location, job.model.fingerprint
    else:
        model = model_id = spec.model.name
    dataset_dir = fingerprint = None
    if spec.source.dataset_ref is not None:
        ds = _related(obs, "EmbeddingDataset", spec.source.dataset_ref.name, EmbeddingDatasetStatus,
                      EmbeddingIndexStatus)
        dataset_dir, fingerprint = ds.location, ds.fingerprint
    if spec.probe.path:
        probe_set = {"path": spec.probe.path if spec.probe.path.startswith("/") else f"{settings.workspace_path}/{spec.probe.path}"}
    elif spec.probe.dataset_ref is not None:
        ds = _related(obs, "EmbeddingDataset", spec.probe.dataset_ref.name, EmbeddingDatasetStatus,
                      EmbeddingIndexStatus)
        probe_set = {"datasetDir": ds.location}
    elif dataset_dir is not None:
        probe_set = {"datasetDir": dataset_dir}
    else:
        raise _Stop(_failed(obs.body, EmbeddingIndexStatus, "NoProbeSet",
                            "spec.probe: set probe.path or probe.datasetRef (a table source has no held-out queries)"))
    return _IndexInputs(model, model_id, dataset_dir, fingerprint, probe_set)


def _lenient(status_cls: type[BaseStatus], raw: dict[str, Any]) -> Any:
    try:
        return status_cls.model_validate(raw)
    except ValidationError:
        return status_cls()


def _index_step(step: str, key: str, spec: EmbeddingIndexSpec, config: dict[str, Any], *,
                shards: int | None = None, ttl: int | None = None) -> WorkerStep:
    """Every index step runs with the index's resources, scheduling and database."""
    return WorkerStep(step=step, worker=step, key=key, config=config, resources=spec.resources,
                      scheduling=spec.scheduling, gpus=spec.resources.gpus or 0,
                      dsn_secret=spec.database.dsn_secret_ref, shards=shards, ttl_seconds=ttl)


def _embed_step(spec: EmbeddingIndexSpec, inputs: _IndexInputs, rerun: str) -> WorkerStep:
    key = naming.inputs_hash(inputs.model_id, spec.source.to_wire(), inputs.dataset_fingerprint,
                             spec.ann.to_wire(), spec.embedding.to_wire(), spec.target.to_wire(), rerun)
    config = {
        "target": spec.target.to_wire(), "source": spec.source.to_wire(), "model": inputs.model,
        # The catalog records where the model is, so probes of any retained version can load it.
        "modelName": inputs.model, "ann": spec.ann.to_wire(), "embedding": spec.embedding.to_wire(),
        "shardCount": spec.embedding.shards,
        # A version already built from the same model and source is reused, unless the user asked
        # for a fresh one with the rerun annotation (the table's rows changed, say).
        "reuse": not rerun,
    }
    if inputs.dataset_dir:
        config["datasetDir"] = inputs.dataset_dir
    return _index_step("embed", key, spec, config, shards=spec.embedding.shards)


def _candidate(job: ObservedJob) -> EmbedResult | None:
    """The version an embed Job built (or reused): the shard result that saw it finished."""
    results = [EmbedResult.model_validate(r) for r in job.results.values() if "version" in r]
    done = [r for r in results if r.state != "Building"]
    return done[0] if done else None


def _reindex_progress(job: ObservedJob) -> ReindexProgress | None:
    """What the shards that finished so far report (the operator has no database connection)."""
    results = [EmbedResult.model_validate(r) for r in job.results.values() if "version" in r]
    if not results:
        return None
    rates = [r.rows_per_second for r in results if r.rows_per_second]
    return ReindexProgress(version=results[0].version, rows_done=sum(r.shard_rows for r in results),
                           rows_per_second=round(sum(rates), 2) if rates else None)


def _parse_time(stamp: str | None) -> dt.datetime | None:
    if not stamp:
        return None
    return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)


def _due(last: str | None, minutes: int, now: dt.datetime) -> bool:
    when = _parse_time(last)
    return when is None or now - when >= dt.timedelta(minutes=minutes)


def _slot(now: dt.datetime, minutes: int) -> str:
    """The schedule slot `now` falls in: one probe (or drift) Job per slot, whatever restarts."""
    return "s" + str(int(now.timestamp() // (minutes * 60)))


def plan_index(obs: Observed, settings: OperatorSettings) -> Plan:
    body = obs.body
    spec: EmbeddingIndexSpec = _parse_spec(body, EmbeddingIndexSpec, EmbeddingIndexStatus)
    if spec.database.dsn_secret_ref is None:
        raise _Stop(_failed(body, EmbeddingIndexStatus, "MissingDatabase",
                            "spec.database.dsnSecretRef is required in a cluster"))
    gen = _generation(body)
    current: EmbeddingIndexStatus = _current_status(body, EmbeddingIndexStatus)  # type: ignore[assignment]
    inputs = _index_inputs(obs, spec, settings)
    if inputs.model is None:
        if current.live_version is None:
            return _waiting(body, EmbeddingIndexStatus, "WaitingForModel",
                            f"FineTuneJob {spec.model.fine_tune_job_ref.name} has no Ready model yet")
        return _schedule(obs, spec, current, inputs, settings)

    embed = _embed_step(spec, inputs, _rerun(body))
    publish_key = naming.inputs_hash(embed.key, spec.probe.to_wire(), spec.pinned_version, spec.keep_versions)
    if current.inputs_hash == publish_key and current.active_job is None:
        return _schedule(obs, spec, current, inputs, settings)

    plan, job = _run_step(obs, EmbeddingIndexStatus, embed, settings, "Embedding")
    if plan is not None:
        embed_job = obs.jobs.get(embed.job_name(owner_of(body)))
        if embed_job is not None and embed_job.state != "Failed":
            plan.status.reindex = _reindex_progress(embed_job)
        return plan
    built = _candidate(job)
    if built is None:
        return _failed(body, EmbeddingIndexStatus, "BadWorkerResult",
                       f"Job {job.name} finished but no shard reported a finished version")

    config = {"target": spec.target.to_wire(), "version": built.version, "model": inputs.model,
              "probe": spec.probe.to_wire(), "efSearch": spec.ann.ef_search, "probes": spec.ann.probes,
              "keepVersions": spec.keep_versions, **inputs.probe_set}
    if spec.pinned_version is not None:
        config["pinnedVersion"] = spec.pinned_version
    publish = _index_step("publish", publish_key, spec, config)
    plan, job = _run_step(obs, EmbeddingIndexStatus, publish, settings, "Publishing")
    if plan is not None:
        plan.status.reindex = None
        return plan
    result = _single_result(job, PublishResult, body, EmbeddingIndexStatus)
    status = statuses.index_published(spec, result, gen, drift=current.drift)
    status.inputs_hash = publish_key
    ready = status.condition("Ready")
    events = [("Normal" if ready.status == "True" else "Warning", ready.reason, ready.message)]
    if result.note_reason:
        events.append(("Warning" if result.note_reason == "GateFailed" else "Normal", result.note_reason,
                       result.note or ""))
    return Plan(status=status, events=events)


def _schedule(obs: Observed, spec: EmbeddingIndexSpec, current: EmbeddingIndexStatus, inputs: _IndexInputs,
              settings: OperatorSettings) -> Plan:
    """Steady state: re-probe the live version and measure its drift when they are due."""
    gen = _generation(obs.body)
    owner = owner_of(obs.body)
    live = next((v for v in current.versions if v.state == "Live"), None)
    plan = Plan()
    if live is None:
        return plan
    target = spec.target.to_wire()
    ttl = settings.periodic_job_ttl_seconds
    steps: list[WorkerStep] = []
    minutes = spec.probe.interval_minutes
    if _due(current.probe.checked_at if current.probe else None, minutes, obs.now):
        steps.append(_index_step("probe", _slot(obs.now, minutes), spec, {
            "target": target, "version": live.version, "model": live.model, "k": spec.probe.k,
            "maxQueries": spec.probe.max_queries, "efSearch": spec.ann.ef_search, "probes": spec.ann.probes,
            "minRecall": spec.probe.min_recall, "maxRegression": spec.probe.max_regression, **inputs.probe_set,
        }, ttl=ttl))
    minutes = spec.drift.interval_minutes
    # A version's first drift measurement comes one interval after it was built: right away, the
    # stored vectors and the source embedded again would match by construction.
    last = current.drift.checked_at if current.drift and current.drift.version == live.version else live.created_at
    if spec.drift.enabled and _due(last, minutes, obs.now):
        config = {"target": target, "version": live.version, "model": live.model, "source": spec.source.to_wire(),
                  "sampleSize": spec.drift.sample_size, "threshold": spec.drift.threshold,
                  "precision": spec.embedding.precision}
        if inputs.dataset_dir:
            config["datasetDir"] = inputs.dataset_dir
        steps.append(_index_step("drift", _slot(obs.now, minutes), spec, config, ttl=ttl))

    status = current.model_copy(deep=True)
    problems: list[tuple[str, str]] = []
    for step in steps:
        name = step.job_name(owner)
        job = obs.jobs.get(name)
        if job is None:
            plan.create.append(worker_job(owner, step, settings))
            plan.events.append(("Normal", "JobCreated", f"created Job {name}"))
        elif job.state == "Succeeded" and 0 in job.results:
            if step.step == "probe":
                status.probe = ProbeResult.model_validate(job.results[0])
            else:
                status.drift = DriftResult.model_validate(job.results[0])
        elif job.state == "Failed":
            reason = f"{step.step.capitalize()}Failed"
            problems.append((reason, f"Job {name} failed: {job.error or 'no message'}"))
    if (status.probe == current.probe and status.drift == current.drift and not problems
            and current.observed_generation == gen):
        return plan
    refreshed = statuses.index_observed(spec, status.versions, gen, probe=status.probe, drift=status.drift)
    refreshed.inputs_hash = current.inputs_hash
    note = current.condition("Progressing")
    if note is not None and note.reason in ("GateFailed", "RolledBack", "Pinned"):
        refreshed.set_condition("Progressing", "False", note.reason, note.message, generation=gen)
    for reason, message in problems:
        refreshed.set_condition("Degraded", "True", reason, message, generation=gen)
        plan.events.append(("Warning", reason, message))
    plan.status = refreshed
    return plan


# -- entry point --------------------------------------------------------------------------------

PLANNERS = {"EmbeddingDataset": plan_dataset, "FineTuneJob": plan_finetune, "EmbeddingIndex": plan_index}


def plan(obs: Observed, settings: OperatorSettings) -> Plan:
    """The plan for one resource of any of the three kinds."""
    kind = obs.body["kind"]
    if kind not in KINDS:
        raise ValueError(f"not an embedops kind: {kind}")
    try:
        return PLANNERS[kind](obs, settings)
    except _Stop as stop:
        return stop.plan


def references(body: dict[str, Any]) -> list[tuple[str, str]]:
    """The (kind, name) pairs a resource's plan reads the status of."""
    spec = body.get("spec") or {}
    refs: list[tuple[str, str]] = []
    kind = body.get("kind")
    if kind == "FineTuneJob" and (name := (spec.get("datasetRef") or {}).get("name")):
        refs.append(("EmbeddingDataset", name))
    if kind == "EmbeddingIndex":
        if name := ((spec.get("model") or {}).get("fineTuneJobRef") or {}).get("name"):
            refs.append(("FineTuneJob", name))
        for part in ("source", "probe"):
            if name := ((spec.get(part) or {}).get("datasetRef") or {}).get("name"):
                refs.append(("EmbeddingDataset", name))
    return refs
