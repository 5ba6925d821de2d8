"""The probe worker: measure a version's retrieval quality through SQL, and gate its cut-over.

A new model can look better offline and still serve worse: a truncated corpus, a wrong
metric, an ANN index built with too small a beam. So the probe asks the version's own table
the way applications ask the view (`ORDER BY embedding <=> query LIMIT k`, with the index and
its `hnsw.ef_search` / `ivfflat.probes`), for queries whose relevant ids are known, and scores
the rankings with the same metrics as training (embedops.evaluation).

The gate: recall@k must reach `min_recall`, and must not fall more than `max_regression`
below the live version's last probe. That comparison is only made when the live probe ran on
the same probe set with the same k (a fingerprint of the queries and judgements is kept with
each probe); otherwise only `min_recall` applies and the reason says so. With `promote`, a
version that passes is cut over at once.

Probe sets are a prepared dataset's held-out queries, or a JSONL file of
`{"query": str, "relevant": [id, ...]}` or `{"query": str, "relevant": {id: grade}}` lines;
malformed lines are all reported by file and line, and the probe fails, rather than gating on
part of the set.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from embedops import evaluation, modelzoo, steps
from embedops.api import times
from embedops.api.index import ProbeResult, ProbeSpec, VersionState
from embedops.prepared import PreparedDataset
from embedops.store import pgvector
from embedops.store.catalog import VersionRecord
from embedops.workers import sync

log = logging.getLogger(__name__)

MAX_REPORTED_PROBLEMS = 20
Qrels = dict[str, dict[str, int]]


class ProbeSetError(ValueError):
    """A probe set with malformed lines; the message lists them as `file:line: reason`."""


# -- probe set ----------------------------------------------------------------------------------


def _relevant(value: Any) -> dict[str, int]:
    """`relevant` as {id: grade}; ValueError saying what is wrong."""

    def doc_id(v: Any) -> str:
        if isinstance(v, bool) or not isinstance(v, (str, int)) or v == "":
            raise ValueError(f"ids must be non-empty strings or integers, got {v!r}")
        return str(v)

    if isinstance(value, list):
        grades = {doc_id(v): 1 for v in value}
    elif isinstance(value, dict):
        grades = {}
        for key, grade in value.items():
            if isinstance(grade, bool) or not isinstance(grade, int):
                raise ValueError(f"grade of {key!r} must be an integer, got {grade!r}")
            grades[doc_id(key)] = grade
    else:
        raise ValueError('"relevant" must be a list of ids or an object of id: grade')
    if not any(g > 0 for g in grades.values()):
        raise ValueError('"relevant" has no id with a grade above 0')
    return grades


def read_jsonl(path: Path) -> tuple[dict[str, str], Qrels]:
    """Queries and judgements of a JSONL probe set, keyed by line number; ProbeSetError listing every bad line."""
    queries: dict[str, str] = {}
    qrels: Qrels = {}
    problems: list[str] = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
                query = row.get("query")
                if not isinstance(query, str) or not query.strip():
                    raise ValueError('"query" must be a non-empty string')
                if "relevant" not in row:
                    raise ValueError('"relevant" is missing')
                qrels[str(n)] = _relevant(row["relevant"])
                queries[str(n)] = query
            except ValueError as err:  # json.JSONDecodeError is a ValueError
                problems.append(f"{path}:{n}: {err}")
    if problems:
        shown = problems[:MAX_REPORTED_PROBLEMS]
        more = f"\n(and {len(problems) - len(shown)} more)" if len(problems) > len(shown) else ""
        raise ProbeSetError(f"{len(problems)} malformed probe line(s):\n" + "\n".join(shown) + more)
    if not queries:
        raise ProbeSetError(f"{path}: no probe queries")
    return queries, qrels


def load_probe_set(config: steps.ProbeStep) -> tuple[dict[str, str], Qrels]:
    """The probe queries and judgements, at most max_queries of them (in file or query-id order)."""
    if config.probe.path is not None:
        queries, qrels = read_jsonl(Path(config.probe.path))
    else:
        dataset = PreparedDataset(config.dataset_dir)  # type: ignore[arg-type]
        qrels = dataset.test_qrels()
        queries = {q: t for q, t in sorted(dataset.test_queries().items()) if q in qrels}
        if not queries:
            raise ProbeSetError(f"{config.dataset_dir}: the prepared dataset has no judged held-out queries")
    if config.probe.max_queries is not None:
        queries = dict(list(queries.items())[: config.probe.max_queries])
    return queries, {q: qrels[q] for q in queries}


def fingerprint(queries: dict[str, str], qrels: Qrels) -> str:
    """Same queries and judgements, same fingerprint: the condition for comparing two probes."""
    canonical = json.dumps([queries, qrels], sort_keys=True, ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


# -- gate ---------------------------------------------------------------------------------------


def gate(
    recall: float, k: int, spec: ProbeSpec, rec: VersionRecord, live: VersionRecord | None, probe_set: str
) -> tuple[bool, str]:
    """Whether the version may serve, and why, in words a person reads in `kubectl describe`."""
    measured = f"recall@{k} {recall:.4f}"
    if recall < spec.min_recall:
        return False, f"{measured} is below minRecall {spec.min_recall}"
    if live is None or live.version == rec.version:
        return True, f"{measured} meets minRecall {spec.min_recall}" + (" (no live version)" if live is None else "")
    live_recall = _comparable_recall(live, k, probe_set)
    if live_recall is None:
        return True, (
            f"{measured} meets minRecall {spec.min_recall}; "
            f"live v{live.version} has no probe on this probe set to compare with"
        )
    floor = live_recall - spec.max_regression
    if recall < floor:
        return False, (
            f"{measured} regresses more than {spec.max_regression} from live v{live.version}'s {live_recall:.4f}"
        )
    return True, (
        f"{measured} meets minRecall {spec.min_recall} and is within {spec.max_regression} "
        f"of live v{live.version}'s {live_recall:.4f}"
    )


def _comparable_recall(live: VersionRecord, k: int, probe_set: str) -> float | None:
    if not live.probe or live.probe_set != probe_set:
        return None
    probe = ProbeResult.model_validate(live.probe)
    return probe.recall_at_k if probe.k == k else None


# -- run ----------------------------------------------------------------------------------------


def run(config: steps.ProbeStep, *, dsn: str | None = None) -> ProbeResult:
    queries, qrels = load_probe_set(config)
    probe_set = fingerprint(queries, qrels)
    model = modelzoo.load(config.model, device=config.device)
    model_fingerprint = modelzoo.fingerprint(modelzoo.resolve(config.model))
    k = config.probe.k
    depth = max(k, 10)  # MRR@10 and nDCG@10 need ten results whatever k is
    with pgvector.connect(dsn) as conn:
        rec = pgvector.version_record(conn, config.target, config.version)
        if rec.state in (VersionState.BUILDING, VersionState.FAILED):
            raise ValueError(f"{rec.schema}.{rec.table} is {rec.state}; only a finished version can be probed")
        if rec.model_fingerprint and rec.model_fingerprint != model_fingerprint:
            raise ValueError(f"model {config.model!r} is not the model v{rec.version} was built with ({rec.model})")
        ids = list(queries)
        vectors = model.encode_query(
            [queries[q] for q in ids],
            normalize_embeddings=pgvector.normalizes(rec.metric),
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        rankings = pgvector.search(conn, rec, vectors, depth, ef_search=config.ann.ef_search, probes=config.ann.probes)
        scores = evaluation.score(dict(zip(ids, rankings, strict=True)), qrels, depths=(), k=k)
        recall = scores.recall_at_k or 0.0
        live = pgvector.live_record(conn, config.target)
        passed, reason = gate(recall, k, config.probe, rec, live, probe_set)
        if passed and config.promote and rec.state != VersionState.LIVE:
            hook = None
            if config.catch_up is not None:
                model.max_seq_length = config.catch_up.embedding.max_seq_length  # as the version was built
                hook = sync.catch_up(model, config.catch_up.table, config.catch_up.embedding)
                hook(conn, rec)  # the rows changed since the build, outside the lock; the rest inside it
            pgvector.cutover(conn, config.target, rec.version, before=hook)
            reason += f"; cut over to v{rec.version}"
        result = ProbeResult(
            version=rec.version,
            k=k,
            recall_at_k=round(recall, 6),
            mrr_at_10=round(scores.mrr_at_10, 6),
            ndcg_at_10=round(scores.ndcg_at_10, 6),
            queries=scores.queries,
            passed=passed,
            reason=reason,
            checked_at=times.now(),
        )
        pgvector.save_probe(conn, rec, result, probe_set)
    log.info("probe of %s: %s", rec.table, reason)
    return result
