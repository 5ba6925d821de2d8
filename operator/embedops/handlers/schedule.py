"""When a resource next needs a look although nothing about it changed: its due probe or drift run.

Everything else the planner reads arrives as a watch event (a spec edit, a Job's progress, a
referenced resource becoming Ready); time is the one input that does not. The planner
(embedops.reconcile) starts the probe of an index's live version when `probe.intervalMinutes`
have passed since the last one, and its drift measurement likewise; this module says when that
moment is, from the same fields, so the operator sets a timer for the resources that have one
instead of re-reading every resource on a fixed sweep.

Pure; meant to move beside the planner (`reconcile.next_due`) so that the two cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import ValidationError

from embedops import status as statuses
from embedops.api.index import EmbeddingIndexSpec, EmbeddingIndexStatus

_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def next_due(body: dict[str, Any], now: dt.datetime) -> dt.datetime | None:
    """The next time the planner would start a Job for `body` with no other change; None: never."""
    if body.get("kind") != "EmbeddingIndex":
        return None
    try:
        spec = EmbeddingIndexSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return None  # an invalid spec waits for an edit
    current = statuses.parse(EmbeddingIndexStatus, body.get("status"))
    live = next((v for v in current.versions if v.state == "Live"), None)
    if live is None:
        return None
    dues = [_next(current.probe.checked_at if current.probe else None, spec.probe.interval_minutes, now)]
    if spec.drift.enabled:
        # As the planner does: a version's first drift run comes one interval after it was built.
        same = current.drift is not None and current.drift.version == live.version
        dues.append(_next(current.drift.checked_at if same else live.created_at, spec.drift.interval_minutes, now))
    return min(dues)


def _next(last: str | None, minutes: int, now: dt.datetime) -> dt.datetime:
    """`minutes` after `last`; once that is past, the start of the next schedule slot.

    Overdue means the planner has had its chance at `now`: it started the run (a Job whose end
    is a watch event) or one is still going, or the run of this slot failed. Its Job name is
    keyed by the slot (`floor(now / interval)`), so the next new run can only start with the
    next slot; looking earlier would find nothing to do.
    """
    interval = dt.timedelta(minutes=minutes)
    when = _parse(last)
    if when is not None and when + interval > now:
        return when + interval
    seconds = interval.total_seconds()
    slot = int(now.timestamp() // seconds)
    return dt.datetime.fromtimestamp((slot + 1) * seconds, dt.UTC)


def _parse(stamp: str | None) -> dt.datetime | None:
    if not stamp:
        return None
    try:
        return dt.datetime.strptime(stamp, _FORMAT).replace(tzinfo=dt.UTC)
    except ValueError:
        return None
