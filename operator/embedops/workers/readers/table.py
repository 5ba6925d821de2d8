"""The table reader: a Postgres table of documents (id, text, optional title), a corpus for `spec.generate`.

The corpus an index is built from often already lives in a table; reading it where it is spares
an export. Rows are validated as corpus lines are, and named in reports by their id.
"""

from __future__ import annotations

from embedops.api.dataset import TableSource, ValidationSpec
from embedops.store import pgvector
from embedops.workers.readers.beir import parse_doc
from embedops.workers.readers.rows import BadRow, Issues, Source, require_rows


def read(src: TableSource, dsn: str | None, rules: ValidationSpec, issues: Issues) -> Source:
    import psycopg
    from psycopg import sql

    if not dsn:
        raise ValueError("source.table needs a database connection, and none was given")
    name = f"{src.schema_name}.{src.table}"
    columns = [src.id_column, src.text_column, *([src.title_column] if src.title_column else [])]
    query = sql.SQL("SELECT {} FROM {}.{} ORDER BY 1").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns),
        sql.Identifier(src.schema_name),
        sql.Identifier(src.table),
    )
    try:
        with pgvector.connect(dsn, catalog_schema=False) as conn:  # no DSN ever reaches an error
            rows = conn.execute(query).fetchall()
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn, psycopg.errors.InvalidSchemaName) as err:
        raise ValueError(f"source.table: {err.diag.message_primary}") from None
    require_rows(f"source.table: {name}", len(rows))
    corpus = {}
    duplicates = 0
    for n, values in enumerate(rows, 1):
        issues.seen[name] += 1
        row = {"_id": values[0], "text": values[1], "title": values[2] if src.title_column else None}
        try:
            doc_id, doc = parse_doc(row, rules)
        except BadRow as err:
            issues.add(name, n, str(err))
            continue
        if doc_id in corpus:
            duplicates += 1
            continue
        corpus[doc_id] = doc
    return Source(corpus=corpus, queries={}, train_qrels={}, test_qrels=None, duplicates=duplicates)
