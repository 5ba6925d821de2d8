"""The Postgres reader: a table of query–positive pairs, one pair a row.

Teams often already keep their pairs (tickets and answers, clicked results) in a table;
reading it directly spares an export. Rows are validated as pairs files are, and named in
reports by their position in a stable sort, since a table has no line numbers.
"""

from __future__ import annotations

from embedops.api.dataset import PostgresSource, ValidationSpec
from embedops.store import pgvector
from embedops.workers.readers.pairs import pairs_to_source, parse_pair
from embedops.workers.readers.rows import BadRow, Issues, Source, require_rows


def read(src: PostgresSource, dsn: str | None, rules: ValidationSpec, issues: Issues) -> Source:
    import psycopg
    from psycopg import sql

    if not dsn:
        raise ValueError("source.postgres needs a database connection, and none was given")
    name = f"{src.schema_name}.{src.table}"
    columns = [src.query_column, src.positive_column, *([src.split_column] if src.split_column else [])]
    query = sql.SQL("SELECT {} FROM {}.{}").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        sql.Identifier(src.schema_name),
        sql.Identifier(src.table),
    )
    try:
        with pgvector.connect(dsn, catalog_schema=False) as conn:  # no DSN ever reaches an error
            rows = conn.execute(query).fetchall()
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn, psycopg.errors.InvalidSchemaName) as err:
        raise ValueError(f"source.postgres: {err.diag.message_primary}") from None
    require_rows(f"source.postgres: {name}", len(rows))
    # Tables have no row order; sorting makes the output (and the row numbers in reports) stable.
    rows.sort(key=lambda r: tuple("" if v is None else str(v) for v in r))
    pairs = []
    for n, values in enumerate(rows, 1):
        issues.seen[name] += 1
        row = {src.query_column: values[0], src.positive_column: values[1]}
        try:
            pairs.append(
                parse_pair(
                    row,
                    rules,
                    test=bool(src.split_column) and values[2] == "test",
                    query_key=src.query_column,
                    positive_key=src.positive_column,
                )
            )
        except BadRow as err:
            issues.add(name, n, str(err))
    return pairs_to_source(pairs, has_test=bool(src.split_column))
