"""Re-embedding throughput, and what bounds it: the model, the host, the database.

On a GPU, one command per shape (each run prints the GPU, the versions and its own figures):

    python benchmarks/embed_throughput.py --shape minilm --docs 100000 --batch-size 512 --repeat 3
    python benchmarks/embed_throughput.py --shape bge-base --docs 50000 --batch-size 256 --repeat 3

On CPU: `python benchmarks/embed_throughput.py --docs 400 --repeat 3` (bundled all-MiniLM-L6-v2).

Every line is measured in this process, on the same model, documents and device, in docs/s and
as a share of the first:

  - forward limit:  the worker's encoder's model pass alone (`Encoder.forward`) over batches
                    tokenized and moved to the device beforehand, in the encoder's length order;
  - host ceiling:   the worker's `Encoder.encode` with that model pass replaced by a no-op
                    (tokenizing, collating, copies), once per tokenizer thread count up to the
                    CPUs this process may use: the scaling per core;
  - encoder:        `Encoder.encode` itself, no database;
  - worker:         `embedops worker embed` (embedops.workers.embed.run) reading the documents
                    from a Postgres table and committing every row into a new pgvector version
                    (the ANN build is left out: benchmarks/pgvector_ingest.py measures it), rows
                    committed per second;
  - encode():       plain `SentenceTransformer.encode(texts)` with its defaults (batch 32, float32),
                    on the first `--baseline-docs` documents.

`--shape minilm|bge-base` builds a model of that architecture with random weights in-process
(no download; throughput does not depend on the weights); `bundled` is the real
all-MiniLM-L6-v2. Documents are synthetic: random words of the model's vocabulary, about
`--tokens` tokens each (±25 %), truncated at `--max-seq-length`. `--repeat N` runs each line N
times and prints the best and the median (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

SHAPES = {  # BERT shapes: hidden size, layers, heads, FFN size, pooling
    "minilm": (384, 6, 12, 1536, "mean"),
    "bge-base": (768, 12, 12, 3072, "cls"),
}


def build_model(shape: str, folder: Path, max_seq_length: int) -> str:
    """A sentence-transformers model folder of that shape, random weights, the bundled tokenizer."""
    if shape == "bundled":
        return "all-MiniLM-L6-v2"
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    from embedops import modelzoo

    hidden, layers, heads, ffn, pooling = SHAPES[shape]
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(modelzoo.resolve("all-MiniLM-L6-v2")), local_files_only=True)
    raw = folder / "raw"
    BertModel(
        BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=ffn,
            max_position_embeddings=512,
        )
    ).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    word = models.Transformer(str(raw), max_seq_length=max_seq_length)
    model = SentenceTransformer(
        modules=[word, models.Pooling(hidden, pooling_mode=pooling), models.Normalize()], device="cpu"
    )
    model.save(str(folder / "model"))
    return str(folder / "model")


def synthetic_docs(model_path: str, count: int, tokens: int) -> list[str]:
    from transformers import AutoTokenizer

    from embedops import modelzoo

    vocab = AutoTokenizer.from_pretrained(str(modelzoo.resolve(model_path)), local_files_only=True).get_vocab()
    words = np.array(sorted(w for w in vocab if w.isalpha() and w.isascii() and len(w) > 2))
    rng = np.random.default_rng(0)
    lengths = rng.integers(int(tokens * 0.75), int(tokens * 1.25) + 1, size=count)
    return [" ".join(rng.choice(words, size=n)) for n in lengths]


def measure(work: Callable[[], object], docs: int, sync: Callable[[], None], repeat: int) -> list[float]:
    """docs/s of each of `repeat` runs of work."""
    found = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        sync()
        found.append(docs / (time.perf_counter() - started))
    return found


def forward_limit(encoder, texts: list[str], sync: Callable[[], None], repeat: int) -> list[float]:
    """The encoder's model pass over batches tokenized and on the device beforehand, longest first."""
    import torch

    from embedops.workers.encoder import FastTokenizer

    tokenizer, device = FastTokenizer(encoder.model), encoder.model.device
    ordered, size = sorted(texts, key=len, reverse=True), encoder.batch_size
    batches = [
        {
            k: v.to(device) if isinstance(v, torch.Tensor) else v
            for k, v in tokenizer.features([tokenizer.ids(ordered[i : i + size])], pin=False).items()
        }
        for i in range(0, len(ordered), size)
    ]

    def run(some: list[dict]) -> None:
        with torch.inference_mode():
            for batch in some:
                encoder.forward(dict(batch))

    run(batches[:2])  # warm-up: kernels, allocator
    return measure(lambda: run(batches), len(texts), sync, repeat)


def host_ceiling(model, texts: list[str], args, workers: int, sync: Callable[[], None]) -> tuple[list[float], float]:
    """The worker's encoder with its model pass replaced by a no-op (tokenizing, collating, copies), and the
    CPUs it kept busy (CPU seconds of this process per second)."""
    import torch

    from embedops.workers.encoder import Encoder

    encoder = Encoder(model, batch_size=args.batch_size, normalize=True, precision=args.precision, workers=workers)
    zeros = torch.zeros((args.batch_size, model.get_embedding_dimension()), device=model.device)
    encoder.forward = lambda features: zeros[: len(features["input_ids"])]
    encoder.encode(texts[: args.batch_size])  # warm-up: pinned memory
    cpu = time.process_time()
    found = measure(lambda: encoder.encode(texts), len(texts), sync, args.repeat)
    return found, (time.process_time() - cpu) / sum(len(texts) / rate for rate in found)


def worker(model_path: str, texts: list[str], args, device: str) -> list[float]:
    """Rows committed per second by the embed worker, each run into a version of its own."""
    from embedops import steps
    from embedops.store import embedded, pgvector
    from embedops.workers import embed

    work = Path(tempfile.mkdtemp(prefix="embedops-bench-pg-"))
    server = None if args.dsn else embedded.start(work / "pg")
    dsn = args.dsn or server.dsn
    try:
        with pgvector.connect(dsn) as conn:
            conn.execute("DROP TABLE IF EXISTS bench_docs")
            conn.execute("CREATE TABLE bench_docs (id bigint PRIMARY KEY, text text NOT NULL)")
            with conn.cursor() as cur, cur.copy("COPY bench_docs (id, text) FROM STDIN") as copy:
                for i, text in enumerate(texts, 1):
                    copy.write_row((i, text))
        found = []
        for run in range(args.repeat):
            config = steps.EmbedStep.model_validate(
                {
                    "target": {"name": f"bench_{args.shape.replace('-', '_')}_{os.getpid()}_{run}"},
                    "source": {"table": {"table": "bench_docs"}},
                    "model": model_path,
                    "device": device,
                    "finalize": False,
                    "reuse": False,
                    "embedding": {
                        "batchSize": args.batch_size,
                        "maxSeqLength": args.max_seq_length,
                        "commitRows": args.commit_rows,
                        "precision": args.precision,
                    },
                }
            )
            result = embed.run(config, dsn=dsn)
            assert result.embedded == len(texts), f"{result.embedded} rows embedded of {len(texts)}"
            found.append(result.rows_per_second)
        return found
    finally:
        if server is not None:
            server.stop()


def report(name: str, found: list[float], limit: float, note: str = "") -> None:
    best, median = max(found), statistics.median(found)
    runs = f"  (median {median:,.0f} of {len(found)})" if len(found) > 1 else ""
    print(f"{name:<28}{best:12,.0f} docs/s {best / limit:8.1%}{runs} {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["bundled", *SHAPES], default="bundled")
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--host-docs", type=int, default=20000, help="documents for the host ceiling (repeated)")
    parser.add_argument("--baseline-docs", type=int, default=5000, help="documents for encode() (the first ones)")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64, help="the worker's embedding.batchSize")
    parser.add_argument("--commit-rows", type=int, default=2048, help="the worker's embedding.commitRows")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--dsn", help="a Postgres server with pgvector (default: an embedded one)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each line: best and median are printed")
    args = parser.parse_args()

    import sentence_transformers
    import torch

    from embedops import modelzoo
    from embedops.workers.encoder import Encoder, cpu_limit

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    model_path = build_model(args.shape, Path(tempfile.mkdtemp(prefix="embedops-bench-")), args.max_seq_length)
    texts = synthetic_docs(model_path, args.docs, args.tokens)
    host_texts = (texts * (args.host_docs // len(texts) + 1))[: args.host_docs]
    cpus = cpu_limit()
    what = torch.cuda.get_device_name() if device == "cuda" else f"{platform.machine()} CPU"
    print(
        f"{args.shape} on {what}, {cpus} CPUs for this process (of {os.cpu_count()}); {args.docs} docs of "
        f"~{args.tokens} tokens, max length {args.max_seq_length}, batch {args.batch_size}, precision "
        f"{args.precision}; torch {torch.__version__} ({torch.get_num_threads()} threads), sentence-transformers "
        f"{sentence_transformers.__version__}, TOKENIZERS_PARALLELISM="
        f"{os.environ.get('TOKENIZERS_PARALLELISM', 'unset')}"
    )

    model = modelzoo.load(model_path, device=device, max_seq_length=args.max_seq_length)
    encoder = Encoder(model, batch_size=args.batch_size, normalize=True, precision=args.precision)
    limit = forward_limit(encoder, texts, sync, args.repeat)
    report("forward limit", limit, max(limit), "(pre-tokenized, on the device)")
    for workers in sorted({1 << k for k in range(cpus.bit_length())} | {cpus}):
        found, busy = host_ceiling(model, host_texts, args, workers, sync)
        report(
            f"host ceiling, {workers} thread{'s' if workers > 1 else ''}",
            found,
            max(limit),
            f"(no-op model pass, {len(host_texts)} docs, {busy:.1f} CPUs busy)",
        )
    encoder.encode(texts[: args.batch_size])  # warm-up: kernels, allocator
    report(
        "encoder",
        measure(lambda: encoder.encode(texts), len(texts), sync, args.repeat),
        max(limit),
        f"(Encoder.encode, {encoder.workers} tokenizer threads, no database)",
    )
    report(
        "worker into pgvector",
        worker(model_path, texts, args, device),
        max(limit),
        f"(rows committed, commitRows {args.commit_rows})",
    )
    baseline = texts[: args.baseline_docs]
    model.encode(baseline[:64])  # warm-up
    report(
        "encode() defaults",
        measure(lambda: model.encode(baseline), len(baseline), sync, args.repeat),
        max(limit),
        "(SentenceTransformer.encode, batch 32, float32)",
    )


if __name__ == "__main__":
    main()
