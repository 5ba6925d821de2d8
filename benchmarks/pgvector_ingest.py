"""pgvector bulk ingest and ANN build: embedops' settings against the defaults, same rows, one run.

    python benchmarks/pgvector_ingest.py                      # 100k x 384, embedded Postgres
    python benchmarks/pgvector_ingest.py --rows 20000 --dims 768 --dsn "$DSN"

Ingest: binary COPY of (bigint id, vector) rows in chunks of --chunk rows, each chunk its own
transaction, as the embed worker commits them:
  - adapters: psycopg's `write_row` with pgvector's adapter, row by row (the usual way);
  - numpy:    embedops' `copy_binary`, the COPY stream built with numpy (what the worker does).
ANN build: HNSW (m 16, ef_construction 64, cosine) on the same table,
  - defaults: the server's maintenance_work_mem (64MB out of the box);
  - embedops: maintenance_work_mem sized to the graph by `finalize` (the worker's path).
Prints rows/s, the client's CPU per row (the server's work is in its own processes) and seconds,
and the ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg
from pgvector import Vector
from psycopg import sql

from embedops.api.index import AnnSpec, Target
from embedops.store import pgvector
from embedops.store.catalog import Build


def _copy(
    conn: psycopg.Connection, table: str, ids: np.ndarray, vectors: np.ndarray, chunk: int, how: str
) -> tuple[float, float]:
    """Wall seconds, and CPU seconds of this (client) process: the server's work is in its own."""
    oid = conn.execute("SELECT 'bigint'::regtype::oid").fetchone()[0]
    statement = sql.SQL("COPY {} (id, embedding) FROM STDIN (FORMAT BINARY)").format(sql.Identifier(table))
    started, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(ids), chunk):
        part_ids, part = ids[start : start + chunk], vectors[start : start + chunk]
        with conn.transaction(), conn.cursor() as cur, cur.copy(statement) as copy:
            if how == "numpy":
                copy.write(pgvector.copy_binary(part_ids, oid, part, "vector"))
            else:
                copy.set_types([oid, "vector"])
                for doc_id, v in zip(part_ids.tolist(), part, strict=True):
                    copy.write_row((doc_id, Vector(v)))
    return time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--chunk", type=int, default=2048, help="rows per COPY transaction (the worker's commitRows)")
    parser.add_argument("--dsn", help="a Postgres server with pgvector (default: an embedded one)")
    parser.add_argument("--skip-build", action="store_true", help="only measure ingest")
    args = parser.parse_args()

    server = None
    if args.dsn is None:
        from embedops.store import embedded

        server = embedded.start(Path(tempfile.mkdtemp(prefix="embedops-bench-")) / "pg")
    dsn = args.dsn or server.dsn
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(args.rows, args.dims)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(1, args.rows + 1, dtype=np.int64)
    print(
        f"{args.rows} rows x {args.dims} dims, chunks of {args.chunk}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    try:
        with pgvector.connect(dsn) as conn:
            print(
                conn.execute("SELECT version()").fetchone()[0].split(",")[0],
                "/ pgvector",
                conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0],
            )
            seconds, client = {}, {}
            for how in ("adapters", "numpy"):
                table = f"bench_ingest_{how}"
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
                conn.execute(
                    sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, embedding vector({}))").format(
                        sql.Identifier(table), sql.Literal(args.dims)
                    )
                )
                seconds[how], client[how] = _copy(conn, table, ids, vectors, args.chunk, how)
                print(
                    f"ingest {how:9s} {args.rows / seconds[how]:10,.0f} rows/s  ({seconds[how]:.1f} s; "
                    f"client CPU {client[how] / args.rows * 1e6:.2f} us/row)"
                )
            print(
                f"ingest ratio numpy / adapters: {seconds['adapters'] / seconds['numpy']:.2f}x rows/s, "
                f"{client['adapters'] / client['numpy']:.1f}x less client CPU"
            )
            for how in ("adapters", "numpy"):
                conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(f"bench_ingest_{how}")))
            if args.skip_build:
                return
            _builds(conn, ids, vectors, args.chunk)
    finally:
        if server is not None:
            server.stop()


def _builds(conn: psycopg.Connection, ids: np.ndarray, vectors: np.ndarray, chunk: int) -> None:
    ann = AnnSpec()  # hnsw, m 16, ef_construction 64
    dims = vectors.shape[1]
    seconds = {}
    for how in ("defaults", "embedops"):
        target = Target(name=f"bench_{how}")
        rec, _ = pgvector.begin_build(
            conn,
            target,
            Build(
                model="bench",
                model_fingerprint="bench",
                dimensions=dims,
                vector_type="vector",
                metric="cosine",
                id_type="bigint",
                source=how,
                shards=1,
            ),
        )
        writer = pgvector.VersionWriter(conn, rec, 0)
        for start in range(0, len(ids), chunk):
            writer.write(ids[start : start + chunk].tolist(), vectors[start : start + chunk])
        writer.finish()
        if how == "defaults":
            table = sql.Identifier(rec.schema, rec.table)
            started = time.perf_counter()
            conn.execute(
                sql.SQL(
                    "CREATE INDEX ON {} USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
                ).format(table)
            )
            seconds[how] = time.perf_counter() - started
            memory = conn.execute("SHOW maintenance_work_mem").fetchone()[0]
        else:
            started = time.perf_counter()
            pgvector.finalize(conn, target, rec.version, ann)
            seconds[how] = time.perf_counter() - started
            memory = "sized by finalize"
        print(f"hnsw build {how:9s} {seconds[how]:8.1f} s  (maintenance_work_mem {memory})")
    print(f"hnsw build ratio defaults / embedops: {seconds['defaults'] / seconds['embedops']:.2f}x")


if __name__ == "__main__":
    main()
