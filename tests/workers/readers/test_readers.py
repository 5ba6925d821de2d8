"""The prepare worker's source readers (`workers/readers/`): dispatch by kind and the row checks they share.

Issue 12, "nothing a user types leaves a resource stuck": whatever bytes a source holds, a
row is either kept or reported as `file:line: reason`, and a file that cannot be used fails
with a message naming it, before anything downstream (the index's COPY, the qrels) trips on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedops import steps
from embedops.api.dataset import DatasetSource, EmbeddingDatasetSpec, ValidationSpec
from embedops.workers import prepare, readers
from embedops.workers.readers.rows import Issues, Source

BOM = b"\xef\xbb\xbf"
HEADER = "query-id\tcorpus-id\tscore"


def jsonl(*rows: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def corpus_rows(n: int = 5) -> list[dict]:
    return [{"_id": f"d{i}", "title": f"Title {i}", "text": f"document {i} text"} for i in range(n)]


def query_rows(n: int = 5) -> list[dict]:
    return [{"_id": f"q{i}", "text": f"question {i}"} for i in range(n)]


def beir(
    tmp_path: Path,
    *,
    corpus: str | bytes | None = None,
    queries: str | bytes | None = None,
    train: str | bytes | None = None,
    test: str | bytes | None = None,
) -> Path:
    """A BEIR folder of 5 documents and queries (q4 held out); any file can be given instead, as text or bytes."""
    files = {
        "corpus.jsonl": jsonl(*corpus_rows()) if corpus is None else corpus,
        "queries.jsonl": jsonl(*query_rows()) if queries is None else queries,
        "qrels/train.tsv": "".join(f"{line}\n" for line in [HEADER, *(f"q{i}\td{i}\t1" for i in range(4))])
        if train is None
        else train,
        "qrels/test.tsv": f"{HEADER}\nq4\td4\t1\n" if test is None else test,
    }
    folder = tmp_path / "beir"
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return folder


def read(tmp_path: Path, source: dict) -> tuple[Source, list[str]]:
    """What the reader of `source` returns, and its `file:line: reason` reports."""
    issues = Issues()
    found = readers.read(
        DatasetSource.model_validate(source), base_dir=tmp_path, rules=ValidationSpec(), issues=issues, dsn=None
    )
    return found, [f"{r['file']}:{r['line']}: {r['reason']}" for r in issues.rows]


BEIR = {"beir": {"path": "beir"}}


@pytest.mark.parametrize(
    "source, kind",
    [
        ({"beir": {"path": "beir"}}, "beir"),
        ({"pairs": {"path": "pairs.jsonl"}}, "pairs"),
        ({"postgres": {"table": "pairs"}}, "postgres"),
    ],
)
def test_a_source_names_its_kind(source, kind):
    assert DatasetSource.model_validate(source).kind == kind


# -- 1, 2: characters no database or encoder accepts ----------------------------------------------


def test_nul_in_an_id_or_a_text_is_a_bad_row(tmp_path):
    # Postgres rejects NUL in text: let through, it would break the index's COPY on every retry.
    beir(
        tmp_path,
        corpus=jsonl(
            *corpus_rows(),
            {"_id": "d\x005", "text": "fine"},
            {"_id": "d6", "text": "a\x00b"},
            {"_id": "d7", "title": "t\x00", "text": "fine"},
        ),
        queries=jsonl(*query_rows(), {"_id": "q\x005", "text": "fine"}, {"_id": "q6", "text": "a\x00b"}),
    )
    found, reported = read(tmp_path, BEIR)
    assert reported == [
        "corpus.jsonl:6: field '_id' contains a NUL character (U+0000)",
        "corpus.jsonl:7: field 'text' contains a NUL character (U+0000)",
        "corpus.jsonl:8: field 'title' contains a NUL character (U+0000)",
        "queries.jsonl:6: field '_id' contains a NUL character (U+0000)",
        "queries.jsonl:7: field 'text' contains a NUL character (U+0000)",
    ]
    assert sorted(found.corpus) == [f"d{i}" for i in range(5)]
    assert not any("\x00" in text for text in found.queries.values())


def test_nul_in_a_pair_is_a_bad_row(tmp_path):
    (tmp_path / "pairs.jsonl").write_text(
        jsonl(
            {"query": "query 0", "positive": "answer 0"},
            {"query": "query\x00 1", "positive": "answer 1"},
            {"query": "query 2", "positive": "answer 2", "negatives": ["fine", "not\x00fine"]},
        )
    )
    found, reported = read(tmp_path, {"pairs": {"path": "pairs.jsonl"}})
    assert reported == [
        "pairs.jsonl:2: field 'query' contains a NUL character (U+0000)",
        "pairs.jsonl:3: field 'negatives[1]' contains a NUL character (U+0000)",
    ]
    assert [d.text for d in found.corpus.values()] == ["answer 0"]


def test_a_lone_surrogate_is_a_bad_row_with_file_and_line(tmp_path):
    # JSON can spell a lone surrogate ("\ud800"); Python decodes it, and only encoding to UTF-8 fails.
    lines = [json.dumps(r) for r in corpus_rows()] + [
        '{"_id": "d5", "text": "broken \\ud800 text"}',
        '{"_id": "\\udc00", "text": "fine"}',
    ]
    beir(tmp_path, corpus="".join(f"{line}\n" for line in lines))
    found, reported = read(tmp_path, BEIR)
    assert reported == [
        "corpus.jsonl:6: field 'text' contains a lone surrogate (U+D800), which is not valid Unicode",
        "corpus.jsonl:7: field '_id' contains a lone surrogate (U+DC00), which is not valid Unicode",
    ]
    assert sorted(found.corpus) == [f"d{i}" for i in range(5)]


def test_a_lone_surrogate_in_pairs_does_not_fail_the_whole_prepare(tmp_path):
    lines = [json.dumps({"query": f"query {i}", "positive": f"answer {i}"}) for i in range(20)]
    lines.append('{"query": "query \\ud83d", "positive": "answer"}')
    (tmp_path / "pairs.jsonl").write_text("".join(f"{line}\n" for line in lines))
    result = prepare.run(
        steps.PrepareStep(
            spec=EmbeddingDatasetSpec.model_validate(
                {"source": {"pairs": {"path": "pairs.jsonl"}}, "hardNegatives": {"enabled": False}}
            ),
            base_dir=tmp_path,
            output_dir=tmp_path / "out",
        )
    )
    assert result.invalid_samples == [
        "pairs.jsonl:21: field 'query' contains a lone surrogate (U+D83D), which is not valid Unicode"
    ]
    assert result.counts.corpus == 20


# -- 3: a byte-order mark -------------------------------------------------------------------------


def test_a_bom_at_the_start_of_a_file_is_not_part_of_its_first_row(tmp_path):
    beir(
        tmp_path,
        corpus=BOM + jsonl(*corpus_rows()).encode(),
        queries=BOM + jsonl(*query_rows()).encode(),
        train=BOM + f"{HEADER}\nq0\td0\t1\nq1\td1\t1\n".encode(),
        test=BOM + b"q4\td4\t1\n",
    )
    found, reported = read(tmp_path, BEIR)
    assert reported == []
    assert sorted(found.corpus) == [f"d{i}" for i in range(5)] and sorted(found.queries) == [f"q{i}" for i in range(5)]
    assert found.train_qrels == {"q0": {"d0": 1}, "q1": {"d1": 1}} and found.test_qrels == {"q4": {"d4": 1}}


def test_a_bom_at_the_start_of_a_pairs_file_is_not_part_of_its_first_row(tmp_path):
    (tmp_path / "pairs.jsonl").write_bytes(BOM + jsonl({"query": "query 0", "positive": "answer 0"}).encode())
    found, reported = read(tmp_path, {"pairs": {"path": "pairs.jsonl"}})
    assert reported == [] and list(found.queries.values()) == ["query 0"]


# -- 4: one id, two texts -------------------------------------------------------------------------


def test_an_id_defined_twice_with_different_texts_is_reported_and_the_first_kept(tmp_path):
    beir(
        tmp_path,
        corpus=jsonl(
            *corpus_rows(),
            {"_id": "d1", "title": "Title 1", "text": "another text"},
            corpus_rows()[2],
            {"_id": "d3", "title": "Another title", "text": "document 3 text"},
        ),
        queries=jsonl(*query_rows(), {"_id": "q0", "text": "another question"}, query_rows()[1]),
    )
    found, reported = read(tmp_path, BEIR)
    assert reported == [
        "corpus.jsonl:6: id 'd1' was already defined at line 2 with a different text; the first is kept",
        "corpus.jsonl:8: id 'd3' was already defined at line 4 with a different title; the first is kept",
        "queries.jsonl:6: id 'q0' was already defined at line 1 with a different text; the first is kept",
    ]
    assert found.duplicates == 2  # d2 and q1, repeated as they were
    assert found.corpus["d1"].text == "document 1 text" and found.queries["q0"] == "question 0"


# -- 5: a file with no rows -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "empty, name",
    [
        ("corpus", "corpus.jsonl"),
        ("queries", "queries.jsonl"),
        ("train", "qrels/train.tsv"),
        ("test", "qrels/test.tsv"),
    ],
)
@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_a_beir_file_without_rows_fails_naming_it(tmp_path, empty, name, content):
    beir(tmp_path, **{empty: content})
    with pytest.raises(ValueError, match=rf"^{name} is empty \(it has no rows\)$"):
        read(tmp_path, BEIR)


@pytest.mark.parametrize("split", ["train", "test"])
def test_qrels_with_a_header_only_have_no_rows(tmp_path, split):
    beir(tmp_path, **{split: HEADER + "\n"})
    with pytest.raises(ValueError, match=rf"^qrels/{split}.tsv is empty \(it has no rows\)$"):
        read(tmp_path, BEIR)


@pytest.mark.parametrize("empty", ["path", "testPath"])
def test_a_pairs_file_without_rows_fails_naming_it(tmp_path, empty):
    rows = jsonl({"query": "query 0", "positive": "answer 0"})
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("" if empty == "path" else rows)
    (tmp_path / "data" / "test.jsonl").write_text("\n" if empty == "testPath" else rows)
    name = "data/train.jsonl" if empty == "path" else "data/test.jsonl"
    with pytest.raises(ValueError, match=rf"^{name} is empty \(it has no rows\)$"):
        read(tmp_path, {"pairs": {"path": "data/train.jsonl", "testPath": "data/test.jsonl"}})


def test_an_empty_corpus_is_not_blamed_on_the_qrels(tmp_path):
    beir(tmp_path, corpus="")
    spec = EmbeddingDatasetSpec.model_validate({"source": BEIR, "hardNegatives": {"enabled": False}})
    with pytest.raises(ValueError, match=r"^corpus.jsonl is empty"):
        prepare.run(steps.PrepareStep(spec=spec, base_dir=tmp_path, output_dir=tmp_path / "out"))


@pytest.mark.postgres
def test_an_empty_table_fails_naming_it(tmp_path, dsn):
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE pairs (query text, positive text)")
    issues = Issues()
    with pytest.raises(ValueError, match=r"^source.postgres: public.pairs is empty \(it has no rows\)$"):
        readers.read(
            DatasetSource.model_validate({"postgres": {"table": "pairs"}}),
            base_dir=tmp_path,
            rules=ValidationSpec(),
            issues=issues,
            dsn=dsn,
        )


# -- 6: bytes that are not UTF-8 in qrels ---------------------------------------------------------


def test_qrels_lines_that_are_not_utf8_are_reported_as_such(tmp_path):
    beir(tmp_path, train=f"{HEADER}\nq0\td0\t1\n".encode() + b"q1\td\xff1\t1\nq2\td2\t1\n")
    found, reported = read(tmp_path, BEIR)
    assert reported == ["qrels/train.tsv:3: not valid UTF-8"]
    assert found.train_qrels == {"q0": {"d0": 1}, "q2": {"d2": 1}}


def test_qrels_keep_their_line_endings_and_header(tmp_path):
    beir(tmp_path, train=f"{HEADER}\r\nq0\td0\t1\r\nq1\td1\t1\rq2\td2\t1".encode())
    found, reported = read(tmp_path, BEIR)
    assert reported == [] and found.train_qrels == {"q0": {"d0": 1}, "q1": {"d1": 1}, "q2": {"d2": 1}}


# -- 7: only the expected files are read ----------------------------------------------------------


@pytest.fixture
def watch_files(monkeypatch):
    """From its call on: fail any listing of a folder, and record the files opened."""
    import os

    def refuse(*args, **kwargs):
        raise AssertionError(f"a folder was listed: {args[:1]}")

    def watch() -> list[str]:
        for name in ("rglob", "glob", "iterdir", "walk"):
            monkeypatch.setattr(Path, name, refuse, raising=False)
        for name in ("walk", "scandir", "listdir"):
            monkeypatch.setattr(os, name, refuse)
        opened: list[str] = []
        real_open = Path.open

        def recording_open(self, *args, **kwargs):
            opened.append(str(self))
            return real_open(self, *args, **kwargs)

        monkeypatch.setattr(Path, "open", recording_open)
        return opened

    return watch


def test_the_filesystem_root_as_a_beir_folder_fails_at_once_naming_the_missing_file(tmp_path, watch_files):
    opened = watch_files()
    with pytest.raises(
        FileNotFoundError,
        match=r"^source.beir.path '/': corpus.jsonl not found \(a BEIR folder holds corpus.jsonl, "
        r"queries.jsonl and qrels/<split>.tsv\)$",
    ):
        readers.read(
            DatasetSource.model_validate({"beir": {"path": "/"}}),
            base_dir=tmp_path,
            rules=ValidationSpec(),
            issues=Issues(),
            dsn=None,
        )
    assert opened == []


@pytest.mark.parametrize("missing", ["queries.jsonl", "qrels/train.tsv", "qrels/test.tsv"])
def test_a_missing_beir_file_fails_before_any_file_is_read(tmp_path, watch_files, missing):
    (beir(tmp_path) / missing).unlink()
    opened = watch_files()
    with pytest.raises(FileNotFoundError, match=rf"^source.beir.path 'beir': {missing} not found"):
        read(tmp_path, BEIR)
    assert opened == []


def test_a_beir_folder_is_read_without_listing_it(tmp_path, watch_files):
    folder = beir(tmp_path)
    (folder / "unrelated.jsonl").write_text("not json\n")
    opened = watch_files()
    read(tmp_path, BEIR)
    assert sorted(Path(p).relative_to(folder).as_posix() for p in opened) == [
        "corpus.jsonl",
        "qrels/test.tsv",
        "qrels/train.tsv",
        "queries.jsonl",
    ]


# -- issue 16: line endings, invisible texts, qrels that judge nothing relevant --------------------


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "lone CR"])
def test_every_line_ending_ends_a_row(tmp_path, ending):
    def lines(*rows: dict) -> str:
        return ending.join(json.dumps(r) for r in rows) + ending

    beir(
        tmp_path,
        corpus=lines(*corpus_rows()),
        queries=lines(*query_rows()),
        train=ending.join([HEADER, *(f"q{i}\td{i}\t1" for i in range(4))]) + ending,
    )
    (tmp_path / "pairs.jsonl").write_text(
        lines({"query": "query 0", "positive": "answer 0"}, {"query": "query 1", "positive": "answer 1"}), newline=""
    )
    found, reported = read(tmp_path, BEIR)
    assert reported == [] and len(found.corpus) == len(found.queries) == 5 and len(found.train_qrels) == 4
    pairs, reported = read(tmp_path, {"pairs": {"path": "pairs.jsonl"}})
    assert reported == [] and sorted(pairs.queries.values()) == ["query 0", "query 1"]


@pytest.mark.parametrize(
    "text",
    ["\u200b", " \u200b\t", "\u00a0\u200c\u200d", "\u2060\ufeff", "\u3000"],
    ids=["zero-width space", "with whitespace", "nbsp and joiners", "word joiner and BOM", "ideographic space"],
)
def test_a_text_of_invisible_characters_is_empty(tmp_path, text):
    beir(tmp_path, corpus=jsonl(*corpus_rows(), {"_id": "d9", "title": "Title 9", "text": text}))
    found, reported = read(tmp_path, BEIR)
    assert reported == ["corpus.jsonl:6: field 'text' is empty"] and "d9" not in found.corpus


def test_invisible_characters_around_a_text_do_not_count_towards_its_length(tmp_path):
    beir(tmp_path, queries=jsonl(*query_rows(), {"_id": "q9", "text": "\u200bab\u200b"}))
    issues = Issues()
    readers.read(
        DatasetSource.model_validate(BEIR), base_dir=tmp_path, rules=ValidationSpec(minChars=3), issues=issues, dsn=None
    )
    assert [r["reason"] for r in issues.rows if r["line"] == 6] == ["field 'text' is shorter than 3 characters"]


@pytest.mark.parametrize(("split", "what"), [("test", "test query"), ("train", "query")])
def test_qrels_that_judge_nothing_relevant_say_so(tmp_path, split, what):
    beir(tmp_path, **{split: f"{HEADER}\nq0\td0\t0\nq4\td4\t0\n"})
    with pytest.raises(ValueError, match=rf"^qrels/{split}.tsv: no {what} has a relevant document \(every score is 0"):
        read(tmp_path, BEIR)


def test_a_source_path_that_does_not_exist_is_retried_not_failed_for_good(tmp_path):
    """Issue 17, item 4: on a shared workspace a Job may still be copying the data; exit 3, not 2."""
    from embedops import steps
    from embedops.workers import runner

    step = steps.PrepareStep(
        spec={"source": {"beir": {"path": "not-yet"}}}, base_dir=tmp_path, output_dir=tmp_path / "out"
    )
    with pytest.raises(runner.WorkerError) as err:
        runner.run(step, dsn=None)
    assert (err.value.reason, err.value.exit_code) == ("SourceNotFound", 3)
    assert "source.beir.path 'not-yet' does not exist" in str(err.value)
    (tmp_path / "a-file").write_text("x")
    step = steps.PrepareStep(
        spec={"source": {"beir": {"path": "a-file"}}}, base_dir=tmp_path, output_dir=tmp_path / "o"
    )
    with pytest.raises(runner.WorkerError) as err:
        runner.run(step, dsn=None)
    assert (err.value.reason, err.value.exit_code) == ("InvalidInput", 2) and "is not a folder" in str(err.value)
