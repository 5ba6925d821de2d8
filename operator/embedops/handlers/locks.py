"""One lock per resource, kept only while it is held or waited for.

Two reconciles of one resource must not interleave (both would create its Job, both would post
its event). A map from every resource ever seen to its lock grows with every resource created
and deleted over the operator's life; this one holds an entry only while some thread holds or
waits for it, so its size is bounded by the threads, whatever the resources do.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager


class KeyedLocks:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[Hashable, tuple[threading.Lock, list[int]]] = {}  # key -> (its lock, [holders + waiters])

    @contextmanager
    def hold(self, key: Hashable) -> Iterator[None]:
        with self._lock:
            lock, users = self._held.setdefault(key, (threading.Lock(), [0]))
            users[0] += 1
        try:
            with lock:
                yield
        finally:
            with self._lock:
                users[0] -= 1
                if users[0] == 0:
                    del self._held[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)
