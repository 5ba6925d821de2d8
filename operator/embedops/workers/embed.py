"""The embed worker: embed one shard of a corpus into a new (or resumed) pgvector version table.

Re-embedding a corpus takes hours on real data, and pods are preempted, evicted and retried,
so the work is cut into chunks of `embedding.commitRows` rows, each committed with its shard's
progress: a restarted pod continues after the last committed id, and a version is only
resumed by a build of the same model, source and layout (see store.pgvector.begin_build).

Documents are read in id order, one shard per pod (workers.documents); the pod that finishes
last (any pod with `finalize`) builds the ANN index and marks the version Ready.

A version holds the source as it was read: rows edited after their chunk was read, or added
behind the read position, wait for the next version (the drift worker measures how far the
live version has fallen behind).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import psycopg

from embedops import modelzoo, progress, steps
from embedops.results import EmbedResult as Result
from embedops.results import EmptySource
from embedops.store import pgvector
from embedops.workers import documents

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)


# -- embedding ----------------------------------------------------------------------------------


def run(config: steps.EmbedStep, *, dsn: str | None = None) -> Result:
    started = time.monotonic()
    target = config.target
    with pgvector.connect(dsn) as conn, pgvector.connect(dsn) as reader:
        if config.owner is not None:  # before anything is read or written: whose target this is
            pgvector.claim_target(conn, target, config.owner)
        docs = documents.open_documents(
            config.source,
            conn=reader,
            dataset_dir=config.dataset_dir,
            shard=config.shard,
            shards=config.embedding.shards,
        )
        model = modelzoo.load(config.model, device=config.device, max_seq_length=config.embedding.max_seq_length)
        fingerprint = modelzoo.fingerprint(modelzoo.resolve(config.model))
        build = pgvector.Build(
            model=config.model,
            model_fingerprint=fingerprint,
            dimensions=modelzoo.embedding_dimension(model),
            vector_type=config.ann.vector_type,
            metric=config.ann.metric,
            id_type=docs.id_type,
            source=docs.description,
            shards=config.embedding.shards,
            embeddings_key=config.embeddings_key,
        )
        if config.reuse and (done := pgvector.find_built(conn, target, build)) is not None:
            log.info("%s already holds these embeddings (%s); nothing to build", done.table, done.state)
            return Result(
                version=done.version,
                table=done.table,
                state=done.state,
                rows=done.rows,
                shard_rows=0,
                embedded=0,
                resumed=False,
                reused=True,
                seconds=round(time.monotonic() - started, 3),
                rows_per_second=0.0,
            )
        _check_not_empty(config, docs, reader)
        rec, resumed = pgvector.begin_build(conn, target, build)
        writer = pgvector.VersionWriter(conn, rec, config.shard)
        already = writer.progress.rows
        embedding_started = time.monotonic()
        if not writer.progress.done:
            embed_shard(model, docs, writer, config)
            writer.finish()
        embedding_seconds = time.monotonic() - embedding_started
        if config.finalize:
            pgvector.finalize(conn, target, rec.version, config.ann, config.maintenance_work_mem)
        now = pgvector.version_record(conn, target, rec.version)
        skipped, skipped_ids = documents.skipped_rows(docs)
    embedded = writer.progress.rows - already
    return Result(
        skipped_rows=skipped,
        skipped_ids=skipped_ids,
        version=rec.version,
        table=rec.table,
        state=now.state,
        rows=now.rows,
        shard_rows=writer.progress.rows,
        embedded=embedded,
        resumed=resumed and already > 0,
        seconds=round(time.monotonic() - started, 3),
        rows_per_second=round(embedded / embedding_seconds, 2) if embedding_seconds > 0 else 0.0,
    )


def _check_not_empty(config: steps.EmbedStep, docs: documents.Documents, conn: psycopg.Connection) -> None:
    """A version of an empty source would go live serving nothing (recall 0 can meet a gate of 0): refuse it
    before a version is allocated. Counting also finds a table the role may not read. The whole source is
    read again only when this shard has no row (another shard may)."""
    if docs.total() > 0:
        return
    whole = documents.open_documents(config.source, conn=conn, dataset_dir=config.dataset_dir)
    if whole.total() == 0:
        raise EmptySource(f"source: {whole.description} has no row with text to embed; no version is built")


def embed_shard(
    model: SentenceTransformer, docs: documents.Documents, writer: pgvector.VersionWriter, config: steps.EmbedStep
) -> None:
    """Embed and commit the shard's remaining documents, chunk by chunk.

    A chunk is written (COPY and commit, in a second thread) while the next one is encoded; the
    writes stay in order, one at a time, so a killed run still resumes after its last commit.
    """
    rec = writer.record
    remaining = docs.total() - writer.progress.rows
    if writer.progress.rows:
        log.info("resuming %s shard %d after %d rows", rec.table, config.shard, writer.progress.rows)
    shard = f" shard {config.shard}/{config.embedding.shards}" if config.embedding.shards > 1 else ""
    from embedops.workers.encoder import Encoder  # torch: only where a pod embeds

    encoder = Encoder(
        model,
        batch_size=config.embedding.batch_size,
        normalize=pgvector.normalizes(rec.metric),
        precision=config.embedding.precision,
    )
    with (
        progress.task(f"Embedding {rec.schema}.{rec.table}{shard}", total=remaining) as task,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedops-copy") as copier,
    ):
        pending: tuple[Future, int] | None = None
        for chunk in docs.chunks(writer.progress.last_id, config.embedding.commit_rows):
            vectors = encoder.encode([row.text for row in chunk])
            if pending is not None:
                pending[0].result()
                task.advance(pending[1])
            write = copier.submit(writer.write, [row.id for row in chunk], vectors, [row.hash for row in chunk])
            pending = (write, len(chunk))
        if pending is not None:
            pending[0].result()
            task.advance(pending[1])
