"""FineTuneJob: fine-tune a base sentence-transformers model on an EmbeddingDataset and score it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, FiniteFloat, model_validator
from pydantic.json_schema import JsonDict

from embedops.api.common import (
    MAX_INT,
    SEED_MAX,
    ApiModel,
    BaseStatus,
    LocalObjectReference,
    Resources,
    Scheduling,
    cel_rules,
)
from embedops.api.scores import RetrievalScores

DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

LossType = Literal[
    "MultipleNegativesRankingLoss",
    "CachedMultipleNegativesRankingLoss",
    "GISTEmbedLoss",
    "CachedGISTEmbedLoss",
    "TripletLoss",
]
GIST_LOSSES = ("GISTEmbedLoss", "CachedGISTEmbedLoss")
CACHED_LOSSES = ("CachedMultipleNegativesRankingLoss", "CachedGISTEmbedLoss")

_GUIDE_RULE: JsonDict = {
    "rule": "!has(self.guideModel) || (has(self.type) && self.type in ['GISTEmbedLoss', 'CachedGISTEmbedLoss'])",
    "message": "loss.guideModel is only used by loss.type GISTEmbedLoss or CachedGISTEmbedLoss",
}


class LossSpec(ApiModel):
    """Training loss."""

    model_config = cel_rules([_GUIDE_RULE])

    type: LossType = Field(
        default="MultipleNegativesRankingLoss",
        description=(
            "MultipleNegativesRankingLoss (in-batch and hard negatives), CachedMultipleNegativesRankingLoss "
            "(the same with large batches in bounded memory), GISTEmbedLoss and CachedGISTEmbedLoss (the same, "
            "with the in-batch and hard negatives that a guide model ranks above the positive masked out as "
            "likely false negatives; GISTEmbedLoss uses one hard negative per row) or TripletLoss (needs hard "
            "negatives). Default: MultipleNegativesRankingLoss."
        ),
    )
    scale: FiniteFloat = Field(
        default=20.0,
        gt=0,
        description=(
            "Similarity scale of the ranking losses; the GIST losses' temperature is its inverse (20: 0.05). "
            "Default: 20."
        ),
    )
    mini_batch_size: int = Field(
        default=32, ge=1, le=MAX_INT, description="Mini-batch of the cached losses. Default: 32."
    )
    guide_model: str | None = Field(
        default=None,
        min_length=1,
        description="Guide model of the GIST losses (a bundled model name or a path). Default: the base model.",
    )
    guide_margin_strategy: Literal["absolute", "relative"] = Field(
        default="absolute",
        description="How guideMargin applies: below the guide's positive score, or a share of it. Default: absolute.",
    )
    guide_margin: FiniteFloat = Field(
        default=0.0,
        ge=0,
        description=(
            "GIST losses mask a candidate the guide scores above its positive's score minus this margin "
            "(absolute) or minus |score| x margin (relative). Default: 0."
        ),
    )
    triplet_margin: FiniteFloat = Field(default=5.0, gt=0, description="Margin of TripletLoss. Default: 5.")
    matryoshka_dims: list[Annotated[int, Field(ge=1, le=MAX_INT)]] = Field(
        default_factory=list,
        description=(
            "Wrap the loss in MatryoshkaLoss over these output sizes (e.g. [384, 256, 128, 64]) so embeddings "
            "can be truncated. Empty: no wrapper."
        ),
    )

    @model_validator(mode="after")
    def _guide_only_for_gist(self) -> LossSpec:
        if self.guide_model is not None and self.type not in GIST_LOSSES:
            raise ValueError(_GUIDE_RULE["message"])
        return self


_BUDGET_MIN, _BUDGET_MAX = 200, 2000
_BUDGET_RULE: JsonDict = {
    "rule": f"(has(self.minSteps) ? self.minSteps : {_BUDGET_MIN}) <= (has(self.maxSteps) ? self.maxSteps : "
    f"{_BUDGET_MAX})",
    "message": "training.budget.minSteps must not exceed training.budget.maxSteps",
}


class StepBudget(ApiModel):
    """How many steps training takes when neither training.epochs nor training.maxSteps is set.

    `epochs` passes over the training rows, raised to `minSteps` on small data (which would
    otherwise hardly move the model) and lowered to `maxSteps` on large data (so that a job's
    time stays bounded: about 15 minutes for all-MiniLM-L6-v2 on one H100-class GPU, see
    docs/performance.md).
    """

    model_config = cel_rules([_BUDGET_RULE])

    epochs: int = Field(
        default=5, ge=1, le=100, description="Passes over the training rows, within the bounds. Default: 5."
    )
    min_steps: int = Field(default=_BUDGET_MIN, ge=1, le=MAX_INT, description=f"Fewest steps. Default: {_BUDGET_MIN}.")
    max_steps: int = Field(default=_BUDGET_MAX, ge=1, le=MAX_INT, description=f"Most steps. Default: {_BUDGET_MAX}.")

    @model_validator(mode="after")
    def _bounds(self) -> StepBudget:
        if self.min_steps > self.max_steps:
            raise ValueError(_BUDGET_RULE["message"])
        return self


class TrainingSpec(ApiModel):
    """Optimisation settings."""

    epochs: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Passes over the training rows, replacing the step budget. Default: unset (the budget decides).",
    )
    budget: StepBudget = Field(
        default_factory=StepBudget,
        description="Steps from the data's size when epochs and maxSteps are unset: epochs passes within "
        "minSteps..maxSteps.",
    )
    batch_size: int = Field(
        default=64,
        ge=2,
        le=MAX_INT,
        description="Rows per step; with ranking losses, also the number of in-batch negatives. Default: 64.",
    )
    learning_rate: FiniteFloat = Field(default=3e-5, gt=0, description="Peak learning rate. Default: 3e-5.")
    warmup_ratio: FiniteFloat = Field(
        default=0.1, ge=0, lt=1, description="Share of steps of linear warm-up. Default: 0.1."
    )
    weight_decay: FiniteFloat = Field(default=0.01, ge=0, description="AdamW weight decay. Default: 0.01.")
    max_seq_length: int = Field(default=256, ge=8, le=8192, description="Tokens kept per text. Default: 256.")
    seed: int = Field(
        default=42,
        ge=0,
        le=SEED_MAX,
        description="Random seed (also of the validation split), 0 ... 2^32-1 as numpy takes it. Default: 42.",
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        default="auto",
        description="Numeric precision; auto picks bf16 on a GPU that supports it, else fp32. Default: auto.",
    )
    max_steps: int | None = Field(
        default=None, ge=1, le=MAX_INT, description="Stop after this many steps (overrides epochs and the budget)."
    )
    checkpoint_steps: int | None = Field(
        default=None,
        ge=1,
        le=MAX_INT,
        description=(
            "Save a checkpoint, and score it on the validation queries, every this many steps (and at the last); "
            "a killed run resumes from the last complete one. Default: a fifth of the planned steps."
        ),
    )
    negatives_per_pair: int | None = Field(
        default=None,
        ge=0,
        le=MAX_INT,
        description="Use at most this many of the dataset's hard negatives per row. Default: all.",
    )


class ValidationSplitSpec(ApiModel):
    """Training queries held out to pick the checkpoint to publish; the test split is never used for that."""

    fraction: FiniteFloat = Field(
        default=0.1,
        ge=0,
        lt=1,
        description=(
            "Share of the training queries held out (all their rows), a sample seeded by training.seed. "
            "0 turns validation off: the last step's model is published, as without it. Default: 0.1."
        ),
    )
    max_queries: int = Field(default=500, ge=1, le=MAX_INT, description="Cap on validation queries. Default: 500.")
    max_corpus: int = Field(
        default=20_000,
        ge=1,
        le=MAX_INT,
        description=(
            "Documents the validation queries are searched over. A larger corpus is sampled: every validation "
            "positive, the base model's top 50 for each validation query, then a seeded random fill. Default: 20000."
        ),
    )


class EvaluationSpec(ApiModel):
    """Checkpoint selection on validation queries, and held-out (test) scores of the base and tuned models."""

    max_queries: int | None = Field(
        default=None, ge=1, le=MAX_INT, description="Evaluate on at most this many test queries."
    )
    batch_size: int = Field(default=64, ge=1, le=MAX_INT, description="Encoding batch size. Default: 64.")
    validation: ValidationSplitSpec = Field(
        default_factory=ValidationSplitSpec,
        description="Validation queries carved from the training queries; each checkpoint is scored on them.",
    )
    require_improvement: bool = Field(
        default=True,
        description=(
            "Publish only a model that beats the base model: when no checkpoint's validation nDCG@10 is above the "
            "base model's, the job ends NoImprovement with no model; when the published model's test nDCG@10 is "
            "not above the base's, it is marked Degraded (Ready=False, NoImprovement). False publishes the best "
            "checkpoint regardless. Default: true."
        ),
    )


TRAINJOB_API = "trainer.kubeflow.org/v1alpha1"  # Kubeflow Trainer v2's TrainJob
Launcher = Literal["auto", "job", "trainjob"]

_NODES_RULE: JsonDict = {
    "rule": "!has(self.nodes) || self.nodes == 1 || !has(self.gpus) || self.gpus >= 1",
    "message": "resources.nodes above 1 needs at least 1 GPU a node (resources.gpus)",
}


class TrainResources(Resources):
    """Compute resources of the training pods: `gpus` on each of `nodes` nodes, one training process a GPU."""

    model_config = cel_rules([_NODES_RULE])

    nodes: int = Field(
        default=1,
        ge=1,
        le=1024,
        description=(
            "Nodes training spans, each with `gpus` GPUs and one training process a GPU; more than 1 runs as a "
            f"Kubeflow Trainer TrainJob ({TRAINJOB_API}), which the cluster must serve. Default: 1."
        ),
    )

    @model_validator(mode="after")
    def _gpus_on_every_node(self) -> TrainResources:
        if self.nodes > 1 and self.gpus == 0:
            raise ValueError(_NODES_RULE["message"])
        return self


class RuntimeRef(ApiModel):
    """The Kubeflow Trainer runtime a TrainJob runs on."""

    name: str = Field(
        default="torch-distributed",
        min_length=1,
        description="The runtime's name; its torch policy injects torchrun's PET_* variables. "
        "Default: torch-distributed.",
    )
    kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = Field(
        default="ClusterTrainingRuntime",
        description="ClusterTrainingRuntime, or a TrainingRuntime in the FineTuneJob's namespace. "
        "Default: ClusterTrainingRuntime.",
    )


class TrainJobLauncherSpec(ApiModel):
    """How a TrainJob is made, when the launcher is one."""

    runtime_ref: RuntimeRef = Field(default_factory=RuntimeRef, description="The runtime the TrainJob references.")
    container: str = Field(
        default="node",
        min_length=1,
        description="The runtime's trainer container, which runs the worker (torch-distributed's: `node`). "
        "Default: node.",
    )
    job: str = Field(
        default="node",
        min_length=1,
        description="The runtime's replicated job of the trainer, which pod overrides target. Default: node.",
    )


OnnxOptimization = Literal["none", "O1", "O2", "O3", "O4"]
ExportVariant = Literal["fp32", "O1", "O2", "O3", "O4", "int8"]
ExportFormat = Literal["onnx", "openvino"]

# The lowest per-row cosine similarity between the PyTorch model's embeddings and an export's, on
# held-out texts, that passes, by variant (docs/operator.md, "Exporting the model", has the measurements).
EXPORT_BOUNDS: dict[tuple[ExportFormat, ExportVariant], float] = {
    ("onnx", "fp32"): 0.999,
    ("onnx", "O1"): 0.999,
    ("onnx", "O2"): 0.999,
    ("onnx", "O3"): 0.999,
    ("onnx", "O4"): 0.99,
    ("onnx", "int8"): 0.95,
    ("openvino", "fp32"): 0.99,
}

_MIN_COSINE = (
    "Lowest per-row cosine similarity between the PyTorch model's embeddings and this export's, on held-out "
    "texts, that passes; below it the training step fails. Default: the documented bound of each file "
)


class OnnxExportSpec(ApiModel):
    """ONNX files of the published model in its `onnx/` folder, as sentence-transformers' ONNX backend loads them."""

    optimization: OnnxOptimization = Field(
        default="none",
        description=(
            "Also write an ONNX Runtime graph-optimised copy, `onnx/model_<level>.onnx`, at Optimum's levels: O1 "
            "basic graph optimisations; O2 also transformer-specific fusions; O3 also GELU approximation; O4 also "
            "fp16 weights (needs a GPU with onnxruntime-gpu). none: only `onnx/model.onnx` (fp32). Default: none."
        ),
    )
    quantize: Literal["none", "int8"] = Field(
        default="none",
        description=(
            "int8: also write `onnx/model_qint8.onnx`, the fp32 model with its weights dynamically quantised to "
            "int8 (for CPUs). Default: none."
        ),
    )
    min_cosine: FiniteFloat | None = Field(
        default=None,
        gt=0,
        le=1,
        description=_MIN_COSINE + "(fp32 and O1-O3 0.999, O4 0.99, int8 0.95).",
    )


class OpenVinoExportSpec(ApiModel):
    """An OpenVINO model in the published model's `openvino/` folder, as sentence-transformers' OpenVINO backend
    loads it."""

    min_cosine: FiniteFloat | None = Field(
        default=None, gt=0, le=1, description=_MIN_COSINE + "(0.99: OpenVINO may run in bf16 on CPUs that have it)."
    )


class ExportSpec(ApiModel):
    """Copies of the published model for other runtimes, each checked against the PyTorch model before it is
    published. Needs the worker's `onnx` (or `openvino`) extra."""

    onnx: OnnxExportSpec | None = Field(
        default=None, description="Export to ONNX (`onnx/model.onnx`, and the optimised or quantised copies asked for)."
    )
    openvino: OpenVinoExportSpec | None = Field(
        default=None, description="Export to OpenVINO IR (`openvino/openvino_model.xml` and `.bin`)."
    )


_LAUNCHER_RULE: JsonDict = {
    "rule": "!has(self.launcher) || self.launcher != 'job' || !has(self.resources) || !has(self.resources.nodes) "
    "|| self.resources.nodes == 1",
    "message": "launcher job runs one pod: resources.nodes above 1 needs launcher trainjob or auto",
}


class FineTuneJobSpec(ApiModel):
    """Desired state of a FineTuneJob."""

    model_config = cel_rules([_LAUNCHER_RULE])

    dataset_ref: LocalObjectReference = Field(description="The EmbeddingDataset to train on.")
    base_model: str = Field(
        default=DEFAULT_BASE_MODEL,
        min_length=1,
        description=f"Model to start from: a bundled model name or a path in the worker image. Default: "
        f"`{DEFAULT_BASE_MODEL}`.",
    )
    loss: LossSpec = Field(default_factory=LossSpec, description="Training loss.")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="Optimisation settings.")
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec, description="Held-out evaluation.")
    resources: TrainResources = Field(
        default_factory=TrainResources,
        description="Resources of the training pods (1 GPU on 1 node unless `gpus` and `nodes` say otherwise).",
    )
    scheduling: Scheduling = Field(default_factory=Scheduling, description="Scheduling of the training Job.")
    launcher: Launcher = Field(
        default="auto",
        description=(
            "What runs the training pods: `job`, a Kubernetes Job (one pod; torchrun on its GPUs); `trainjob`, a "
            f"Kubeflow Trainer TrainJob ({TRAINJOB_API}); `auto`, a TrainJob when resources.nodes is above 1 "
            "and the cluster serves the API, else a Job. status.launcher says which, and why. Default: auto."
        ),
    )
    train_job: TrainJobLauncherSpec = Field(
        default_factory=TrainJobLauncherSpec, description="The TrainJob's runtime, when the launcher is one."
    )
    export: ExportSpec | None = Field(
        default=None,
        description=(
            "After training, export the published model to ONNX and/or OpenVINO into its folder; an export whose "
            "embeddings stray from the PyTorch model's (per-row cosine below its bound) fails the step. "
            "Default: none."
        ),
    )

    @model_validator(mode="after")
    def _loss_fits(self) -> FineTuneJobSpec:
        if self.loss.type in CACHED_LOSSES and self.loss.mini_batch_size > self.training.batch_size:
            raise ValueError("loss.miniBatchSize must not exceed training.batchSize")
        if self.launcher == "job" and self.resources.nodes > 1:
            raise ValueError(_LAUNCHER_RULE["message"])
        return self


class ModelExport(ApiModel):
    """One exported file of the published model, and how closely it matches the PyTorch model."""

    format: ExportFormat = Field(description="onnx or openvino: the sentence-transformers backend that loads it.")
    variant: ExportVariant = Field(description="fp32, an optimisation level (O1-O4) or int8.")
    file: str = Field(
        description="Its path in the model folder, as sentence-transformers takes it: "
        "`SentenceTransformer(folder, backend=format, model_kwargs={'file_name': file})`."
    )
    texts: int = Field(description="Held-out texts the export was checked on.")
    min_cosine: float = Field(description="The lowest per-row cosine similarity to the PyTorch model's embeddings.")
    mean_cosine: float = Field(description="The mean per-row cosine similarity.")
    bound: float = Field(description="The lowest min_cosine that passes.")


class ModelArtifact(ApiModel):
    """The published model."""

    location: str = Field(description="Where the model was saved (a sentence-transformers folder).")
    base_model: str = Field(description="The model it was tuned from.")
    dimensions: int = Field(description="Embedding size.")
    fingerprint: str = Field(description="sha256 of the saved weights; changes whenever the model does.")
    exports: list[ModelExport] = Field(
        default_factory=list, description="The exports spec.export asked for, each checked against the model."
    )


class ValidationScores(ApiModel):
    """How the published checkpoint was chosen: nDCG@10 on validation queries carved from the training queries."""

    queries: int = Field(description="Validation queries.")
    documents: int = Field(description="Documents they were searched over.")
    base_ndcg_at_10: float = Field(alias="baseNdcgAt10", description="The base model's validation nDCG@10.")
    best_ndcg_at_10: float | None = Field(
        default=None, alias="bestNdcgAt10", description="The best checkpoint's validation nDCG@10."
    )
    best_step: int | None = Field(default=None, description="The step of the best checkpoint.")
    evaluations: int = Field(default=0, description="Checkpoints scored.")


class LauncherStatus(ApiModel):
    """What runs the training pods, and why."""

    kind: Literal["Job", "TrainJob"] = Field(description="A Kubernetes Job or a Kubeflow Trainer TrainJob.")
    name: str = Field(description="Its name.")
    nodes: int = Field(description="Nodes training spans.")
    processes_per_node: int = Field(description="Training processes on each node (one a GPU).")
    reason: str = Field(description="Why this launcher: what spec.launcher and spec.resources.nodes asked for.")


class FineTuneJobStatus(BaseStatus):
    """Observed state of a FineTuneJob."""

    model: ModelArtifact | None = Field(
        default=None, description="The tuned model, once trained; none when no checkpoint beat the base model."
    )
    launcher: LauncherStatus | None = Field(default=None, description="What runs the training pods, and why.")
    base_metrics: RetrievalScores | None = Field(default=None, description="The base model's held-out (test) scores.")
    tuned_metrics: RetrievalScores | None = Field(
        default=None, description="The published model's held-out (test) scores."
    )
    ndcg_gain: float | None = Field(default=None, description="Tuned minus base nDCG@10.")
    validation: ValidationScores | None = Field(default=None, description="Checkpoint selection on validation queries.")
    train_pairs: int | None = Field(
        default=None, description="Training rows trained on (validation queries' rows excluded)."
    )
    planned_steps: int | None = Field(default=None, description="Optimiser steps planned (budget, epochs or maxSteps).")
    steps: int | None = Field(default=None, description="Optimiser steps taken.")
    world_size: int | None = Field(
        default=None, description="Training processes (one per GPU, across all nodes) the last run used."
    )
    global_batch_size: int | None = Field(
        default=None, description="Rows per optimiser step: training.batchSize on each process, times worldSize."
    )
    resumed_from_step: int | None = Field(default=None, description="Checkpoint step the last run resumed from.")
    start_time: str | None = Field(default=None, description="RFC 3339 time training started.")
    completion_time: str | None = Field(default=None, description="RFC 3339 time training finished.")
    duration_seconds: float | None = Field(default=None, description="Training plus evaluation time.")
