"""Operator settings, from the environment (the Helm chart sets them on the Deployment)."""

from __future__ import annotations

import json
import os
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


def _package_version() -> str:
    try:
        return version("embedops")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return "0.0.0"


class OperatorSettings(BaseModel):
    """What the operator needs to know that no single resource says; `EMBEDOPS_<FIELD>` in the environment."""

    model_config = ConfigDict(frozen=True)

    worker_image: str = Field(
        default=f"ghcr.io/embedops/worker:{_package_version()}",
        description="Image of the worker pods (torch, sentence-transformers, the embedops package).",
    )
    image_pull_policy: str = Field(default="IfNotPresent", description="Pull policy of the worker image.")
    workspace_claim: str = Field(
        default="embedops-workspace",
        description=(
            "PersistentVolumeClaim, in each resource's namespace, mounted at /workspace in every worker pod: "
            "source files, prepared datasets and models live there. ReadWriteMany when index shards or "
            "steps may land on different nodes."
        ),
    )
    workspace_path: str = Field(
        default="/workspace",
        pattern=r"^/",
        description="Where the workspace volume is mounted in worker pods; relative paths in specs resolve there.",
    )
    worker_cpu: str | None = Field(
        default="4",
        description="CPU request and limit of worker pods whose spec.resources.cpu is unset (a quantity); the "
        "limit sizes the worker's tokenizer pool. Empty: none.",
    )
    worker_memory: str | None = Field(
        default=None,
        description="Memory request and limit of worker pods whose spec.resources.memory is unset. Default: none.",
    )
    worker_resources: dict[str, dict[str, str]] | None = Field(
        default=None,
        description="Default requests and limits of worker pods, as JSON: "
        '`{"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "8Gi"}}`. Set, it replaces '
        "worker_cpu and worker_memory; a resource's spec.resources.cpu / .memory still set both its request "
        "and limit. Without a CPU limit a worker sizes its tokenizer pool by the node's CPUs.",
    )
    worker_image_pull_secrets: tuple[str, ...] = Field(
        default=(),
        description="Secrets, in each resource's namespace, that worker pods pull their image with (comma-separated).",
    )
    worker_pod_template: dict[str, Any] | None = Field(
        default=None,
        description="JSON `{metadata: {labels, annotations}, spec: {...}}` merged under every worker pod "
        "(docs/install.md#worker-pods): lists merged by name (containers, initContainers, volumes, "
        "env, volumeMounts by mountPath), tolerations and envFrom appended, maps merged; what the operator "
        "renders wins where both set a field.",
    )
    reconcile_seconds: float = Field(
        default=30.0, gt=0, description="Every resource is reconciled at least this often (schedules, missed events)."
    )
    periodic_job_ttl_seconds: int = Field(
        default=3600, ge=0, description="Finished probe and drift Jobs of the schedule are deleted after this long."
    )
    metrics_port: int = Field(default=8080, ge=0, le=65535, description="Port of /metrics; 0 disables it.")

    @field_validator("worker_pod_template", mode="before")
    @classmethod
    def _json(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else None
        return value

    @field_validator("worker_resources", mode="before")
    @classmethod
    def _quantities(cls, value: Any) -> Any:
        """JSON of requests and limits only; numbers (`cpu: 2` in values.yaml) become quantities."""
        value = cls._json(value)
        if isinstance(value, dict):
            if unknown := set(value) - {"requests", "limits"}:
                raise ValueError(f"only requests and limits, not {sorted(unknown)}")
            return {k: {name: str(q) for name, q in (v or {}).items()} for k, v in value.items()}
        return value

    @field_validator("worker_pod_template")
    @classmethod
    def _template(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and (unknown := set(value) - {"metadata", "spec"}):
            raise ValueError(f"a pod template has metadata and spec, not {sorted(unknown)}")
        return value

    @field_validator("worker_image_pull_secrets", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(name.strip() for name in value.split(",") if name.strip())
        return value

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> OperatorSettings:
        env = os.environ if environ is None else environ
        given = {
            name: env[f"EMBEDOPS_{name.upper()}"] for name in cls.model_fields if f"EMBEDOPS_{name.upper()}" in env
        }
        return cls.model_validate(given)
