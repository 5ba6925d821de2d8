"""Operator settings, from the environment (the Helm chart sets them on the Deployment)."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

from pydantic import BaseModel, ConfigDict, Field


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
    reconcile_seconds: float = Field(
        default=30.0, gt=0, description="Every resource is reconciled at least this often (schedules, missed events)."
    )
    periodic_job_ttl_seconds: int = Field(
        default=3600, ge=0, description="Finished probe and drift Jobs of the schedule are deleted after this long."
    )
    metrics_port: int = Field(default=8080, ge=0, le=65535, description="Port of /metrics; 0 disables it.")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> OperatorSettings:
        env = os.environ if environ is None else environ
        given = {
            name: env[f"EMBEDOPS_{name.upper()}"] for name in cls.model_fields if f"EMBEDOPS_{name.upper()}" in env
        }
        return cls.model_validate(given)
