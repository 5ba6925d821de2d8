"""The Jobs a resource owns, observed with as few requests as their changes allow.

The Jobs themselves come from the watch cache (embedops.handlers.memory). Their pods and logs do
not: the operator watches no pods (its RBAC lists them, and a watch of every pod of the
namespace would cost more than it saves). What the planner needs from pods changes only when the
Job's status does (a pod started, finished or failed), so a Job's pods are listed again only
when its status changed, and never again once it finished; two things do not show in the Job
and are looked at on a timer instead:

- why a pending pod cannot start (unschedulable, an image that cannot be pulled), first after
  `recheck_seconds`, then less and less often while it stays so;
- a running pod's progress lines (its log tail), read when the Job starts running and then at
  most every `progress_seconds`.

`observe` returns the observations and when the next of these looks is due, which the executor
turns into the resource's next timer.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from embedops.handlers import kube
from embedops.handlers import observe as decide
from embedops.reconcile import ObservedJob

PROGRESS_SECONDS = 120.0  # a running Job's log tail is read at most this often
MAX_RECHECK_SECONDS = 600.0
_MAX_JOBS = 4096  # Jobs remembered; a Job that is gone is forgotten at its DELETED event anyway


@dataclass(frozen=True)
class _Pods:
    status: str  # the Job's status (JSON) when its pods were listed
    pods: list[dict[str, Any]]
    recheck_at: float | None  # a pending pod: when to list them again although the Job did not change
    backoff: float


@dataclass(frozen=True)
class _Tail:
    read_at: float
    text: str | None


class JobObserver:
    def __init__(
        self,
        recheck_seconds: float,
        progress_seconds: float = PROGRESS_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        list_pods: Callable[[str, str], list[dict[str, Any]]] | None = None,
        read_tail: Callable[[str, str], str | None] | None = None,
        list_trainjob_pods: Callable[[str, str], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.recheck_seconds, self.progress_seconds, self._clock = recheck_seconds, progress_seconds, clock
        self._list_pods = list_pods or kube.job_pods
        self._list_trainjob_pods = list_trainjob_pods or kube.trainjob_pods
        self._read_tail = read_tail or kube.log_tail
        self._lock = threading.Lock()
        self._pods: OrderedDict[str, _Pods] = OrderedDict()  # Job uid ->
        self._tails: OrderedDict[str, _Tail] = OrderedDict()

    def observe(self, jobs: list[dict[str, Any]]) -> tuple[dict[str, ObservedJob], float | None]:
        """The Jobs as the planner reads them, and in how many seconds one of them needs a look (None: never)."""
        now = self._clock()
        out: dict[str, ObservedJob] = {}
        looks: list[float] = []
        for job in jobs:
            pods, recheck = self._pods_of(job, now)
            if job.get("kind") == "TrainJob":  # a Kubeflow Trainer TrainJob: no progress lines read from its pods
                out[job["metadata"]["name"]] = decide.observe_trainjob(job, pods)
                looks += [recheck - now] if recheck is not None else []
                continue
            tail, progress_due = self._tail_of(job, pods, now)
            out[job["metadata"]["name"]] = decide.observe_job(job, pods, tail)
            looks += [t - now for t in (recheck, progress_due) if t is not None]
        return out, (max(min(looks), 0.0) if looks else None)

    def forget(self, job_uid: str) -> None:
        with self._lock:
            self._pods.pop(job_uid, None)
            self._tails.pop(job_uid, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pods) + len(self._tails)

    def _pods_of(self, job: dict[str, Any], now: float) -> tuple[list[dict[str, Any]], float | None]:
        if not decide.has_pods(job):
            return [], None
        uid, status = job["metadata"].get("uid", job["metadata"]["name"]), json.dumps(job.get("status"), sort_keys=True)
        with self._lock:
            seen = self._pods.get(uid)
        if seen is not None and seen.status == status and (seen.recheck_at is None or now < seen.recheck_at):
            return seen.pods, seen.recheck_at
        lister = self._list_trainjob_pods if job.get("kind") == "TrainJob" else self._list_pods
        pods = lister(job["metadata"]["namespace"], job["metadata"]["name"])
        recheck, backoff = None, self.recheck_seconds
        if decide.job_state(job, pods) == "Pending":
            if seen is not None and seen.status == status:  # still pending since the last look
                backoff = min(seen.backoff * 2, MAX_RECHECK_SECONDS)
            recheck = now + backoff
        self._remember(self._pods, uid, _Pods(status, pods, recheck, backoff))
        return pods, recheck

    def _tail_of(self, job: dict[str, Any], pods: list[dict[str, Any]], now: float) -> tuple[str | None, float | None]:
        running = decide.running_pod(pods)
        if running is None or decide.job_state(job, pods) != "Running":
            return None, None
        uid = job["metadata"].get("uid", job["metadata"]["name"])
        with self._lock:
            seen = self._tails.get(uid)
        if seen is None or now - seen.read_at >= self.progress_seconds:
            seen = _Tail(now, self._read_tail(job["metadata"]["namespace"], running["metadata"]["name"]))
            self._remember(self._tails, uid, seen)
        return seen.text, seen.read_at + self.progress_seconds

    def _remember(self, memo: OrderedDict[str, Any], uid: str, value: Any) -> None:
        with self._lock:
            memo[uid] = value
            memo.move_to_end(uid)
            while len(memo) > _MAX_JOBS:
                memo.popitem(last=False)
