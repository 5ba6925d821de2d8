"""The planner's sync of an index with its source table: on schedule, on demand, while a new version builds,
before every cut-over; its results in status; its failures and stale IVFFlat lists as Degraded."""

from __future__ import annotations

import datetime as dt

from embedops.reconcile import Observed, ObservedJob, next_due, plan
from tests.test_reconcile import NOW, SETTINGS, drive_to_serving, ready

TABLE_SPEC = {
    "model": {"name": "all-MiniLM-L6-v2"},
    "source": {"table": {"table": "docs", "titleColumn": "title"}},
    "target": {"name": "docs"},
    "database": {"dsnSecretRef": {"name": "pg"}},
    "probe": {"path": "probe.jsonl"},
    "drift": {"enabled": False},
}


def sync_result(version: int = 1, **overrides) -> dict:
    return {
        "version": version,
        "state": "Live",
        "syncedAt": "2026-11-25T12:05:00Z",
        "found": 7,
        "inserted": 2,
        "updated": 3,
        "deleted": 2,
        "rows": 10,
        "changedFraction": 0.7,
        "diffSeconds": 0.01,
        "seconds": 3.5,
        "skippedRows": 1,
        "skippedIds": ["12"],
        **overrides,
    } | {"rows": overrides.get("rows", 10)}


def serving(spec: dict | None = None) -> tuple[dict, list]:
    """Serving v1, built at 11:50 and caught up with its table by its cut-over at 12:00."""
    ix, created = drive_to_serving(spec or TABLE_SPEC, {})
    ix["status"]["versions"][0]["syncedAt"] = "2026-11-25T12:00:00Z"
    return ix, created


def test_the_publish_step_catches_a_table_index_up_before_its_cut_over():
    _, (embed, publish) = serving()
    assert publish.config.catch_up is not None
    assert publish.config.catch_up.table.title_column == "title"
    assert publish.config.catch_up.embedding == embed.config.embedding


def test_the_live_version_is_synced_on_schedule_and_the_result_lands_in_status():
    ix, _ = serving()
    assert plan(Observed(ix, now=NOW + dt.timedelta(minutes=4)), SETTINGS).create == []
    later = NOW + dt.timedelta(minutes=5)
    (sync,) = plan(Observed(ix, now=later), SETTINGS).create
    config = sync.config
    assert (sync.step, config.version, config.model, config.table.table) == ("sync", 1, "/m", "docs")
    assert sync.ttl_seconds == SETTINGS.periodic_job_ttl_seconds
    assert config.owner is not None and config.owner.name == "ix"
    jobs = {sync.name: ObservedJob(sync.name, "Succeeded", {0: sync_result()}, step="sync")}
    p = plan(Observed(ix, jobs=jobs, now=later), SETTINGS)
    assert p.create == []
    got = p.status.sync
    assert (got.version, got.rows_embedded, got.rows_deleted, got.pending_rows, got.skipped_rows) == (1, 5, 2, 0, 1)
    assert got.last_sync_time == "2026-11-25T12:05:00Z" and got.lag_seconds == 3.5
    assert p.status.rows == 10 and p.status.versions[0].rows == 10
    assert ready(p) == ("True", "Serving")
    ix["status"] = p.status.to_wire()
    # The next one is due five minutes after the last sync started.
    assert next_due(ix, later) == dt.datetime(2026, 11, 25, 12, 10, tzinfo=dt.UTC)


def test_a_sync_can_be_asked_for_and_zero_turns_the_schedule_off():
    spec = {**TABLE_SPEC, "sync": {"intervalMinutes": 0}}
    ix, _ = serving(spec)
    assert [j.step for j in plan(Observed(ix, now=NOW + dt.timedelta(days=1)), SETTINGS).create] == ["probe"]
    assert next_due(ix, NOW) == NOW.replace(minute=30)  # the probe's, not a sync's
    ix["metadata"]["annotations"] = {"embedops.dev/sync": "2026-11-25T12:01:00Z"}
    (asked,) = plan(Observed(ix, now=NOW + dt.timedelta(minutes=2)), SETTINGS).create
    assert asked.step == "sync"
    ix["status"]["sync"] = {
        "version": 1,
        "lastSyncTime": "2026-11-25T12:01:30Z",
        "rowsEmbedded": 0,
        "rowsDeleted": 0,
        "lagSeconds": 1.0,
    }
    assert plan(Observed(ix, now=NOW + dt.timedelta(minutes=3)), SETTINGS).create == []


def test_a_dataset_source_is_never_synced():
    from tests.test_reconcile import INDEX_SPEC, _serving_index

    ix, related = _serving_index({**INDEX_SPEC, "drift": {"enabled": False}})
    assert [
        j.step for j in plan(Observed(ix, related=related, now=NOW + dt.timedelta(minutes=6)), SETTINGS).create
    ] == []


def test_the_live_version_keeps_syncing_while_a_new_version_builds():
    ix, _ = serving()
    ix["metadata"]["generation"] = 2
    ix["spec"] = {**TABLE_SPEC, "model": {"name": "all-mpnet-base-v2"}}
    later = NOW + dt.timedelta(minutes=11)
    p = plan(Observed(ix, now=later), SETTINGS)
    assert sorted(j.step for j in p.create) == ["embed", "sync"]
    assert p.status.condition("Progressing").reason == "Embedding"
    embed = next(j for j in p.create if j.step == "embed")
    sync = next(j for j in p.create if j.step == "sync")
    assert sync.config.version == 1 and sync.config.model == "/m"  # the live version, with its own model
    ix["status"] = p.status.to_wire()
    jobs = {
        embed.name: ObservedJob(embed.name, "Running", step="embed"),
        sync.name: ObservedJob(sync.name, "Succeeded", {0: sync_result()}, step="sync"),
    }
    p = plan(Observed(ix, jobs=jobs, now=later), SETTINGS)
    assert p.create == [] and p.status.sync.rows_embedded == 5 and p.status.rows == 10
    assert p.status.condition("Progressing").reason == "Embedding" and ready(p) == ("True", "Serving")


def test_a_failed_sync_degrades_the_index_and_stale_ivfflat_lists_say_so():
    ix, _ = serving()
    later = NOW + dt.timedelta(minutes=11)
    (sync,) = plan(Observed(ix, now=later), SETTINGS).create
    failed = {
        sync.name: ObservedJob(
            sync.name, "Failed", error="InvalidInput: source.table: table public.docs does not exist"
        )
    }
    p = plan(Observed(ix, jobs=failed, now=later), SETTINGS)
    degraded = p.status.condition("Degraded")
    assert (degraded.status, degraded.reason) == ("True", "SyncFailed") and ready(p) == ("True", "Serving")
    assert "does not exist" in degraded.message

    ivf = {**TABLE_SPEC, "ann": {"method": "ivfflat"}}
    ix, _ = serving(ivf)
    (sync,) = plan(Observed(ix, now=later), SETTINGS).create
    done = {sync.name: ObservedJob(sync.name, "Succeeded", {0: sync_result(changedFraction=0.3)}, step="sync")}
    p = plan(Observed(ix, jobs=done, now=later), SETTINGS)
    degraded = p.status.condition("Degraded")
    assert (degraded.status, degraded.reason) == ("True", "AnnIndexStale") and "30%" in degraded.message
    assert ready(p) == ("True", "Serving") and p.status.phase == "Degraded"
    # HNSW takes changes as they come: the same share says nothing.
    ix, _ = serving()
    (sync,) = plan(Observed(ix, now=later), SETTINGS).create
    done = {sync.name: ObservedJob(sync.name, "Succeeded", {0: sync_result(changedFraction=0.3)}, step="sync")}
    assert plan(Observed(ix, jobs=done, now=later), SETTINGS).status.condition("Degraded").status == "False"


def test_stale_ivfflat_lists_build_a_new_version_once_when_asked_to():
    spec = {**TABLE_SPEC, "ann": {"method": "ivfflat"}, "sync": {"rebuildAfterChangedFraction": 0.25}}
    ix, (embed_v1, _) = serving(spec)
    later = NOW + dt.timedelta(minutes=5)
    (sync,) = plan(Observed(ix, now=later), SETTINGS).create
    done = {sync.name: ObservedJob(sync.name, "Succeeded", {0: sync_result(changedFraction=0.3)}, step="sync")}
    p = plan(Observed(ix, jobs=done, now=later), SETTINGS)
    assert p.status.condition("Degraded").reason == "AnnIndexStale" and "a new version is built" in (
        p.status.condition("Degraded").message
    )
    ix["status"] = p.status.to_wire()
    (rebuild,) = [j for j in plan(Observed(ix, now=later), SETTINGS).create if j.step == "embed"]
    assert rebuild.name != embed_v1.name and rebuild.config.embeddings_key != embed_v1.config.embeddings_key
    p = plan(Observed(ix, now=later), SETTINGS)
    assert p.status.ann_rebuild_of == 1
    # Once v2 (the rebuild) serves and syncs clean, its embed step keeps its name: nothing is built again.
    ix["status"] = p.status.to_wire()
    v2 = {**ix["status"]["versions"][0], "version": 2, "table": "docs_v2"}
    ix["status"]["versions"] = [{**v2, "state": "Live"}, {**ix["status"]["versions"][0], "state": "Retired"}]
    ix["status"]["liveVersion"] = 2
    ix["status"]["sync"] = {**ix["status"]["sync"], "version": 2, "changedFraction": 0.01}
    again = [j for j in plan(Observed(ix, now=later), SETTINGS).create if j.step == "embed"]
    assert [j.name for j in again] == [rebuild.name]  # the same step (its Job reports v2), not a third build
    # Without rebuildAfterChangedFraction the same share only says so.
    ix, _ = serving({**TABLE_SPEC, "ann": {"method": "ivfflat"}})
    (sync,) = plan(Observed(ix, now=later), SETTINGS).create
    done = {sync.name: ObservedJob(sync.name, "Succeeded", {0: sync_result(changedFraction=0.3)}, step="sync")}
    ix["status"] = plan(Observed(ix, jobs=done, now=later), SETTINGS).status.to_wire()
    assert [j.step for j in plan(Observed(ix, now=later), SETTINGS).create] == []
