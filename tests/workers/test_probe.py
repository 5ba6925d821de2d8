"""The probe worker: probe sets, metrics through SQL, and the cut-over gate."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from embedops import steps
from embedops.api.index import ProbeSpec, Target
from embedops.prepared import Doc, write_prepared
from embedops.store import pgvector
from embedops.workers import embed, probe

TARGET = {"name": "kb"}

# (document, a paraphrasing query with little word overlap)
FACTS = [
    (
        "The Eiffel Tower in Paris was completed in 1889 for the World's Fair.",
        "When was the famous iron landmark in France finished?",
    ),
    (
        "Photosynthesis lets plants turn sunlight, water and carbon dioxide into sugar and oxygen.",
        "How do green plants make food from light?",
    ),
    ("The Pacific is the largest and deepest of Earth's oceans.", "Which sea covers the most of the planet?"),
    (
        "Honeybees communicate the location of flowers through a waggle dance.",
        "How do bees tell each other where nectar is?",
    ),
    ("A violin has four strings tuned in perfect fifths.", "How many strings does a fiddle have?"),
    (
        "Mount Everest is the highest mountain above sea level, on the border of Nepal and China.",
        "What is the tallest peak in the world?",
    ),
    ("Penicillin was discovered by Alexander Fleming in 1928.", "Who found the first antibiotic?"),
    ("The human heart pumps blood through the body with its four chambers.", "Which organ circulates blood?"),
    (
        "Espresso is made by forcing hot water through finely ground coffee under pressure.",
        "How is a strong Italian coffee shot brewed?",
    ),
    ("Volcanoes erupt when molten rock called magma rises to the surface.", "Why do volcanic eruptions happen?"),
    ("Chess is played on a board of sixty-four squares by two players.", "How many cells does a chessboard have?"),
    ("Saturn is known for its bright system of rings made of ice and rock.", "Which planet has prominent rings?"),
    (
        "Sourdough bread rises thanks to wild yeast and lactic acid bacteria in a starter.",
        "What makes naturally leavened loaves grow?",
    ),
    (
        "Tides are caused mainly by the gravitational pull of the Moon.",
        "What makes the sea level go up and down each day?",
    ),
    (
        "The Rosetta Stone helped scholars decipher Egyptian hieroglyphs.",
        "Which artifact allowed translating ancient Egyptian writing?",
    ),
    (
        "Vaccines train the immune system to recognise a pathogen without causing disease.",
        "How do immunizations protect people from infections?",
    ),
    ("Lightning is a sudden electrostatic discharge during a thunderstorm.", "What is the electric flash in a storm?"),
    (
        "Penguins are flightless birds that live mostly in the Southern Hemisphere.",
        "Which birds cannot fly and live near Antarctica?",
    ),
    (
        "Glaciers are slow-moving rivers of ice formed from compacted snow.",
        "What are huge masses of moving ice called?",
    ),
    (
        "A solar panel converts sunlight directly into electricity using photovoltaic cells.",
        "How do rooftop panels generate power from the sun?",
    ),
]
_ADJ = ["quiet", "busy", "ancient", "modern", "rural", "coastal", "northern", "tiny"]
_NOUN = ["market", "council", "library", "railway", "bakery", "harbour", "museum", "school"]
_VERB = ["opens", "closes", "renovates", "advertises", "reorganises", "celebrates"]


def fillers() -> list[str]:
    return [
        f"The {a} {n} {v} its schedule on weekday {i}."
        for i, (a, n, v) in enumerate((a, n, v) for a in _ADJ for n in _NOUN for v in _VERB[:3])
    ][:150]


@pytest.fixture
def knowledge_base(tmp_path) -> Path:
    """A prepared dataset: FACTS plus filler documents, one held-out query per fact."""
    corpus = [Doc(id=f"fact{i}", text=d) for i, (d, _) in enumerate(FACTS)]
    corpus += [Doc(id=f"filler{i}", text=t) for i, t in enumerate(fillers())]
    write_prepared(
        tmp_path / "kb",
        corpus=corpus,
        train=[],
        test_queries={f"q{i}": q for i, (_, q) in enumerate(FACTS)},
        test_qrels={f"q{i}": {f"fact{i}": 1} for i in range(len(FACTS))},
    )
    return tmp_path / "kb"


def build(dsn: str, model: str, dataset: Path) -> int:
    cfg = steps.EmbedStep(
        target=TARGET, source={"datasetRef": {"name": "kb"}}, dataset_dir=dataset, model=model, device="cpu"
    )
    return embed.run(cfg, dsn=dsn).version


def probe_config(model: str, dataset: Path, min_recall: float = 0.0, **kw) -> steps.ProbeStep:
    return steps.ProbeStep(
        target=TARGET, model=model, dataset_dir=dataset, device="cpu", probe={"minRecall": min_recall}, **kw
    )


def test_minilm_passes_the_gate_that_a_random_model_fails(dsn, knowledge_base, tiny_model_dir):
    minilm = build(dsn, "all-MiniLM-L6-v2", knowledge_base)
    good = probe.run(
        probe_config("all-MiniLM-L6-v2", knowledge_base, version=minilm, min_recall=0.7, promote=True), dsn=dsn
    )
    assert good.passed and good.recall_at_k >= 0.9 and good.queries == len(FACTS)
    assert good.mrr_at_10 > 0.8 and good.ndcg_at_10 > 0.8
    assert "cut over to v1" in good.reason

    tiny = build(dsn, str(tiny_model_dir), knowledge_base)
    bad = probe.run(
        probe_config(str(tiny_model_dir), knowledge_base, version=tiny, min_recall=0.7, promote=True), dsn=dsn
    )
    assert not bad.passed and bad.recall_at_k < 0.7
    assert "below minRecall 0.7" in bad.reason
    regression = probe.run(probe_config(str(tiny_model_dir), knowledge_base, version=tiny, promote=True), dsn=dsn)
    assert not regression.passed and "regresses more than 0.02 from live v1" in regression.reason

    with pgvector.connect(dsn) as conn:
        versions = {v.version: v for v in pgvector.versions(conn, Target(**TARGET))}
    assert (versions[minilm].state, versions[tiny].state) == ("Live", "Ready")
    assert versions[minilm].probe.recall_at_k == good.recall_at_k
    assert versions[tiny].probe.reason == regression.reason


def test_a_jsonl_probe_set_against_a_table_source(dsn, tmp_path, tiny_model_dir):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.notes (id int PRIMARY KEY, text text)")
        for i, (doc, _) in enumerate(FACTS):
            conn.execute("INSERT INTO public.notes VALUES (%s, %s)", (i + 1, doc))
    cfg = steps.EmbedStep(
        target=TARGET,
        source={"table": {"table": "notes"}},
        model=str(tiny_model_dir),
        device="cpu",
        ann={"metric": "inner_product"},
    )
    version = embed.run(cfg, dsn=dsn).version
    path = tmp_path / "probe.jsonl"
    lines = [{"query": q, "relevant": [i + 1]} for i, (_, q) in enumerate(FACTS[:4])]
    lines.append({"query": FACTS[4][1], "relevant": {"5": 2, "6": 0}})
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")

    result = probe.run(
        steps.ProbeStep(
            target=TARGET,
            version=version,
            model=str(tiny_model_dir),
            probe={"path": str(path), "k": 5, "maxQueries": 3},
            device="cpu",
        ),
        dsn=dsn,
    )

    assert (result.version, result.k, result.queries, result.passed) == (version, 5, 3, True)
    assert 0 <= result.recall_at_k <= 1 and "no live version" in result.reason
    with pytest.raises(ValueError, match="not the model v1 was built with"):
        probe.run(
            steps.ProbeStep(target=TARGET, version=version, model="all-MiniLM-L6-v2", probe={"path": str(path)}),
            dsn=dsn,
        )


def test_malformed_probe_lines_are_reported_with_file_and_line(tmp_path):
    path = tmp_path / "probe.jsonl"
    path.write_text(
        "\n".join(
            [
                '{"query": "fine", "relevant": ["a"]}',
                "not json",
                '{"query": "", "relevant": ["a"]}',
                '{"query": "no ids", "relevant": []}',
                '{"query": "bad grade", "relevant": {"a": "high"}}',
                '["a list"]',
                '{"query": "missing"}',
                '{"query": "ok too", "relevant": {"b": 1}}',
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    with pytest.raises(probe.ProbeSetError) as err:
        probe.read_jsonl(path)
    message = str(err.value)
    assert message.startswith("6 malformed probe line(s)")
    for line in (2, 3, 4, 5, 6, 7):
        assert f"{path}:{line}: " in message
    assert f"{path}:1:" not in message and f"{path}:8:" not in message
    assert '"relevant" has no id with a grade above 0' in message and "not a JSON object" in message


def test_the_gate_only_compares_probes_of_the_same_probe_set():
    from embedops.store.catalog import VersionRecord

    def record(version: int, state: str, probe_json=None, probe_set=None) -> VersionRecord:
        return VersionRecord(
            "public",
            "kb",
            version,
            f"kb_v{version}",
            "m",
            None,
            4,
            "vector",
            "cosine",
            "text",
            "s",
            1,
            10,
            state,
            None,
            None,
            probe_json,
            probe_set,
            None,
        )  # type: ignore[arg-type]

    live_probe = {
        "version": 1,
        "k": 10,
        "recallAtK": 0.8,
        "mrrAt10": 0.5,
        "ndcgAt10": 0.6,
        "queries": 5,
        "checkedAt": "2026-01-01T00:00:00Z",
    }
    spec = ProbeSpec(min_recall=0.5)
    new = record(2, "Ready")
    assert probe.gate(0.79, 10, spec, new, record(1, "Live", live_probe, "set-a"), "set-a")[0]
    assert not probe.gate(0.77, 10, spec, new, record(1, "Live", live_probe, "set-a"), "set-a")[0]
    passed, reason = probe.gate(0.6, 10, spec, new, record(1, "Live", live_probe, "set-b"), "set-a")
    assert passed and "no probe on this probe set" in reason
    assert not probe.gate(0.4, 10, spec, new, None, "set-a")[0]
