"""The closing report of `embedops run`: every resource's state, and base vs tuned quality."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from embedops.api.index import DriftResult, IndexVersion, SyncStatus
from embedops.api.scores import RetrievalScores


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _delta(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{b - a:+.4f}"


def print_report(outcomes: Mapping[str, Any], console: Console | None = None) -> None:
    if console is None:
        console = Console()
        if not console.is_terminal:  # logs and CI: wide enough that names are not cut
            console = Console(width=140)
    console.print(_states(outcomes))
    for key, outcome in outcomes.items():
        kind, status = outcome.loaded.resource.kind.kind, outcome.status
        if kind == "FineTuneJob" and status.base_metrics and status.tuned_metrics:
            console.print(f"\n{key}: held-out retrieval, base vs tuned ({status.tuned_metrics.queries} queries)")
            console.print(_base_vs_tuned(status.base_metrics, status.tuned_metrics))
        if kind == "EmbeddingIndex" and status.versions:
            console.print(f"\n{key}: versions (live: v{status.live_version})")
            console.print(_versions(status.versions))
            if status.drift:
                console.print(_drift(status.drift))
            if status.sync:
                console.print(_sync(status.sync))


def _states(outcomes: Mapping[str, Any]) -> Table:
    states = Table(title="Resources", title_justify="left")
    for col in ("resource", "ready", "reason", "message"):
        states.add_column(col)
    for key, outcome in outcomes.items():
        ready = outcome.status.condition("Ready")
        mark = "[green]True[/]" if ready and ready.status == "True" else "[red]False[/]"
        note = " (unchanged, reused)" if outcome.reused else ""
        states.add_row(key, mark, ready.reason if ready else "-", (ready.message if ready else "") + note)
    return states


def _base_vs_tuned(base: RetrievalScores, tuned: RetrievalScores) -> Table:
    table = Table()
    for col in ("metric", "base", "tuned", "change"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    for label, attr in (
        ("nDCG@10", "ndcg_at_10"),
        ("MRR@10", "mrr_at_10"),
        ("Recall@10", "recall_at_10"),
        ("Recall@100", "recall_at_100"),
    ):
        a, b = getattr(base, attr), getattr(tuned, attr)
        table.add_row(label, _fmt(a), _fmt(b), _delta(a, b))
    return table


def _versions(versions: list[IndexVersion]) -> Table:
    table = Table()
    for col in ("version", "state", "rows", "model", "recall@k", "MRR@10", "nDCG@10", "gate"):
        table.add_column(col)
    for v in versions:
        p = v.probe
        table.add_row(
            f"v{v.version}",
            v.state,
            str(v.rows),
            v.model,
            _fmt(p.recall_at_k if p else None),
            _fmt(p.mrr_at_10 if p else None),
            _fmt(p.ndcg_at_10 if p else None),
            "-" if p is None or p.passed is None else ("pass" if p.passed else "fail"),
        )
    return table


def _sync(s: SyncStatus) -> str:
    pending = f", {s.pending_rows} pending" if s.pending_rows else ""
    skipped = f", {s.skipped_rows} rows without text skipped" if s.skipped_rows else ""
    return (
        f"sync of v{s.version} with its table at {s.last_sync_time or 'never completed'}: "
        f"{s.rows_embedded} rows embedded, {s.rows_deleted} deleted{pending}{skipped} ({s.lag_seconds:.1f}s)"
    )


def _drift(d: DriftResult) -> str:
    return (
        f"drift of v{d.version}: MMD² {d.score:.4f}, centroid distance "
        f"{d.centroid_distance:.4f}, drifted components {d.drifted_components:.2f}"
        f" -> {'DRIFTED' if d.drifted else 'ok'}"
    )
