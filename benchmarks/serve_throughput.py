"""Query serving: `embedops serve` under 1, 8 and 64 concurrent clients, against in-process encoding.

On CPU (the bundled all-MiniLM-L6-v2, then a tiny BERT):

    python benchmarks/serve_throughput.py --model bundled --requests 600
    python benchmarks/serve_throughput.py --model tiny --requests 2000

On a GPU: `--model minilm --device cuda` and `--model bge-base --device cuda` (those shapes with
random weights, built in-process: speed does not depend on the weights).

Every line is measured on this machine, with the same model and the same short queries:

  - in-process:  the server's own encode function (serve.load_model: `encode_query` and the
                 token count) called from one worker thread as the server calls it, with no HTTP
                 between, one query at a time (latency p50/p99) and in
                 batches of 8 and 64 queries (queries/s): what the server could reach with no
                 HTTP, no JSON and perfect batching;
  - served:      `embedops serve --model ...` started as its own process, with C clients (1, 8,
                 64; an asyncio client in this process, one keep-alive connection each) each
                 sending one query per `POST /v1/embeddings` and the next as soon as the answer
                 arrives, for `--requests` requests in all: requests/s, p50/p99 latency, and the
                 mean batch the server formed (from its /metrics).

The client shares the CPU with the server; on a 2-core machine its JSON and HTTP work is part
of what the figures include.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_throughput import build_model, synthetic_docs

CLIENTS = (1, 8, 64)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def in_process(model: str, device: str, queries: list[str], repeat: int) -> dict[str, float]:
    """The server's encode function, called from one worker thread as the server calls it (on a loaded
    machine, torch's two OpenMP threads made the main thread's calls many times slower)."""
    from embedops import serve

    served = serve.load_model(model, device=device)
    thread = ThreadPoolExecutor(max_workers=1)

    def encode(texts: list[str]) -> object:
        return thread.submit(served.encode, texts).result()

    latencies = []
    for q in queries[: max(200, repeat)]:
        started = time.perf_counter()
        encode([q])
        latencies.append(time.perf_counter() - started)
    found = {"p50_ms": percentile(latencies, 50) * 1000, "p99_ms": percentile(latencies, 99) * 1000}
    for size in (8, 64):
        batches = [queries[i : i + size] for i in range(0, len(queries) - size + 1, size)]
        started = time.perf_counter()
        for batch in batches:
            encode(batch)
        elapsed = time.perf_counter() - started
        found[f"batch{size}_qps"] = len(batches) * size / elapsed
        found[f"batch{size}_ms"] = elapsed / len(batches) * 1000
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model: str, device: str, port: int, max_wait_ms: float) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "embedops.cli", "serve", "--model", model, "--port", str(port)]
    command += ["--device", device, "--max-wait-ms", str(max_wait_ms)]
    server = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("embedops serve exited before it answered /health")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("embedops serve did not answer /health within 5 minutes")


def batch_metrics(port: int) -> tuple[float, float]:
    """(forward passes, texts) so far, from the server's embedops_serve_batch_size histogram."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    value = {line.split()[0]: float(line.split()[1]) for line in lines if line and not line.startswith("#")}
    return value["embedops_serve_batch_size_count"], value["embedops_serve_batch_size_sum"]


async def load(port: int, queries: list[str], clients: int, requests: int) -> tuple[float, list[float]]:
    """(elapsed seconds, latency of each request) for `clients` closed-loop clients sending `requests` in all."""
    import aiohttp

    url = f"http://127.0.0.1:{port}/v1/embeddings"
    latencies: list[float] = []
    counter = iter(range(requests))

    async def client(session: aiohttp.ClientSession) -> None:
        for i in counter:
            started = time.perf_counter()
            async with session.post(url, json={"input": queries[i % len(queries)]}) as response:
                await response.read()
                if response.status != 200:
                    raise SystemExit(f"HTTP {response.status} from the server")
            latencies.append(time.perf_counter() - started)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        await asyncio.gather(*(client(session) for _ in range(min(clients, 2))))  # warm-up connections
        latencies.clear()
        counter = iter(range(requests))
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        return time.perf_counter() - started, latencies


def served(model: str, device: str, queries: list[str], requests: int, max_wait_ms: float) -> list[dict[str, float]]:
    port = free_port()
    server = start_server(model, device, port, max_wait_ms)
    rows = []
    try:
        for clients in CLIENTS:
            before = batch_metrics(port)
            elapsed, latencies = asyncio.run(load(port, queries, clients, requests))
            passes, texts = (a - b for a, b in zip(batch_metrics(port), before, strict=True))
            rows.append(
                {
                    "clients": clients,
                    "rps": len(latencies) / elapsed,
                    "p50_ms": percentile(latencies, 50) * 1000,
                    "p99_ms": percentile(latencies, 99) * 1000,
                    "mean_batch": texts / passes if passes else 0.0,
                }
            )
    finally:
        server.terminate()
        server.wait(timeout=30)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled", choices=("bundled", "tiny", "minilm", "bge-base"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--requests", type=int, default=600, help="requests per client count (default 600)")
    parser.add_argument("--tokens", type=int, default=8, help="tokens per query, about (default 8)")
    parser.add_argument("--max-wait-ms", type=float, default=2.0, help="the server's --max-wait-ms (default 2)")
    args = parser.parse_args()

    import torch
    from sentence_transformers import __version__ as st_version

    with tempfile.TemporaryDirectory() as folder:
        if args.model == "tiny":
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from tests.tinymodel import build_tiny_model

            model = str(build_tiny_model(Path(folder) / "model"))
        else:
            model = build_model("bundled" if args.model == "bundled" else args.model, Path(folder), 128)
        queries = synthetic_docs(model, 2048, args.tokens)
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), sentence-transformers {st_version}, device {args.device}, "
            f"model {args.model}, ~{args.tokens}-token queries"
        )
        base = in_process(model, args.device, queries, args.requests)
        print(
            f"in-process: 1 query p50 {base['p50_ms']:.2f} ms, p99 {base['p99_ms']:.2f} ms; "
            f"8 queries {base['batch8_ms']:.1f} ms ({base['batch8_qps']:.0f} q/s); "
            f"64 queries {base['batch64_ms']:.1f} ms ({base['batch64_qps']:.0f} q/s)"
        )
        for row in served(model, args.device, queries, args.requests, args.max_wait_ms):
            print(
                f"served, {row['clients']:>2} clients: {row['rps']:7.1f} req/s, p50 {row['p50_ms']:6.2f} ms, "
                f"p99 {row['p99_ms']:6.2f} ms, mean batch {row['mean_batch']:5.1f}"
                + (
                    f" ({row['rps'] / base['batch64_qps']:.2f}x in-process batches of 64)"
                    if row["clients"] == 64
                    else ""
                )
            )


if __name__ == "__main__":
    main()
