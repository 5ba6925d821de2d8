"""Query-embedding Deployments and the Service of an index with spec.serving: pure manifests.

Blue/green by version: each retained version has a Deployment `<index>-serve-v<N>` serving its own
model (the one its vectors were embedded with), and the index has one Service `<index>-query` whose
selector names one version. The planner (embedops.reconcile) decides the replicas of each and which
version the Service selects; this module only renders them. The pods are locked down as the worker
pods are (builders.jobs): non-root, a read-only root, no capabilities, the workspace read-only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from embedops.api.common import SecretKeySelector
from embedops.api.index import TEI_IMAGE_CPU, TEI_IMAGE_GPU, AnnSpec, ServingSpec, Target
from embedops.builders import naming
from embedops.builders.jobs import POD_SECURITY, WORKER_SECURITY, Owner, pod_placement, pod_resources
from embedops.settings import OperatorSettings

PORT = 8080
PORT_NAME = "http"
CONTAINER = "serve"
LABEL_VERSION = f"{naming.ANNOTATION_PREFIX}/version"
LABEL_INDEX = f"{naming.ANNOTATION_PREFIX}/index"
SPEC_HASH = f"{naming.ANNOTATION_PREFIX}/spec-hash"  # what the planner rendered: a change means apply again
MODELS_DIR = "/models"  # engine tei with a bundled model: copied here from the worker image by an init container
# The init container's copy of a bundled model (inside the worker image's Python packages) for TEI, which
# reads a folder: the model's files, nothing of embedops, so TEI serves exactly what the workers embedded with.
_COPY_BUNDLED = (
    "import shutil, sys; from embedops import modelzoo; "
    "shutil.copytree(modelzoo.resolve(sys.argv[1]), sys.argv[2], dirs_exist_ok=True)"
)


@dataclass(frozen=True)
class ServedVersion:
    """One version's query model, and how many pods serve it (0: kept, scaled to zero)."""

    version: int
    model: str  # a path (on the workspace volume) or a bundled name: what the version's workers loaded
    replicas: int
    bundled: bool = False


@dataclass(frozen=True)
class Serving:
    """What every serving object of one index shares."""

    owner: Owner
    spec: ServingSpec
    target: Target
    dsn_secret: SecretKeySelector | None = None
    ann: AnnSpec | None = None  # how /search scans the view: as the probes do (spec.ann); None: pgvector's defaults


def deployment_name(index: str, version: int) -> str:
    suffix = f"-serve-v{version}"
    return index[: 63 - len(suffix)].rstrip("-.") + suffix


def service_name(index: str) -> str:
    return index[: 63 - len("-query")].rstrip("-.") + "-query"


def _labels(serving: Serving, component: str) -> dict[str, str]:
    owner = serving.owner
    return {
        "app.kubernetes.io/name": "embedops-query",
        "app.kubernetes.io/instance": naming.label_value(owner.name),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "embedops",
        "app.kubernetes.io/managed-by": naming.MANAGED_BY,
        naming.LABEL_OWNER_KIND: owner.kind,
        naming.LABEL_OWNER_UID: owner.uid,
        LABEL_INDEX: naming.label_value(owner.name),
    }


def selector(serving: Serving, version: int) -> dict[str, str]:
    """The pods of one version of one index (by the index's uid: another index of the same name is another)."""
    return {naming.LABEL_OWNER_UID: serving.owner.uid, LABEL_VERSION: str(version)}


def _image(serving: Serving, settings: OperatorSettings) -> str:
    spec = serving.spec
    if spec.image:
        return spec.image
    if spec.engine == "tei":
        return TEI_IMAGE_GPU if spec.resources.gpus else TEI_IMAGE_CPU
    return settings.worker_image


def _copies_model(serving: Serving, served: ServedVersion) -> bool:
    """TEI reads a folder: a bundled model (a Python package of the worker image) is copied into one first.
    `embedops serve` loads a bundled model by name, as the workers do."""
    return served.bundled and serving.spec.engine == "tei"


def _container(serving: Serving, served: ServedVersion, settings: OperatorSettings) -> dict[str, Any]:
    spec, target = serving.spec, serving.target
    env: list[dict[str, Any]] = [{"name": "HF_HUB_OFFLINE", "value": "1"}, {"name": "HOME", "value": "/tmp"}]
    if spec.engine == "embedops":
        command = [
            "embedops",
            "serve",
            "--model",
            served.model,
            "--version",
            str(served.version),
            "--host",
            "0.0.0.0",
            "--port",
            str(PORT),
        ]
        if serving.dsn_secret is not None:  # /search: embed the query and search the view, checked in one transaction
            command += ["--search-target", f"{target.schema_name}.{target.name}"]
            if serving.ann is not None:
                command += ["--ef-search", str(serving.ann.ef_search), "--probes", str(serving.ann.probes)]
            ref = serving.dsn_secret
            env.append({"name": "EMBEDOPS_DSN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
        args: dict[str, Any] = {"command": command}
    else:
        model = f"{MODELS_DIR}/{served.version}" if served.bundled else served.model
        env.append({"name": "HUGGINGFACE_HUB_CACHE", "value": "/tmp"})
        args = {"args": ["--model-id", model, "--hostname", "0.0.0.0", "--port", str(PORT)]}
    probe = {"httpGet": {"path": "/health", "port": PORT_NAME}}
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": _image(serving, settings),
        "imagePullPolicy": settings.image_pull_policy,
        **args,
        "env": env,
        "ports": [{"name": PORT_NAME, "containerPort": PORT}],
        # The port opens once the model is loaded and warmed up: Ready means it answers with this model.
        "readinessProbe": {**probe, "periodSeconds": 5},
        "livenessProbe": {**probe, "initialDelaySeconds": 60, "periodSeconds": 20},
        "volumeMounts": [
            {"name": "workspace", "mountPath": settings.workspace_path, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            *(
                [{"name": "models", "mountPath": MODELS_DIR, "readOnly": True}]
                if _copies_model(serving, served)
                else []
            ),
        ],
        "securityContext": copy.deepcopy(WORKER_SECURITY),
    }
    if rendered := pod_resources(spec.resources, spec.resources.gpus or 0, settings):
        container["resources"] = rendered
    return container


def _pod_spec(serving: Serving, served: ServedVersion, settings: OperatorSettings) -> dict[str, Any]:
    spec = serving.spec
    gpus = spec.resources.gpus or 0
    volumes: list[dict[str, Any]] = [
        {
            "name": "workspace",
            "persistentVolumeClaim": {"claimName": settings.workspace_claim, "readOnly": True},
        },
        {"name": "tmp", "emptyDir": {}},
    ]
    pod: dict[str, Any] = {
        "containers": [_container(serving, served, settings)],
        "volumes": volumes,
        "securityContext": copy.deepcopy(POD_SECURITY),
    }
    if _copies_model(serving, served):
        volumes.append({"name": "models", "emptyDir": {}})
        pod["initContainers"] = [
            {
                "name": "copy-model",
                "image": settings.worker_image,
                "imagePullPolicy": settings.image_pull_policy,
                "command": ["python", "-c", _COPY_BUNDLED, served.model, f"{MODELS_DIR}/{served.version}"],
                "volumeMounts": [{"name": "models", "mountPath": MODELS_DIR}],
                "securityContext": copy.deepcopy(WORKER_SECURITY),
            }
        ]
    pod.update(pod_placement(spec.scheduling, gpus, settings))
    return pod


def deployment(serving: Serving, served: ServedVersion, settings: OperatorSettings) -> dict[str, Any]:
    """The Deployment serving one version's model; its pods carry the labels the Service selects by."""
    owner = serving.owner
    pod_labels = {**_labels(serving, "serve"), **selector(serving, served.version)}
    template = {"metadata": {"labels": pod_labels}, "spec": _pod_spec(serving, served, settings)}
    spec = {
        "replicas": served.replicas,
        "selector": {"matchLabels": selector(serving, served.version)},
        "progressDeadlineSeconds": serving.spec.ready_timeout_seconds,
        "template": template,
    }
    return _with_hash(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": deployment_name(owner.name, served.version),
                "namespace": owner.namespace,
                "labels": pod_labels,
                "ownerReferences": [owner.reference()],
            },
            "spec": spec,
        }
    )


def service(serving: Serving, version: int) -> dict[str, Any]:
    """The index's stable Service, selecting the pods of `version`."""
    owner = serving.owner
    return _with_hash(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": service_name(owner.name),
                "namespace": owner.namespace,
                "labels": {**_labels(serving, "query"), LABEL_VERSION: str(version)},
                "ownerReferences": [owner.reference()],
            },
            "spec": {
                "selector": selector(serving, version),
                "ports": [{"name": PORT_NAME, "port": PORT, "targetPort": PORT_NAME}],
            },
        }
    )


def _with_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    meta = manifest["metadata"]
    meta["annotations"] = {SPEC_HASH: naming.inputs_hash(meta["labels"], manifest["spec"])}
    return manifest


def spec_hash(manifest: dict[str, Any]) -> str:
    """What a rendered manifest was rendered as (the observed object's annotation says what it was applied as)."""
    return str(manifest["metadata"]["annotations"][SPEC_HASH])
