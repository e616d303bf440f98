"""Speed: ingest throughput against plain sentence-transformers, and query latency per pipeline.

    # end-to-end ingest (segment + encode + SQLite + FAISS + tantivy) vs plain SentenceTransformer.encode
    # (max_seq_length 512) of the same full texts, in the same run
    .venv/bin/python bench/speed.py throughput --dataset scifact [--limit N]

    # query latency p50/p99 per pipeline: SciFact (5,183 real documents) and 100k synthetic documents
    # that carry precomputed vectors (random unit vectors: FAISS Flat costs the same whatever they hold)
    .venv/bin/python bench/speed.py latency --docs 5k
    .venv/bin/python bench/speed.py latency --docs 100k

Each prints a markdown table. Run them on a quiet machine: they time the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common import DATA as DATA_ROOT  # noqa: E402

import numpy as np  # noqa: E402

from foveal.config import Pipeline  # noqa: E402
from foveal.engine import Engine  # noqa: E402
from foveal.evaluation import read_queries  # noqa: E402
from foveal.pipeline.ingest import ingest_records, read_jsonl  # noqa: E402
from foveal.pipeline.request import SearchRequest  # noqa: E402

DATA = DATA_ROOT
OUT = ROOT / "bench" / "out"


def throughput(args) -> None:
    from sentence_transformers import SentenceTransformer

    from foveal.encoders.sentence_transformer import resolve_model_path

    records = [(line, raw) for line, raw in read_jsonl(DATA / args.dataset / "corpus.jsonl")]
    if args.limit:
        records = records[: args.limit]
    texts = [f"{r.get('title', '')} {r.get('text', '')}".strip() for _, r in records]

    # plain: the same full texts, one window of 512 tokens (so that both see every token up to the model's limit)
    plain = SentenceTransformer(str(resolve_model_path("all-MiniLM-L6-v2")), device="cpu")
    plain.max_seq_length = 512
    plain.encode(texts[:64], batch_size=32)  # warm-up
    t0 = time.perf_counter()
    plain.encode(texts, batch_size=32)
    plain_s = time.perf_counter() - t0

    home = Path(tempfile.mkdtemp(prefix="foveal-throughput-"))
    try:
        engine = Engine(home)
        collection = engine.create_index("bench")
        collection.encoder.encode_documents(texts[:64])  # warm-up
        t0 = time.perf_counter()
        report = ingest_records(collection, records, batch_size=256)
        ours_s = time.perf_counter() - t0
        engine.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    n = len(records)
    summary = report.summary()
    print(f"\n{args.dataset}: {n} documents, {summary['passages']} passages, {os.cpu_count()} CPUs\n")
    print("| what | seconds | docs/s | ratio to plain |")
    print("|---|---|---|---|")
    print(f"| plain `SentenceTransformer.encode` (max_seq_length 512) | {plain_s:.1f} | {n / plain_s:.2f} | 1.00 |")
    print(f"| foveal ingest (segment + encode + write 3 stores) | {ours_s:.1f} | {n / ours_s:.2f} | "
          f"{plain_s / ours_s:.2f} |")
    _save("throughput", {"dataset": args.dataset, "docs": n, "plain_s": plain_s, "ours_s": ours_s, **summary})


def _synthetic_records(n: int, dim: int, seed: int = 0):
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    words = [w for w in open(DATA / "scifact" / "corpus.jsonl", encoding="utf-8").read(400_000).split() if w.isalpha()]
    vocab = sorted(set(w.lower() for w in words))
    weights = [1.0 / (i + 1) for i in range(len(vocab))]  # Zipf-like
    rng.shuffle(vocab)
    for i in range(n):
        length = rng.randint(30, 150)
        text = " ".join(rng.choices(vocab, weights=weights, k=length))
        vector = np_rng.normal(size=dim).astype(np.float32)
        yield i + 1, {"_id": f"syn-{i}", "title": " ".join(text.split()[:6]), "text": text,
                      "vector": (vector / np.linalg.norm(vector)).tolist()}


def latency(args) -> None:
    queries = list(read_queries(DATA / "scifact" / "queries.jsonl").values())
    if args.docs == "5k":
        home, name = OUT / "home", "scifact"
        engine = Engine(home)
        if not engine.exists(name):
            raise SystemExit("build the SciFact index first: .venv/bin/python bench/quality.py --dataset scifact")
    else:
        n = int(args.docs.rstrip("k")) * 1000
        home, name = OUT / f"home-{args.docs}", "synthetic"
        engine = Engine(home)
        collection = engine.open_or_create(name)
        if collection.store.count() < n:
            t0 = time.perf_counter()
            report = ingest_records(collection, _synthetic_records(n, collection.dimension), batch_size=2000)
            print(f"built {n} synthetic documents in {time.perf_counter() - t0:.0f} s: {report.summary()}",
                  file=sys.stderr)
    searcher = engine.pipeline(name)
    docs = searcher.collection.store.count()
    rng = random.Random(1)
    sample = [rng.choice(queries) for _ in range(args.queries)]
    print(f"\n{docs:,} documents, {args.queries} queries per pipeline, k=10, one client, {os.cpu_count()} CPUs\n")
    print("| pipeline | p50 ms | p99 ms | mean ms |")
    print("|---|---|---|---|")
    rows = {}
    for pipeline in (Pipeline.bm25, Pipeline.dense, Pipeline.hybrid):
        for query in sample[:10]:  # warm-up
            searcher.search(SearchRequest(query=query, k=10, pipeline=pipeline))
        times = []
        for query in sample:
            t0 = time.perf_counter()
            searcher.search(SearchRequest(query=query, k=10, pipeline=pipeline))
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        p50 = statistics.median(times)
        p99 = times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))]
        rows[pipeline.value] = {"p50": p50, "p99": p99, "mean": statistics.fmean(times)}
        print(f"| {pipeline.value} | {p50:.1f} | {p99:.1f} | {statistics.fmean(times):.1f} |")
    _save(f"latency-{args.docs}", {"docs": docs, "rows": rows})
    engine.close()


def _save(name: str, payload: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(payload, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--dataset", default="scifact")
    t.add_argument("--limit", type=int, default=0)
    lat = sub.add_parser("latency")
    lat.add_argument("--docs", default="5k", choices=["5k", "100k", "10k"])
    lat.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    {"throughput": throughput, "latency": latency}[args.command](args)


if __name__ == "__main__":
    main()
