"""The prepare worker: readers and validation, duplicates, the split, title pairs and hard-negative mining."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from embedops import modelzoo, retrieval, steps
from embedops.api.dataset import EmbeddingDatasetSpec
from embedops.prepared import PreparedDataset
from embedops.workers import prepare

NO_MINING = {"hardNegatives": {"enabled": False}}


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def beir_folder(
    root: Path,
    n: int = 10,
    *,
    corpus_extra: list[str] = (),
    queries_extra: list[str] = (),
    train_extra: list[str] = (),
    test_extra: list[str] = (),
) -> Path:
    """n documents and queries; query i is relevant to document i; the last fifth is the test split."""
    folder = root / "beir"
    docs = [json.dumps({"_id": f"d{i}", "title": f"Title {i}", "text": f"document {i} text"}) for i in range(n)]
    # `metadata` holds answers in SciFact; the reader must never use it.
    queries = [json.dumps({"_id": f"q{i}", "text": f"question {i}", "metadata": {"secret": f"d{i}"}}) for i in range(n)]
    n_test = n // 5
    write_lines(folder / "corpus.jsonl", docs + list(corpus_extra))
    write_lines(folder / "queries.jsonl", queries + list(queries_extra))
    write_lines(
        folder / "qrels" / "train.tsv",
        ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in range(n - n_test)] + list(train_extra),
    )
    write_lines(
        folder / "qrels" / "test.tsv",
        ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in range(n - n_test, n)] + list(test_extra),
    )
    return folder


def prepare_run(tmp_path: Path, spec: dict, out: str = "out", dsn: str | None = None) -> prepare.Result:
    config = steps.PrepareStep(
        spec=EmbeddingDatasetSpec.model_validate(spec), base_dir=tmp_path, output_dir=tmp_path / out
    )
    return prepare.run(config, dsn=dsn)


def test_beir_bad_rows_are_reported_by_file_and_line_and_good_rows_kept(tmp_path):
    beir_folder(
        tmp_path,
        20,
        corpus_extra=[
            '{"_id": "bad", "text": ',
            '{"_id": "d20"}',
            '{"_id": "d21", "text": "   "}',
            '{"_id": "d0", "text": "a second d0"}',
            '{"_id": "d22", "text": 7}',
            json.dumps({"_id": "d1", "title": "Title 1", "text": "document 1 text"}),
        ],
        queries_extra=['{"text": "no id"}'],
        train_extra=["q0\tmissing-doc\t1", "nobody\td1\t1", "q1\td1\tmaybe", "q2\td2\t1"],
    )
    result = prepare_run(
        tmp_path, {"source": {"beir": {"path": "beir"}}, "validation": {"maxInvalidFraction": 0.5}, **NO_MINING}
    )

    samples = "\n".join(result.invalid_samples)
    assert "corpus.jsonl:21: not valid JSON" in samples
    assert "corpus.jsonl:22: missing field 'text'" in samples
    assert "corpus.jsonl:23: field 'text' is empty" in samples
    assert "corpus.jsonl:24: id 'd0' was already defined at line 1 with a different text; the first is kept" in samples
    assert "corpus.jsonl:25: field 'text' must be a string, got int" in samples
    assert "queries.jsonl:21: missing field '_id'" in samples
    assert "qrels/train.tsv:18: corpus id 'missing-doc' is not in corpus.jsonl" in samples
    assert "qrels/train.tsv:19: query id 'nobody' is not in queries.jsonl" in samples
    assert "qrels/train.tsv:20: score 'maybe' is not an integer" in samples
    assert str(tmp_path) not in samples
    counts = result.counts
    assert counts.invalid_rows == 9
    assert counts.duplicates == 2  # the repeated d1 and q2-d2 judgement
    assert counts.corpus == 20 and counts.train_queries == 16 and counts.test_queries == 4
    assert counts.title_pairs == 20 and counts.train_pairs == 36
    data = PreparedDataset(tmp_path / "out")
    assert data.corpus()["d0"].text == "document 0 text"  # the first of a redefined id wins
    assert len((tmp_path / "out" / "invalid_rows.jsonl").read_text().splitlines()) == 9
    assert "secret" not in (tmp_path / "out" / "test_queries.jsonl").read_text()


def test_too_many_invalid_rows_in_one_file_fail_the_step(tmp_path):
    beir_folder(tmp_path, 10, queries_extra=["not json"] * 3)
    with pytest.raises(ValueError, match=r"queries.jsonl: 3 of 13 rows are invalid.*maxInvalidFraction=0.1"):
        prepare_run(tmp_path, {"source": {"beir": {"path": "beir"}}, **NO_MINING})
    # The same rows pass under a looser limit.
    prepare_run(
        tmp_path, {"source": {"beir": {"path": "beir"}}, "validation": {"maxInvalidFraction": 0.3}, **NO_MINING}
    )


def test_text_length_bounds_come_from_the_spec(tmp_path):
    beir_folder(tmp_path, 10, corpus_extra=[json.dumps({"_id": "long", "text": "x" * 500})])
    result = prepare_run(tmp_path, {"source": {"beir": {"path": "beir"}}, "validation": {"maxChars": 100}, **NO_MINING})
    assert result.invalid_samples == [
        "corpus.jsonl:11: field 'text' is longer than validation.maxChars=100 (500 characters)"
    ]


def test_missing_files_and_empty_results_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="'nowhere' does not exist"):
        prepare_run(tmp_path, {"source": {"beir": {"path": "nowhere"}}})
    folder = beir_folder(tmp_path, 10)
    (folder / "qrels" / "test.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=r"qrels/test.tsv not found"):
        prepare_run(tmp_path, {"source": {"beir": {"path": "beir"}}, **NO_MINING})
    write_lines(tmp_path / "one.jsonl", [json.dumps({"query": "only one", "positive": "pair"})])
    with pytest.raises(ValueError, match="no held-out test queries"):
        prepare_run(tmp_path, {"source": {"pairs": {"path": "one.jsonl"}}, **NO_MINING})
    with pytest.raises(ValueError, match="no valid training pairs"):
        prepare_run(tmp_path, {"source": {"pairs": {"path": "one.jsonl", "testPath": "one.jsonl"}}, **NO_MINING})


def pairs_lines(n: int) -> list[str]:
    return [json.dumps({"query": f"query {i}", "positive": f"answer {i}"}) for i in range(n)]


def test_pairs_bad_rows_duplicates_and_content_ids(tmp_path):
    write_lines(
        tmp_path / "data" / "pairs.jsonl",
        pairs_lines(30)
        + [
            "{oops",
            json.dumps({"query": "query 31"}),
            json.dumps({"query": "", "positive": "answer"}),
            json.dumps({"query": "query 32", "positive": "answer 32", "negatives": "not a list"}),
            json.dumps({"query": "query 1", "positive": "answer 1"}),  # duplicate pair
            json.dumps({"query": "query 1", "positive": "answer 1b", "negatives": ["answer 2", "answer 1b"]}),
        ],
    )
    result = prepare_run(
        tmp_path,
        {"source": {"pairs": {"path": "data/pairs.jsonl"}}, "validation": {"maxInvalidFraction": 0.2}, **NO_MINING},
    )

    assert result.invalid_samples == [
        "data/pairs.jsonl:31: not valid JSON (Expecting property name enclosed in double quotes at column 2)",
        "data/pairs.jsonl:32: missing field 'positive'",
        "data/pairs.jsonl:33: field 'query' is empty",
        "data/pairs.jsonl:34: field 'negatives' must be a list of strings, got str",
    ]
    assert result.counts.duplicates == 1
    assert result.counts.corpus == 31  # 30 answers and answer 1b
    data = PreparedDataset(tmp_path / "out")
    queries = {e.query for e in data.train_examples()} | set(data.test_queries().values())
    assert len(queries) == 30
    assert all(d.startswith("d") and len(d) == 21 for d in data.corpus())


def test_pairs_with_a_test_file_use_it_as_the_test_split(tmp_path):
    write_lines(
        tmp_path / "train.jsonl",
        pairs_lines(12)
        + [
            json.dumps(
                {"query": "query 5", "positive": "answer 5b", "negatives": ["answer 6", "answer 5b", "answer 5"]}
            ),
        ],
    )
    write_lines(
        tmp_path / "test.jsonl",
        [
            json.dumps({"query": "held out 1", "positive": "answer 3"}),
            json.dumps({"query": "query 0", "positive": "answer 0"}),
        ],
    )
    result = prepare_run(
        tmp_path, {"source": {"pairs": {"path": "train.jsonl", "testPath": "test.jsonl"}}, **NO_MINING}
    )
    data = PreparedDataset(tmp_path / "out")
    assert sorted(data.test_queries().values()) == ["held out 1", "query 0"]
    # A query given for testing is never trained on, even when the train file has it too.
    assert "query 0" not in {e.query for e in data.train_examples()}
    assert result.counts.train_queries == 11
    negatives = {e.positive: e.negatives for e in data.train_examples()}
    # Given negatives that are positives of the same query are dropped, the others kept.
    assert negatives["answer 5b"] == ("answer 6",) and negatives["answer 5"] == ()
    corpus = data.corpus()
    assert {corpus[d].text for q in data.test_qrels().values() for d in q} == {"answer 3", "answer 0"}


def test_split_is_deterministic_disjoint_and_capped(tmp_path):
    write_lines(tmp_path / "pairs.jsonl", pairs_lines(200))
    spec = {"source": {"pairs": {"path": "pairs.jsonl"}}, "split": {"testFraction": 0.25, "seed": 7}, **NO_MINING}
    first, second = prepare_run(tmp_path, spec, "a"), prepare_run(tmp_path, spec, "b")

    assert first.fingerprint == second.fingerprint
    assert first.counts.test_queries == 50 and first.counts.train_queries == 150
    data = PreparedDataset(tmp_path / "a")
    train_queries = {e.query for e in data.train_examples()}
    assert not train_queries & set(data.test_queries().values())

    reseeded = prepare_run(tmp_path, {**spec, "split": {"testFraction": 0.25, "seed": 8}}, "c")
    assert reseeded.fingerprint != first.fingerprint
    capped = prepare_run(tmp_path, {**spec, "split": {"testFraction": 0.25, "seed": 7, "maxTestQueries": 10}}, "d")
    # Queries the cap leaves out of a derived split are trained on.
    assert capped.counts.test_queries == 10 and capped.counts.train_queries == 190
    assert set(PreparedDataset(tmp_path / "d").test_queries().values()) < set(data.test_queries().values())


def test_beir_without_a_test_split_is_split_by_query(tmp_path):
    beir_folder(tmp_path, 20)
    result = prepare_run(
        tmp_path,
        {
            "source": {"beir": {"path": "beir", "testSplit": ""}},
            "split": {"testFraction": 0.25},
            "augment": {"titlePairs": False},
            **NO_MINING,
        },
    )
    assert result.counts.test_queries == 4 and result.counts.train_queries == 12
    data = PreparedDataset(tmp_path / "out")
    assert set(data.test_qrels()) == set(data.test_queries())


def test_title_pairs_are_capped_by_a_seeded_sample(tmp_path):
    beir_folder(tmp_path, 20)
    spec = {"source": {"beir": {"path": "beir"}}, "augment": {"maxTitlePairs": 5}, **NO_MINING}
    result = prepare_run(tmp_path, spec)
    titles = [e for e in PreparedDataset(tmp_path / "out").train_examples() if e.origin == "title"]
    assert result.counts.title_pairs == 5 and len(titles) == 5
    assert all(e.query.startswith("Title ") and e.positive.startswith("document ") for e in titles)
    assert prepare_run(tmp_path, spec, "again").fingerprint == result.fingerprint


# -- mining -----------------------------------------------------------------------------------

TOPICS = [
    "protein folding",
    "stellar spectra",
    "river erosion",
    "tax policy",
    "jazz harmony",
    "soil bacteria",
    "volcanic ash",
    "neural codes",
    "coral reefs",
    "bond yields",
    "glacier melt",
    "viral capsids",
]


def mining_folder(tmp_path: Path) -> Path:
    """Query i has positive d{i}; q0 has a second positive, and d0 has an unlabelled clone."""
    folder = tmp_path / "beir"
    docs = [{"_id": f"d{i}", "title": "", "text": f"a study of {t} and its effects"} for i, t in enumerate(TOPICS)]
    docs += [
        {"_id": "d0-extra", "title": "", "text": "protein folding energy landscapes"},
        {"_id": "d0-clone", "title": "", "text": docs[0]["text"]},
    ]
    write_lines(folder / "corpus.jsonl", [json.dumps(d) for d in docs])
    write_lines(
        folder / "queries.jsonl",
        [json.dumps({"_id": f"q{i}", "text": f"what about {t}?"}) for i, t in enumerate(TOPICS)],
    )
    train = [f"q{i}\td{i}\t1" for i in range(10)] + ["q0\td0-extra\t1"]
    write_lines(folder / "qrels" / "train.tsv", ["query-id\tcorpus-id\tscore", *train])
    write_lines(folder / "qrels" / "test.tsv", ["query-id\tcorpus-id\tscore", "q10\td10\t1", "q11\td11\t1"])
    return folder


# Mining needs a model that ranks sensibly, so these tests use the bundled MiniLM (a few seconds).
MINER = "all-MiniLM-L6-v2"


def mining_spec(**negatives) -> dict:
    return {
        "source": {"beir": {"path": "beir"}},
        "augment": {"titlePairs": False},
        "hardNegatives": {"model": MINER, "count": 3, "outputFormat": "n-tuple", **negatives},
    }


def test_mining_excludes_positives_and_respects_the_margin(tmp_path):
    mining_folder(tmp_path)
    margin = 0.05
    spec = mining_spec(relativeMargin=margin, rangeMin=1, rangeMax=12)
    result = prepare_run(tmp_path, spec)

    data = PreparedDataset(tmp_path / "out")
    corpus = data.corpus()
    model = modelzoo.load(MINER, device="cpu")
    examples = data.train_examples()
    assert result.counts.with_negatives == len(examples) == result.counts.train_rows == 11
    for e in examples:
        assert len(set(e.negatives)) == 3 and e.positive not in e.negatives
        if e.query == "what about protein folding?":
            # Both positives are excluded, and so is the clone: it has a positive's text.
            assert not {corpus["d0"].full_text, corpus["d0-extra"].full_text, corpus["d0-clone"].full_text} & set(
                e.negatives
            )
        q = retrieval.encode(model, [e.query], kind="query")
        docs = retrieval.encode(model, [e.positive, *e.negatives], kind="document")
        scores = (q @ docs.T)[0].tolist()
        # With several positives the lowest-scoring one sets the bar, so every pair is within its own.
        assert all(s <= (1 - margin) * scores[0] + 1e-4 for s in scores[1:])
    assert prepare_run(tmp_path, spec, "again").fingerprint == result.fingerprint


def test_mined_candidates_come_from_the_rank_range(tmp_path):
    mining_folder(tmp_path)
    prepare_run(tmp_path, mining_spec(relativeMargin=0.0, rangeMin=9, rangeMax=11, count=2))
    data = PreparedDataset(tmp_path / "out")
    model = modelzoo.load(MINER, device="cpu")
    corpus = data.corpus()
    positives = {e.query: set() for e in data.train_examples()}
    for e in data.train_examples():
        positives[e.query].add(e.positive)
    for e in data.train_examples():
        ranking = retrieval.search(model, {"q": e.query}, {d.id: d.full_text for d in corpus.values()}, 14)["q"]
        # Ranks are counted among the candidates left once the query's positives are set aside.
        # Documents with the same text are one candidate.
        others = list(dict.fromkeys(corpus[d].full_text for d, _ in ranking))
        others = [t for t in others if t not in positives[e.query]]
        assert list(e.negatives) == others[9:11]


def library_negatives(folder: Path, **settings) -> list[tuple[str, ...]]:
    """What sentence-transformers' mine_hard_negatives returns for the folder's training pairs, row by row."""
    from datasets import Dataset
    from sentence_transformers import util

    corpus = {json.loads(line)["_id"]: json.loads(line) for line in (folder / "corpus.jsonl").read_text().splitlines()}
    text = {d: f"{c['title']} {c['text']}".strip() for d, c in corpus.items()}
    queries = {
        json.loads(line)["_id"]: json.loads(line)["text"]
        for line in (folder / "queries.jsonl").read_text().splitlines()
    }
    qrels = [line.split("\t") for line in (folder / "qrels" / "train.tsv").read_text().splitlines()[1:]]
    pairs = Dataset.from_dict({"anchor": [queries[q] for q, _, _ in qrels], "positive": [text[d] for _, d, _ in qrels]})
    mined = util.mine_hard_negatives(
        pairs, modelzoo.load(MINER, device="cpu"), corpus=list(dict.fromkeys(text.values())), verbose=False, **settings
    )
    return (
        [tuple(row[c] for c in mined.column_names[2:]) for row in mined]
        if settings["output_format"] == "n-tuple"
        else [(row["negative"],) for row in mined]
    )


@pytest.mark.parametrize(
    "settings",
    [
        {"rangeMin": 1, "rangeMax": 12, "relativeMargin": 0.05, "count": 3, "outputFormat": "n-tuple"},
        {"rangeMin": 2, "rangeMax": 9, "absoluteMargin": 0.02, "count": 2, "outputFormat": "triplet"},
        {
            "rangeMin": 0,
            "rangeMax": 10,
            "relativeMargin": 0.0,
            "count": 3,
            "outputFormat": "n-tuple",
            "samplingStrategy": "random",
        },
    ],
)
def test_mining_gives_the_negatives_of_the_library_with_the_same_settings(tmp_path, settings):
    import random

    folder = mining_folder(tmp_path)
    prepare_run(tmp_path, mining_spec(**settings))
    ours = [(e.query, e.positive, e.negatives) for e in PreparedDataset(tmp_path / "out").train_examples()]

    # relativeMargin 0 is no margin: None to the library.
    absolute, relative = settings.get("absoluteMargin"), settings.get("relativeMargin") or None
    random.seed(42)  # the dataset's split.seed seeds the library's random sampling
    theirs = library_negatives(
        folder,
        range_min=settings["rangeMin"],
        range_max=settings["rangeMax"],
        absolute_margin=absolute,
        relative_margin=relative,
        num_negatives=settings["count"],
        sampling_strategy=settings.get("samplingStrategy", "top"),
        output_format=settings["outputFormat"],
    )
    # The library keeps only rows that got every negative (n-tuple) or one row per negative found (triplet);
    # embedops keeps every pair, with what was found.
    if settings["outputFormat"] == "n-tuple":
        assert sorted(negs for _, _, negs in ours if len(negs) == settings["count"]) == sorted(theirs)
    else:
        assert sorted(negs for _, _, negs in ours if negs) == sorted(theirs)
        assert all(len(negs) <= 1 for _, _, negs in ours)


def test_given_negatives_come_first_and_mining_fills_the_rest(tmp_path):
    rows = [{"query": f"what about {t}?", "positive": f"a study of {t} and its effects"} for t in TOPICS[:10]]
    rows[0]["negatives"] = ["a study of jazz harmony and its effects"]
    write_lines(tmp_path / "pairs.jsonl", [json.dumps(r) for r in rows])
    write_lines(tmp_path / "test.jsonl", [json.dumps({"query": "what about coral?", "positive": "reef notes"})])
    prepare_run(
        tmp_path,
        {
            "source": {"pairs": {"path": "pairs.jsonl", "testPath": "test.jsonl"}},
            "hardNegatives": {"model": MINER, "count": 3, "rangeMin": 0, "rangeMax": 8, "outputFormat": "n-tuple"},
        },
    )
    first = {e.query: e for e in PreparedDataset(tmp_path / "out").train_examples()}[rows[0]["query"]]
    assert first.negatives[0] == rows[0]["negatives"][0] and len(set(first.negatives)) == 3
    assert first.positive not in first.negatives


def test_title_pairs_get_negatives_other_than_their_own_document(tmp_path):
    beir_folder(tmp_path, 12)
    spec = {
        "source": {"beir": {"path": "beir"}},
        "hardNegatives": {"model": MINER, "count": 2, "relativeMargin": 0, "rangeMin": 0, "outputFormat": "n-tuple"},
    }
    prepare_run(tmp_path, spec)
    titles = [e for e in PreparedDataset(tmp_path / "out").train_examples() if e.origin == "title"]
    assert len(titles) == 12
    for e in titles:
        assert len(e.negatives) == 2 and e.positive not in e.negatives
        # Title pairs show documents without their titles, negatives included.
        assert all(n.startswith("document ") for n in e.negatives)


def test_the_triplet_format_writes_one_row_per_pair_and_negative(tmp_path):
    beir_folder(tmp_path, 12)
    spec = {
        "source": {"beir": {"path": "beir"}},
        "hardNegatives": {"model": MINER, "count": 2, "relativeMargin": 0, "rangeMin": 0},
    }
    result = prepare_run(tmp_path, spec)
    rows = PreparedDataset(tmp_path / "out").train_examples()
    # 10 training queries + 12 titles, 2 negatives each: 44 rows of one negative.
    assert (result.counts.train_pairs, result.counts.train_rows, result.counts.with_negatives) == (22, 44, 22)
    assert len(rows) == 44 and all(len(e.negatives) == 1 for e in rows)
    by_pair: dict[tuple[str, str], list[str]] = {}
    for e in rows:
        by_pair.setdefault((e.query, e.positive), []).append(e.negatives[0])
    assert len(by_pair) == 22 and all(len(set(n)) == 2 for n in by_pair.values())


@pytest.mark.parametrize(
    "negatives, message",
    [
        ({"rangeMin": 5, "rangeMax": 5}, "rangeMin must be below"),
        ({"rangeMin": 45, "count": 6}, r"count must fit between rangeMin and rangeMax"),
        ({"absoluteMargin": 0.1, "relativeMargin": 0.05}, "at most one of hardNegatives.absoluteMargin"),
    ],
)
def test_mining_settings_that_exclude_each_other_are_refused(tmp_path, negatives, message):
    mining_folder(tmp_path)
    with pytest.raises(ValueError, match=message):
        prepare_run(tmp_path, mining_spec(**negatives))


# -- Postgres -------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_source_reads_validates_and_splits_by_column(tmp_path, dsn):
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('CREATE SCHEMA "Support"')
        conn.execute('CREATE TABLE "Support".tickets (question text, answer text, part text)')
        rows = [(f"question {i}", f"answer {i}", "test" if i < 4 else "train") for i in range(20)]
        rows += [(None, "orphan answer", "train"), ("no answer", "", "train"), ("question 5", "answer 5", "train")]
        with conn.cursor() as cur:
            cur.executemany('INSERT INTO "Support".tickets VALUES (%s, %s, %s)', rows)
    source = {
        "postgres": {
            "schema": "Support",
            "table": "tickets",
            "queryColumn": "question",
            "positiveColumn": "answer",
            "splitColumn": "part",
        }
    }

    result = prepare_run(tmp_path, {"source": source, "validation": {"maxInvalidFraction": 0.2}, **NO_MINING}, dsn=dsn)

    assert result.counts.test_queries == 4 and result.counts.train_queries == 16
    assert result.counts.duplicates == 1 and result.counts.invalid_rows == 2
    assert sorted(result.invalid_samples) == [
        "Support.tickets:1: missing field 'question'",
        "Support.tickets:2: field 'answer' is empty",
    ]
    again = prepare_run(
        tmp_path, {"source": source, "validation": {"maxInvalidFraction": 0.2}, **NO_MINING}, out="again", dsn=dsn
    )
    assert again.fingerprint == result.fingerprint


@pytest.mark.postgres
def test_postgres_source_errors_are_clear(tmp_path, dsn):
    spec = {"source": {"postgres": {"table": "absent"}}, **NO_MINING}
    with pytest.raises(ValueError, match='relation "public.absent" does not exist'):
        prepare_run(tmp_path, spec, dsn=dsn)
    with pytest.raises(ValueError, match="needs a database connection"):
        prepare_run(tmp_path, spec)


@pytest.mark.parametrize("field", ["table", "schema", "queryColumn", "positiveColumn", "splitColumn"])
def test_hostile_postgres_names_are_rejected_by_the_api(field):
    postgres = {"table": "pairs", field: 'pairs"; DROP TABLE users; --'}
    with pytest.raises(ValidationError, match="String should match pattern"):
        EmbeddingDatasetSpec.model_validate({"source": {"postgres": postgres}})
