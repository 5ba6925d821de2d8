"""Fault injection: the embed and sync workers killed with SIGKILL at random points, and the database stopped
under the embed worker.

Each run is the real worker command in its own process, as in a pod. After every kill the version
holds exactly the rows its shard progress says were committed (no row lost or written twice), and
the next run resumes into the same version until every row is in; a sync killed anywhere leaves the
catalog's row count true, and the next one leaves exactly the table's rows with their hashes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

ROWS = 1500


def _docs(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.docs (id int PRIMARY KEY, text text NOT NULL)")
        with conn.cursor().copy("COPY public.docs (id, text) FROM STDIN") as copy:
            for i in range(ROWS):
                copy.write_row((i, f"document {i} about {'abcdefgh'[i % 8]} and {i % 97} things"))


def _worker(dsn: str, model: Path, result: Path, step: str = "embed") -> subprocess.Popen:
    config = {
        "target": {"name": "docs_index"},
        "model": str(model),
        "embedding": {"batchSize": 32, "commitRows": 50},
        "device": "cpu",
    }
    if step == "embed":
        config["source"] = {"table": {"table": "docs"}}
    else:
        config |= {"table": {"table": "docs"}, "version": 1}
    env = {**os.environ, "EMBEDOPS_DSN": dsn}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "embedops.cli",
            "worker",
            step,
            "--spec-json",
            json.dumps(config),
            "--result",
            str(result),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _committed(dsn: str) -> tuple[int, int]:
    """(rows in the version table, rows its progress records say are committed); (0, 0) before it exists."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('public.docs_index_v1')").fetchone()[0] is None:
            return 0, 0
        table = conn.execute("SELECT count(*) FROM public.docs_index_v1").fetchone()[0]
        progress = conn.execute("SELECT coalesce(sum(row_count), 0) FROM embedops.index_progress").fetchone()[0]
    return table, progress


def _wait_for_rows(dsn: str, proc: subprocess.Popen, at_least: int, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if _committed(dsn)[1] >= at_least:
            return True
        time.sleep(0.02)
    return False


def test_sigkill_at_random_points_never_loses_or_repeats_a_row(dsn, tiny_model_dir, tmp_path):
    _docs(dsn)
    rng = random.Random(7)
    kills = 0
    for point in sorted(rng.sample(range(100, ROWS - 200), 3)):
        proc = _worker(dsn, tiny_model_dir, tmp_path / "result")
        if not _wait_for_rows(dsn, proc, point):
            proc.wait()
            break  # it finished before this point (a fast machine): nothing left to interrupt
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        table, progress = _committed(dsn)
        assert table == progress and point <= table < ROWS, (point, table, progress)
    assert kills >= 2, "the worker finished too fast to be interrupted"
    proc = _worker(dsn, tiny_model_dir, tmp_path / "result")
    assert proc.wait() == 0, proc.stderr.read()
    result = json.loads((tmp_path / "result").read_text())
    assert (result["version"], result["state"], result["rows"], result["resumed"]) == (1, "Ready", ROWS, True)
    with psycopg.connect(dsn) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM public.docs_index_v1 ORDER BY id")]
    assert ids == list(range(ROWS))


def _synced(dsn: str) -> tuple[int, int, int]:
    """(rows in v1, rows the catalog counts for it, rows a sync changed in it)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        stored = conn.execute("SELECT count(*) FROM public.docs_index_v1").fetchone()[0]
        counted, changed = conn.execute("SELECT row_count, changed_rows FROM embedops.index_versions").fetchone()
    return stored, counted, changed


def test_a_sync_killed_at_random_points_leaves_exactly_the_tables_rows(dsn, tiny_model_dir, tmp_path):
    from embedops.store.sources import content_hash

    _docs(dsn)
    assert _worker(dsn, tiny_model_dir, tmp_path / "built").wait() == 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE public.docs SET text = text || ' (edited)' WHERE id % 3 = 0")  # 500 rows
        conn.execute("INSERT INTO public.docs SELECT g, 'new document ' || g FROM generate_series(5000, 5199) g")
        conn.execute("DELETE FROM public.docs WHERE id % 10 = 1")  # 150 rows
    rng = random.Random(11)
    kills = 0
    for point in sorted(rng.sample(range(50, 800), 3)):
        proc = _worker(dsn, tiny_model_dir, tmp_path / "result", "sync")
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and _synced(dsn)[2] < point:
            time.sleep(0.02)
        if proc.poll() is not None:
            break  # it finished first: nothing left to interrupt
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        stored, counted, _ = _synced(dsn)
        assert stored == counted, (point, stored, counted)  # each chunk committed whole, with its count
    assert kills >= 2, "the sync finished too fast to be interrupted"
    proc = _worker(dsn, tiny_model_dir, tmp_path / "result", "sync")
    assert proc.wait() == 0, proc.stderr.read()
    assert json.loads((tmp_path / "result").read_text())["pending"] == 0
    with psycopg.connect(dsn) as conn:
        want = {i: content_hash(t) for i, t in conn.execute("SELECT id, text FROM public.docs")}
        have = dict(conn.execute("SELECT id, content_hash FROM public.docs_index_v1"))
    assert have == want and _synced(dsn)[:2] == (len(want), len(want))


def test_the_database_stopped_mid_embed_fails_transiently_and_a_rerun_completes(tmp_path, tiny_model_dir):
    from embedops.store import embedded

    server = embedded.start(tmp_path / "pg", keep=True)
    try:
        dsn = server.dsn
        _docs(dsn)
        proc = _worker(dsn, tiny_model_dir, tmp_path / "result")
        assert _wait_for_rows(dsn, proc, ROWS // 4)
        server.stop()  # the database goes away mid-embed
        assert proc.wait(timeout=120) == 3, proc.stderr.read()  # transient: the Job retries
        error = json.loads((tmp_path / "result").read_text())["error"]
        assert error["reason"] == "DatabaseUnavailable"
        server = embedded.start(tmp_path / "pg", keep=True)
        proc = _worker(server.dsn, tiny_model_dir, tmp_path / "result")
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
        result = json.loads((tmp_path / "result").read_text())
        assert (result["state"], result["rows"], result["resumed"]) == ("Ready", ROWS, True)
        assert _committed(server.dsn) == (ROWS, ROWS)
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _no_stray_workers():
    yield
    subprocess.run(["pkill", "-9", "-f", "embedops.cli worker embed --spec-json .*docs_index"], check=False)
