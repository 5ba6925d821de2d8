"""Deterministic names, labels and hashes of the objects the operator creates.

A child's name is a function of its owner and of the inputs it runs on, so an operator
that restarts mid-flight finds the Job it created instead of creating another.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pydantic import BaseModel

from embedops.api.common import GROUP

MANAGED_BY = "embedops"
LABEL_OWNER_UID = f"{GROUP}/owner-uid"
LABEL_OWNER_KIND = f"{GROUP}/owner-kind"
LABEL_STEP = f"{GROUP}/step"
LABEL_INPUTS = f"{GROUP}/inputs"
FINALIZER = f"{GROUP}/finalizer"
ANNOTATION_PREFIX = GROUP  # kopf keeps its bookkeeping in annotations under this prefix

_MAX_NAME = 63  # a Job's name becomes its pods' `job-name` label value


# What each step produces from its inputs, versioned: bump a step's number when a change of
# embedops (a default that changes results, a new recipe) must run that step again for every
# resource that relies on it. Spec fields enter a step's key only where they differ from their
# defaults (`identity`), so an upgrade that adds a defaulted field re-runs nothing.
STEP_VERSIONS = {"prepare": 2, "train": 2, "embed": 1, "publish": 1}


def inputs_hash(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (spec, upstream fingerprints)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def identity(model: BaseModel, *, include: set[str] | None = None, exclude: set[str] | None = None) -> dict[str, Any]:
    """The part of a spec (or of one of its sections) that a step's key hashes: what differs from the defaults."""
    return model.model_dump(
        mode="json", by_alias=True, exclude_defaults=True, exclude_none=True, include=include, exclude=exclude
    )


def step_key(step: str, *parts: Any) -> str:
    """The inputs hash of one run of `step`: its parts and the step's version."""
    return inputs_hash(step, STEP_VERSIONS[step], *parts)


def child_name(owner: str, step: str, key: str) -> str:
    """`<owner>-<step>-<key>`, the owner cut so the whole fits 63 characters.

    The key is hashed together with the full owner name, so two long owner names that cut
    to the same prefix still get different children.
    """
    suffix = f"-{step}-{inputs_hash(owner, key)[:8]}"
    head = owner[: _MAX_NAME - len(suffix)].rstrip("-.")
    return head + suffix


def label_value(value: str) -> str:
    """A valid label value: at most 63 characters, alphanumeric at both ends."""
    value = re.sub(r"[^A-Za-z0-9_.-]", "-", value)[:63]
    return value.strip("-_.")


def child_labels(owner_kind: str, owner_name: str, owner_uid: str, step: str, key: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "embedops-worker",
        "app.kubernetes.io/instance": label_value(owner_name),
        "app.kubernetes.io/component": step,
        "app.kubernetes.io/part-of": "embedops",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_OWNER_KIND: owner_kind,
        LABEL_OWNER_UID: owner_uid,
        LABEL_STEP: step,
        LABEL_INPUTS: key,
    }
