"""Retrieval quality of bm25, dense and hybrid on BEIR-format data, as a markdown table.

    .venv/bin/python bench/quality.py --dataset scifact --split test
    .venv/bin/python bench/quality.py --dataset cranfield --split test

Indexes are kept under bench/out/home (re-runs reuse them: unchanged documents are skipped). Data is read from
../shared/data (or --data-root) and never copied into the repository.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common import DATA, commit  # noqa: E402

from foveal.config import IndexConfig, Pipeline  # noqa: E402
from foveal.engine import Engine  # noqa: E402
from foveal.evaluation import evaluate, read_qrels, read_queries  # noqa: E402
from foveal.pipeline.ingest import ingest_file  # noqa: E402
from foveal.pipeline.request import SearchRequest  # noqa: E402


def corpus_path(folder: Path) -> Path:
    for name in ("corpus.jsonl", "corpus.jsonl.gz"):
        if (folder / name).exists():
            return folder / name
    raise SystemExit(f"no corpus.jsonl(.gz) in {folder}")


def run_queries(engine: Engine, index: str, queries: dict[str, str], pipeline: Pipeline, k: int, fusion=None):
    searcher = engine.pipeline(index)
    run = {}
    ids = list(queries)
    for start in range(0, len(ids), 64):
        chunk = ids[start : start + 64]
        requests = [SearchRequest(query=queries[q], k=k, pipeline=pipeline, fusion=fusion) for q in chunk]
        for qid, response in zip(chunk, searcher.search_many(requests)):
            run[qid] = {hit.id: hit.score for hit in response.hits}
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--data-root", default=str(DATA))
    parser.add_argument("--home", default=str(ROOT / "bench" / "out" / "home"))
    parser.add_argument("--index", default=None, help="index name (default: the dataset name)")
    parser.add_argument("--config", default=None, help="JSON index config for a new index")
    parser.add_argument("--fusion", default=None, help="JSON fusion override, e.g. '{\"method\": \"linear\"}'")
    parser.add_argument("--pipelines", default="bm25,dense,hybrid")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()

    folder = Path(args.data_root) / args.dataset
    engine = Engine(args.home)
    name = args.index or args.dataset.replace(".", "-").lower()
    config = IndexConfig.parse(json.loads(args.config)) if args.config else None
    collection = engine.open_or_create(name, config)
    t0 = time.perf_counter()
    report = ingest_file(collection, corpus_path(folder), batch_size=256)
    ingest_s = time.perf_counter() - t0
    print(f"ingest: {json.dumps(report.summary())} in {ingest_s:.1f} s", file=sys.stderr)
    for line, message in report.errors[:5]:
        print(f"  rejected line {line}: {message}", file=sys.stderr)

    qrels = read_qrels(folder / "qrels" / f"{args.split}.tsv")
    queries = {q: t for q, t in read_queries(folder / "queries.jsonl").items() if q in qrels}
    fusion = json.loads(args.fusion) if args.fusion else None
    # One untimed search first: the model loads on the first encode, which is no pipeline's query time.
    run_queries(engine, name, dict(list(queries.items())[:1]), Pipeline.hybrid, 10, fusion)
    rows = []
    for pipeline in args.pipelines.split(","):
        t0 = time.perf_counter()
        run = run_queries(engine, name, queries, Pipeline(pipeline), 100, fusion)
        seconds = time.perf_counter() - t0
        scores = evaluate(qrels, run)
        rows.append({"pipeline": pipeline, **scores, "ms_per_query": 1000 * seconds / len(queries)})
    print(f"\n{args.dataset} ({args.split}, {len(queries)} queries, {collection.store.count()} docs)\n")
    print("| pipeline | nDCG@10 | Recall@100 | MRR@10 |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['pipeline']} | {row['ndcg@10']:.4f} | {row['recall@100']:.4f} | {row['mrr@10']:.4f} |")
    if args.json_out:
        encoder = collection.config.encoder.model_dump(mode="json")
        Path(args.json_out).write_text(json.dumps({"dataset": args.dataset, "split": args.split, "commit": commit(),
                                                   "encoder": encoder, "rows": rows}, indent=2))
    engine.close()


if __name__ == "__main__":
    main()
