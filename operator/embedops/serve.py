"""`embedops serve`: query embeddings from the model an index's live version was built with, over HTTP.

A version's vectors are only comparable with queries embedded by the same model, so the query
side is served from the very folder the version was built with (the catalog names it). The
server speaks the two dialects applications already use: Text Embeddings Inference's
`POST /embed` and OpenAI's `POST /v1/embeddings`, so a TEI or OpenAI client switches to it by
its base URL alone.

Concurrent requests are batched: each request's texts join a queue, and one encoding thread
takes everything queued (up to `max_batch` texts) whenever it is free, waiting at most
`max_wait` seconds for more once it has the first. On a CPU, one forward pass over 64 short
queries costs far less than 64 passes over one, so under load a request waits for one batch
instead of for every request ahead of it; a lone request waits `max_wait` at most.

- `GET /health`: 200 while the server can encode (liveness and readiness: the model is loaded
  and has encoded a warm-up batch before the port opens).
- `GET /info`: the model's path, fingerprint, dimensions and limits (as TEI's `/info`).
- `GET /metrics`: Prometheus metrics (docs/operator.md, "Querying an index").
- `POST /search` (with a search target, `--search-target`): `{"query": text, "k": 10}` embedded by the
  server's model and searched in the view, in one transaction that first checks the view serves a
  version of that same model (409 when it does not: a cut-over between the two). What
  `kubectl embedops search` calls through the index's query Service.

Queries are encoded with the model's query prompt (`encode_query`), as the probe and the
retrieval evaluation encode them. A `Follower` keeps the server on the model of an index's
live version across cut-overs and rollbacks, and every response names the model (and version)
that encoded it, so an application can check it against the view in its search transaction.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from embedops.api.index import SEARCH_MAX_K, Target

log = logging.getLogger(__name__)
disable_created_metrics()  # as the operator's metrics: a `_created` series per histogram no alert reads

DEFAULT_PORT = 8080
MAX_CLIENT_BATCH = 256  # texts in one request (TEI's default is 32; a re-ranking caller sends more)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

Encode = Callable[[list[str]], tuple[np.ndarray, list[int]]]  # texts -> (float32 rows, tokens per text)


class BadRequest(ValueError):
    """A request the server cannot answer as sent (HTTP 422, TEI's `Validation` error)."""


class Refused(Exception):
    """A request answered with `status` and the JSON `body` (TEI's error shape: `error`, `error_type`)."""

    def __init__(self, status: int, body: dict[str, Any]):
        super().__init__(body.get("error"))
        self.status, self.body = status, body


class ServeMetrics:
    """The server's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "embedops_serve_request_duration_seconds",
            "Time from a request's arrival to its response, by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "embedops_serve_requests",
            "Requests answered, by endpoint and HTTP status.",
            ["endpoint", "code"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "embedops_serve_batch_size",
            "Texts per forward pass (the requests batched together).",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_duration = Histogram(
            "embedops_serve_batch_duration_seconds",
            "Time of one forward pass over a batch.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "embedops_serve_queue_wait_seconds",
            "Time a request's texts waited before their batch started.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future[Encoded]
    queued: float = field(default_factory=time.monotonic)


class Batcher:
    """One encoding thread; concurrent requests' texts go through it together, in arrival order.

    `use` swaps the model between two batches (a follower does, after a cut-over); every batch is
    encoded by one model, and each request learns which.
    """

    def __init__(self, served: Served, metrics: ServeMetrics, *, max_batch: int = 64, max_wait: float = 0.002):
        self.served, self._metrics = served, metrics
        self.max_batch, self.max_wait = max_batch, max_wait
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._thread.shutdown(wait=False, cancel_futures=True)

    def use(self, served: Served) -> None:
        """Encode with `served` from the next batch on (safe from any thread: one attribute's assignment)."""
        self.served = served

    async def embed(self, texts: list[str]) -> Encoded:
        future: asyncio.Future[Encoded] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(texts, future))
        return await future

    async def _next_batch(self) -> list[_Pending]:
        """The first request waiting, and those that join it within max_wait, up to max_batch texts."""
        batch = [await self._queue.get()]
        size, deadline = len(batch[0].texts), time.monotonic() + self.max_wait
        while size < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    break
            batch.append(item)
            size += len(item.texts)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            texts = [t for item in batch for t in item.texts]
            started = time.monotonic()
            for item in batch:
                self._metrics.queue_wait.observe(started - item.queued)
            served = self.served
            try:
                rows, tokens = await loop.run_in_executor(self._thread, served.encode, texts)
            except Exception as err:  # noqa: BLE001 - every waiting request gets the model's error
                for item in batch:
                    item.future.set_exception(err)
                continue
            self._metrics.batch_size.observe(len(texts))
            self._metrics.batch_duration.observe(time.monotonic() - started)
            start = 0
            for item in batch:
                end = start + len(item.texts)
                if not item.future.done():  # a client that went away cancelled its future
                    item.future.set_result(Encoded(rows[start:end], tokens[start:end], served.info))
                start = end


@dataclass(frozen=True)
class ModelInfo:
    """What the server serves: shown by /info, and the `model` of OpenAI responses."""

    model: str
    fingerprint: str | None
    dimensions: int
    max_input_length: int | None
    version: int | None = None  # the index version whose model this is, when the server follows an index

    def to_wire(self) -> dict[str, Any]:
        return {
            "model_id": self.model,
            "model_sha": self.fingerprint,
            "version": self.version,
            "dimensions": self.dimensions,
            "max_input_length": self.max_input_length,
            "max_client_batch_size": MAX_CLIENT_BATCH,
        }

    def headers(self) -> dict[str, str]:
        """Response headers naming the model that encoded the response (and its index version)."""
        named = {"X-Embedops-Model-Fingerprint": self.fingerprint or ""}
        return named | ({"X-Embedops-Version": str(self.version)} if self.version is not None else {})


@dataclass(frozen=True)
class Served:
    """A model the server encodes with."""

    encode: Encode
    info: ModelInfo


@dataclass(frozen=True)
class Encoded:
    """One request's rows, their token counts, and the model that encoded them."""

    rows: np.ndarray
    tokens: list[int]
    info: ModelInfo


def load_model(model_path: str, *, device: str | None = None, version: int | None = None) -> Served:
    """The query encoder of a model folder (or bundled name), warmed up, and what it is."""
    import torch

    from embedops import modelzoo

    model = modelzoo.load(model_path, device=device)
    tokenizer, limit = model.tokenizer, model.max_seq_length

    def encode(texts: list[str]) -> tuple[np.ndarray, list[int]]:
        with torch.inference_mode():
            rows = model.encode_query(texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False)
        ids = tokenizer(texts, truncation=True, max_length=limit)["input_ids"]
        return np.asarray(rows, dtype=np.float32), [len(i) for i in ids]

    encode(["warm-up"])
    try:
        fingerprint: str | None = modelzoo.fingerprint(modelzoo.resolve(model_path))
    except modelzoo.ModelNotFound:
        fingerprint = None
    return Served(encode, ModelInfo(model_path, fingerprint, modelzoo.embedding_dimension(model), limit, version))


def _texts(value: Any, field_name: str) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise BadRequest(f"{field_name} must be a string or a non-empty list of strings")
    if len(texts) > MAX_CLIENT_BATCH:
        raise BadRequest(f"{field_name} holds {len(texts)} texts; at most {MAX_CLIENT_BATCH} a request")
    return texts


def _normalized(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms == 0, 1, norms)


def _dimensions(rows: np.ndarray, dimensions: Any) -> np.ndarray:
    """Matryoshka truncation (OpenAI's `dimensions`): the first N components, unit length again."""
    if dimensions is None:
        return rows
    if not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= rows.shape[1]:
        raise BadRequest(f"dimensions must be an integer from 1 to {rows.shape[1]}")
    return _normalized(rows[:, :dimensions])


def _vector(row: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
    return row.astype(np.float64).tolist()  # float32 -> float64: the shortest repr of each float32 value


class Server:
    """The HTTP routes over one Batcher."""

    def __init__(self, batcher: Batcher, metrics: ServeMetrics, searcher: Searcher | None = None):
        self.batcher, self.metrics, self.searcher = batcher, metrics, searcher

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 << 20)
        app.router.add_post("/embed", self._handler("embed", self._embed))
        app.router.add_post("/v1/embeddings", self._handler("openai", self._openai))
        app.router.add_get("/health", self._health)
        app.router.add_get("/info", self._info)
        app.router.add_get("/metrics", self._metrics)
        if self.searcher is not None:
            app.router.add_post("/search", self._handler("search", self._search))

        async def start(_: web.Application) -> None:
            self.batcher.start()

        async def stop(_: web.Application) -> None:
            await self.batcher.stop()
            if self.searcher is not None:
                self.searcher.close()

        app.on_startup.append(start)
        app.on_cleanup.append(stop)
        return app

    def _handler(
        self, endpoint: str, answer: Callable[[dict[str, Any]], Awaitable[tuple[Any, ModelInfo]]]
    ) -> Callable[..., Any]:
        async def handle(request: web.Request) -> web.Response:
            started = time.monotonic()
            try:
                body = await _body(request)
                if not isinstance(body, dict):
                    raise BadRequest("the request body must be a JSON object")
                value, info = await answer(body)
                response = web.json_response(value, dumps=_dumps, headers=info.headers())
            except BadRequest as err:
                response = web.json_response({"error": str(err), "error_type": "Validation"}, status=422)
            except Refused as err:
                response = web.json_response(err.body, status=err.status)
            except Exception as err:  # the client gets the error, the server keeps serving
                log.exception("encoding failed")
                response = web.json_response({"error": str(err), "error_type": "Backend"}, status=500)
            self.metrics.requests.labels(endpoint, str(response.status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.monotonic() - started)
            return response

        return handle

    async def _embed(self, body: dict[str, Any]) -> tuple[Any, ModelInfo]:
        """TEI's /embed: {"inputs": str | [str], "normalize": true} -> one vector per input."""
        encoded = await self.batcher.embed(_texts(body.get("inputs"), "inputs"))
        rows = _normalized(encoded.rows) if body.get("normalize", True) else encoded.rows
        return rows.astype(np.float64).tolist(), encoded.info

    async def _openai(self, body: dict[str, Any]) -> tuple[Any, ModelInfo]:
        """OpenAI's /v1/embeddings: {"input": str | [str], "dimensions"?, "encoding_format"?}."""
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise BadRequest("encoding_format must be float or base64")
        texts = _texts(body.get("input"), "input")
        encoded = await self.batcher.embed(texts)
        rows, tokens = _dimensions(_normalized(encoded.rows), body.get("dimensions")), sum(encoded.tokens)
        answer = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _vector(row, encoding)} for i, row in enumerate(rows)
            ],
            "model": encoded.info.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return answer, encoded.info

    async def _search(self, body: dict[str, Any]) -> tuple[Any, ModelInfo]:
        """{"query": text, "k": 10} -> the view's `k` nearest rows to the query embedded by this server's model."""
        assert self.searcher is not None
        query, k = body.get("query"), body.get("k", 10)
        if not isinstance(query, str) or not query:
            raise BadRequest("query must be a non-empty string")
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= SEARCH_MAX_K:
            raise BadRequest(f"k must be an integer from 1 to {SEARCH_MAX_K}")
        encoded = await self.batcher.embed([query])
        live, hits = await self.searcher.search(encoded, k)
        answer = {
            "version": live.version,
            "model_fingerprint": live.model_fingerprint,
            "view": f"{live.schema}.{live.view}",
            "hits": [{"id": doc_id, "distance": distance} for doc_id, distance in hits],
        }
        return answer, encoded.info

    async def _health(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _info(self, _: web.Request) -> web.Response:
        return web.json_response(self.batcher.served.info.to_wire())

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except (ValueError, RecursionError) as err:  # bad JSON or bytes that are not UTF-8
        raise BadRequest(f"the request body is not JSON: {err}") from None


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class Searcher:
    """`POST /search` over one view: each search on a connection of its own thread, in one transaction.

    The check that the view serves this server's model and the search are one transaction (the
    store's `search_same_model`), so a cut-over cannot come between them. Neither the DSN nor its
    password is ever put in a log line or a response.
    """

    def __init__(self, dsn: str, target: Target, *, connections: int = 4, ef_search: int = 40, probes: int = 10):
        from embedops.store import pgvector

        self._password = pgvector.dsn_password(dsn)  # a malformed DSN is refused now, not at the first search
        self._dsn, self.target, self.ef_search, self.probes = dsn, target, ef_search, probes
        self._pool = ThreadPoolExecutor(max_workers=connections, thread_name_prefix="search")
        self._local = threading.local()
        self._connections: list[Any] = []
        self._lock = threading.Lock()

    @property
    def view(self) -> str:
        return f"{self.target.schema_name}.{self.target.name}"

    def _clean(self, err: BaseException) -> str:
        message = str(err).strip() or type(err).__name__
        for secret in (self._dsn, self._password):
            if secret:
                message = message.replace(str(secret), "****")
        return message

    def _connection(self) -> Any:
        from embedops.store import pgvector

        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._local.conn = pgvector.connect(self._dsn)
            with self._lock:
                self._connections.append(conn)
        return conn

    def _search(self, encoded: Encoded, k: int) -> tuple[Any, list[tuple[str, float]]]:
        import psycopg

        from embedops.store import pgvector

        try:
            return pgvector.search_same_model(
                self._connection(),
                self.target,
                encoded.info.fingerprint,
                encoded.rows[0],
                k,
                ef_search=self.ef_search,
                probes=self.probes,
            )
        except pgvector.LiveVersionChanged as err:
            raise Refused(409, _conflict(self.view, err.live, encoded.info)) from None
        except (psycopg.Error, pgvector.DatabaseUnavailable, ValueError) as err:
            conn = getattr(self._local, "conn", None)
            if isinstance(err, psycopg.Error) and conn is not None and not conn.closed and conn.broken:
                conn.close()
            message = self._clean(err)
            log.warning("searching %s: %s", self.view, message)
            body = {"error": f"cannot search {self.view}: {message}", "error_type": "Unavailable"}
            raise Refused(503, body) from None

    async def search(self, encoded: Encoded, k: int) -> tuple[Any, list[tuple[str, float]]]:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._search, encoded, k)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()


def _conflict(view: str, live: Any, info: ModelInfo) -> dict[str, Any]:
    """The 409 body: the view serves a version of another model than this server's (or none)."""
    mine = f"v{info.version}'s model" if info.version is not None else f"the model {info.model}"
    if live is None:
        return {"error": f"the view {view} serves no version; this server serves {mine}", "error_type": "Conflict"}
    return {
        "error": f"the view {view} serves v{live.version} (model fingerprint {live.model_fingerprint}); "
        f"this server serves {mine}",
        "error_type": "Conflict",
        "live_version": live.version,
    }


def build(
    served: Served, *, max_batch: int = 64, max_wait: float = 0.002, searcher: Searcher | None = None
) -> tuple[web.Application, Batcher]:
    """The server's app, and its batcher (whose `use` swaps the model); `/search` with a `searcher`."""
    metrics = ServeMetrics()
    batcher = Batcher(served, metrics, max_batch=max_batch, max_wait=max_wait)
    return Server(batcher, metrics, searcher).app(), batcher


class Follower:
    """Keeps a server on the model of an index's live version.

    It listens for the cut-over notification (`pgvector.LIVE_CHANNEL`, sent in the cut-over's
    transaction) and looks at the catalog at least every `poll` seconds. A new live version's
    model is loaded while the previous one keeps serving, then swapped in between two batches:
    until then responses still name the previous version (`X-Embedops-Version`), which an
    application checking the live version in its search transaction sees. Models are kept by
    fingerprint, so a rollback to a version served before swaps at once.
    """

    def __init__(self, dsn: str, target: Target, *, device: str | None = None, poll: float = 30.0):
        self.dsn, self.target, self.device, self.poll = dsn, target, device, poll
        self._models: dict[tuple[str, str | None], Served] = {}

    def live(self, conn: Any) -> Served:
        """The live version's model, loaded (once per model)."""
        from embedops.store import pgvector

        rec = pgvector.version_record(conn, self.target)
        key = (rec.model, rec.model_fingerprint)
        if key not in self._models:
            log.info("loading the model of v%d: %s", rec.version, rec.model)
            self._models[key] = load_model(rec.model, device=self.device, version=rec.version)
        served = self._models[key]
        return (
            served
            if served.info.version == rec.version
            else Served(served.encode, replace(served.info, version=rec.version))
        )

    def first(self) -> Served:
        from embedops.store import pgvector

        with pgvector.connect(self.dsn) as conn:
            return self.live(conn)

    def follow(self, use: Callable[[Served], None], current: Served, stop: threading.Event) -> None:
        """Until `stop`: `use` the live version's model whenever it changes; reconnects after database errors."""
        from embedops.store import pgvector

        while not stop.is_set():
            try:
                with pgvector.connect(self.dsn) as conn:
                    pgvector.listen_for_cutovers(conn)
                    while not stop.is_set():
                        served = self.live(conn)
                        if served.info.version != current.info.version:
                            use(served)
                            log.info("now serving the model of v%s", served.info.version)
                            current = served
                        pgvector.wait_for_cutover(conn, self.target, self.poll)
            except Exception as err:  # noqa: BLE001 - a database or model load error must not end the following
                log.warning("following the live version: %s; trying again in 5 s", err)
                stop.wait(5)


def run(
    served: Served,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    max_batch: int = 64,
    max_wait: float = 0.002,
    follower: Follower | None = None,
    searcher: Searcher | None = None,
    on_ready: Callable[[ModelInfo], None] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM (the port opens once the model has encoded), following the live version
    with `follower`, answering `/search` with `searcher`."""
    app, batcher = build(served, max_batch=max_batch, max_wait=max_wait, searcher=searcher)
    stop = threading.Event()
    if follower is not None:
        threading.Thread(target=follower.follow, args=(batcher.use, served, stop), daemon=True).start()
    try:
        asyncio.run(_serve(app, host, port, lambda: on_ready(served.info) if on_ready else None))
    finally:
        stop.set()


async def _serve(app: web.Application, host: str, port: int, ready: Callable[[], None]) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    try:
        await web.TCPSite(runner, host, port).start()
        ready()
        await stop.wait()
    finally:
        await runner.cleanup()  # in-flight requests are answered first
