"""Progress reporting for long steps: a bar on a terminal, a log line every few seconds in a pod.

In a pod each line ends in `progress={...}`, a JSON document the operator reads from the
running pod's log into the resource's `status.job.progress` (embedops.handlers.kube), as
Kubeflow Trainer's `trainerStatus` shows a training's progress: how far, how fast, how long
still, and for training the last loss (`Task.extra`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("embedops.progress")

_enabled_bars: bool | None = None


def use_bars(enabled: bool | None) -> None:
    """Force bars on or off (None: bars when stderr is a terminal)."""
    global _enabled_bars
    _enabled_bars = enabled


def _bars() -> bool:
    return sys.stderr.isatty() if _enabled_bars is None else _enabled_bars


MARKER = "progress="


class Task:
    """A unit of work with a known or unknown total; call advance(n) as items finish."""

    def __init__(self, description: str, total: int | None, bar, log_every: float = 10.0):
        self.description = description
        self.total = total
        self.done = 0
        self.extra: dict[str, float] = {}  # more to report, e.g. {"loss": 0.41}
        self._bar = bar
        self._start = time.monotonic()
        self._last_log = self._start
        self._log_every = log_every

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self._start
        return self.done / elapsed if elapsed > 0 else 0.0

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            progress, task_id = self._bar
            progress.update(task_id, advance=n)
        elif time.monotonic() - self._last_log >= self._log_every:
            self._last_log = time.monotonic()
            total = f"/{self.total}" if self.total else ""
            doc = self.report()
            log.info(
                "%s: %d%s (%.1f/s) %s%s",
                self.description,
                self.done,
                total,
                doc["rate"],
                MARKER,
                json.dumps(doc, separators=(",", ":")),
            )

    def report(self) -> dict[str, object]:
        """Where the task stands, as status.job.progress shows it."""
        rate = self.rate
        doc: dict[str, object] = {"task": self.description, "done": self.done, "rate": round(rate, 3)}
        if self.total:
            doc["total"] = self.total
            if rate > 0:
                doc["etaSeconds"] = round(max(self.total - self.done, 0) / rate)
        return {**doc, **{k: round(v, 6) for k, v in self.extra.items()}}


@contextmanager
def task(description: str, total: int | None = None) -> Iterator[Task]:
    """Report progress of one step; logs a summary line when it ends."""
    if _bars():
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
            console=None,
        ) as progress:
            t = Task(description, total, (progress, progress.add_task(description, total=total)))
            yield t
    else:
        t = Task(description, total, None)
        yield t
    log.info("%s: done, %d items in %.1fs", description, t.done, time.monotonic() - t._start)
