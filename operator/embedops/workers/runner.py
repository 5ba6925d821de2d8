"""Running one worker from the raw config a planned Job carries.

A pod runs `embedops worker NAME --spec-json CONFIG` (embedops.cli), and local mode runs the
same config in-process; both go through `run`, so a worker's outcome is the same document
either way: its result, or a `WorkerError` whose reason and exit code say whether running it
again could help. InvalidConfig and InvalidInput (exit 2) never can: a Job's pod failure
policy fails at once on them. DatabaseUnavailable (exit 3) may: the Job retries.
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import ValidationError

from embedops.api.common import ApiModel
from embedops.api.kinds import format_validation_error
from embedops.builders.jobs import EXIT_INVALID, EXIT_TRANSIENT, WORKERS
from embedops.modelzoo import ModelNotFound


class WorkerError(Exception):
    """A worker that cannot succeed with this config or input; `problems` are the lines to show."""

    def __init__(self, reason: str, problems: list[str], exit_code: int):
        self.reason, self.problems, self.exit_code = reason, problems, exit_code
        super().__init__("; ".join(problems))


def _module(name: str) -> Any:
    if name not in WORKERS:
        raise ValueError(f"no worker {name!r}; the workers are {', '.join(WORKERS)}")
    return importlib.import_module(f"embedops.workers.{name}")


def parse_config(name: str, raw: Any, *, shard: int | None = None, device: str | None = None) -> ApiModel:
    """The worker's typed config; `shard` (an Indexed Job's completion index) and `device` fill in what is unset."""
    config_cls = _module(name).Config
    if isinstance(raw, dict):
        given = {"shard": shard, "device": device}
        raw = {**{k: v for k, v in given.items() if v is not None and k in config_cls.model_fields}, **raw}
    try:
        return config_cls.model_validate(raw)
    except ValidationError as err:
        raise WorkerError("InvalidConfig", format_validation_error(err, prefix="config"), EXIT_INVALID) from None


def run(name: str, raw: Any, *, dsn: str | None, shard: int | None = None, device: str | None = None) -> ApiModel:
    """Run worker `name` on `raw`; its result, or WorkerError for what retrying would not fix."""
    import psycopg

    from embedops.store.pgvector import DatabaseUnavailable

    config = parse_config(name, raw, shard=shard, device=device)
    try:
        return _module(name).run(config, dsn=dsn)
    except (ValueError, ModelNotFound, *_PATH_ERRORS) as err:
        raise WorkerError("InvalidInput", [_message(err)], EXIT_INVALID) from err
    except (DatabaseUnavailable, psycopg.OperationalError) as err:  # unreachable, or lost mid-step
        raise WorkerError("DatabaseUnavailable", [str(err)], EXIT_TRANSIENT) from err


# A path that is missing, of the wrong kind or unreadable: the spec or the workspace must change.
_PATH_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def _message(err: Exception) -> str:
    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.filename}: {err.strerror}"
    return str(err)
