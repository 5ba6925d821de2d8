"""What a sync costs against a full rebuild: an index that follows its table embeds only what changed.

On CPU (this machine's embedded Postgres; a tiny random-weight model, so that the figures measure
the sync and not the model):

    python benchmarks/sync_throughput.py                       # 200,000 rows, 1 % changed
    python benchmarks/sync_throughput.py --diff-rows 1000000   # and the diff alone over 1M rows

On a GPU machine: `python benchmarks/sync_throughput.py --shape minilm --rows 1000000 --device cuda`.

Steps, each timed in this process against one embedded Postgres 18 + pgvector server:

  1. a table of `--rows` documents (bigint ids, ~200 characters of text each);
  2. full build: `embedops worker embed` (embedops.workers.embed.run) into a new version, the HNSW
     index included, and cut over: what a rebuild of the table costs;
  3. `--changed` of the rows changed: half updated (the embedded column), a quarter inserted, a
     quarter deleted, plus as many updates of a column that is not embedded (they must cost nothing);
  4. sync: `embedops worker sync` (embedops.workers.sync.run), model loading included: rows
     embedded (must equal the rows changed) and seconds, as a share of the full build;
  5. the diff query alone (store.sync.diff), on the synced version (nothing to find) and, with
     `--diff-rows`, on a version table of that many rows built in SQL with 0.75 % of the rows
     changed or new and 0.25 % gone.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from embed_throughput import SHAPES, build_model  # same folder

SHAPES.setdefault("tiny", (32, 2, 2, 64, "mean"))
TEXT = "repeat(md5(g::text) || ' ', 6)"  # ~200 characters of text per row


def _table(conn, name: str, rows: int) -> None:
    conn.execute(f"DROP TABLE IF EXISTS public.{name}")
    conn.execute(f"CREATE TABLE public.{name} (id bigint PRIMARY KEY, body text NOT NULL, views int DEFAULT 0)")
    conn.execute(
        f"INSERT INTO public.{name} (id, body) SELECT g, {TEXT} FROM generate_series(1, %s::bigint) g", (rows,)
    )
    conn.execute(f"ANALYZE public.{name}")


def _change(conn, name: str, rows: int, share: float) -> int:
    """Change `share` of the rows (half updated, a quarter inserted, a quarter deleted); the rows changed."""
    n = max(4, int(rows * share))
    updated, inserted, deleted = n // 2, n // 4, n - n // 2 - n // 4
    step = rows // updated
    done = conn.execute(f"UPDATE public.{name} SET body = body || ' edited' WHERE id %% %s = 0", (step,)).rowcount
    conn.execute(f"UPDATE public.{name} SET views = 1 WHERE id %% %s = 1", (step,))  # not embedded
    done += conn.execute(
        f"INSERT INTO public.{name} (id, body) SELECT g, {TEXT} FROM generate_series(%s::bigint, %s::bigint) g",
        (rows + 1, rows + inserted),
    ).rowcount
    done += conn.execute(
        f"DELETE FROM public.{name} WHERE id %% %s = 2 AND id <= %s AND body NOT LIKE '%%edited'",
        (rows // deleted, rows),
    ).rowcount
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--changed", type=float, default=0.01, help="share of the rows changed (default 0.01)")
    parser.add_argument("--shape", choices=["bundled", *SHAPES], default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--diff-rows", type=int, default=0, help="also time the diff alone over this many rows")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import psycopg

    from embedops import steps
    from embedops.store import embedded, pgvector, sources
    from embedops.store import sync as store_sync
    from embedops.workers import embed
    from embedops.workers import sync as sync_worker
    from embedops.workers.readers.rows import BLANK

    print(f"host: {platform.node()} ({os.cpu_count()} CPUs), {platform.python_version()}, shape {args.shape}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = build_model(args.shape, work, 128)
        server = embedded.start(work / "pg")
        try:
            with psycopg.connect(server.dsn, autocommit=True) as conn:
                _table(conn, "docs", args.rows)
            table = {"table": "docs", "textColumn": "body"}
            embedding = {"batchSize": args.batch_size, "commitRows": 4096, "maxSeqLength": 128}
            config = steps.EmbedStep.model_validate(
                {
                    "target": {"name": "docs_index"},
                    "source": {"table": table},
                    "model": model,
                    "embedding": embedding,
                    "device": args.device,
                }
            )
            started = time.perf_counter()
            built = embed.run(config, dsn=server.dsn)
            with pgvector.connect(server.dsn) as conn:
                pgvector.cutover(conn, config.target, built.version)
            build_seconds = time.perf_counter() - started
            print(f"full build:  {built.rows:>9,} rows embedded in {build_seconds:8.2f} s (HNSW index included)")

            with psycopg.connect(server.dsn, autocommit=True) as conn:
                changed = _change(conn, "docs", args.rows, args.changed)
            step = steps.SyncStep.model_validate(
                {
                    "target": {"name": "docs_index"},
                    "version": built.version,
                    "model": model,
                    "table": table,
                    "embedding": embedding,
                    "device": args.device,
                }
            )
            started = time.perf_counter()
            result = sync_worker.run(step, dsn=server.dsn)
            sync_seconds = time.perf_counter() - started
            print(
                f"sync:        {result.embedded + result.deleted:>9,} rows changed ({result.embedded:,} embedded, "
                f"{result.deleted:,} deleted; {changed:,} changed in the table) in {sync_seconds:8.2f} s = "
                f"{sync_seconds / build_seconds:.1%} of the full build; diff {result.diff_seconds:.2f} s"
            )
            print(
                f"exact:       rows embedded + deleted == rows changed: {result.embedded + result.deleted == changed}"
            )
            with pgvector.connect(server.dsn) as conn:
                rec = pgvector.version_record(conn, config.target, built.version)
                src = step.table
                started = time.perf_counter()
                found = store_sync.diff(conn, src, rec, blank=BLANK)
                print(
                    f"diff alone:  {sum(found):>9,} rows found over {rec.rows:,} rows in "
                    f"{time.perf_counter() - started:8.2f} s (after the sync)"
                )
            if args.diff_rows:
                _diff_only(server.dsn, args.diff_rows, sources, store_sync, pgvector, BLANK)
        finally:
            server.stop()


def _diff_only(dsn: str, rows: int, sources, store_sync, pgvector, blank: str) -> None:
    """The diff over `rows` rows: a version table of (id, hash) made in SQL (a 4-dimension vector per row), then
    0.75 % of the source rows changed or new and 0.25 % gone."""
    import psycopg

    from embedops.api.index import TableSource, Target
    from embedops.store import catalog

    with psycopg.connect(dsn, autocommit=True) as conn:
        _table(conn, "big", rows)
    target = Target.model_validate({"name": "big_index"})
    src = TableSource.model_validate({"table": "big", "textColumn": "body"})
    with pgvector.connect(dsn) as conn:
        build = catalog.Build(
            model="none",
            model_fingerprint="none",
            dimensions=4,
            vector_type="vector",
            metric="cosine",
            id_type="bigint",
            source=sources.describe(src),
            shards=1,
        )
        rec, _ = pgvector.begin_build(conn, target, build)
        conn.execute(
            f"INSERT INTO public.{rec.table} (id, embedding, content_hash) "
            f"SELECT id, '[1,0,0,0]', hash FROM {sources.documents(src, blank).as_string(conn)}"
        )
        conn.execute(f"ANALYZE public.{rec.table}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        n = rows // 100
        conn.execute("UPDATE public.big SET body = body || ' x' WHERE id %% %s = 0", (200,))  # 0.5 %
        conn.execute(
            f"INSERT INTO public.big (id, body) SELECT g, {TEXT} FROM generate_series(%s::bigint, %s::bigint) g",
            (rows + 1, rows + n // 4),
        )
        conn.execute("DELETE FROM public.big WHERE id %% %s = 1 AND id <= %s", (400, rows))  # 0.25 %
        conn.execute("ANALYZE public.big")
    # The reference: the plain anti-joins on md5(text) the issue timed, on the same tables, right after.
    plain = (
        f"SELECT (SELECT count(*) FROM public.big b LEFT JOIN public.{rec.table} v ON v.id = b.id "
        f"WHERE v.id IS NULL OR v.content_hash <> md5(b.body)::uuid), (SELECT count(*) FROM public.{rec.table} v "
        "WHERE NOT EXISTS (SELECT 1 FROM public.big b WHERE b.id = v.id))"
    )
    with pgvector.connect(dsn) as conn:
        for attempt in range(3):
            started = time.perf_counter()
            changed, gone = store_sync.diff(conn, src, rec, blank=blank)
            seconds = time.perf_counter() - started
            started = time.perf_counter()
            conn.execute(plain).fetchone()
            reference = time.perf_counter() - started
            print(
                f"diff {rows:,}: {changed:,} changed or new and {gone:,} gone in {seconds:.2f} s; the plain "
                f"anti-joins on md5(text) {reference:.2f} s: {seconds / reference:.2f}x (run {attempt + 1})"
            )


if __name__ == "__main__":
    main()
