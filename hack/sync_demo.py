"""An index that follows its table, on this machine: build it, change rows, sync, search.

    .venv/bin/python hack/sync_demo.py          (after ./hack/quickstart.sh, or on its own)

1. loads the quickstart's 600 SciFact abstracts into a table `public.abstracts` of the embedded
   Postgres in `.embedops-sync/` (once);
2. `embedops run -f examples/table-sync`: embeds the table into v1 with the bundled model, probes it
   and cuts over;
3. inserts two abstracts, rewrites one, deletes one, and bumps a column that is not embedded;
4. `embedops sync -f examples/table-sync`: only the changed rows are embedded (the counts are printed),
   the version stays v1;
5. `embedops search`: the new abstract is found, the deleted one is not.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / ".embedops-sync"
EXAMPLE = ROOT / "examples" / "table-sync"
CORPUS = ROOT / "examples" / "quickstart" / "data" / "scifact-sample" / "corpus.jsonl"
NEW = [
    (
        "new-1",
        "Tardigrades survive vacuum",
        "Tardigrades survive exposure to the vacuum of space by entering a dry state.",
    ),
    ("new-2", "Octopus arms", "Two thirds of an octopus's neurons are in its arms, which taste what they touch."),
]


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from embedops.cli import main as embedops
    from embedops.local import LocalRunner

    with LocalRunner(state_dir=STATE) as runner:  # claims the folder and starts its embedded server
        dsn = runner.database()
        _load(dsn)
    common = ["-f", str(EXAMPLE), "--state-dir", str(STATE), "--no-progress"]
    print("\n== embedops run: build v1 from the table", flush=True)
    if embedops(["run", *common]) != 0:
        return 1
    with LocalRunner(state_dir=STATE) as runner:
        dsn = runner.database()
        _change(dsn)
    print("\n== embedops sync: embed what changed, nothing else", flush=True)
    if embedops(["sync", *common]) != 0:
        return 1
    state = json.loads((STATE / "default" / "embeddingindexes" / "abstracts.json").read_text())["status"]
    print(f"\nstatus.sync: {json.dumps(state['sync'])}")
    search = ["search", "-f", str(EXAMPLE), "--state-dir", str(STATE), "--limit", "3"]
    print("\n== embedops search 'animals that survive in space' (the new abstract new-1 first)", flush=True)
    return embedops([*search, "animals that survive in space"])


def _load(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('public.abstracts')").fetchone()[0] is not None:
            return
        conn.execute("CREATE TABLE public.abstracts (id text PRIMARY KEY, title text, body text, views int DEFAULT 0)")
        with conn.cursor() as cur, cur.copy("COPY public.abstracts (id, title, body) FROM STDIN") as copy:
            for line in CORPUS.open():
                doc = json.loads(line)
                copy.write_row((doc["_id"], doc.get("title") or None, doc["text"]))


def _change(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM public.abstracts WHERE id LIKE 'new-%'")  # a second run starts the same way
        conn.cursor().executemany("INSERT INTO public.abstracts (id, title, body) VALUES (%s, %s, %s)", NEW)
        first, second = (i for (i,) in conn.execute("SELECT id FROM public.abstracts ORDER BY id LIMIT 2"))
        conn.execute("UPDATE public.abstracts SET body = body || ' (corrected)' WHERE id = %s", (first,))
        conn.execute("DELETE FROM public.abstracts WHERE id = %s", (second,))
        conn.execute("UPDATE public.abstracts SET views = views + 1")  # not embedded: costs nothing
    print(f"\n== changed the table: inserted new-1 and new-2, rewrote {first}, deleted {second}, bumped views")


if __name__ == "__main__":
    sys.exit(main())
