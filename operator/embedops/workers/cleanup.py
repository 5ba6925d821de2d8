"""The cleanup worker: drop an index's view and version tables (`deletionPolicy: Delete`), and what sync mode
`trigger` installed on its source table (whatever the policy: a retained table's triggers would otherwise keep
filling a queue that nobody drains).

Only tables the catalog lists for the target are dropped, and each name is derived again
from the view and version rather than trusted from the catalog (store.pgvector.drop_target); a target
another index owns is left alone, and a view embedops did not create is never dropped.
"""

from __future__ import annotations

from embedops import steps
from embedops.results import CleanupResult as Result
from embedops.store import pgvector, triggers


def run(config: steps.CleanupStep, *, dsn: str | None = None) -> Result:
    with pgvector.connect(dsn) as conn:
        removed = triggers.remove(conn, config.target, config.owner)  # first: nothing is queued any more
        dropped = pgvector.drop_target(conn, config.target, config.owner) if config.drop_tables else []
        return Result(dropped=dropped + removed)
