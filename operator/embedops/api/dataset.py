"""EmbeddingDataset: where domain training data lives and how it is validated, split and enriched."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, FiniteFloat, model_validator
from pydantic.json_schema import JsonDict

from embedops.api.common import (
    MAX_INT,
    SEED_MAX,
    ApiModel,
    BaseStatus,
    Database,
    LocalObjectReference,
    Resources,
    Scheduling,
    SqlName,
    cel_rules,
    check_exactly_one,
    exactly_one_rule,
)
from embedops.api.generate import GenerateSpec, GenerationCounts

DEFAULT_MINING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class BeirSource(ApiModel):
    """A BEIR folder: `corpus.jsonl`, `queries.jsonl` and `qrels/<split>.tsv`."""

    path: str = Field(
        min_length=1,
        description=(
            "Folder holding the BEIR files. In `embedops run` a relative path is relative to the manifest's "
            "folder; in a cluster it is a path inside the workspace volume."
        ),
    )
    train_split: str = Field(
        default="train",
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
        max_length=200,
        description="qrels file used for training, `qrels/<trainSplit>.tsv` (a file name, no path). Default: `train`.",
    )
    test_split: str = Field(
        default="test",
        pattern=r"^([A-Za-z0-9_][A-Za-z0-9_.-]*)?$",
        max_length=200,
        description=(
            'qrels file held out for evaluation. Default: `test`. Set to "" (empty) to split the train '
            "queries deterministically instead (see `split`)."
        ),
    )


class PairsSource(ApiModel):
    """JSON Lines of query–positive(–negatives) pairs."""

    path: str = Field(
        min_length=1,
        description=(
            'JSONL file, one object a line: `{"query": str, "positive": str, "negatives": [str, ...]}` '
            "(`negatives` optional). Relative paths as for `beir.path`."
        ),
    )
    test_path: str | None = Field(
        default=None,
        description="Optional JSONL of held-out pairs in the same format; unset splits `path` (see `split`).",
    )


class PostgresSource(ApiModel):
    """A table of query–positive pairs in Postgres."""

    database: Database = Field(default_factory=Database, description="Server holding the table.")
    schema_name: SqlName = Field(
        default="public", alias="schema", description="Schema of the table. Default: `public`."
    )
    table: SqlName = Field(description="Table holding one pair a row.")
    query_column: SqlName = Field(default="query", description="Column with the query text. Default: `query`.")
    positive_column: SqlName = Field(
        default="positive", description="Column with the relevant text. Default: `positive`."
    )
    split_column: SqlName | None = Field(
        default=None,
        description="Optional column whose value `test` marks held-out rows; unset splits deterministically.",
    )


class DocumentsSource(ApiModel):
    """JSON Lines of documents and no queries: a corpus to generate queries for (`spec.generate`)."""

    path: str = Field(
        min_length=1,
        description=(
            'JSONL file, one document a line: `{"_id": str, "text": str, "title": str}` (`id` for `_id` also '
            "accepted, `title` optional; BEIR's corpus.jsonl is one). Relative paths as for `beir.path`."
        ),
    )


class TableSource(ApiModel):
    """A table of documents in Postgres (`id`, `text`, optional `title`): a corpus to generate queries for."""

    database: Database = Field(default_factory=Database, description="Server holding the table.")
    schema_name: SqlName = Field(
        default="public", alias="schema", description="Schema of the table. Default: `public`."
    )
    table: SqlName = Field(description="Table holding one document a row.")
    id_column: SqlName = Field(default="id", description="Column with a unique id. Default: `id`.")
    text_column: SqlName = Field(default="text", description="Column with the document's text. Default: `text`.")
    title_column: SqlName | None = Field(default=None, description="Optional column with its title. Default: none.")


_SOURCES = ("beir", "pairs", "postgres", "documents", "table", "dataset_ref")
SourceKind = Literal["beir", "pairs", "postgres", "documents", "table", "dataset_ref"]
# Sources with no queries of their own: only spec.generate gives them any (their wire names).
CORPUS_ONLY = ("documents", "table", "datasetRef")


class DatasetSource(ApiModel):
    """Exactly one of `beir`, `pairs`, `postgres` (labelled data), `documents`, `table` or `datasetRef` (a corpus
    only)."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": exactly_one_rule("source", "beir", "pairs", "postgres", "documents", "table", "datasetRef")
    }

    beir: BeirSource | None = Field(
        default=None,
        description="A BEIR folder. With `spec.generate`, queries.jsonl and the qrels may be missing or empty.",
    )
    pairs: PairsSource | None = Field(default=None, description="A JSONL file of pairs.")
    postgres: PostgresSource | None = Field(default=None, description="A Postgres table of pairs.")
    documents: DocumentsSource | None = Field(
        default=None, description="A JSONL file of documents (needs `spec.generate`)."
    )
    table: TableSource | None = Field(
        default=None, description="A Postgres table of documents (needs `spec.generate`)."
    )
    dataset_ref: LocalObjectReference | None = Field(
        default=None,
        description=(
            "Another EmbeddingDataset in the namespace whose prepared corpus is this one's (needs `spec.generate`); "
            "prepared again when that one's data changes."
        ),
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> DatasetSource:
        check_exactly_one(self, "source", *_SOURCES)
        return self

    @property
    def kind(self) -> SourceKind:
        """Which one is set: what the prepare worker dispatches on."""
        kind: SourceKind
        for kind in ("beir", "pairs", "postgres", "documents", "table"):
            if getattr(self, kind) is not None:
                return kind
        return "dataset_ref"

    @property
    def database(self) -> Database | None:
        """The database a table source reads, if it is one."""
        table = self.postgres or self.table
        return table.database if table is not None else None


class ValidationSpec(ApiModel):
    """Row checks applied while reading; bad rows are reported by file and line and skipped."""

    min_chars: int = Field(
        default=1, ge=1, le=MAX_INT, description="Shortest text accepted, after trimming. Default: 1."
    )
    max_chars: int = Field(
        default=100_000,
        ge=1,
        le=MAX_INT,
        description="Longest text accepted; longer rows are reported, not cut. Default: 100000.",
    )
    max_invalid_fraction: FiniteFloat = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description=(
            "Fail the preparation when more than this share of rows is invalid (a sign of a wrong format "
            "rather than a few bad rows). Default: 0.1."
        ),
    )


class SplitSpec(ApiModel):
    """Deterministic train/test split, used when the source gives no test split."""

    test_fraction: FiniteFloat = Field(
        default=0.2, gt=0.0, lt=1.0, description="Share of queries held out. Default: 0.2."
    )
    seed: int = Field(
        default=42,
        ge=0,
        le=SEED_MAX,
        description="Seed of the split; the same data and seed give the same split (0 ... 2^32-1). Default: 42.",
    )
    max_test_queries: int | None = Field(
        default=None,
        ge=1,
        le=MAX_INT,
        description="Cap on held-out queries, to bound evaluation time. Default: no cap.",
    )


# Defaults of the fields the CEL rules read: the API server does not fill defaults in (common.py).
_RANGE_MIN, _RANGE_MAX, _COUNT = 10, 50, 3
_MINING_RULES: list[JsonDict] = [
    {
        "rule": f"(has(self.rangeMin) ? self.rangeMin : {_RANGE_MIN}) < (has(self.rangeMax) ? self.rangeMax : "
        f"{_RANGE_MAX})",
        "message": "hardNegatives.rangeMin must be below hardNegatives.rangeMax",
    },
    {
        "rule": f"(has(self.count) ? self.count : {_COUNT}) <= (has(self.rangeMax) ? self.rangeMax : {_RANGE_MAX})"
        f" - (has(self.rangeMin) ? self.rangeMin : {_RANGE_MIN})",
        "message": "hardNegatives.count must fit between rangeMin and rangeMax (count <= rangeMax - rangeMin)",
    },
    {
        "rule": "!(has(self.absoluteMargin) && has(self.relativeMargin))",
        "message": "set at most one of hardNegatives.absoluteMargin or hardNegatives.relativeMargin",
    },
]
DEFAULT_RELATIVE_MARGIN = 0.05


class HardNegativesSpec(ApiModel):
    """Hard-negative mining with sentence-transformers' `util.mine_hard_negatives`.

    The library searches the corpus and samples the negatives; embedops gives it every positive of a
    query (none is ever mined as its negative), puts a pair's given negatives first, and mines title
    pairs too.
    """

    model_config = cel_rules(_MINING_RULES)

    enabled: bool = Field(default=True, description="Mine hard negatives for the training pairs. Default: true.")
    model: str = Field(
        default=DEFAULT_MINING_MODEL,
        min_length=1,
        description=(
            f"Model used for mining (a bundled model name or a path); its query and document prompts are used. "
            f"Default: `{DEFAULT_MINING_MODEL}`."
        ),
    )
    count: int = Field(
        default=_COUNT, ge=1, le=32, description=f"Negatives mined per pair (`num_negatives`). Default: {_COUNT}."
    )
    range_min: int = Field(
        default=_RANGE_MIN,
        ge=0,
        le=2047,
        description=(
            "Skip this many of the best-ranked candidates, counted once the query's positives and the candidates "
            "the margin rules out are set aside: the top ranks are where unlabelled positives concentrate. "
            f"Default: {_RANGE_MIN}."
        ),
    )
    range_max: int = Field(
        default=_RANGE_MAX,
        ge=1,
        le=2048,
        description=f"Only candidates ranked above this are considered. Default: {_RANGE_MAX}.",
    )
    absolute_margin: FiniteFloat | None = Field(
        default=None,
        ge=0.0,
        le=2.0,
        description=(
            "Drop candidates scoring above the positive's score minus this (the lowest-scoring positive's, with "
            "several). Unset: the relative margin applies."
        ),
    )
    relative_margin: FiniteFloat | None = Field(
        default=None,
        ge=0.0,
        lt=1.0,
        description=(
            "Drop candidates scoring above the positive's score minus |score| x this: they are likely unlabelled "
            "positives (positive-aware mining, as in NV-Retriever). With several positives, the lowest-scoring "
            f"one sets the bar. Default: {DEFAULT_RELATIVE_MARGIN} unless absoluteMargin is set. 0: no margin "
            "(absoluteMargin 0 keeps only candidates scoring at most the positive)."
        ),
    )
    sampling_strategy: Literal["top", "random"] = Field(
        default="top",
        description=(
            "`top` takes the best-ranked candidates left; `random` samples among them (seeded by split.seed). "
            "Default: top."
        ),
    )
    output_format: Literal["triplet", "n-tuple"] = Field(
        default="triplet",
        description=(
            "`triplet`: one training row per (pair, negative), as the library's standard recipe trains; a pair "
            "without negatives stays one row. `n-tuple`: one row per pair with all its negatives. Default: triplet."
        ),
    )
    batch_size: int = Field(default=64, ge=1, le=MAX_INT, description="Encoding batch size while mining. Default: 64.")

    @model_validator(mode="after")
    def _rules(self) -> HardNegativesSpec:
        if self.range_min >= self.range_max:
            raise ValueError(str(_MINING_RULES[0]["message"]))
        if self.count > self.range_max - self.range_min:
            raise ValueError(str(_MINING_RULES[1]["message"]))
        if self.absolute_margin is not None and self.relative_margin is not None:
            raise ValueError(str(_MINING_RULES[2]["message"]))
        return self

    def margins(self) -> tuple[float | None, float | None]:
        """(absolute, relative) as `mine_hard_negatives` takes them: the relative default unless absolute is set.

        A relative margin of 0 is no margin (None); the library's relative 0 is absoluteMargin 0.
        """
        if self.absolute_margin is not None:
            return self.absolute_margin, None
        relative = DEFAULT_RELATIVE_MARGIN if self.relative_margin is None else self.relative_margin
        return None, relative or None


class AugmentSpec(ApiModel):
    """Extra training pairs drawn from the corpus itself."""

    title_pairs: bool = Field(
        default=True,
        description=(
            "Add a (title → text) pair for every corpus document that has a title, teaching the model the "
            "domain's vocabulary. Test queries are never used. Ignored when the corpus has no titles. Default: true."
        ),
    )
    max_title_pairs: int | None = Field(
        default=None,
        ge=1,
        le=MAX_INT,
        description="Cap on title pairs (a seeded sample), for very large corpora. Default: no cap.",
    )


_GENERATE_RULE: JsonDict = {
    "rule": "has(self.generate) || !(" + " || ".join(f"has(self.source.{k})" for k in CORPUS_ONLY) + ")",
    "message": "source." + ", source.".join(CORPUS_ONLY) + " hold no queries: they need spec.generate",
}


class EmbeddingDatasetSpec(ApiModel):
    """Desired state of an EmbeddingDataset."""

    model_config = cel_rules([_GENERATE_RULE])

    source: DatasetSource = Field(
        description="Where the data lives: exactly one of beir, pairs, postgres, documents, table, datasetRef."
    )
    generate: GenerateSpec | None = Field(
        default=None,
        description=(
            "Training queries written by a language model for a sample of the corpus, filtered, and trained on "
            "with mined negatives (GPL, Promptagator). Labelled pairs the source has are kept, and are the "
            "few-shot examples and the validation queries. Unset: no generation."
        ),
    )
    validation: ValidationSpec = Field(default_factory=ValidationSpec, description="Row validation.")
    split: SplitSpec = Field(default_factory=SplitSpec, description="Split used when the source has no test split.")
    hard_negatives: HardNegativesSpec = Field(default_factory=HardNegativesSpec, description="Hard-negative mining.")
    augment: AugmentSpec = Field(default_factory=AugmentSpec, description="Extra pairs from the corpus.")
    resources: Resources = Field(
        default_factory=Resources,
        description=(
            "Resources of the prepare pod (no GPU by default). Mining hard negatives embeds the whole corpus: "
            "give large corpora a GPU (`gpus: 1`)."
        ),
    )
    scheduling: Scheduling = Field(default_factory=Scheduling, description="Scheduling of the prepare Job.")

    @model_validator(mode="after")
    def _generate_for_corpus_only(self) -> EmbeddingDatasetSpec:
        if self.generate is None and self.source.kind in ("documents", "table", "dataset_ref"):
            raise ValueError(str(_GENERATE_RULE["message"]))
        return self


class DatasetCounts(ApiModel):
    """What the prepared dataset holds."""

    corpus: int = Field(default=0, description="Documents in the corpus.")
    train_pairs: int = Field(default=0, description="Training pairs (query, positive), title pairs included.")
    train_rows: int = Field(
        default=0, description="Training rows written: one per pair, or per (pair, negative) with the triplet format."
    )
    title_pairs: int = Field(default=0, description="Training pairs made from corpus titles.")
    train_queries: int = Field(default=0, description="Distinct training queries.")
    test_queries: int = Field(default=0, description="Held-out queries with at least one relevant document.")
    invalid_rows: int = Field(default=0, description="Rows rejected by validation (see the report).")
    duplicates: int = Field(default=0, description="Duplicate rows removed.")
    with_negatives: int = Field(default=0, description="Training pairs with at least one hard negative.")


class EmbeddingDatasetStatus(BaseStatus):
    """Observed state of an EmbeddingDataset."""

    counts: DatasetCounts | None = Field(default=None, description="Counts of the prepared data.")
    generation: GenerationCounts | None = Field(
        default=None, description="What `spec.generate` wrote and kept (unset without it)."
    )
    fingerprint: str | None = Field(default=None, description="Content fingerprint (sha256) of the prepared data.")
    location: str | None = Field(default=None, description="Where the prepared dataset was written.")
    invalid_samples: list[str] = Field(
        default_factory=list, description="The first few validation errors, `file:line: reason`."
    )
    prepared_at: str | None = Field(default=None, description="RFC 3339 time the data was prepared.")
