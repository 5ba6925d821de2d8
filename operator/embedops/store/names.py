"""Validation of the user-supplied names that reach SQL, and the names embedops derives from them.

Every identifier is still quoted with psycopg.sql.Identifier; validating first means a hostile
or mistyped name fails with an error naming the spec field before any statement runs, and a
derived name (a version table) can never be silently truncated by Postgres to 63 bytes and
collide with another table.
"""

from __future__ import annotations

import re

MAX_IDENTIFIER_BYTES = 63  # Postgres' NAMEDATALEN - 1
_SQL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check(value: object, field: str) -> str:
    """`value` if it is a name embedops accepts (the api's SqlName rule), else ValueError naming `field`."""
    if not isinstance(value, str) or not _SQL_NAME.match(value):
        raise ValueError(
            f"{field}: {value!r} is not an accepted SQL name "
            "(letters, digits and underscores, not starting with a digit)"
        )
    if len(value.encode()) > MAX_IDENTIFIER_BYTES:
        raise ValueError(f"{field}: {value!r} is longer than {MAX_IDENTIFIER_BYTES} bytes")
    return value


def version_table(view: str, version: int) -> str:
    """The table of one version, `<view>_v<N>`; ValueError naming target.name when it would not fit."""
    check(view, "target.name")
    table = f"{view}_v{version}"
    if len(table.encode()) > MAX_IDENTIFIER_BYTES:
        raise ValueError(
            f"target.name: {view!r} is too long for its version tables "
            f"({table!r} exceeds {MAX_IDENTIFIER_BYTES} bytes); use a shorter name"
        )
    return table
