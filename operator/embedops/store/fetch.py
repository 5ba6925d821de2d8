"""The one row of a query that always returns one: an aggregate, EXISTS, a function called without FROM.

psycopg types `fetchone()` as `Row | None`, for the queries that may match nothing. These say at
the call that the query cannot, and a missing row fails as what it is (a broken query) rather
than as a TypeError about None, three lines away from the query.
"""

from __future__ import annotations

from typing import Any

import psycopg


def row(cursor: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    """The cursor's one row."""
    got = cursor.fetchone()
    if got is None:
        raise RuntimeError("a query that always returns one row returned none")
    return got


def value(cursor: psycopg.Cursor[Any]) -> Any:
    """The first column of the cursor's one row."""
    return row(cursor)[0]
