"""Generation in the prepare step: sample documents, ask the generator (or the cache), filter, assign roles.

Each sampled document has one role, decided by a seeded hash of its id:

- `test`: only when the source has no labelled test queries; its queries are the test split;
- `validation`: only when the source has no labelled pairs; its queries choose the checkpoint;
- `train`: its queries are trained on (after the round trip).

Held-out queries pass every filter but the round trip: a validation set the base model filtered
is one the base model is good at (the first try on SciFact's sample saturated at 0.95 and no
checkpoint could beat it), so the gate would never publish. Labelled pairs, where a source has
them, stay the validation queries and give the prompt its few-shot examples.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from embedops import progress
from embedops.api.dataset import EmbeddingDatasetSpec
from embedops.api.generate import API_KEY_ENV, GenerateSpec, GenerationCounts, PromptExample
from embedops.prepared import Doc
from embedops.results import GenerationFailed
from embedops.workers.generate import filters, prompt
from embedops.workers.generate.cache import Cache, Reply, entry_key
from embedops.workers.generate.endpoint import Client, Request, RequestFailed
from embedops.workers.readers.rows import Qrels, Source, seeded_unit

log = logging.getLogger(__name__)

REPORT = "generation_report.json"
VALIDATION_FRACTION, VALIDATION_MAX_QUERIES, VALIDATION_MIN_DOCUMENTS = 0.1, 500, 50
REPORT_EXAMPLES = 10
FAILURE_SAMPLES = 5


@dataclass
class Generated:
    train: list[tuple[str, str]] = field(default_factory=list)  # (query, doc id)
    validation: list[tuple[str, str]] = field(default_factory=list)
    test_queries: dict[str, str] = field(default_factory=dict)
    test_qrels: Qrels = field(default_factory=dict)
    counts: GenerationCounts = field(default_factory=GenerationCounts)


def run(
    spec: EmbeddingDatasetSpec, source: Source, *, base_dir: Path, cache_dir: Path | None, output_dir: Path
) -> Generated:
    gen = spec.generate
    assert gen is not None
    started = time.monotonic()
    labelled = any(r > 0 for docs in source.train_qrels.values() for r in docs.values())
    labelled_test = bool(source.test_qrels) or labelled  # a labelled train split gives the test split too
    roles = assign_roles(source.corpus, gen, spec.split.test_fraction, spec.split.seed, labelled, labelled_test)
    examples = tuple(gen.prompt.examples) or few_shot(source, gen.seed) or prompt.BUILT_IN_EXAMPLES
    counts = GenerationCounts(documents_sampled=len(roles), validation_on="labelled" if labelled else "generated")

    candidates, failures = ask(gen, examples, [source.corpus[d] for d in roles], base_dir, cache_dir, counts)
    if not candidates:
        raise GenerationFailed(
            f"spec.generate: every one of the {counts.failures} requests to the generator failed; first: "
            + (failures[0] if failures else "?"),
            transient=True,
        )
    passages = {d: source.corpus[d].text for d in roles}
    filters.well_formed(candidates)
    counts.kept_well_formed = len(filters.kept(candidates))
    filters.unique(candidates)
    counts.kept_unique = len(filters.kept(candidates))
    filters.not_copies(candidates, passages)
    counts.kept_not_copies = len(filters.kept(candidates))
    if gen.filter.generic:
        filters.specific_by_text(candidates, [e.query for e in examples])
    by_model(spec, source.corpus, roles, candidates, base_dir)
    counts.kept_specific = sum(1 for c in candidates if not c.dropped or c.dropped.startswith("round trip"))
    counts.kept_round_trip = sum(1 for c in filters.kept(candidates) if roles[c.doc_id] == "train")

    out = Generated(counts=counts)
    for c in filters.kept(candidates):
        match roles[c.doc_id]:
            case "train":
                out.train.append((c.query, c.doc_id))
            case "validation":
                out.validation.append((c.query, c.doc_id))
            case "test":
                qid = f"gen-{c.doc_id}-{c.sample}"
                out.test_queries[qid], out.test_qrels[qid] = c.query, {c.doc_id: 1}
    counts.train_queries, counts.validation_queries = len(out.train), len(out.validation)
    counts.test_queries = len(out.test_queries)
    counts.failure_samples = failures[:FAILURE_SAMPLES]
    counts.seconds = round(time.monotonic() - started, 1)
    counts.report = str(output_dir / REPORT)
    write_report(output_dir / REPORT, counts, candidates, roles, failures)
    if not out.train:
        raise GenerationFailed(
            f"spec.generate: none of the {counts.queries_generated} generated queries is left to train on "
            f"({summary(candidates)}); see {REPORT}"
        )
    if not labelled and not out.validation:
        log.warning("no generated validation query survived the filters: the fine-tuning gate has no validation")
    return out


def assign_roles(
    corpus: dict[str, Doc], gen: GenerateSpec, test_fraction: float, seed: int, labelled: bool, labelled_test: bool
) -> dict[str, str]:
    """The sampled documents (seeded, at most maxDocuments) and the role of each."""
    sample = sorted(corpus, key=lambda d: (seeded_unit(gen.seed, "generate\0" + d), d))[: gen.max_documents]
    order = sorted(sample, key=lambda d: (seeded_unit(seed, "role\0" + d), d))
    n_test = 0 if labelled_test else max(1, round(test_fraction * len(order)))
    n_validation = 0
    if not labelled:
        # A tenth of the sample, but at least VALIDATION_MIN_DOCUMENTS (a quarter of a small one): with
        # half of a small generator's replies dropped, a tenth of 60 documents left one validation
        # query, which the base model already ranked first, so no checkpoint could beat it.
        wanted = max(round(VALIDATION_FRACTION * len(order)), min(VALIDATION_MIN_DOCUMENTS, len(order) // 4), 1)
        n_validation = min(wanted, max(1, VALIDATION_MAX_QUERIES // gen.queries_per_document))
    if n_test + n_validation >= len(order):
        raise GenerationFailed(
            f"spec.generate: {len(order)} sampled documents are too few to hold out test and validation queries "
            "and still train on one"
        )
    roles = {d: "test" for d in order[:n_test]}
    roles |= {d: "validation" for d in order[n_test : n_test + n_validation]}
    roles |= {d: "train" for d in order[n_test + n_validation :]}
    return {d: roles[d] for d in sample}


def few_shot(source: Source, seed: int, n: int = 2) -> tuple[PromptExample, ...]:
    """Up to n of the source's labelled training pairs, as few-shot examples (a seeded pick)."""
    pairs = [(q, d) for q, docs in source.train_qrels.items() for d, r in docs.items() if r > 0]
    pairs.sort(key=lambda p: (seeded_unit(seed, "shot\0" + p[0] + "\0" + p[1]), p))
    return tuple(PromptExample(text=source.corpus[d].text, query=source.queries[q]) for q, d in pairs[:n])


def ask(
    gen: GenerateSpec,
    examples: tuple[PromptExample, ...],
    docs: list[Doc],
    base_dir: Path,
    cache_dir: Path | None,
    counts: GenerationCounts,
) -> tuple[list[filters.Candidate], list[str]]:
    """A reply for every (document, sample): from the cache, else from the generator (which then fills the cache)."""
    prompt_key = prompt.prompt_hash(gen.prompt, examples)
    settings = (gen.generator, gen.temperature, gen.max_tokens)
    requests: dict[str, tuple[Request, Doc, int]] = {}
    for doc in docs:
        for sample in range(gen.queries_per_document):
            key = entry_key(prompt.document_hash(doc), sample, prompt_key, *settings)
            messages = prompt.messages(gen.prompt, examples, doc)
            requests[key] = (Request(key=key, messages=messages, seed=int(key[:8], 16)), doc, sample)
    cache = Cache(cache_dir / prompt_key if cache_dir is not None else None)
    replies: dict[str, Reply] = {k: r for k in requests if (r := cache.get(k)) is not None}
    counts.from_cache = len(replies)
    failures: list[str] = []
    todo = [requests[k][0] for k in requests if k not in replies]
    if todo:
        log.info("generating %d queries for %d documents (%d from the cache)", len(todo), len(docs), len(replies))
    try:
        with progress.task("Generating queries", total=len(todo)) as task:
            for request, outcome in generator(gen, base_dir).run(todo):
                task.advance()
                _, doc, sample = requests[request.key]
                if isinstance(outcome, RequestFailed):
                    counts.failures += 1
                    failures.append(f"document {doc.id!r} (query {sample + 1}): {outcome}")
                    continue
                cache.put(request.key, outcome)
                replies[request.key] = outcome
                counts.tokens_in += outcome.tokens_in
                counts.tokens_out += outcome.tokens_out
    finally:
        cache.close()
    counts.queries_generated = len(replies)
    candidates = [
        filters.Candidate(doc_id=doc.id, sample=sample, raw=replies[key].text)
        for key, (_, doc, sample) in requests.items()
        if key in replies
    ]
    return candidates, sorted(failures)


class Generator(Protocol):
    def run(self, requests: Iterable[Request]) -> Iterator[tuple[Request, Reply | RequestFailed]]: ...


def generator(gen: GenerateSpec, base_dir: Path) -> Generator:
    if gen.endpoint is not None:
        api_key = os.environ.get(API_KEY_ENV)
        if gen.endpoint.api_key_secret_ref is not None and not api_key:
            ref = gen.endpoint.api_key_secret_ref
            raise GenerationFailed(
                f"spec.generate.endpoint.apiKeySecretRef: no API key in {API_KEY_ENV} (in a cluster it comes from "
                f"key {ref.key!r} of Secret {ref.name!r}; for `embedops run`, export it)"
            )
        return Client(gen.endpoint, api_key, temperature=gen.temperature, max_tokens=gen.max_tokens)
    from embedops.workers.generate import local

    assert gen.model is not None
    folder, gguf = local.resolve(gen.model, base_dir)
    return local.LocalGenerator(
        folder, gguf, temperature=gen.temperature, max_tokens=gen.max_tokens, batch_size=gen.batch_size
    )


def by_model(
    spec: EmbeddingDatasetSpec,
    corpus: dict[str, Doc],
    roles: dict[str, str],
    candidates: list[filters.Candidate],
    base_dir: Path,
) -> None:
    """The base model's filters: flat rankings (generic) and, for training queries, the round trip."""
    gen = spec.generate
    assert gen is not None
    top_k = gen.filter.round_trip_top_k
    alive = filters.kept(candidates)
    if not alive or not (gen.filter.generic or top_k):
        return
    from embedops import modelzoo, retrieval

    model = modelzoo.load(gen.filter.model or spec.hard_negatives.model, base_dir=base_dir)
    texts = {d.id: d.full_text for d in corpus.values()}
    queries = {str(i): c.query for i, c in enumerate(alive)}
    ranking = retrieval.search(
        model, queries, texts, max(top_k, filters.FLAT_K), batch_size=spec.hard_negatives.batch_size
    )
    for i, c in enumerate(alive):
        ranked = ranking[str(i)]
        if (
            gen.filter.generic
            and len(texts) > filters.FLAT_K
            and ranked[0][1] - ranked[filters.FLAT_K - 1][1] < filters.FLAT_MARGIN
        ):
            c.dropped = "generic (many documents score about the same)"
        elif top_k and roles[c.doc_id] == "train" and not any(texts[d] == texts[c.doc_id] for d, _ in ranked[:top_k]):
            c.dropped = f"round trip (its document is not in the base model's top {top_k})"


def summary(candidates: list[filters.Candidate]) -> str:
    reasons = Counter(c.dropped.split(" (")[0] for c in candidates if c.dropped)
    return ", ".join(f"{n} {reason}" for reason, n in reasons.most_common()) or "none dropped"


def write_report(
    path: Path,
    counts: GenerationCounts,
    candidates: list[filters.Candidate],
    roles: dict[str, str],
    failures: list[str],
) -> None:
    """Counts, and examples of kept and dropped queries by reason, for a person to judge the generator by."""
    dropped: dict[str, list[dict[str, str]]] = {}
    for c in candidates:
        if c.dropped:
            reason = c.dropped.split(" (")[0]
            rows = dropped.setdefault(reason, [])
            if len(rows) < REPORT_EXAMPLES:
                rows.append({"document": c.doc_id, "reply": c.raw, "why": c.dropped})
    kept = [{"document": c.doc_id, "query": c.query, "role": roles[c.doc_id]} for c in filters.kept(candidates)][
        : 3 * REPORT_EXAMPLES
    ]
    report = {"counts": counts.to_wire(), "kept": kept, "dropped": dropped, "failures": failures[:50]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
