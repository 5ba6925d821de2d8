"""Running one worker on its typed step (embedops.steps).

A pod runs `embedops worker NAME --spec-json STEP` (embedops.cli), which parses the step with
`parse_config`; local mode hands the planner's step over as it is. Both go through `run`, so a
worker's outcome is the same document either way: its result, or a `WorkerError` whose reason
and exit code say whether running it again could help. InvalidConfig and InvalidInput (exit 2)
never can: a Job's pod failure policy fails at once on them. DatabaseUnavailable (exit 3) may:
the Job retries.

The workers are imported when their step runs, so a step that needs neither torch nor a
database (parsing, `embedops worker --help`) loads neither.
"""

from __future__ import annotations

from typing import Any, assert_never

from pydantic import ValidationError

from embedops import steps
from embedops.api.common import ApiModel
from embedops.api.kinds import format_validation_error
from embedops.builders.jobs import EXIT_INVALID, EXIT_TRANSIENT
from embedops.modelzoo import ModelNotFound
from embedops.results import SourceNotThere, StepRefused


class WorkerError(Exception):
    """A worker that cannot succeed with this config or input; `problems` are the lines to show."""

    def __init__(self, reason: str, problems: list[str], exit_code: int):
        self.reason, self.problems, self.exit_code = reason, problems, exit_code
        super().__init__("; ".join(problems))


def parse_config(name: str, raw: Any, *, shard: int | None = None, device: str | None = None) -> steps.AnyStep:
    """The step of worker `name` from its wire form (see embedops.steps.parse), or WorkerError InvalidConfig."""
    if name not in steps.STEPS:
        raise ValueError(f"no worker {name!r}; the workers are {', '.join(steps.STEPS)}")
    try:
        return steps.parse(name, raw, shard=shard, device=device)
    except ValidationError as err:
        raise WorkerError("InvalidConfig", format_validation_error(err, prefix="config"), EXIT_INVALID) from None


def run(step: steps.AnyStep, *, dsn: str | None) -> ApiModel:
    """Run the worker of `step`; its result, or WorkerError for what retrying would not fix."""
    import psycopg

    from embedops.store.pgvector import DatabaseUnavailable

    try:
        return _dispatch(step, dsn)
    except StepRefused as err:
        raise WorkerError(err.reason, [str(err)], EXIT_TRANSIENT if err.transient else EXIT_INVALID) from err
    except SourceNotThere as err:  # may still be on its way to the workspace: the Job retries, then fails
        raise WorkerError("SourceNotFound", [str(err)], EXIT_TRANSIENT) from err
    except psycopg.errors.InsufficientPrivilege as err:  # the spec names what the database role may not touch
        raise WorkerError("InvalidInput", [str(err).strip().splitlines()[0]], EXIT_INVALID) from err
    except (ValueError, ModelNotFound, *_PATH_ERRORS) as err:
        raise WorkerError("InvalidInput", [_message(err)], EXIT_INVALID) from err
    except (DatabaseUnavailable, psycopg.OperationalError) as err:  # unreachable, or lost mid-step
        raise WorkerError("DatabaseUnavailable", [str(err)], EXIT_TRANSIENT) from err


def _dispatch(step: steps.AnyStep, dsn: str | None) -> ApiModel:
    match step:
        case steps.PrepareStep():
            from embedops.workers import prepare

            return prepare.run(step, dsn=dsn)
        case steps.TrainStep():
            from embedops.workers import train

            return train.run(step, dsn=dsn)
        case steps.EmbedStep():
            from embedops.workers import embed

            return embed.run(step, dsn=dsn)
        case steps.PublishStep():
            from embedops.workers import publish

            return publish.run(step, dsn=dsn)
        case steps.ProbeStep():
            from embedops.workers import probe

            return probe.run(step, dsn=dsn)
        case steps.DriftStep():
            from embedops.workers import drift

            return drift.run(step, dsn=dsn)
        case steps.SyncStep():
            from embedops.workers import sync

            return sync.run(step, dsn=dsn)
        case steps.CleanupStep():
            from embedops.workers import cleanup

            return cleanup.run(step, dsn=dsn)
        case _:
            assert_never(step)


# A path that is missing, of the wrong kind or unreadable: the spec or the workspace must change.
_PATH_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def _message(err: Exception) -> str:
    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.filename}: {err.strerror}"
    return str(err)
