"""Reading documents from a user's source table, in the order and the shards the workers need.

Reads are keyset pages (`WHERE id > last ORDER BY id LIMIT n`) so a resumed run continues
exactly after its last committed id, and each page is a short statement: no transaction is
held open while the model encodes. That needs a unique, indexed id column, which is checked
up front with an error naming the spec field, as are the table and its columns.

A row belongs to shard `mod(abs(hashtext(id::text)::bigint), shards)`: stable across runs
and pods, and independent of the id's type. (The bigint cast avoids abs() overflowing on
hashtext's one int4 value without a positive counterpart.)

A row whose text is NULL, or only `blank` characters, has nothing to embed: embedded, it would
be one vector that every query finds. Such rows are left out of every read (counted, paged,
looked up, sampled) and reported by `skipped`. Which characters are blank is the caller's one
rule (the dataset readers' `rows.BLANK`); `btrim(text, blank)` trims exactly as Python's
`str.strip(blank)` does, so both sides agree row for row.

The text a row is embedded as (title and text, joined as `prepared.Doc.full_text` joins them) is
composed here in SQL, and read back as it is embedded, with its content hash: `md5(text)::uuid`,
the 16 bytes Python's `content_hash` computes from the same UTF-8 text. Every version table
keeps the hash of each row it embedded, so which rows changed since is one query inside
Postgres (store.sync) that never reads the texts out.
"""

from __future__ import annotations

import hashlib
import sys
import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple

import psycopg
from psycopg import sql
from psycopg.pq import Format

from embedops.api.index import TableSource
from embedops.store import fetch, names

TEXT_ID = "text"  # the id type of dataset corpora
# What Python's str.strip() strips (str.isspace), which `Doc.full_text` applies to a titled document.
_WHITESPACE = "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())


class Row(NamedTuple):
    """One document as it is embedded: its id, the text the model encodes, and that text's content hash."""

    id: Any
    text: str
    hash: uuid.UUID


def content_hash(text: str) -> uuid.UUID:
    """The content hash of a text to embed: what `md5(text)::uuid` gives in Postgres (a UTF-8 database)."""
    return uuid.UUID(bytes=hashlib.md5(text.encode()).digest())


def check_names(src: TableSource) -> None:
    names.check(src.schema_name, "source.table.schema")
    names.check(src.table, "source.table.table")
    names.check(src.id_column, "source.table.idColumn")
    names.check(src.text_column, "source.table.textColumn")
    if src.title_column is not None:
        names.check(src.title_column, "source.table.titleColumn")


def describe(src: TableSource) -> str:
    """The source as the catalog records it; a build only resumes into a version of the same source."""
    columns = [src.id_column, src.text_column, *([src.title_column] if src.title_column else [])]
    return f"table {src.schema_name}.{src.table}({','.join(columns)})"


def _qualified(conn: psycopg.Connection, src: TableSource) -> str:
    return sql.Identifier(src.schema_name, src.table).as_string(conn)


def inspect(conn: psycopg.Connection, src: TableSource) -> str:
    """Check the table, its columns and its id key, and return the id's SQL type (format_type's text)."""
    check_names(src)
    qualified = _qualified(conn, src)
    if fetch.value(conn.execute("SELECT to_regclass(%s)", (qualified,))) is None:
        raise ValueError(f"source.table: table {src.schema_name}.{src.table} does not exist")
    columns = {
        name: (attnum, type_sql, base_oid, type_name)
        for name, attnum, type_sql, base_oid, type_name in conn.execute(
            "SELECT a.attname, a.attnum, format_type(a.atttypid, a.atttypmod), "
            "CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END, t.typname "
            "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped",
            (qualified,),
        )
    }
    fields = [("idColumn", src.id_column), ("textColumn", src.text_column)]
    if src.title_column:
        fields.append(("titleColumn", src.title_column))
    for field, column in fields:
        if column not in columns:
            raise ValueError(f"source.table.{field}: column {column!r} not found in {src.schema_name}.{src.table}")
    attnum, type_sql, base_oid, type_name = columns[src.id_column]
    unique = fetch.value(
        conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = to_regclass(%s) AND indisunique "
            "AND indnkeyatts = 1 AND indkey[0] = %s AND indpred IS NULL)",
            (qualified, attnum),
        )
    )
    if not unique:
        raise ValueError(
            f"source.table.idColumn: {src.id_column!r} of {src.schema_name}.{src.table} has no primary key or unique "
            "index; embedops reads in id order to resume exactly, which needs a unique, indexed id"
        )
    try:
        conn.adapters.get_dumper_by_oid(base_oid, Format.BINARY)
    except psycopg.ProgrammingError:
        raise ValueError(
            f"source.table.idColumn: ids of type {type_name} are not supported; use text, varchar, integer, "
            "bigint, numeric or uuid"
        ) from None
    return type_sql


def _shard_filter(shard: int, shards: int) -> sql.Composable:
    if shards == 1:
        return sql.SQL("true")
    return sql.SQL("mod(abs(hashtext({}::text)::bigint), {}) = {}").format(
        sql.Identifier("id"), sql.Literal(shards), sql.Literal(shard)
    )


def _documents(src: TableSource, blank: str, *, with_text: bool = True) -> sql.Composable:
    """The rows with text to embed as a subquery `d(id, text, hash)` (`text` composed as the model reads it),
    or (not `with_text`) the others, whose text is NULL or only `blank` characters."""
    column = sql.SQL("{}::text").format(sql.Identifier("s", src.text_column))
    composed: sql.Composable = column
    if src.title_column:  # Doc.full_text: f"{title} {text}".strip() when the title is not empty
        title = sql.SQL("{}::text").format(sql.Identifier("s", src.title_column))
        composed = sql.SQL(
            "CASE WHEN coalesce({title}, '') = '' THEN {text} ELSE btrim({title} || ' ' || {text}, {ws}) END"
        ).format(title=title, text=column, ws=sql.Literal(_WHITESPACE))
    has_text = sql.SQL("({text} IS NOT NULL AND btrim({text}, {blank}) <> '')").format(
        text=column, blank=sql.Literal(blank)
    )
    return sql.SQL(
        "(SELECT {id} AS id, t.text, md5(t.text)::uuid AS hash FROM {table} AS s "
        "CROSS JOIN LATERAL (SELECT {composed} AS text) AS t WHERE {keep}{has_text}) AS d"
    ).format(
        id=sql.Identifier("s", src.id_column),
        composed=composed,
        table=sql.Identifier(src.schema_name, src.table),
        keep=sql.SQL("" if with_text else "NOT "),
        has_text=has_text,
    )


def documents(src: TableSource, blank: str) -> sql.Composable:
    """The rows with text to embed, `d(id, text, hash)`: what a version of the table holds, and what a sync diffs."""
    return _documents(src, blank)


def count(conn: psycopg.Connection, src: TableSource, shard: int, shards: int, *, blank: str) -> int:
    """Rows of a shard with text to embed."""
    query = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(_documents(src, blank), _shard_filter(shard, shards))
    return fetch.value(conn.execute(query))


def skipped(
    conn: psycopg.Connection, src: TableSource, shard: int, shards: int, *, blank: str, limit: int
) -> tuple[int, list[Any]]:
    """Rows of a shard with no text to embed (NULL, empty or only `blank` characters), and the first `limit` ids."""
    rows = sql.SQL("FROM {} WHERE {}").format(_documents(src, blank, with_text=False), _shard_filter(shard, shards))
    n = fetch.value(conn.execute(sql.SQL("SELECT count(*) {}").format(rows)))
    ids = conn.execute(sql.SQL("SELECT id {} ORDER BY id LIMIT {}").format(rows, sql.Literal(limit))).fetchall()
    return n, [i for (i,) in ids]


def page(
    conn: psycopg.Connection,
    src: TableSource,
    id_type: str,
    shard: int,
    shards: int,
    after: Any | None,
    limit: int,
    *,
    blank: str,
) -> list[Row]:
    """The next `limit` rows of a shard after id `after` (its value or text form), in id order."""
    after_filter = (
        sql.SQL("true") if after is None else sql.SQL("id > CAST({} AS {})").format(sql.Placeholder(), sql.SQL(id_type))
    )
    query = sql.SQL("SELECT id, text, hash FROM {} WHERE {} AND {} ORDER BY id LIMIT {}").format(
        _documents(src, blank), _shard_filter(shard, shards), after_filter, sql.Literal(limit)
    )
    return [Row(*r) for r in conn.execute(query, () if after is None else (after,))]


def rows(conn: psycopg.Connection, src: TableSource, ids: Sequence[Any], *, blank: str) -> list[Row]:
    """The current rows of `ids` still in the table with text to embed, in id order."""
    query = sql.SQL("SELECT id, text, hash FROM {} WHERE id = ANY(%s) ORDER BY id").format(_documents(src, blank))
    return [Row(*r) for r in conn.execute(query, (list(ids),))]


def texts(conn: psycopg.Connection, src: TableSource, ids: Sequence[Any], *, blank: str) -> dict[Any, str]:
    """The current text to embed of each of `ids` still in the table (and still with text)."""
    return {row.id: row.text for row in rows(conn, src, ids, blank=blank)}


def sample(conn: psycopg.Connection, src: TableSource, n: int, seed: str, *, blank: str) -> list[tuple[Any, str]]:
    """`n` rows with text drawn by a seeded hash of their id: uniform, and the same sample for the same seed."""
    query = sql.SQL("SELECT id, text FROM {} ORDER BY md5(id::text || %s) LIMIT %s").format(_documents(src, blank))
    return [(doc_id, text) for doc_id, text in conn.execute(query, (seed, n))]
