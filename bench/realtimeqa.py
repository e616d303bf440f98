"""RealTimeQA 2020-2022: event-aware queries and freshness (issue 13), as markdown tables.

    .venv/bin/python bench/realtimeqa.py --home bench/out/events-home \\
        --out bench/out/realtimeqa.md

What it does:

* **Index** ``realtimeqa`` (default config, but fp32 query passes: ``encoder.query_quantize: none``): every corpus record as a document dated ``metadata.date``
  (00:00 UTC). News articles (``metadata.kind = news_search_result``, 11,000 characters on average) are indexed by
  their first ``NEWS_CHARS`` characters, so the corpus encodes in minutes on two CPU cores; the judged quiz
  evidence passages are kept whole.
* **Event feed**: every news article is also an *event* of the index (``_id`` = the article id, ``title``, its first
  ``NEWS_CHARS`` characters as ``text``, ``source`` = the outlet, ``timestamp`` = ``metadata.date``), added with
  :meth:`Collection.add_events` (one vector each: title + lead, cut at the model's window). Quiz evidence passages
  are never events.
* **Queries**: each question's date (00:00 UTC) is its ``now``. Parameters are tuned on the 2020-2021 questions and
  reported on the 2022 questions (``--report-years``), with the tuned settings printed beside the tables.
* **With dates**: the request sets ``now``, so documents and events dated after the question are not used (the
  README of the data explains why this cutoff alone is a cheat: many evidence passages carry their question's
  date); +freshness decays by document age; +events attends to news events up to ``now`` (recency-decayed).
  **Without dates**: no ``now`` (no cutoff), no freshness (it needs timestamps: identical to plain), events
  attended regardless of their dates (no window, no decay; events dated after the question can be attended).
* **Latency**: p50 over single-query calls of each stage's own work (``EventStage.apply``, ``apply_freshness``),
  and of the whole search with and without it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from datetime import datetime
from itertools import product
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common import DATA as DATA_ROOT, commit  # noqa: E402

from foveal.config import EventsConfig, FreshnessConfig, IndexConfig  # noqa: E402
from foveal.engine import Engine  # noqa: E402
from foveal.evaluation import evaluate, read_qrels  # noqa: E402
from foveal.events import EventStage, parse_event  # noqa: E402
from foveal.freshness import apply_freshness, decay_factor  # noqa: E402
from foveal.pipeline.ingest import ingest_records  # noqa: E402
from foveal.pipeline.request import SearchRequest  # noqa: E402
from foveal.pipeline.search import SearchPipeline  # noqa: E402

DATA = DATA_ROOT / "realtimeqa-2020-2022"
INDEX = "realtimeqa"
#: News articles average 11,000 characters; the bench indexes each article's first NEWS_CHARS characters (its lead)
#: so the corpus encodes in minutes on two CPU cores. Quiz evidence passages (the judged documents) are kept whole.
NEWS_CHARS = 1000
K = 100
DAY = 86_400.0


def corpus_records(folder: Path):
    with gzip.open(folder / "corpus.jsonl.gz", "rt") as handle:
        for line_no, line in enumerate(handle, start=1):
            raw = json.loads(line)
            if raw.get("metadata", {}).get("kind") == "news_search_result":
                raw["text"] = raw["text"][:NEWS_CHARS]
            raw["timestamp"] = raw["metadata"]["date"] + "T00:00:00Z"
            yield line_no, raw


def news_events(folder: Path):
    with gzip.open(folder / "corpus.jsonl.gz", "rt") as handle:
        for line in handle:
            raw = json.loads(line)
            meta = raw.get("metadata", {})
            if meta.get("kind") == "news_search_result":
                yield parse_event({"_id": raw["_id"], "title": raw.get("title") or "", "text": raw["text"][:NEWS_CHARS],
                                   "source": meta.get("source") or None,
                                   "timestamp": meta["date"] + "T00:00:00Z"})


def build(engine: Engine, folder: Path):
    # fp32 query passes: an event-aware query runs the torch model (it needs token states), so the plain rows it is
    # compared with must not run the mixed-int8 default, or the tables would mix a precision change into the stage
    collection = engine.open_or_create(INDEX, IndexConfig.parse({"encoder": {"query_quantize": "none"}}))
    t0 = time.perf_counter()
    report = ingest_records(collection, corpus_records(folder), batch_size=256)
    print(f"documents: {json.dumps(report.summary())} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    t0 = time.perf_counter()
    events = list(news_events(folder))
    totals = {}
    for start in range(0, len(events), 256):
        for key, ids in collection.add_events(events[start:start + 256]).items():
            totals[key] = totals.get(key, 0) + len(ids)
    print(f"events: {totals} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return collection


def read_questions(folder: Path):
    qrels = read_qrels(folder / "qrels" / "test.tsv")
    questions = {}
    with open(folder / "queries.jsonl") as handle:
        for line in handle:
            raw = json.loads(line)
            if raw["_id"] in qrels:
                questions[raw["_id"]] = (raw["text"], raw["metadata"]["date"])
    return questions, qrels


def moment(date: str) -> datetime:
    return datetime.fromisoformat(date + "T00:00:00+00:00")


def run_search(pipeline: SearchPipeline, questions: dict, ids: list[str], dated: bool, stages: dict,
               freshness: dict | None = None) -> dict:
    run = {}
    for start in range(0, len(ids), 64):
        chunk = ids[start:start + 64]
        requests = [SearchRequest(query=questions[q][0], k=K, now=moment(questions[q][1]) if dated else None,
                                  stages=stages, freshness=freshness, fields=["evidence"], text="none")
                    for q in chunk]
        for q, response in zip(chunk, pipeline.search_many(requests)):
            run[q] = {h.id: float(K + 1 - h.rank) for h in response.hits}
    return run


def freshness_offline(base_hits: dict, stamps: dict, questions: dict, config: FreshnessConfig) -> dict:
    """What the freshness stage does to a cached plain run (same arithmetic as foveal.freshness, for the grid)."""
    run = {}
    for q, hits in base_hits.items():
        now = moment(questions[q][1]).timestamp()
        rescored = []
        for doc_id, score in hits:
            stamp = stamps.get(doc_id)
            f = decay_factor(None if stamp is None else now - stamp, config)
            rescored.append((score * f if score >= 0 else score / max(f, 1e-12), doc_id))
        rescored.sort(key=lambda t: -t[0])
        run[q] = {d: float(K - i) for i, (_, d) in enumerate(rescored)}
    return run


def cached_hits(pipeline, questions, ids, dated):
    hits = {}
    for start in range(0, len(ids), 64):
        chunk = ids[start:start + 64]
        requests = [SearchRequest(query=questions[q][0], k=K, now=moment(questions[q][1]) if dated else None,
                                  stages={"events": False, "freshness": False}, fields=["evidence"], text="none")
                    for q in chunk]
        for q, response in zip(chunk, pipeline.search_many(requests)):
            hits[q] = [(h.id, h.score) for h in response.hits]
    return hits


def p50_ms(values):
    return round(statistics.median(values) * 1000, 3) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=str(ROOT / "bench" / "out" / "home"))
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--tune-sample", type=int, default=200, help="tune queries used for the events grid")
    parser.add_argument("--layer", default=None, help="also evaluate a trained events layer (registered name)")
    parser.add_argument("--layer-only", action="store_true",
                        help="only the trained-layer row, with the settings a previous run tuned (OUT.json); the "
                             "row is appended to --out")
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    folder = Path(args.data)
    engine = Engine(args.home)
    collection = build(engine, folder)
    if args.build_only:
        return
    questions, qrels = read_questions(folder)
    tune = sorted(q for q, (_, d) in questions.items() if d < "2022")
    report = sorted(q for q, (_, d) in questions.items() if d >= "2022")
    rng = np.random.default_rng(0)
    tune_sample = sorted(rng.choice(tune, size=min(args.tune_sample, len(tune)), replace=False).tolist())
    stamps = {d.id: d.timestamp for batch in collection.store.iter_documents() for d in batch}
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731

    def score(run, ids):
        m = evaluate(qrels, run, ids)
        return m["ndcg@10"], m["recall@100"]

    plain = SearchPipeline(collection, rerankers=[])
    if args.layer_only:
        saved = json.loads(Path(args.out + ".json").read_text())
        config = EventsConfig(**{**saved["events_dated"], "model": args.layer})
        layered = SearchPipeline(collection, rerankers=[], query_stages=[EventStage(collection, config)])
        ndcg, recall = score(run_search(layered, questions, report, True, {"freshness": False}), report)
        line = (f"\nTrained layer `{args.layer}` (`foveal train events`, questions up to 2021-12-31), with the tuned "
                f"gate/window/decay, with dates, 2022: nDCG@10 {ndcg:.4f}, Recall@100 {recall:.4f} (commit {commit()}).")
        print(line)
        with open(args.out, "a") as handle:
            handle.write(line + "\n")
        return
    # -- tune freshness (offline on the cached plain run of the tune questions) ---------------------------------
    base_tune = cached_hits(plain, questions, tune, dated=True)
    best_fresh, best_fresh_score = None, -1.0
    for function, scale, floor in product(["exp", "gauss", "linear"], [1, 3, 7, 14, 30, 90, 365],
                                          [0.0, 0.3, 0.6, 0.8, 0.9]):
        config = FreshnessConfig(function=function, scale_days=scale, floor=floor)
        value = score(freshness_offline(base_tune, stamps, questions, config), tune)[0]
        if value > best_fresh_score:
            best_fresh, best_fresh_score = config, value
    fresh_request = {k: v for k, v in best_fresh.model_dump(mode="json").items() if k != "enabled"}
    log(f"freshness tuned: {fresh_request} tune nDCG@10 {best_fresh_score:.4f}")

    # -- tune events (real searches on a sample of the tune questions) -----------------------------------------
    def events_grid(dated: bool):
        best, best_score = None, -1.0
        for gate, alpha, half_life in product([0.4, 0.5, 0.6], [0.25, 0.5, 1.0],
                                              [3.0, 14.0] if dated else [365_000.0]):
            config = EventsConfig(enabled=True, gate=gate, alpha=alpha, half_life_days=half_life,
                                  window_days=30.0 if dated else None)
            pipe = SearchPipeline(collection, query_stages=[EventStage(collection, config)], rerankers=[])
            value = score(run_search(pipe, questions, tune_sample, dated, {"freshness": False}), tune_sample)[0]
            log(f"  events dated={dated} gate={gate} alpha={alpha} half_life={half_life}: {value:.4f}")
            if value > best_score:
                best, best_score = config, value
        return best, best_score

    events_dated, s1 = events_grid(True)
    events_undated, s2 = events_grid(False)
    log(f"events tuned: dated {events_dated.model_dump()} ({s1:.4f}); undated {events_undated.model_dump()} ({s2:.4f})")

    # -- report on 2022 ----------------------------------------------------------------------------------------
    rows = []
    for dated in (True, False):
        config = events_dated if dated else events_undated
        with_events = SearchPipeline(collection, query_stages=[EventStage(collection, config)], rerankers=[])
        variants = [("plain hybrid", plain, {"events": False, "freshness": False}, None),
                    ("+ freshness", plain, {"events": False}, fresh_request),
                    ("+ events", with_events, {"freshness": False}, None),
                    ("+ events + freshness", with_events, {}, fresh_request)]
        if args.layer:
            layered = SearchPipeline(collection, rerankers=[], query_stages=[EventStage(
                collection, config.model_copy(update={"model": args.layer}))])
            variants += [("+ events (trained layer)", layered, {"freshness": False}, None)]
        for label, pipe, stages, fresh in variants:
            if not dated and fresh is not None:
                rows.append((dated, label, None, None))  # freshness needs timestamps
                continue
            run = run_search(pipe, questions, report, dated, stages, fresh)
            rows.append((dated, label, *score(run, report)))
            log(f"{'dated' if dated else 'undated'} {label}: {rows[-1][2:]}")

    # -- latency ------------------------------------------------------------------------------------------------
    sample = report[: args.latency_queries]
    stage = EventStage(collection, events_dated)
    vectors = collection.encoder.encode_queries([questions[q][0] for q in sample]).vectors
    event_times, fresh_times, open_gates = [], [], 0
    for q, vector in zip(sample, vectors):
        request = SearchRequest(query=questions[q][0], k=10, now=moment(questions[q][1]))
        t0 = time.perf_counter()
        _, evidence = stage.apply(request, vector)
        event_times.append(time.perf_counter() - t0)
        open_gates += bool(evidence and evidence.get("gate_open"))
    from foveal.rerank.base import Candidate

    sample_hits = cached_hits(plain, questions, sample, True)
    for q in sample:
        request = SearchRequest(query=questions[q][0], k=10, now=moment(questions[q][1]), freshness=fresh_request)
        candidates = [Candidate(collection.get(d).doc_key, s, {}) for d, s in sample_hits[q]]
        t0 = time.perf_counter()
        apply_freshness(request, candidates, collection, 100)
        fresh_times.append(time.perf_counter() - t0)
    with_events = SearchPipeline(collection, query_stages=[EventStage(collection, events_dated)], rerankers=[])
    variants = [("plain", plain, {"events": False, "freshness": False}, None),
                ("events", with_events, {"freshness": False}, None),
                ("freshness", plain, {"events": False}, fresh_request)]
    times: dict[str, list[float]] = {label: [] for label, *_ in variants}
    for n, q in enumerate(sample):  # interleaved, so load on the machine hits every variant alike
        for label, pipe, stages, fresh in variants:
            request = SearchRequest(query=questions[q][0], k=10, now=moment(questions[q][1]), stages=stages,
                                    freshness=fresh)
            t0 = time.perf_counter()
            pipe.search(request)
            if n >= 3:  # the first queries warm caches up
                times[label].append(time.perf_counter() - t0)
    whole = {label: p50_ms(values) for label, values in times.items()}

    enc = collection.config.encoder
    lines = [f"RealTimeQA 2020-2022: tuned on {len(tune)} questions of 2020-2021, reported on {len(report)} of 2022; "
             f"{collection.store.count()} documents, {collection.store.event_count()} news events. Encoder "
             f"{enc.model} ({enc.backend}), commit {commit()}.", "",
             "| dates | pipeline | nDCG@10 | Recall@100 |", "|---|---|---|---|"]
    for dated, label, ndcg, recall in rows:
        cell = (lambda v: "n/a (needs timestamps)" if v is None else f"{v:.4f}")
        lines.append(f"| {'with dates (now = question date)' if dated else 'no date use'} | {label} | "
                     f"{cell(ndcg)} | {cell(recall)} |")
    lines += ["", f"Tuned freshness: `{json.dumps(fresh_request)}`.",
              f"Tuned events (dates): gate {events_dated.gate}, alpha {events_dated.alpha}, half-life "
              f"{events_dated.half_life_days} days, window {events_dated.window_days} days, top_k "
              f"{events_dated.top_k}, temperature {events_dated.temperature}; the gate opened for "
              f"{open_gates}/{len(sample)} latency-sample queries.",
              f"Tuned events (no dates): gate {events_undated.gate}, alpha {events_undated.alpha}, no window, no "
              "decay.", "",
              f"Latency, p50 over {len(sample)} single queries (CPU): events stage {p50_ms(event_times)} ms, "
              f"freshness stage {p50_ms(fresh_times)} ms; whole search: plain {whole['plain']} ms, with events "
              f"{whole['events']} ms, with freshness {whole['freshness']} ms."]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
        Path(args.out + ".json").write_text(json.dumps({
            "freshness": fresh_request, "events_dated": events_dated.model_dump(mode="json"),
            "events_undated": events_undated.model_dump(mode="json"),
            "rows": [list(r) for r in rows]}, indent=2))


if __name__ == "__main__":
    main()
