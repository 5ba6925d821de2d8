"""The publish worker: after a build, gate the candidate version, cut over, pin and prune.

This is the step between "a version is built" and "applications see it", the same in a
cluster (a Job after the embedding Job) and in local mode:

1. The candidate (the version the embed step returned) is probed. A Ready candidate that
   passes the gate is cut over, unless the index is pinned; a Live one is only re-probed.
   A Retired candidate is one a person rolled back from: it is neither probed nor cut over
   again, and the note says so.
2. `pinnedVersion`, when set, is made the live version (a declarative rollback).
3. Versions beyond `keepVersions` are dropped (the live one is always kept).

The result carries the catalog's versions, so the caller can write them into status
without a database connection of its own.
"""

from __future__ import annotations

import logging

from embedops import steps
from embedops.api.conditions import Reason
from embedops.api.index import VersionState, live_version
from embedops.results import PublishResult as Result
from embedops.store import pgvector
from embedops.workers import probe

log = logging.getLogger(__name__)


def run(config: steps.PublishStep, *, dsn: str | None = None) -> Result:
    target = config.target
    with pgvector.connect(dsn) as conn:
        if config.owner is not None:  # a cut-over replaces the view: only the target's owner may
            pgvector.claim_target(conn, target, config.owner)
        state = pgvector.version_record(conn, target, config.version).state
        was_pinned = pgvector.pinned(conn, target)
    result = Result(candidate=config.version)
    if state == VersionState.RETIRED and was_pinned is not None and config.pinned_version is None:
        state = VersionState.READY  # retired by the pin just lifted, not by a rollback: it may serve again
    if state == VersionState.RETIRED:
        result.note_reason = Reason.ROLLED_BACK
        result.note = f"v{config.version} holds this model but was rolled back from; not cut over again"
    else:
        result.probe = probe.run(
            steps.ProbeStep(
                target=target,
                version=config.version,
                model=config.model,
                probe=config.probe,
                ann=config.ann,
                dataset_dir=config.dataset_dir,
                promote=state == VersionState.READY and config.pinned_version is None,
                catch_up=config.catch_up,
                device=config.device,
            ),
            dsn=dsn,
        )
        if state == VersionState.READY and not result.probe.passed:
            result.note_reason = Reason.GATE_FAILED
            result.note = f"v{config.version} not cut over: {result.probe.reason}"
        elif state == VersionState.READY and config.pinned_version is not None:
            result.note_reason = Reason.PINNED
            result.note = f"v{config.version} passed the gate but the index is pinned to v{config.pinned_version}"
    with pgvector.connect(dsn) as conn:
        if config.pinned_version is not None:
            live = pgvector.live_version(conn, target)
            if live is None or live.version != config.pinned_version:
                pgvector.cutover(conn, target, config.pinned_version)
                log.info("%s.%s pinned to v%d", target.schema_name, target.name, config.pinned_version)
        pgvector.record_pin(conn, target, config.pinned_version)
        # The current model's version stays while a pin serves another: unpinning serves it again.
        result.dropped = pgvector.apply_retention(conn, target, config.keep_versions, protect=config.version)
        result.versions = pgvector.versions(conn, target)
    live_v = live_version(result.versions)
    result.live_version = live_v.version if live_v else None
    return result
