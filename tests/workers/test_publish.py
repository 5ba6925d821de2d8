"""The publish worker against a real Postgres: gate, cut over, pin and prune.

The index holds five documents and the probe looks ten deep, so a probe set whose relevant ids are
the documents has recall 1 whatever the (tiny, random) model, and one whose relevant id is absent
has recall 0: the gate's outcome is known before it runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from embedops import steps
from embedops.api.conditions import Reason
from embedops.api.index import Target
from embedops.results import PublishResult
from embedops.store import pgvector
from embedops.workers import embed, publish

TARGET = Target(name="kb")
DOCS = [
    "The Eiffel Tower in Paris was completed in 1889.",
    "Honeybees communicate through a waggle dance.",
    "A violin has four strings tuned in perfect fifths.",
    "Penicillin was discovered by Alexander Fleming.",
    "Saturn has a bright system of rings.",
]


@pytest.fixture
def notes(dsn) -> str:
    """The index's source: a table of the five documents, ids 1..5."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.notes (id int PRIMARY KEY, text text)")
        for i, doc in enumerate(DOCS, 1):
            conn.execute("INSERT INTO public.notes VALUES (%s, %s)", (i, doc))
    return dsn


def probe_set(path: Path, relevant: list[int]) -> Path:
    path.write_text("".join(json.dumps({"query": d, "relevant": relevant}) + "\n" for d in DOCS), encoding="utf-8")
    return path


@pytest.fixture
def passing(tmp_path) -> Path:
    return probe_set(tmp_path / "passing.jsonl", [1, 2, 3, 4, 5])


@pytest.fixture
def failing(tmp_path) -> Path:
    return probe_set(tmp_path / "failing.jsonl", [999])


def build(dsn: str, model: str) -> int:
    """A new Ready version of the notes (never the one built before: `reuse` is off)."""
    cfg = steps.EmbedStep(target=TARGET, source={"table": {"table": "notes"}}, model=model, device="cpu", reuse=False)
    return embed.run(cfg, dsn=dsn).version


def run_publish(dsn: str, model: str, version: int, probe_path: Path, **kw) -> PublishResult:
    cfg = steps.PublishStep(
        target=TARGET,
        version=version,
        model=model,
        probe={"path": str(probe_path), "minRecall": 0.5},
        device="cpu",
        **kw,
    )
    return publish.run(cfg, dsn=dsn)


def states(result: PublishResult) -> dict[int, str]:
    return {v.version: v.state for v in result.versions}


def served_table(dsn: str) -> str:
    """The version table the view reads from."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT DISTINCT table_name FROM information_schema.view_table_usage "
            "WHERE view_schema = 'public' AND view_name = 'kb'"
        ).fetchone()[0]


def test_a_passing_candidate_is_cut_over(notes, passing, tiny_model_dir):
    model = str(tiny_model_dir)
    first = run_publish(notes, model, build(notes, model), passing)
    assert (first.candidate, first.live_version, first.note_reason) == (1, 1, None)
    assert first.probe.passed and first.probe.recall_at_k == 1.0 and first.probe.version == 1
    assert served_table(notes) == "kb_v1"

    second = run_publish(notes, model, build(notes, model), passing)
    assert (second.candidate, second.live_version, second.note_reason, second.dropped) == (2, 2, None, [])
    assert states(second) == {2: "Live", 1: "Retired"}
    assert "cut over to v2" in second.probe.reason
    assert served_table(notes) == "kb_v2"


def test_a_failing_candidate_leaves_the_live_version_serving(notes, passing, failing, tiny_model_dir):
    model = str(tiny_model_dir)
    run_publish(notes, model, build(notes, model), passing)
    result = run_publish(notes, model, build(notes, model), failing)
    assert result.note_reason == Reason.GATE_FAILED
    assert result.note == "v2 not cut over: recall@10 0.0000 is below minRecall 0.5"
    assert (result.live_version, result.probe.passed) == (1, False)
    assert states(result) == {2: "Ready", 1: "Live"}
    assert served_table(notes) == "kb_v1"
    assert next(v for v in result.versions if v.version == 2).probe == result.probe, "the failed probe is kept"


def test_a_pinned_index_serves_its_pin_and_a_passing_candidate_waits(notes, passing, tiny_model_dir):
    model = str(tiny_model_dir)
    run_publish(notes, model, build(notes, model), passing)
    run_publish(notes, model, build(notes, model), passing)
    result = run_publish(notes, model, build(notes, model), passing, pinned_version=1, keep_versions=3)
    assert result.note_reason == Reason.PINNED
    assert result.note == "v3 passed the gate but the index is pinned to v1"
    assert result.probe.passed and "cut over" not in result.probe.reason
    assert (result.live_version, states(result)) == (1, {3: "Ready", 2: "Retired", 1: "Live"})
    assert served_table(notes) == "kb_v1"
    # Pinned to the version already live: nothing moves.
    again = run_publish(notes, model, 3, passing, pinned_version=1, keep_versions=3)
    assert (again.live_version, states(again)) == (1, {3: "Ready", 2: "Retired", 1: "Live"})


def test_a_rolled_back_version_is_not_cut_over_again(notes, passing, tiny_model_dir):
    model = str(tiny_model_dir)
    run_publish(notes, model, build(notes, model), passing)
    run_publish(notes, model, build(notes, model), passing)
    with pgvector.connect(notes) as conn:
        assert pgvector.rollback(conn, TARGET).version == 1
    result = run_publish(notes, model, 2, passing)
    assert result.note_reason == Reason.ROLLED_BACK
    assert result.note == "v2 holds this model but was rolled back from; not cut over again"
    assert result.probe is None, "a rolled-back version is not probed"
    assert (result.live_version, states(result)) == (1, {2: "Retired", 1: "Live"})
    assert served_table(notes) == "kb_v1"


def test_keep_versions_drops_the_oldest_beyond_the_live_one(notes, passing, failing, tiny_model_dir):
    model = str(tiny_model_dir)
    for _ in range(3):
        result = run_publish(notes, model, build(notes, model), passing, keep_versions=2)
    assert (result.dropped, states(result)) == ([1], {3: "Live", 2: "Retired"})
    # The live one is always kept, and so is the candidate: the version of the index's current model
    # (gate failed here), which a later publish (a lowered threshold, an unpin) serves.
    result = run_publish(notes, model, build(notes, model), failing, keep_versions=1)
    assert (result.dropped, states(result)) == ([2], {4: "Ready", 3: "Live"})
    with psycopg.connect(notes) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == {"notes", "kb_v3", "kb_v4"}
