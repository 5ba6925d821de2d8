"""Re-embedding throughput: the embed worker, end to end into pgvector, against plain `encode()`.

Both run in this process on the same model, documents and device, one after the other:

  - baseline: `SentenceTransformer.encode(texts)` with its defaults (batch 32, float32), the
    embeddings kept in memory;
  - worker:   `embedops worker embed` (embedops.workers.embed.run) reading the documents from a
    Postgres table and committing every row into a new pgvector version (the ANN build is
    left out: benchmarks/pgvector_ingest.py measures it), rows committed per second.

    python benchmarks/embed_throughput.py                                # bundled all-MiniLM-L6-v2, CPU
    python benchmarks/embed_throughput.py --shape bge-base --docs 50000 --batch-size 256   # on a GPU
    python benchmarks/embed_throughput.py --shape minilm --docs 100000 --batch-size 512

`--shape minilm|bge-base` builds a model of that architecture with random weights in-process
(no download; throughput does not depend on the weights); `bundled` is the real
all-MiniLM-L6-v2. Documents are synthetic: random words of the model's vocabulary, about
`--tokens` tokens each (±25 %), truncated at `--max-seq-length`.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
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
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, intermediate_size=ffn, max_position_embeddings=512)).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    word = models.Transformer(str(raw), max_seq_length=max_seq_length)
    model = SentenceTransformer(modules=[word, models.Pooling(hidden, pooling_mode=pooling), models.Normalize()],
                                device="cpu")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["bundled", *SHAPES], default="bundled")
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64, help="the worker's embedding.batchSize")
    parser.add_argument("--commit-rows", type=int, default=2048, help="the worker's embedding.commitRows")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--dsn", help="a Postgres server with pgvector (default: an embedded one)")
    args = parser.parse_args()

    import sentence_transformers
    import torch

    from embedops import modelzoo
    from embedops.store import embedded, pgvector
    from embedops.workers import embed

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    work = Path(tempfile.mkdtemp(prefix="embedops-bench-"))
    model_path = build_model(args.shape, work, args.max_seq_length)
    texts = synthetic_docs(model_path, args.docs, args.tokens)
    what = torch.cuda.get_device_name() if device == "cuda" else f"{platform.machine()} CPU x{os.cpu_count()}"
    print(f"{args.shape} on {what}; {args.docs} docs of ~{args.tokens} tokens, max length {args.max_seq_length}; "
          f"torch {torch.__version__}, sentence-transformers {sentence_transformers.__version__}, "
          f"TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM', 'unset')}")

    model = modelzoo.load(model_path, device=device, max_seq_length=args.max_seq_length)
    model.encode(texts[:64])  # warm-up: kernels, allocator
    started = time.perf_counter()
    model.encode(texts)
    baseline = args.docs / (time.perf_counter() - started)
    print(f"baseline encode() defaults  {baseline:10,.1f} docs/s")

    server = None if args.dsn else embedded.start(work / "pg")
    dsn = args.dsn or server.dsn
    try:
        with pgvector.connect(dsn) as conn:
            conn.execute("DROP TABLE IF EXISTS bench_docs")
            conn.execute("CREATE TABLE bench_docs (id bigint PRIMARY KEY, text text NOT NULL)")
            with conn.cursor() as cur, cur.copy("COPY bench_docs (id, text) FROM STDIN") as copy:
                for i, text in enumerate(texts, 1):
                    copy.write_row((i, text))
        config = embed.Config.model_validate({
            "target": {"name": f"bench_{args.shape.replace('-', '_')}"},
            "source": {"table": {"table": "bench_docs"}},
            "model": model_path, "device": device, "finalize": False, "reuse": False,
            "embedding": {"batchSize": args.batch_size, "maxSeqLength": args.max_seq_length,
                          "commitRows": args.commit_rows, "precision": args.precision},
        })
        result = embed.run(config, dsn=dsn)
        with pgvector.connect(dsn) as conn:
            stored = conn.execute(f'SELECT count(*) FROM public."{result.table}"').fetchone()[0]
    finally:
        if server is not None:
            server.stop()
    assert stored == args.docs, f"{stored} rows stored of {args.docs}"
    print(f"worker into pgvector        {result.rows_per_second:10,.1f} rows/s committed "
          f"(batch {args.batch_size}, precision {args.precision}, {stored} rows)")
    print(f"ratio worker / baseline     {result.rows_per_second / baseline:10.2f}x")


if __name__ == "__main__":
    main()
