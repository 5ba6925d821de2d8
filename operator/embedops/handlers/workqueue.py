"""The resources waiting for a reconcile, each at most once, with the time it is wanted.

client-go's work queue, with its delays, for the operator's threads: every trigger (a watch
event, a Job's change, a dependency becoming Ready, a due probe, a retry) adds a key; a key
already waiting keeps the earlier of its two times, so a burst of events (two shards of one Job
finishing, say) becomes one reconcile; a key is never worked on by two threads at once, and
one added while it is being worked on waits for that run to end. The work function says when
its key wants the next look, so timers are entries here, not threads or a sweep.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable

log = logging.getLogger(__name__)


class WorkQueue:
    """Keys for `work(key) -> seconds until its next look (None: none)`, run by `workers` threads."""

    def __init__(
        self,
        work: Callable[[Hashable], float | None],
        workers: int = 4,
        clock: Callable[[], float] = time.monotonic,
        name: str = "embedops-work",
    ) -> None:
        self._work, self._workers, self._clock, self._name = work, workers, clock, name
        self._cond = threading.Condition()
        self._due: dict[Hashable, float] = {}  # waiting key -> when it is wanted
        self._heap: list[tuple[float, int, Hashable]] = []  # (when, tiebreak, key); stale entries skipped
        self._busy: set[Hashable] = set()
        self._again: dict[Hashable, float] = {}  # added while busy -> when
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._stopped = False

    def add(self, key: Hashable, delay: float = 0.0) -> None:
        """Reconcile `key` in `delay` seconds, or sooner if it is wanted sooner already."""
        when = self._clock() + max(delay, 0.0)
        with self._cond:
            if key in self._busy:
                self._again[key] = min(when, self._again.get(key, when))
                return
            self._push(key, when)

    def forget(self, key: Hashable) -> None:
        """No more looks at `key` (its resource is gone); a run in progress ends as it would."""
        with self._cond:
            self._due.pop(key, None)
            self._again.pop(key, None)

    def __len__(self) -> int:
        with self._cond:
            return len(self._due) + len(self._again)

    def start(self) -> None:
        self._stopped = False
        for i in range(self._workers):
            thread = threading.Thread(target=self._run, name=f"{self._name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()

    def _push(self, key: Hashable, when: float) -> None:
        if when < self._due.get(key, float("inf")):
            self._due[key] = when
            heapq.heappush(self._heap, (when, next(self._seq), key))
            self._cond.notify()

    def _next(self) -> Hashable | None:
        """The next key that is due, waiting for it; None once stopped."""
        with self._cond:
            while not self._stopped:
                while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                    heapq.heappop(self._heap)  # superseded by an earlier time, or forgotten
                if not self._heap:
                    self._cond.wait()
                    continue
                when, _, key = self._heap[0]
                wait = when - self._clock()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                del self._due[key]
                self._busy.add(key)
                return key
            return None

    def _run(self) -> None:
        while (key := self._next()) is not None:
            delay = None
            try:
                delay = self._work(key)
            except Exception:  # the work function logs its own failures; this keeps the thread alive
                log.exception("work on %s failed", key)
            with self._cond:
                self._busy.discard(key)
                again = self._again.pop(key, None)
                if delay is not None:
                    again = min(again if again is not None else float("inf"), self._clock() + delay)
                if again is not None:
                    self._push(key, again)
