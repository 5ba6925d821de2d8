"""What sync mode `trigger` costs the application that writes the source table.

    python benchmarks/sync_trigger_overhead.py --rows 100000 --repeat 3

On embedded Postgres (or `--dsn`), for a table of `--rows` rows of ~200 characters: the seconds of
one INSERT of all of them, one UPDATE of a column that is not embedded, and one UPDATE of the
embedded text, without and with the triggers store.triggers installs (each run on a fresh table;
`--repeat N` prints the best and the median, as the machine may be shared).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import psycopg

from embedops.api.index import TableSource, Target
from embedops.store import embedded, pgvector, triggers

TARGET = Target(name="bench_index")
SOURCE = TableSource.model_validate({"table": "bench_docs", "idColumn": "id", "textColumn": "body"})
STATEMENTS = {
    "insert": "INSERT INTO public.bench_docs (id, body) SELECT g, repeat('x', 200) || g FROM generate_series(1, {n}) g",
    "update other column": "UPDATE public.bench_docs SET views = views + 1",
    "update embedded text": "UPDATE public.bench_docs SET body = body || 'y'",
}


def one_run(dsn: str, rows: int, with_triggers: bool) -> dict[str, float]:
    with pgvector.connect(dsn) as conn:
        conn.execute("DROP TABLE IF EXISTS public.bench_docs CASCADE")
        conn.execute("CREATE TABLE public.bench_docs (id bigint PRIMARY KEY, body text, views int DEFAULT 0)")
        if with_triggers:
            triggers.install(conn, TARGET, SOURCE, "bigint")
        seconds = {}
        for name, statement in STATEMENTS.items():
            started = time.perf_counter()
            conn.execute(statement.format(n=rows))
            seconds[name] = time.perf_counter() - started
        triggers.remove(conn, TARGET)
        conn.execute("DROP TABLE public.bench_docs")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dsn", help="a database to use (default: an embedded server)")
    args = parser.parse_args()
    server = None if args.dsn else embedded.start(Path(tempfile.mkdtemp(prefix="embedops-bench-")) / "data")
    dsn = args.dsn or server.dsn
    try:
        with psycopg.connect(dsn) as conn:
            print("server:", conn.execute("SELECT version()").fetchone()[0])
        runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        for _ in range(args.repeat):
            for with_triggers in (False, True):  # interleaved: a shared machine's noise falls on both
                runs[with_triggers].append(one_run(dsn, args.rows, with_triggers))
        for name in STATEMENTS:
            line = [f"{name} ({args.rows} rows):"]
            for with_triggers, label in ((False, "no triggers"), (True, "triggers")):
                values = [r[name] for r in runs[with_triggers]]
                line.append(f"{label} best {min(values):.2f}s median {statistics.median(values):.2f}s")
            print("  ".join(line))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
