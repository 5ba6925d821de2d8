"""Source readers of the prepare worker: one module per kind of `EmbeddingDataset` source.

Each reader validates its rows (reporting bad ones through `rows.Issues`) and returns a
`rows.Source`, so the prepare step never depends on where data came from. A new kind of
source is its API model in `DatasetSource`, one module here and one `case` in `read`.
"""

from __future__ import annotations

from pathlib import Path
from typing import assert_never

from embedops.api.dataset import DatasetSource, ValidationSpec
from embedops.workers.readers import beir, documents, pairs, postgres, table
from embedops.workers.readers.rows import Issues, Source


def read(
    source: DatasetSource,
    *,
    base_dir: Path,
    rules: ValidationSpec,
    issues: Issues,
    dsn: str | None,
    corpus_only: bool = False,
    corpus_dir: Path | None = None,
) -> Source:
    """Read and validate `source`; relative paths resolve against base_dir. corpus_only (spec.generate): a
    source may lack queries."""
    match source.kind:
        # `kind` names the one field that is set; the asserts say so to the type checker.
        case "beir":
            assert source.beir is not None
            return beir.read(source.beir, base_dir, rules, issues, corpus_only=corpus_only)
        case "pairs":
            assert source.pairs is not None
            return pairs.read(source.pairs, base_dir, rules, issues)
        case "postgres":
            assert source.postgres is not None
            return postgres.read(source.postgres, dsn, rules, issues)
        case "documents":
            assert source.documents is not None
            return documents.read(source.documents, base_dir, rules, issues)
        case "table":
            assert source.table is not None
            return table.read(source.table, dsn, rules, issues)
        case "dataset_ref":
            assert corpus_dir is not None  # the planner gives it (steps.PrepareStep checks)
            return documents.read_prepared(corpus_dir)
        case unknown:
            assert_never(unknown)
