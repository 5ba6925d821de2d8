"""Times as the API writes them: RFC 3339 in UTC to the second (`2026-12-03T08:40:27Z`), as metav1.Time is.

One format and one parser, so a time written by a worker, the planner or the catalog is read
back the same way everywhere (status fields, condition transition times, schedules).
"""

from __future__ import annotations

import datetime as dt

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def format_time(when: dt.datetime) -> str:
    """`when` in the API's format (a naive time is taken as UTC)."""
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC)
    return when.strftime(FORMAT)


def now() -> str:
    """The current time in the API's format."""
    return format_time(utcnow())


def parse_time(stamp: str | None) -> dt.datetime | None:
    """A time the API wrote, as an aware UTC datetime; None for none. ValueError for another format."""
    if not stamp:
        return None
    return dt.datetime.strptime(stamp, FORMAT).replace(tzinfo=dt.UTC)
