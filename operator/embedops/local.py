"""Local mode: the lifecycle of a set of manifests, carried out on this machine.

`embedops run -f DIR` is the second executor of embedops.reconcile's plan (the operator is the
first). For each resource, in dependency order, it plans; runs each planned Job's worker
in-process (an Indexed Job's shards one after the other) through the same entry point a pod
uses; records the worker's result as the Job's outcome; writes the planned status; and plans
again until the plan creates nothing. Reasons, conditions, catalog rows and the probe and drift
schedules are those of a cluster, because they come from the same planner.

What a cluster provides, and what stands in for it here:
- the API server: each resource is kept in the state folder as the server would hold it (spec,
  generation, annotations, status), so a later run continues where this one stopped;
- the workspace volume: relative paths in a spec resolve against its manifest's folder, and
  steps write their output under the state folder;
- the database Secrets: one database serves every step, `--dsn` or an embedded server whose
  data is in the state folder.

What the API server checks on an update, the immutable fields, is checked against the stored
resource before anything runs (embedops.transitions).

Two behaviours are local mode's own (docs/design.md says why):
- a source file edited since a dataset was first run here is prepared again, as though the
  `embedops.dev/rerun` annotation had been set (an operator cannot see the workspace's files);
- a run retries a step whose Job failed in an earlier run (a cluster keeps the failed Job, and
  its failure, until the rerun annotation changes).

The state folder (default `.embedops/`) is embedops' own: embedops.statedir says how it is
claimed, written and emptied (`--fresh`). Its layout:
    .embedops-state                              the marker: this folder is embedops' state
    postgres/                                    embedded server data (as root, a link: store/embedded.py)
    <namespace>/<plural>/<name>.json             the resource as the API server would hold it
    <namespace>/<plural>/<name>/<inputs hash>/   a step's output (prepared data, model, checkpoints)
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import signal
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedops import reconcile, statedir, steps, transitions
from embedops import status as statuses
from embedops.api import times
from embedops.api.common import API_VERSION, BaseStatus, JobStatus
from embedops.api.conditions import Reason
from embedops.api.kinds import KINDS
from embedops.builders import naming
from embedops.builders.jobs import WorkerStep
from embedops.manifests import LoadedResource
from embedops.results import describe_error, error_message, termination_message
from embedops.settings import OperatorSettings
from embedops.workers import runner
from embedops.workers.readers import beir

log = logging.getLogger(__name__)

SETTINGS = OperatorSettings()  # what the planner reads of the operator's settings (no manifest is rendered here)
SOURCE_STAMP_ANNOTATION = "embedops.dev/local-source-stamp"
# The spec as its manifest wrote it, defaults left out: what the API server would hold and run
# transition rules on (the stored `spec` has the defaults filled in, for the planner).
APPLIED_ANNOTATION = "embedops.dev/local-applied-spec"
MAX_ROUNDS = 50  # far above any lifecycle's length: reaching it is a planner bug, not a slow resource


@dataclass
class Outcome:
    loaded: LoadedResource
    status: BaseStatus
    ok: bool
    reused: bool = False  # nothing ran: the state folder already held this result


class StateLocked(statedir.StateError):
    """Another `embedops run` is using the state folder."""


class UpdateRefused(ValueError):
    """Manifests change what the API server would not let change; `problems` are the lines to show."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass
class LocalRunner:
    """Local mode's executor. Used as a context manager it holds the state folder for itself (one
    run at a time: two would prepare, train and write one index concurrently) and stops the
    embedded server at the end, also when the process is terminated."""

    state_dir: Path
    dsn: str | None = None
    device: str | None = None
    clock: Callable[[], dt.datetime] = times.utcnow  # when probes and drift are due
    fresh: bool = False  # forget the state folder first
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    _server: Any = None
    _lock: Any = None
    _previous_sigterm: Any = None

    def __post_init__(self) -> None:
        self.state_dir = self.state_dir.resolve()

    def __enter__(self) -> LocalRunner:
        statedir.claim(self.state_dir)
        self._lock = os.fdopen(os.open(self.state_dir / statedir.LOCK, os.O_RDWR | os.O_CREAT, 0o600), "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.seek(0)
            holder = self._lock.read().strip() or "unknown"
            self._lock.close()
            raise StateLocked(
                f"{self.state_dir} is in use by another embedops run (pid {holder}); wait for it "
                "to finish, or give this run another --state-dir"
            ) from None
        self._lock.truncate(0)
        self._lock.write(str(os.getpid()))
        self._lock.flush()
        if self.fresh:
            statedir.forget(self.state_dir, (kind.plural for kind in KINDS.values()))
        # SIGTERM (a `kill`, a closed terminal's session) ends the run through the normal exit path,
        # so the embedded server is stopped rather than left running.
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        self.close()
        self._lock.close()

    # -- the database -----------------------------------------------------------------------

    def has_database(self) -> bool:
        """Whether an embedded server's data is in the state folder (or a DSN was given)."""
        return bool(self.dsn) or (self.state_dir / statedir.DATABASE / "PG_VERSION").is_file()

    def database(self) -> str:
        if self.dsn:
            return self.dsn
        if self._server is None:
            from embedops.store import embedded

            self._server = embedded.start(self.state_dir / statedir.DATABASE, keep=True)
        return self._server.dsn

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    # -- the stored objects -----------------------------------------------------------------

    def _path(self, kind: str, namespace: str, name: str) -> Path:
        return self.state_dir / namespace / KINDS[kind].plural / f"{name}.json"

    def _read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return statedir.read_json(self._path(kind, namespace, name))

    def _write(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        statedir.write_json(self._path(body["kind"], meta["namespace"], meta["name"]), body)

    def refused_updates(self, resources: list[LoadedResource]) -> list[str]:
        """What the API server would refuse in applying these manifests over the stored resources."""
        problems = []
        for loaded in resources:
            r = loaded.resource
            stored = self._read(r.kind.kind, r.namespace, r.name)
            if stored is None:
                continue
            for rule, before, after in transitions.refused(r.kind.kind, _applied_spec(stored), _as_written(r.spec)):
                problems.append(
                    f"{r.key}: {rule.field}: {rule.message} (stored: {_show(before)}, now: {_show(after)}); "
                    f"or, to forget the stored one, delete {self._path(r.kind.kind, r.namespace, r.name)} "
                    "(what it built in the database stays)"
                )
        return problems

    def _apply(self, loaded: LoadedResource) -> dict[str, Any]:
        """The resource as `kubectl apply` leaves it: a new generation when its spec changed."""
        r = loaded.resource
        spec = r.spec.to_wire()
        stored = self._read(r.kind.kind, r.namespace, r.name) or {}
        meta = stored.get("metadata") or {}
        generation = meta.get("generation", 0) + (stored.get("spec") != spec)
        annotations = dict(r.metadata.get("annotations") or {})
        annotations[APPLIED_ANNOTATION] = json.dumps(_as_written(r.spec), sort_keys=True)
        if r.kind.kind == "EmbeddingDataset":
            _rerun_when_files_change(annotations, meta.get("annotations") or {}, r.spec, loaded.base_dir)
        status = stored.get("status") or {}
        if _ready_reason(status) == Reason.JOB_FAILED:
            status.pop("inputsHash", None)  # retried: see the module docstring
        return {
            "apiVersion": API_VERSION,
            "kind": r.kind.kind,
            "metadata": {
                "name": r.name,
                "namespace": r.namespace,
                "uid": meta.get("uid") or f"local-{uuid.uuid4()}",
                "generation": generation,
                "annotations": annotations,
            },
            "spec": spec,
            "status": status,
        }

    def republish(self, index: Any) -> None:
        """An index's versions changed outside the lifecycle (`embedops rollback`): its next run publishes
        again, which records the catalog's versions in its status (and the rollback as RolledBack)."""
        body = self._read(index.kind.kind, index.namespace, index.name)
        if body is not None and (body.get("status") or {}).pop("inputsHash", None):
            self._write(body)

    # -- the lifecycle ----------------------------------------------------------------------

    def run(self, resources: list[LoadedResource]) -> dict[str, Outcome]:
        """Reconcile each resource (dependencies first) until its plan creates nothing.

        UpdateRefused, before anything runs, when a manifest changes an immutable field.
        """
        if problems := self.refused_updates(resources):
            raise UpdateRefused(problems)
        # Prepared data, models and checkpoints are written by the steps run here: 0600 files and 0700 folders.
        umask = os.umask(0o077)
        try:
            return self._run(resources)
        finally:
            os.umask(umask)

    def _run(self, resources: list[LoadedResource]) -> dict[str, Outcome]:
        for loaded in resources:
            log.info("%s: reconciling", loaded.resource.key)
            outcome = self._reconcile(loaded)
            ready = outcome.status.condition(statuses.READY)
            log.info(
                "%s: Ready=%s %s", loaded.resource.key, ready.status if ready else "?", ready.message if ready else ""
            )
            self.outcomes[loaded.resource.key] = outcome
        return self.outcomes

    def _reconcile(self, loaded: LoadedResource) -> Outcome:
        body = self._apply(loaded)
        layout = reconcile.Layout(
            inputs=str(loaded.base_dir),
            outputs=str(self.state_dir / loaded.resource.namespace),
            database_secrets=False,
            serving=False,  # spec.serving is the cluster's: here `embedops serve -f` serves the live model
        )
        jobs: dict[str, reconcile.ObservedJob] = {}
        for _ in range(MAX_ROUNDS):
            related = reconcile.related_statuses(
                body, lambda kind, name: self._read(kind, body["metadata"]["namespace"], name)
            )
            observed = reconcile.Observed(body=body, jobs=jobs, related=related, now=self.clock())
            plan = reconcile.plan(observed, SETTINGS, layout)
            for name in plan.delete:
                jobs.pop(name, None)
            for type_, reason, message in plan.events:
                (log.warning if type_ == "Warning" else log.info)("%s: %s %s", loaded.resource.key, reason, message)
            if plan.status is not None:
                body["status"] = plan.status.to_wire()
            self._write(body)
            if not plan.create:
                break
            for step in plan.create:
                job = self._run_job(step)
                jobs[job.name] = job
        else:
            raise RuntimeError(f"{loaded.resource.key}: the plan did not settle after {MAX_ROUNDS} rounds")
        status = statuses.parse(loaded.resource.kind.status_model, body["status"])
        return Outcome(loaded, status, ok=statuses.is_ready(status), reused=not jobs)

    def _run_job(self, job: WorkerStep) -> reconcile.ObservedJob:
        """What the Job's pods would do, in this process: its step, each shard in turn.

        A suspended Job stays pending, as it would in a cluster; there is no Kueue here to admit a
        queued one, so its queue name is not looked at.
        """
        report = JobStatus(name=job.name, step=job.step)
        if job.scheduling.suspend:
            return reconcile.ObservedJob(job.name, "Pending", suspended=True, step=job.step, report=report)
        dsn = self.database() if job.config.uses_database else None
        log.info("%s: running %s", job.name, job.step)
        report.start_time = times.now()
        results: dict[int, dict[str, Any]] = {}
        for index in range(job.shards or 1):
            step = steps.for_pod(job.config, shard=index if job.shards else None, device=self.device)
            try:
                result = runner.run(step, dsn=dsn)
            except runner.WorkerError as err:
                error, reason = describe_error(error_message(err.reason, str(err))), err.reason
            except Exception as err:
                log.debug("%s failed", job.name, exc_info=True)
                error, reason = f"{type(err).__name__}: {err}", None
            else:
                results[index] = json.loads(termination_message(result))
                report.succeeded += 1
                continue
            report.failed = 1
            return reconcile.ObservedJob(
                job.name, "Failed", results, error=error, reason=reason, step=job.step, report=report
            )
        report.completion_time = times.now()
        return reconcile.ObservedJob(job.name, "Succeeded", results, step=job.step, report=report)


def _as_written(spec: Any) -> dict[str, Any]:
    written: dict[str, Any] = spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return written


def _applied_spec(stored: dict[str, Any]) -> dict[str, Any]:
    """The stored resource's spec as written; from before the annotation, its spec with the defaults."""
    applied = ((stored.get("metadata") or {}).get("annotations") or {}).get(APPLIED_ANNOTATION)
    spec: dict[str, Any] = json.loads(applied) if applied else stored.get("spec") or {}
    return spec


def _show(value: Any) -> str:
    return "unset" if value is None else json.dumps(value, sort_keys=True)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _ready_reason(status: dict[str, Any]) -> str | None:
    return next((c.get("reason") for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)


def _rerun_when_files_change(annotations: dict[str, str], stored: dict[str, str], spec: Any, base_dir: Path) -> None:
    """Prepare a dataset again when its source files changed since it was first run here."""
    stamp = naming.inputs_hash(_source_stamp(spec, base_dir))
    first = annotations[SOURCE_STAMP_ANNOTATION] = stored.get(SOURCE_STAMP_ANNOTATION, stamp)
    if stamp != first:
        given = annotations.get(reconcile.RERUN_ANNOTATION)
        annotations[reconcile.RERUN_ANNOTATION] = f"{given};files:{stamp}" if given else f"files:{stamp}"


def _source_stamp(spec: Any, base_dir: Path) -> list[Any]:
    """Sizes and modification times of the files a dataset is read from, so edited data is prepared again.

    Only the files the reader opens are looked at: a source folder is never walked.
    """
    if spec.source.beir is not None:
        folder = Path(spec.source.beir.path)
        paths = [folder / name for name in beir.file_names(spec.source.beir)]
    elif spec.source.pairs is not None:
        paths = [Path(p) for p in (spec.source.pairs.path, spec.source.pairs.test_path) if p]
    elif spec.source.documents is not None:
        paths = [Path(spec.source.documents.path)]
    else:
        return []
    paths = [p if p.is_absolute() else base_dir / p for p in paths]
    return [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths if p.is_file()]
