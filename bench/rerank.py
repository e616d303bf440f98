"""Pyramid-ERNIE reranking: hybrid vs hybrid + pyramid rerank, and the rerank latency per query.

    .venv/bin/python bench/rerank.py --home bench/out/home --model bench/out/rerank/model

* Quality: nDCG@10 and Recall@100 on SciFact test and Cranfield test (the reranker is trained on SciFact train
  only and never sees Cranfield), first stage hybrid with k = 100, rerank window ``--window``.
* Latency: milliseconds the rerank stage takes per query (QUITE summaries + batched scoring, one query at a
  time) at windows 20, 50 and 100, and at window 50 for the splits 0+6 (plain cross-encoder), 4+2 and 5+1 with
  the same weights (the split changes the computation, so only the trained split's quality is meaningful).

The indexes are read, never written (build them with bench/quality.py). The model is trained first when
``--model`` holds none (``foveal train rerank`` defaults). Results go to ``--json-out`` as they come.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common import DATA  # noqa: E402

import torch  # noqa: E402

from foveal.config import Pipeline, RerankConfig  # noqa: E402
from foveal.engine import Engine  # noqa: E402
from foveal.evaluation import evaluate, read_qrels, read_queries  # noqa: E402
from foveal.pipeline.request import SearchRequest  # noqa: E402
from foveal.pipeline.search import SearchPipeline  # noqa: E402
from foveal.rerank.pyramid import PyramidRanker  # noqa: E402
from foveal.rerank.stage import PyramidReranker  # noqa: E402


class Timed:
    """Wraps a reranker and keeps the time of each call."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.times: list[float] = []

    def rerank(self, request, candidates, collection):
        started = time.perf_counter()
        out = self.inner.rerank(request, candidates, collection)
        if request.rerank:
            self.times.append((time.perf_counter() - started) * 1000)
        return out


def run(searcher: SearchPipeline, queries: dict[str, str], rerank: bool, k: int = 100) -> dict:
    results = {}
    for qid, text in queries.items():
        if not (text or "").strip():  # SearchRequest refuses a blank query: it retrieves nothing
            results[qid] = {}
            continue
        response = searcher.search(SearchRequest(query=text, k=k, pipeline=Pipeline.hybrid, rerank=rerank))
        results[qid] = {hit.id: hit.score for hit in response.hits}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(DATA))
    parser.add_argument("--home", default=str(ROOT / "bench" / "out" / "home"))
    parser.add_argument("--model", default=str(ROOT / "bench" / "out" / "rerank" / "model"))
    parser.add_argument("--datasets", default="scifact,cranfield")
    parser.add_argument("--window", type=int, default=20, help="rerank window for the quality runs")
    parser.add_argument("--latency-queries", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--latency-only", action="store_true", help="skip the quality runs")
    parser.add_argument("--json-out", default=str(ROOT / "bench" / "out" / "rerank" / "bench.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = Path(args.model)
    if not (model / "pyramid.json").exists():
        from foveal.rerank.train import train_rerank

        print(f"no model in {model}: training it", file=sys.stderr)
        train_rerank(Path(args.data_root) / "scifact", model, home=Path(args.home), index="scifact")
    ranker = PyramidRanker.load(model)
    engine = Engine(args.home)
    report: dict = {"model": str(model), "window": args.window, "training": ranker.settings.training,
                    "combination": ranker.settings.combination, "lower_layers": ranker.settings.lower_layers,
                    "quality": {}, "latency": {}}

    def save() -> None:
        report["load_average"] = os.getloadavg()
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report, indent=2))

    def quality(dataset: str) -> None:
        folder = Path(args.data_root) / dataset
        qrels = read_qrels(folder / "qrels" / "test.tsv")
        queries = {q: t for q, t in read_queries(folder / "queries.jsonl").items() if q in qrels}
        stage = Timed(PyramidReranker(RerankConfig(window=args.window), ranker=ranker))
        searcher = SearchPipeline(engine.get(dataset), rerankers=[stage])
        row = {}
        for label, on in (("hybrid", False), ("hybrid + pyramid", True)):
            started = time.perf_counter()
            scores = evaluate(qrels, run(searcher, queries, on))
            row[label] = {"ndcg@10": round(scores["ndcg@10"], 4), "recall@100": round(scores["recall@100"], 4),
                          "seconds": round(time.perf_counter() - started, 1)}
            print(f"{dataset} {label}: {row[label]}", file=sys.stderr, flush=True)
        row["rerank_ms_per_query"] = round(sum(stage.times) / max(1, len(stage.times)), 1)
        report["quality"][dataset] = row
        save()

    def latency(dataset: str) -> None:
        folder = Path(args.data_root) / dataset
        qrels = read_qrels(folder / "qrels" / "test.tsv")
        queries = {q: t for q, t in read_queries(folder / "queries.jsonl").items() if q in qrels}
        sample = dict(list(queries.items())[: args.latency_queries])
        trained = ranker.settings.lower_layers
        settings = [(trained, w) for w in (20, 50, 100)] + [(lower, 50) for lower in (0, 4, 5) if lower != trained]
        stages = {}
        for lower, window in settings:
            stage = Timed(PyramidReranker(RerankConfig(window=window), ranker=ranker))
            stages[(lower, window)] = (stage, SearchPipeline(engine.get(dataset), rerankers=[stage]))
        first = dict(list(sample.items())[:1])
        for lower, window in settings:  # warm-up
            ranker.model.lower_layers = lower
            run(stages[(lower, window)][1], first, True)
            stages[(lower, window)][0].times.clear()
        # settings take turns query by query, so a change in the machine's load hits them all alike
        for qid, text in sample.items():
            for lower, window in settings:
                ranker.model.lower_layers = lower
                run(stages[(lower, window)][1], {qid: text}, True)
        for lower, window in settings:
            times = sorted(stages[(lower, window)][0].times)
            key = f"{lower}+{ranker.model.num_layers - lower} window {window}"
            report["latency"][key] = {"mean_ms": round(sum(times) / len(times), 1),
                                      "median_ms": round(times[len(times) // 2], 1), "queries": len(times),
                                      "dataset": dataset}
            print(f"latency {key}: {report['latency'][key]}", file=sys.stderr, flush=True)
        save()
        ranker.model.lower_layers = trained

    datasets = args.datasets.split(",")
    if not args.latency_only:
        quality(datasets[0])
    if args.latency_queries:
        latency(datasets[0])
    for dataset in datasets[1:] if not args.latency_only else ():
        quality(dataset)
    print(json.dumps(report["quality"], indent=2))
    print(json.dumps(report["latency"], indent=2))


if __name__ == "__main__":
    main()
