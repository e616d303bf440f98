"""LexSemBridge measured: base encoder vs the fine-tuned encoder alone vs fine-tuned + query-time modulation.

    FOVEAL_MODELS_DIR=bench/out/lexsem/models .venv/bin/python bench/lexsem.py \\
        --base-home bench/out/home --home bench/out/lexsem --model lexsem-scifact-slr \\
        --datasets cranfield,scifact,adi,time,cacm,lisa --train-json bench/out/lexsem-train.json

``--model`` is what ``foveal train lexsem --name MODEL`` registered (the encoder as MODEL, the modulation weights as
MODEL-modulation). For each dataset the fine-tuned index ``<dataset>-lexsem`` is made with ``foveal reindex`` from
the base index in ``--base-home`` (read, never written; the same documents re-encoded by the fine-tuned model, with
``{"encoder": {"model": MODEL}, "lexsem": {"modulation": "MODEL-modulation"}}``); where the base home has no such index
the corpus file is ingested instead (said in the output). Rows: base (the base index), ``fine-tuned`` (stages lexsem
off), ``fine-tuned + modulation`` (``stages: {"lexsem": true}``), pipelines dense and hybrid, nDCG@10 and Recall@100
on the test qrels; for scifact also the two fine-grained tasks of bench/finegrained.py (run it first). Latency: p50 of
single-query dense searches on the fine-tuned index (first ``--latency-queries`` test queries, each asked once with
lexsem off and once on, interleaved), the extra p50 is on minus off. Results accumulate in ``<out>/lexsem.json`` and
``<out>/lexsem.md`` after each dataset (a run cut short keeps what it measured).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common import DATA, commit  # noqa: E402

from foveal.config import IndexConfig, Pipeline  # noqa: E402
from foveal.engine import Engine  # noqa: E402
from foveal.evaluation import evaluate, read_qrels, read_queries  # noqa: E402
from foveal.pipeline.request import SearchRequest  # noqa: E402


def run_queries(engine, index, queries, pipeline, stages=None, k=100):
    searcher = engine.pipeline(index)
    run, ids = {}, list(queries)
    for start in range(0, len(ids), 64):
        chunk = ids[start : start + 64]
        requests = [SearchRequest(query=queries[q], k=k, pipeline=pipeline, stages=stages, rerank=False)
                    for q in chunk]
        for qid, response in zip(chunk, searcher.search_many(requests)):
            run[qid] = {hit.id: hit.score for hit in response.hits}
    return run


def latency(engine, index, queries, n):
    import numpy as np

    searcher = engine.pipeline(index)
    texts = list(queries.values())[:n]
    off, on = [], []
    for text in texts:
        for stages, bucket in (({"lexsem": False}, off), ({"lexsem": True}, on)):
            t0 = time.perf_counter()
            searcher.search(SearchRequest(query=text, k=10, pipeline="dense", stages=stages, rerank=False))
            bucket.append((time.perf_counter() - t0) * 1000)
    return {"p50_off_ms": round(float(np.median(off)), 2), "p50_on_ms": round(float(np.median(on)), 2),
            "extra_p50_ms": round(float(np.median(on)) - float(np.median(off)), 2), "queries": len(texts)}


def table(results, meta) -> str:
    lines = [f"encoder backend: {meta['backend']}; commit {meta['commit']}; model {meta['model']} "
             f"(train: {json.dumps({k: v for k, v in meta.get('train', {}).items() if k in ('steps', 'triples', 'seconds', 'stopped_early', 'losses')})})", "",
             "| dataset | task | pipeline | variant | nDCG@10 | Recall@100 |", "|---|---|---|---|---|---|"]
    for row in results["rows"]:
        lines.append(f"| {row['dataset']} | {row['task']} | {row['pipeline']} | {row['variant']} | "
                     f"{row['ndcg@10']:.4f} | {row['recall@100']:.4f} |")
    lines += ["", "| dataset | p50 off (ms) | p50 on (ms) | extra p50 (ms) | queries |", "|---|---|---|---|---|"]
    for dataset, lat in results["latency"].items():
        lines.append(f"| {dataset} | {lat['p50_off_ms']} | {lat['p50_on_ms']} | {lat['extra_p50_ms']} | {lat['queries']} |")
    for dataset, how in results["built"].items():
        lines.append(f"\n{dataset}: {how}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-home", default=str(ROOT / "bench" / "out" / "home"))
    parser.add_argument("--home", default=str(ROOT / "bench" / "out" / "lexsem-home"))
    parser.add_argument("--model", required=True)
    parser.add_argument("--datasets", default="cranfield,scifact,adi,time,cacm,lisa")
    parser.add_argument("--data-root", default=str(DATA))
    parser.add_argument("--finegrained", default=str(ROOT / "bench" / "out" / "finegrained"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "lexsem"))
    parser.add_argument("--train-json", default=None, help="the JSON line 'foveal train lexsem' printed")
    parser.add_argument("--latency-queries", type=int, default=50)
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_file = Path(args.train_json) if args.train_json else None
    meta = {"backend": f"torch (sentence-transformers, CPU, {platform.machine()})", "commit": commit(),
            "model": args.model, "train": json.loads(train_file.read_text()) if train_file else {}}
    results = {"meta": meta, "rows": [], "latency": {}, "built": {}}
    base = Engine(Path(args.base_home))
    engine = Engine(Path(args.home))
    # fp32 query passes: a LexSemBridge query runs the torch model (it needs token states), so the plain dense rows
    # it is compared with must not run the mixed-int8 default (a precision change is not the stage's doing)
    config = IndexConfig.parse({"encoder": {"model": args.model, "query_quantize": "none"},
                                "lexsem": {"modulation": f"{args.model}-modulation", "enabled": False}})
    for dataset in args.datasets.split(","):
        folder = Path(args.data_root) / dataset
        target = f"{dataset}-lexsem"
        t0 = time.perf_counter()
        has_base = dataset in base.list_indexes()
        if has_base:
            from foveal.reindex import reindex

            summary = reindex(engine, dataset, target, config, batch_size=64, source_engine=base,
                              log=lambda m: print(m, flush=True))
            results["built"][dataset] = (f"reindexed from {args.base_home} ({summary['target_documents']} documents, "
                                         f"{time.perf_counter() - t0:.0f} s this run)")
        else:
            from foveal.pipeline.ingest import ingest_file

            ingest_file(engine.open_or_create(target, config), folder / "corpus.jsonl")
            results["built"][dataset] = f"no base index in {args.base_home}: ingested corpus.jsonl"
        print(results["built"][dataset], flush=True)
        tasks = {"test": (read_queries(folder / "queries.jsonl"), read_qrels(folder / "qrels" / "test.tsv"))}
        if dataset == "scifact":
            for task in ("keyword", "passage"):
                task_folder = Path(args.finegrained) / task
                if task_folder.exists():
                    tasks[task] = (read_queries(task_folder / "queries.jsonl"),
                                   read_qrels(task_folder / "qrels" / "test.tsv"))
        for task, (queries, qrels) in tasks.items():
            queries = {q: t for q, t in queries.items() if q in qrels}
            for pipeline in (Pipeline.dense, Pipeline.hybrid):
                variants = [("fine-tuned", target, {"lexsem": False}),
                            ("fine-tuned + modulation", target, {"lexsem": True})]
                if has_base:
                    variants.insert(0, ("base", dataset, None))
                for variant, index, stages in variants:
                    run = run_queries(base if variant == "base" else engine, index, queries, pipeline, stages)
                    scores = evaluate(qrels, run)
                    row = {"dataset": dataset, "task": task, "pipeline": pipeline.value, "variant": variant,
                           "ndcg@10": scores["ndcg@10"], "recall@100": scores["recall@100"]}
                    results["rows"].append(row)
                    print(json.dumps(row), flush=True)
        results["latency"][dataset] = latency(engine, target, tasks["test"][0], args.latency_queries)
        print(json.dumps(results["latency"][dataset]), flush=True)
        (out / "lexsem.json").write_text(json.dumps(results, indent=2))
        (out / "lexsem.md").write_text(table(results, meta))
    print(table(results, meta))


if __name__ == "__main__":
    main()
