"""Shared pieces of the three custom resources: the base model, references, conditions, scheduling.

Every model here is the single source of truth for both the operator (which parses specs
into them) and the CRDs (which `hack/gen_crds.py` generates from their JSON schema).
Defaults live here and are applied by the operator, not by the API server, so that
server-filled fields never fight a GitOps tool's desired state.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints
from pydantic.alias_generators import to_camel

from embedops.api import times

GROUP = "embedops.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

K8S_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
K8S_NAMESPACE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
SQL_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

# A Kubernetes object name (RFC 1123 subdomain, the rule for most kinds).
K8sName = Annotated[
    str,
    StringConstraints(max_length=253, pattern=K8S_NAME_PATTERN),
]
# A namespace (RFC 1123 label).
K8sNamespace = Annotated[str, StringConstraints(max_length=63, pattern=K8S_NAMESPACE_PATTERN)]
# A Postgres identifier as embedops accepts it: letters, digits and underscores, not starting
# with a digit, at most 63 bytes. Everything is still quoted with psycopg.sql.Identifier.
SqlName = Annotated[
    str,
    StringConstraints(max_length=63, pattern=SQL_NAME_PATTERN),
]

# Integers as Kubernetes stores them: the API server refuses a number beyond int64, and a Job's
# int32 fields (backoffLimit, ttlSecondsAfterFinished) beyond int32, so the models do too. A field
# with a tighter bound of its own (pgvector's, a library's) says so instead. The API server holds a
# CRD's `maximum` as a float64 and writes it back in its shortest form: 2**63 - 1 is no int64 there
# (it then refused every object setting the field), and 2**63 - 1024 comes back as
# 9223372036854775000 (so a server-side apply of the same CRD conflicts). 2**53 - 1, the largest
# integer a float64 and JSON hold exactly, survives both, and bounds nothing anyone sets.
MIN_INT, MAX_INT = -(2**53 - 1), 2**53 - 1
INT32_MAX = 2**31 - 1
# A seed as every library it reaches accepts it: transformers' set_seed hands it to numpy's
# np.random.seed, which takes 0 ... 2**32 - 1 (torch.manual_seed and random.seed take more).
SEED_MAX = 2**32 - 1
# A schedule's interval: at most a year, so that `now + interval` stays a datetime.
MAX_INTERVAL_MINUTES = 365 * 24 * 60


def _one_of_message(prefix: str, aliases: tuple[str, ...]) -> str:
    names = [f"{prefix}.{a}" for a in aliases]
    return f"exactly one of {', '.join(names[:-1])} or {names[-1]} must be set"


def exactly_one_rule(prefix: str, *aliases: str) -> dict[str, Any]:
    """The CEL rule (for a model's json_schema_extra) that exactly one of the optional fields is set."""
    rule = "[" + ", ".join(f"has(self.{a})" for a in aliases) + "].filter(x, x).size() == 1"
    return {"x-kubernetes-validations": [{"rule": rule, "message": _one_of_message(prefix, aliases)}]}


def check_exactly_one(model: BaseModel, prefix: str, *fields: str) -> None:
    """The same check in pydantic, so `embedops run` and the operator reject what the API server would."""
    given = [f for f in fields if getattr(model, f) is not None]
    if len(given) != 1:
        aliases = tuple(type(model).model_fields[f].alias or f for f in fields)
        raise ValueError(_one_of_message(prefix, aliases))


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict as it appears in a manifest or in `status` (camelCase, no nulls)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def cel_rules(rules: Sequence[JsonValue]) -> ConfigDict:
    """ApiModel's config with CEL rules (`x-kubernetes-validations`) on the model's schema: the API server
    checks them, and a validator on the model mirrors each."""
    return ApiModel.model_config | ConfigDict(json_schema_extra={"x-kubernetes-validations": list(rules)})


class ObjectMeta(ApiModel):
    """A manifest's metadata, checked as the API server checks it (names, namespaces, types, no unknown keys).

    The fields the API server fills in are accepted too, so `kubectl get -o yaml` output applies.
    """

    name: K8sName = Field(description="The resource's name (RFC 1123 subdomain).")
    namespace: K8sNamespace | None = Field(default=None, description="Its namespace (RFC 1123 label).")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generate_name: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    finalizers: list[str] = Field(default_factory=list)
    owner_references: list[dict[str, Any]] = Field(default_factory=list)
    managed_fields: list[dict[str, Any]] = Field(default_factory=list)


class LocalObjectReference(ApiModel):
    """A reference to another embedops resource in the same namespace."""

    name: K8sName = Field(description="Name of the referenced resource, in the same namespace.")


class SecretKeySelector(ApiModel):
    """A key of a Secret in the resource's namespace; the value never appears in specs, logs or status."""

    name: K8sName = Field(description="Name of the Secret.")
    key: str = Field(default="dsn", min_length=1, description="Key inside the Secret. Default: `dsn`.")


class Database(ApiModel):
    """Where the Postgres + pgvector server is."""

    dsn_secret_ref: SecretKeySelector | None = Field(
        default=None,
        description=(
            "Secret key holding a libpq connection string (DSN) of a Postgres server with the pgvector "
            "extension. Unset means the local embedded server, which only `embedops run` provides; "
            "the operator requires it."
        ),
    )


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """A condition in the shape of Kubernetes' metav1.Condition."""

    type: str = Field(description="Condition type: Ready, Progressing or Degraded.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="One CamelCase word saying why the condition is in this status.")
    message: str = Field(default="", description="Human-readable detail.")
    last_transition_time: str = Field(description="RFC 3339 time the status last changed.")
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation this condition was computed from."
    )


class JobProgress(ApiModel):
    """How far a running step is, from its pod's log: the work item is a training step, a document..."""

    task: str = Field(description="What is counted, e.g. `Training steps`.")
    done: int = Field(description="Items done.")
    total: int | None = Field(default=None, description="Items in all, when known.")
    rate: float | None = Field(default=None, description="Items per second so far, when known.")
    eta_seconds: int | None = Field(default=None, description="Seconds still to go at that rate.")
    loss: float | None = Field(default=None, description="Training: the last logged loss.")


class JobStatus(ApiModel):
    """The Job doing (or last done) a resource's work, as Kubernetes reports it."""

    name: str = Field(description="The Job's name.")
    step: str = Field(description="The step it runs: prepare, train, embed, publish, probe or drift.")
    start_time: str | None = Field(default=None, description="RFC 3339 time the Job started.")
    completion_time: str | None = Field(default=None, description="RFC 3339 time it completed.")
    active: int = Field(default=0, description="Pods running.")
    succeeded: int = Field(default=0, description="Pods that succeeded.")
    failed: int = Field(default=0, description="Pods that failed (each retry counts).")
    progress: JobProgress | None = Field(default=None, description="How far its running pod is.")


class BaseStatus(ApiModel):
    """Fields every embedops status has."""

    observed_generation: int | None = Field(default=None, description="The .metadata.generation the status reflects.")
    phase: str | None = Field(
        default=None,
        description=(
            "A one-word summary for display; the conditions are authoritative. Pending: waiting for another "
            "resource, or its Job's pod cannot start yet (the Progressing reason says why); Queued: its Job "
            "waits for Kueue to admit it; Suspended: its Job is suspended (scheduling.suspend); Running: its "
            "Job runs; Ready: an EmbeddingDataset prepared or an EmbeddingIndex serving; Succeeded: a "
            "FineTuneJob's model trained; Degraded: an EmbeddingIndex still serving with a problem (the "
            "Degraded condition says which); Failed: a failure that stays until the spec changes or a "
            "rerun is asked for."
        ),
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        description="Ready, Progressing and Degraded conditions.",
        # The Kubernetes convention for conditions: one entry per type, merged by type under
        # server-side apply.
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    inputs_hash: str | None = Field(
        default=None,
        description=(
            "Hash of the spec and upstream outputs the last finished run used; when they change, the operator "
            "starts a new run."
        ),
    )
    active_job: str | None = Field(default=None, description="The Job doing this resource's work now, if any.")
    job: JobStatus | None = Field(
        default=None, description="The Job of the current or last step: times and pod counts."
    )

    def set_condition(
        self,
        type_: str,
        status: ConditionStatus,
        reason: str,
        message: str = "",
        *,
        generation: int | None,
        now: dt.datetime,
    ) -> None:
        """Set one condition, keeping lastTransitionTime when its status does not change; `now` is the
        planner's time (a transition happens when the planner observed it, not when a clock was read)."""
        stamp = times.format_time(now)
        before = self.condition(type_)
        cond = Condition(
            type=type_,
            status=status,
            reason=reason,
            message=message,
            last_transition_time=_transition_time(before, status, stamp),
            observed_generation=generation,
        )
        if before is None:
            self.conditions.append(cond)
        else:
            self.conditions[self.conditions.index(before)] = cond

    def carry_transition_times(self, stored: BaseStatus) -> None:
        """Keep the stored status's lastTransitionTime of each condition whose status did not change."""
        for cond in self.conditions:
            cond.last_transition_time = _transition_time(
                stored.condition(cond.type), cond.status, cond.last_transition_time
            )

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


def _transition_time(before: Condition | None, status: ConditionStatus, stamp: str) -> str:
    """A condition's lastTransitionTime: the previous one while its status stays the same."""
    return before.last_transition_time if before is not None and before.status == status else stamp


class Toleration(ApiModel):
    """A pod toleration, as in the core/v1 Toleration."""

    key: str | None = Field(default=None, description="Taint key the toleration applies to.")
    operator: Literal["Exists", "Equal"] | None = Field(default=None, description="Exists or Equal. Default: Equal.")
    value: str | None = Field(default=None, description="Taint value to match with Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all."
    )
    toleration_seconds: int | None = Field(
        default=None, ge=MIN_INT, le=MAX_INT, description="How long a NoExecute taint is tolerated."
    )


class Resources(ApiModel):
    """Compute resources of a worker pod."""

    gpus: int | None = Field(
        default=None,
        ge=0,
        le=16,
        description=(
            "Number of `nvidia.com/gpu` to request (requests = limits); a FineTuneJob's training pod with more "
            "than 1 runs one training process per GPU (torchrun, DDP). "
            "Default: 1 for a FineTuneJob's training pod, 0 for an EmbeddingIndex's embedding pods and an "
            "EmbeddingDataset's prepare pod."
        ),
    )
    cpu: str | None = Field(
        default=None,
        description="CPU request and limit, a Kubernetes quantity such as `4` or `500m`; the limit sizes the worker's "
        "tokenizer pool. Default: the operator's EMBEDOPS_WORKER_CPU (4).",
    )
    memory: str | None = Field(
        default=None,
        description="Memory request and limit, a quantity such as `16Gi`. Default: the operator's "
        "EMBEDOPS_WORKER_MEMORY "
        "(none).",
    )


class PodScheduling(ApiModel):
    """Where pods are scheduled: passed through to their pod template."""

    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the pods must match.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Taints the pods tolerate.")
    affinity: dict[str, Any] | None = Field(
        default=None,
        description="A core/v1 Affinity object, passed through unchanged.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    priority_class_name: str | None = Field(default=None, description="PriorityClass of the pods.")
    service_account_name: str | None = Field(default=None, description="ServiceAccount of the pods.")


class Scheduling(PodScheduling):
    """Where and how worker pods are scheduled; passed through to the Job and its pod template."""

    queue_name: str | None = Field(
        default=None,
        description="Kueue LocalQueue; sets the `kueue.x-k8s.io/queue-name` label on the Job so Kueue admits it.",
    )
    backoff_limit: int = Field(
        default=2, ge=0, le=INT32_MAX, description="Pod retries before the Job fails. Default: 2."
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, le=MAX_INT, description="Wall-clock limit of the Job, in seconds."
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        le=INT32_MAX,
        description="Delete the finished Job (never the custom resource) this many seconds after it ends.",
    )
    suspend: bool = Field(
        default=False,
        description=(
            "Suspend the step's Job (true) or resume it (false): the same Job is suspended and resumed, "
            "its pods stopped and started again, never replaced; phase Suspended while it is. A Job in a "
            "Kueue queue (queueName) is suspended and resumed by Kueue instead."
        ),
    )
