"""The documents readers: a corpus with no queries, for `spec.generate`.

A corpus is what most teams have; `read` reads one exported as BEIR's corpus.jsonl is written
(`_id`, `text`, optional `title`; `id` is accepted for `_id`, as exports often spell it), and
`read_prepared` another dataset's prepared corpus (`source.datasetRef`), already validated.
"""

from __future__ import annotations

from pathlib import Path

from embedops.api.dataset import DocumentsSource, ValidationSpec
from embedops.prepared import Doc, PreparedDataset
from embedops.results import SourceNotThere
from embedops.workers.readers.beir import parse_doc, read_by_id
from embedops.workers.readers.rows import Issues, Source, display_name, resolve


def read(src: DocumentsSource, base_dir: Path, rules: ValidationSpec, issues: Issues) -> Source:
    path, name = resolve(src.path, base_dir), display_name(src.path)
    if not path.exists():
        raise SourceNotThere(f"source.documents.path {name!r} does not exist")
    if not path.is_file():
        raise FileNotFoundError(f"source.documents.path {name!r} is not a file")
    corpus, duplicates = read_by_id(path, name, lambda row: parse_document(row, rules), issues)
    return Source(corpus=corpus, queries={}, train_qrels={}, test_qrels=None, duplicates=duplicates)


def parse_document(row: dict, rules: ValidationSpec) -> tuple[str, Doc]:
    if "_id" not in row and "id" in row:
        row = {**row, "_id": row["id"]}
    return parse_doc(row, rules)


def read_prepared(folder: Path) -> Source:
    return Source(corpus=PreparedDataset(folder).corpus(), queries={}, train_qrels={}, test_qrels=None)
