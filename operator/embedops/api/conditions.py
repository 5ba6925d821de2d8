"""The condition vocabulary: every condition type and reason a status can carry.

Statuses are read by people (`kubectl describe`), by the Argo CD health script, by alerts and
by the docs' reason table; a reason spelt differently in one place is a health check that
silently stops matching. So the words live here, once, as CloudNativePG keeps its condition
types and reasons next to its API types, and tests tie the docs and the health script to them.
"""

from __future__ import annotations

from enum import StrEnum


class ConditionType(StrEnum):
    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"


class Reason(StrEnum):
    # Work under way (Progressing=True): the step whose Job runs, what holds its pods back, or
    # what is awaited.
    PREPARING = "Preparing"
    TRAINING = "Training"
    EMBEDDING = "Embedding"
    PUBLISHING = "Publishing"
    SUSPENDED = "Suspended"
    QUEUED = "Queued"
    UNSCHEDULABLE = "Unschedulable"
    MISSING_WORKSPACE = "MissingWorkspace"
    MISSING_SECRET = "MissingSecret"  # a Secret (or its key) the pod reads is not there
    IMAGE_PULL_FAILED = "ImagePullFailed"
    DEPENDENCY_NOT_FOUND = "DependencyNotFound"
    DEPENDENCY_NOT_READY = "DependencyNotReady"
    DEPENDENCY_FAILED = "DependencyFailed"  # a referenced resource failed: this one waits for it to be fixed
    WAITING_FOR_MODEL = "WaitingForModel"
    SERVING_NOT_READY = "ServingNotReady"  # a version's query-embedding Deployment is not Ready: no cut-over yet
    # Done (Ready=True).
    PREPARED = "Prepared"
    TRAINED = "Trained"
    SERVING = "Serving"
    # Terminal failures (Ready=False, Degraded=True): nothing is retried until the spec or the
    # embedops.dev/rerun annotation changes.
    INVALID_SPEC = "InvalidSpec"
    MISSING_DATABASE = "MissingDatabase"
    NO_PROBE_SET = "NoProbeSet"
    JOB_FAILED = "JobFailed"
    BAD_WORKER_RESULT = "BadWorkerResult"
    NO_IMPROVEMENT = "NoImprovement"
    NO_LIVE_VERSION = "NoLiveVersion"
    TARGET_CONFLICT = "TargetConflict"  # the target's name is another's: an index, a view or table of a user
    EMPTY_SOURCE = "EmptySource"  # the source has no row to embed: a version would serve nothing
    GENERATION_FAILED = "GenerationFailed"  # spec.generate gave no query to train on (its generator, its filters)
    VERSION_NOT_RETAINED = "VersionNotRetained"
    # An index that still serves, but not well (Degraded=True beside Ready=True).
    QUALITY_DEGRADED = "QualityDegraded"
    PROBE_FAILED = "ProbeFailed"
    DRIFT_FAILED = "DriftFailed"
    SYNC_FAILED = "SyncFailed"
    SERVING_FAILED = "ServingFailed"  # the query-embedding Deployment of the version to serve failed: no cut-over
    ANN_INDEX_STALE = "AnnIndexStale"  # an IVFFlat version's rows changed past what its lists hold up to
    # What the last publish step decided, on Progressing=False beside Ready=True.
    GATE_FAILED = "GateFailed"
    ROLLED_BACK = "RolledBack"
    PINNED = "Pinned"


TERMINAL = frozenset(
    {
        Reason.INVALID_SPEC,
        Reason.MISSING_DATABASE,
        Reason.NO_PROBE_SET,
        Reason.JOB_FAILED,
        Reason.BAD_WORKER_RESULT,
        Reason.NO_IMPROVEMENT,
        Reason.NO_LIVE_VERSION,
        Reason.TARGET_CONFLICT,
        Reason.EMPTY_SOURCE,
        Reason.GENERATION_FAILED,
    }
)
# Why a step's pods cannot start: each is a Warning event when it begins (what `kubectl describe` shows).
WAITING = frozenset({Reason.UNSCHEDULABLE, Reason.MISSING_WORKSPACE, Reason.MISSING_SECRET, Reason.IMAGE_PULL_FAILED})
# Reasons a worker fails with that are the resource's own reason, not just "its Job failed": the
# planner shows them as they are (a worker's error document carries the reason).
WORKER_FAILURES = frozenset({Reason.TARGET_CONFLICT, Reason.EMPTY_SOURCE, Reason.GENERATION_FAILED})
PUBLISH_NOTES = frozenset({Reason.GATE_FAILED, Reason.ROLLED_BACK, Reason.PINNED})
SCHEDULED_FAILURES = {"probe": Reason.PROBE_FAILED, "drift": Reason.DRIFT_FAILED, "sync": Reason.SYNC_FAILED}
