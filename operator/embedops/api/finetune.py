"""FineTuneJob: fine-tune a base sentence-transformers model on an EmbeddingDataset and score it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from embedops.api.common import ApiModel, BaseStatus, LocalObjectReference, Resources, Scheduling

DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

LossType = Literal["MultipleNegativesRankingLoss", "CachedMultipleNegativesRankingLoss", "TripletLoss"]


class LossSpec(ApiModel):
    """Training loss."""

    type: LossType = Field(
        default="MultipleNegativesRankingLoss",
        description=(
            "MultipleNegativesRankingLoss (in-batch and hard negatives), CachedMultipleNegativesRankingLoss "
            "(the same with large batches in bounded memory) or TripletLoss (needs hard negatives). "
            "Default: MultipleNegativesRankingLoss."
        ),
    )
    scale: float = Field(default=20.0, gt=0, description="Similarity scale of the ranking losses. Default: 20.")
    mini_batch_size: int = Field(
        default=32, ge=1, description="Mini-batch of CachedMultipleNegativesRankingLoss. Default: 32."
    )
    triplet_margin: float = Field(default=5.0, gt=0, description="Margin of TripletLoss. Default: 5.")
    matryoshka_dims: list[int] = Field(
        default_factory=list,
        description=(
            "Wrap the loss in MatryoshkaLoss over these output sizes (e.g. [384, 256, 128, 64]) so embeddings "
            "can be truncated. Empty: no wrapper."
        ),
    )


class TrainingSpec(ApiModel):
    """Optimisation settings."""

    epochs: int = Field(default=3, ge=1, le=100, description="Passes over the training pairs. Default: 3.")
    batch_size: int = Field(
        default=64, ge=2, description="Pairs per step; with ranking losses, also the number of in-batch negatives. Default: 64."
    )
    learning_rate: float = Field(default=2e-5, gt=0, description="Peak learning rate. Default: 2e-5.")
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1, description="Share of steps of linear warm-up. Default: 0.1.")
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay. Default: 0.01.")
    max_seq_length: int = Field(default=256, ge=8, le=8192, description="Tokens kept per text. Default: 256.")
    seed: int = Field(default=42, description="Random seed. Default: 42.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        default="auto", description="Numeric precision; auto picks bf16 on a GPU that supports it, else fp32. Default: auto."
    )
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many steps (overrides epochs).")
    checkpoint_steps: int = Field(
        default=200, ge=1, description="Save a checkpoint every this many steps; a killed run resumes from the last. Default: 200."
    )
    negatives_per_pair: int | None = Field(
        default=None, ge=0, description="Use at most this many of the dataset's hard negatives per pair. Default: all."
    )


class EvaluationSpec(ApiModel):
    """Held-out evaluation of the base and tuned models."""

    max_queries: int | None = Field(default=None, ge=1, description="Evaluate on at most this many test queries.")
    batch_size: int = Field(default=64, ge=1, description="Encoding batch size. Default: 64.")
    require_improvement: bool = Field(
        default=True,
        description="Mark the job Degraded (Ready=False, NoImprovement) when the tuned nDCG@10 is not above the base's. Default: true.",
    )


class FineTuneJobSpec(ApiModel):
    """Desired state of a FineTuneJob."""

    dataset_ref: LocalObjectReference = Field(description="The EmbeddingDataset to train on.")
    base_model: str = Field(
        default=DEFAULT_BASE_MODEL,
        min_length=1,
        description=f"Model to start from: a bundled model name or a path in the worker image. Default: `{DEFAULT_BASE_MODEL}`.",
    )
    loss: LossSpec = Field(default_factory=LossSpec, description="Training loss.")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="Optimisation settings.")
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec, description="Held-out evaluation.")
    resources: Resources = Field(
        default_factory=Resources, description="Resources of the training pod (1 GPU unless `gpus` says otherwise)."
    )
    scheduling: Scheduling = Field(default_factory=Scheduling, description="Scheduling of the training Job.")

    @model_validator(mode="after")
    def _loss_fits(self) -> FineTuneJobSpec:
        if self.loss.type == "CachedMultipleNegativesRankingLoss" and self.loss.mini_batch_size > self.training.batch_size:
            raise ValueError("loss.miniBatchSize must not exceed training.batchSize")
        return self


class IRMetrics(ApiModel):
    """Retrieval quality on held-out queries."""

    ndcg_at_10: float = Field(alias="ndcgAt10", description="nDCG@10.")
    mrr_at_10: float = Field(alias="mrrAt10", description="MRR@10.")
    recall_at_10: float = Field(alias="recallAt10", description="Recall@10.")
    recall_at_100: float = Field(alias="recallAt100", description="Recall@100.")
    queries: int = Field(description="Queries evaluated.")


class ModelArtifact(ApiModel):
    """The published model."""

    location: str = Field(description="Where the model was saved (a sentence-transformers folder).")
    base_model: str = Field(description="The model it was tuned from.")
    dimensions: int = Field(description="Embedding size.")
    fingerprint: str = Field(description="sha256 of the saved weights; changes whenever the model does.")


class FineTuneJobStatus(BaseStatus):
    """Observed state of a FineTuneJob."""

    model: ModelArtifact | None = Field(default=None, description="The tuned model, once trained.")
    base_metrics: IRMetrics | None = Field(default=None, description="The base model's held-out scores.")
    tuned_metrics: IRMetrics | None = Field(default=None, description="The tuned model's held-out scores.")
    ndcg_gain: float | None = Field(default=None, description="Tuned minus base nDCG@10.")
    train_pairs: int | None = Field(default=None, description="Pairs trained on.")
    steps: int | None = Field(default=None, description="Optimiser steps taken.")
    resumed_from_step: int | None = Field(default=None, description="Checkpoint step the last run resumed from.")
    start_time: str | None = Field(default=None, description="RFC 3339 time training started.")
    completion_time: str | None = Field(default=None, description="RFC 3339 time training finished.")
    duration_seconds: float | None = Field(default=None, description="Training plus evaluation time.")
