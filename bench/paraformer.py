"""Paraformer and the sentence vectors it attends over: ingest cost, quality off/on per mode, query latency.

    .venv/bin/python bench/paraformer.py ingest [--docs N] [--batch 32]
    .venv/bin/python bench/paraformer.py quality \
        [--max-queries N] [--negatives 10] [--test-queries N] [--epochs 2]

Everything lands in ``bench/out/paraformer/`` (``--out``): a FOVEAL_HOME with the SciFact indexes of the ingest
phase, a models dir with the trained heads, the sentence-vector caches and one JSON per phase.

* ``ingest``: SciFact documents (the first ``--docs``; all by default) into three indexes in the same run: sentence
  vectors off, ``pooled`` (each sentence's span mean-pooled from the passage pass's token states) and ``faithful``
  (each sentence encoded on its own, as the paper). Batches of ``--batch`` documents go to the three indexes in
  turn, the order rotating every batch, so that the machine's load (shared with other jobs) falls on the three
  alike. Reported: seconds per mode (encode + store commit + FAISS + tantivy), the ratio to ``off``, sentences and
  stored bytes per document.
* ``quality``: ``train_paraformer`` (what ``foveal train paraformer`` runs) on SciFact's train qrels (BM25
  negatives, encoder frozen, combination weight fitted on held-out *train* queries), once per mode (a head trains on
  the vectors it will serve); then nDCG@10 and Recall@100 with Paraformer off and on over each collection's first
  stage: hybrid as served (linear fusion of min-max BM25 and dense MaxP, window 100) where a base index in
  ``--base-home`` holds the passage vectors (read only), else BM25 alone (the authors' first stage). The default
  mode's head runs on SciFact test and on Cranfield, CACM, LISA, TIME and ADI (never trained on); the other mode's
  on SciFact test. Candidates' sentence vectors are made as an index of that mode stores them (float16 included)
  and cached. The rerank itself is the served stage's ``ParaformerReranker.rerank``, window 10 (the authors').
  Then the extra query latency (p50, CPU, one query at a time) of the served stage on the ingest phase's ``pooled``
  index: the same searches with ``stages.paraformer`` off and on.
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
from common import DATA as DATA_ROOT, commit  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

DATA = DATA_ROOT
MODES = ("off", "pooled", "faithful")
CLASSIC = ("cranfield", "cacm", "lisa", "time", "adi")


def read_corpus(folder: Path) -> list[dict]:
    with open(folder / "corpus.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def index_config(mode: str) -> dict:
    if mode == "off":
        return {}
    return {"sentence_vectors": {"enabled": True, "mode": mode}}


def phase_ingest(args) -> dict:
    from foveal.documents import parse_document
    from foveal.engine import Engine
    from foveal.errors import FovealError

    engine = Engine(args.out / "home")
    records = read_corpus(args.data / "scifact")[: args.docs]
    documents = []
    for record in records:
        try:
            documents.append(parse_document(record))
        except FovealError:
            pass
    collections = {}
    for mode in MODES:
        name = f"scifact-{mode}"
        if name in engine.list_indexes():
            engine.delete_index(name)
        collections[mode] = engine.create_index(name, index_config(mode))
    encoder = collections["off"].encoder
    encoder.encode_documents([d.full_text for d in documents[:4]])  # warm up
    seconds = dict.fromkeys(MODES, 0.0)
    batches = [documents[i : i + args.batch] for i in range(0, len(documents), args.batch)]
    for n, batch in enumerate(batches):
        order = MODES[n % 3:] + MODES[: n % 3]
        for mode in order:
            started = time.perf_counter()
            collections[mode].upsert(batch)
            seconds[mode] += time.perf_counter() - started
        if n % 5 == 0:
            print(f"batch {n + 1}/{len(batches)}: " + ", ".join(f"{m} {s:.1f}s" for m, s in seconds.items()),
                  flush=True)
    for mode in MODES:
        started = time.perf_counter()
        collections[mode].flush()
        seconds[mode] += time.perf_counter() - started
    out = {"docs": len(documents), "batch": args.batch, "threads": torch.get_num_threads(), "commit": commit(),
           "encoder": encoder.name, "backend": encoder.config.backend, "modes": {}}
    for mode in MODES:
        stats = collections[mode].stats()
        sets = stats.get("vector_sets", {}).get("sentences", {"documents": 0, "rows": 0, "bytes": 0})
        size = sum(f.stat().st_size for f in collections[mode].path.glob("docs.sqlite*"))
        out["modes"][mode] = {
            "seconds": round(seconds[mode], 2), "docs_per_s": round(len(documents) / seconds[mode], 2),
            "ratio_to_off": round(seconds[mode] / seconds["off"], 3),
            "sentences_per_doc": round(sets["rows"] / max(1, sets["documents"]), 2),
            "sentence_bytes_per_doc": round(sets["bytes"] / max(1, len(documents)), 1),
            "docs_sqlite_bytes_per_doc": round(size / len(documents), 1),
        }
    engine.close()
    return out


# -- quality: trained heads over each collection's first stage, sentence vectors computed as ingest stores them ----
class VectorCache:
    """Sentence vectors per (collection, doc id) for one mode, computed on demand exactly as an index with
    ``sentence_vectors.mode`` = that mode stores them (float16 included) and kept on disk, so a rerun resumes."""

    def __init__(self, path: Path, mode: str, encoder) -> None:
        import pickle

        self.path, self.mode, self.encoder = path, mode, encoder
        self.data: dict = pickle.loads(path.read_bytes()) if path.exists() else {}

    def save(self) -> None:
        import pickle

        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps(self.data))
        tmp.replace(self.path)

    def get(self, name: str, corpus: dict, doc_ids) -> dict:
        from foveal.index.collection import encode_with_sentences
        from foveal.rerank.paraformer import SentenceVectors, as_stored

        missing = [d for d in dict.fromkeys(doc_ids) if (name, d) not in self.data]
        for start in range(0, len(missing), 64):
            chunk = missing[start : start + 64]
            texts = [_full(*corpus[d]) for d in chunk]
            for d, t, enc in zip(chunk, texts, encode_with_sentences(self.encoder, texts, self.mode, 64)):
                self.data[(name, d)] = SentenceVectors(as_stored(enc.sentence_vectors),
                                                       [t[a:b] for a, b in enc.sentence_spans])
            self.save()
        return {d: self.data[(name, d)] for d in doc_ids}


def _corpus(folder: Path) -> dict[str, tuple[str, str]]:
    out = {}
    for record in read_corpus(folder):
        title, text = (record.get("title") or "").strip(), (record.get("text") or "").strip()
        if title or text:
            out[str(record["_id"])] = (title, text)
    return out


def _full(title: str, text: str) -> str:
    return f"{title}\n{text}" if title else text


def _base_passages(base_home: Path, name: str):
    """(doc ids by doc_key, passage doc ids, passage matrix) read read-only from a base index's document store, or
    None when there is none (its dense list then cannot be formed without re-encoding the corpus)."""
    import sqlite3

    from foveal.index.base import doc_key_of

    path = base_home / "indexes" / name / "docs.sqlite"
    if not path.exists():
        return None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        ids = dict(conn.execute("SELECT doc_key, id FROM documents"))
        rows = conn.execute("SELECT passage_id, vector FROM vectors ORDER BY passage_id").fetchall()
    finally:
        conn.close()
    owners = [ids[doc_key_of(pid)] for pid, _ in rows]
    matrix = np.frombuffer(b"".join(blob for _, blob in rows), dtype=np.float32).reshape(len(rows), -1)
    return owners, matrix


def _first_stage(name, corpus, queries, encoder, base) -> tuple[str, dict]:
    """Each query's top 100: hybrid (the served default: linear fusion of min-max normalised BM25 and dense MaxP,
    window 100) when a base index gives the passage vectors, else BM25 alone (the authors' first stage)."""
    from foveal.config import Normalization
    from foveal.pipeline.fusion import linear_fusion
    from foveal.training import Bm25Okapi

    bm25 = Bm25Okapi(corpus)
    qids = list(queries)
    qvecs = encoder.encode_queries([queries[q] for q in qids]).vectors
    out = {}
    if base is not None and set(base[0]) != set(corpus):
        print(f"{name}: the base index does not hold exactly this corpus (still being built?); BM25 alone", flush=True)
        base = None
    if base is not None:
        owners, matrix = base
        unique = list(dict.fromkeys(owners))
        index_of = {d: i for i, d in enumerate(unique)}
        owner_index = np.asarray([index_of[d] for d in owners])
    for qid, qv in zip(qids, qvecs):
        lexical = bm25.top(queries[qid], 100)
        if base is None:
            out[qid] = {"qv": qv, "top": lexical}
            continue
        scores = matrix @ qv
        best = np.full(len(unique), -np.inf, dtype=np.float32)
        np.maximum.at(best, owner_index, scores)
        order = np.argsort(-best, kind="stable")[:100]
        dense_list = [(unique[i], float(best[i])) for i in order]
        fused = linear_fusion({"bm25": lexical, "dense": dense_list}, Normalization.minmax,
                              {"bm25": 1.0, "dense": 1.0}, 100)[:100]
        out[qid] = {"qv": qv, "top": fused}
    return ("hybrid" if base is not None else "bm25"), out


def _rerank_run(reranker, query_vector, candidates, provider_vectors) -> dict[str, float]:
    """The served stage's own ``rerank`` over first-stage ``candidates`` (doc id, score) -> a run {doc id: score}."""
    from foveal.pipeline.request import SearchRequest
    from foveal.rerank.base import Candidate

    ids = [d for d, _ in candidates]
    reranker.provider = lambda collection, keys: {k: provider_vectors[ids[k]] for k in keys if ids[k] in provider_vectors}
    ranked = reranker.rerank(SearchRequest(query="q"), [Candidate(i, s) for i, (_, s) in enumerate(candidates)],
                             None, query_vector=query_vector)
    return {ids[c.doc_key]: c.score for c in ranked}


def _sample(items: dict, n: int | None, seed: int = 7) -> dict:
    if not n or n >= len(items):
        return items
    keys = sorted(items)
    picked = set(np.random.default_rng(seed).choice(len(keys), n, replace=False).tolist())
    return {k: items[k] for i, k in enumerate(keys) if i in picked}


def phase_quality(args) -> dict:
    from foveal.config import EncoderConfig
    from foveal.encoders.sentence_transformer import get_encoder
    from foveal.evaluation import evaluate, read_qrels, read_queries
    from foveal.rerank.paraformer import ParaformerHead, ParaformerReranker, ParaformerTrainOptions, train_paraformer

    encoder = get_encoder(EncoderConfig())
    result = {"commit": commit(), "encoder": f"{encoder.name} ({encoder.config.backend})", "threads": args.threads,
              "train": {}, "quality": {}, "settings": {
                  "train_queries": args.max_queries, "negatives_from_top": args.negatives, "epochs": args.epochs,
                  "test_queries_per_collection": args.test_queries, "window": 10}}
    out_json = args.out / "quality.json"
    heads = {}
    plan = [("train", args.default_mode)] + [("eval", (args.default_mode, c)) for c in ["scifact"] + args.classic] \
        + [("train", m) for m in args.modes if m != args.default_mode] \
        + [("eval", (m, "scifact")) for m in args.modes if m != args.default_mode]
    corpora, stages, weights = {}, {}, {}
    for step, what in plan:
        if step == "train":
            mode = what
            cache = VectorCache(args.out / f"vectors-{mode}.pkl", mode, encoder)
            corpus = corpora.setdefault("scifact", _corpus(args.data / "scifact"))
            folder = args.out / "models" / f"paraformer-scifact-{mode}"
            options = ParaformerTrainOptions(epochs=args.epochs, threads=args.threads, sentences=mode,
                                             max_queries=args.max_queries, negatives_from_top=args.negatives)
            record = train_paraformer(args.data / "scifact", folder, options, log=lambda m: print(m, flush=True),
                                      sentence_vectors=lambda ids: cache.get("scifact", corpus, ids))
            heads[mode] = ParaformerHead.load(folder)
            result["train"][mode] = {k: v for k, v in record.items() if k not in ("dev_ids", "dev_ndcg10_curve")}
            weights[mode] = {"bm25": heads[mode].settings.weights,
                             "hybrid": _fit_hybrid(args, encoder, heads[mode], record["dev_ids"], cache, corpus)}
            result["train"][mode]["weights_hybrid"] = weights[mode]["hybrid"]
        else:
            mode, name = what
            if mode not in heads:
                continue
            corpus = corpora.setdefault(name, _corpus(args.data / name))
            qrels = read_qrels(args.data / name / "qrels" / "test.tsv")
            queries = {q: t for q, t in read_queries(args.data / name / "queries.jsonl").items() if q in qrels}
            queries = _sample(queries, args.test_queries)
            if name not in stages:
                stages[name] = _first_stage(name, corpus, queries, encoder, _base_passages(args.base_home, name))
            kind, found = stages[name]
            cache = VectorCache(args.out / f"vectors-{mode}.pkl", mode, encoder)
            vectors = cache.get(name, corpus, [d for f in found.values() for d, _ in f["top"][:10]])
            fitted = weights[mode][kind] or weights[mode]["bm25"]
            reranker = ParaformerReranker(heads[mode], weights=fitted, window=10)
            table_weights = result.setdefault("weights_used", {}).setdefault(name, {})
            table_weights[mode] = fitted
            runs = {"off": {q: dict(f["top"]) for q, f in found.items()},
                    mode: {q: _rerank_run(reranker, f["qv"], f["top"], vectors) for q, f in found.items()}}
            table = result["quality"].setdefault(name, {"first_stage": kind, "queries": len(queries)})
            for run_name, run in runs.items():
                table[run_name] = {k: round(v, 4) for k, v in evaluate(qrels, run, list(queries)).items()}
        out_json.write_text(json.dumps(result, indent=2))
        print(step, what, flush=True)
    if args.latency_queries:
        result["latency"] = _latency(args, encoder)
    return result


def phase_finegrained(args) -> dict:
    """The heads ``quality`` trained (read from ``--out``), on the two fine-grained tasks of bench/finegrained.py
    (queries from documents of SciFact test's pool, the corpus SciFact's): Paraformer off and on over the same
    first stage as ``quality``, with the weight ``quality`` fitted over it."""
    from foveal.config import EncoderConfig
    from foveal.encoders.sentence_transformer import get_encoder
    from foveal.evaluation import evaluate, read_qrels, read_queries
    from foveal.rerank.paraformer import ParaformerHead, ParaformerReranker

    trained = json.loads((args.out / "quality.json").read_text())["train"]
    encoder = get_encoder(EncoderConfig())
    corpus = _corpus(args.data / "scifact")
    base = _base_passages(args.base_home, "scifact")
    result = {"commit": commit(), "encoder": f"{encoder.name} ({encoder.config.backend})", "tasks": {}}
    stages = {}
    for mode in args.modes:
        folder = args.out / "models" / f"paraformer-scifact-{mode}"
        if mode not in trained or not folder.exists():
            continue
        head = ParaformerHead.load(folder)
        weights = trained[mode].get("weights_hybrid") or head.settings.weights
        reranker = ParaformerReranker(head, weights=weights, window=10)
        cache = VectorCache(args.out / f"vectors-{mode}.pkl", mode, encoder)
        for task in ("keyword", "passage"):
            task_folder = args.finegrained / task
            qrels = read_qrels(task_folder / "qrels" / "test.tsv")
            queries = {q: t for q, t in read_queries(task_folder / "queries.jsonl").items() if q in qrels}
            if task not in stages:
                stages[task] = _first_stage("scifact", corpus, queries, encoder, base)
            kind, found = stages[task]
            vectors = cache.get("scifact", corpus, [d for f in found.values() for d, _ in f["top"][:10]])
            runs = {"off": {q: dict(f["top"]) for q, f in found.items()},
                    mode: {q: _rerank_run(reranker, f["qv"], f["top"], vectors) for q, f in found.items()}}
            table = result["tasks"].setdefault(task, {"first_stage": kind, "queries": len(queries)})
            for run_name, run in runs.items():
                table[run_name] = {k: round(v, 4) for k, v in evaluate(qrels, run, list(queries)).items()}
            print(task, mode, {r: table[r]["ndcg@10"] for r in runs}, flush=True)
    return result


def _fit_hybrid(args, encoder, head, dev_ids, cache, corpus):
    """The combination weight over the served (hybrid) first stage, grid-searched on the held-out *train* queries
    (the ones ``train_paraformer`` held out); None when no base SciFact index gives the dense list."""
    from foveal.config import Normalization
    from foveal.evaluation import read_qrels, read_queries
    from foveal.pipeline.fusion import normalize_scores
    from foveal.rerank.combine import fit_two_weights
    from foveal.rerank.paraformer import NAME, ParaformerReranker

    base = _base_passages(args.base_home, "scifact")
    if base is None or set(base[0]) != set(corpus):
        return None
    queries = read_queries(args.data / "scifact" / "queries.jsonl")
    qrels = read_qrels(args.data / "scifact" / "qrels" / "train.tsv")
    _, found = _first_stage("scifact", corpus, {q: queries[q] for q in dev_ids}, encoder, base)
    vectors = cache.get("scifact", corpus, [d for f in found.values() for d, _ in f["top"][:10]])
    reranker = ParaformerReranker(head, window=10)
    features = {}
    for qid, f in found.items():
        top = f["top"][:10]
        scored = reranker.score_documents(f["qv"], [vectors[d] for d, _ in top])
        first = normalize_scores([s for _, s in top], Normalization.zscore)
        deep = normalize_scores([s for s, _ in scored], Normalization.zscore)
        features[qid] = {d: {"first_stage": a, NAME: b} for (d, _), a, b in zip(top, first, deep)}
    fitted, _ = fit_two_weights(features, {q: qrels[q] for q in features}, names=("first_stage", NAME))
    return fitted


def _latency(args, encoder) -> dict:
    """Extra query latency of the served stage (p50 over SciFact test queries, one at a time, CPU): the same
    index (the ``pooled`` one of the ingest phase, sentence vectors stored) searched with stages.paraformer off and
    on; the pipeline hands the stage its query vector."""
    from foveal.config import IndexConfig
    from foveal.engine import Engine
    from foveal.evaluation import read_queries
    from foveal.index.collection import Collection
    from foveal.pipeline.request import SearchRequest
    from foveal.pipeline.search import SearchPipeline

    engine = Engine(args.out / "home")
    name = f"scifact-{args.default_mode}"
    if name not in engine.list_indexes():
        return {"skipped": f"no index {name} (run the ingest phase first)"}
    stored = engine.get(name).config.model_dump(mode="json")
    stored["paraformer"] = {"model": f"paraformer-scifact-{args.default_mode}", "window": 10}
    collection = Collection.open(engine.get(name).path, name, IndexConfig.parse(stored))
    searcher = SearchPipeline(collection)
    queries = list(read_queries(args.data / "scifact" / "queries.jsonl").values())[: args.latency_queries]
    times = {False: [], True: []}
    searcher.search(SearchRequest(query=queries[0], stages={"paraformer": True}))  # load the head
    for query in queries:
        for on in (False, True):
            started = time.perf_counter()
            searcher.search(SearchRequest(query=query, stages={"paraformer": on}))
            times[on].append((time.perf_counter() - started) * 1000)
    off, on = np.percentile(times[False], 50), np.percentile(times[True], 50)
    extra = np.percentile(np.asarray(times[True]) - np.asarray(times[False]), 50)
    return {"index": name, "documents": collection.store.count(), "queries": len(queries),
            "p50_ms_off": round(float(off), 2), "p50_ms_on": round(float(on), 2),
            "p50_extra_ms": round(float(extra), 2)}


def phase_report(args) -> dict:
    """The markdown tables of docs/paraformer.md from ingest.json and quality.json (printed; nothing is run)."""
    lines = []
    ingest = json.loads((args.out / "ingest.json").read_text()) if (args.out / "ingest.json").exists() else None
    if ingest:
        lines += [f"Ingest, SciFact first {ingest['docs']} documents, batches of {ingest['batch']} rotating over the "
                  f"modes; {ingest['encoder']} ({ingest['backend']}), {ingest['threads']} threads, commit "
                  f"{ingest['commit']}", "",
                  "| sentence vectors | seconds | docs/s | × off | sentences/doc | sentence bytes/doc | docs.sqlite bytes/doc |",
                  "|---|---|---|---|---|---|---|"]
        for mode, m in ingest["modes"].items():
            lines.append(f"| {mode} | {m['seconds']} | {m['docs_per_s']} | {m['ratio_to_off']} | {m['sentences_per_doc']} "
                         f"| {m['sentence_bytes_per_doc']} | {m['docs_sqlite_bytes_per_doc']} |")
        lines.append("")
    quality = json.loads((args.out / "quality.json").read_text()) if (args.out / "quality.json").exists() else None
    if quality:
        st = quality["settings"]
        lines += [f"Quality, {quality['encoder']}, commit {quality['commit']}; heads trained on "
                  f"{st['train_queries'] or 'all'} SciFact train queries, BM25 top-{st['negatives_from_top']} "
                  f"negatives, {st['epochs']} epochs; test queries per collection: {st['test_queries_per_collection'] or 'all'};"
                  f" window {st['window']}", "",
                  "| collection | first stage | queries | run | nDCG@10 | Recall@100 | Δ nDCG@10 |", "|---|---|---|---|---|---|---|"]
        lines += _off_on_rows(quality["quality"])
        lines += ["", "| head | pairs | train seconds (sentence vectors included) | weight fitted over BM25 (saved "
                  "in the checkpoint) | weight fitted over hybrid (used in the table above) |", "|---|---|---|---|---|"]
        for mode, r in quality["train"].items():
            lines.append(f"| {mode} | {r['pairs']} | {r['train_seconds']} | {r['weights']} | "
                         f"{r.get('weights_hybrid') or 'n/a (no base SciFact index)'} |")
        if "latency" in quality:
            lines += ["", f"Latency: {json.dumps(quality['latency'])}"]
    fine = json.loads((args.out / "finegrained.json").read_text()) if (args.out / "finegrained.json").exists() else None
    if fine:
        lines += ["", f"Fine-grained tasks (bench/finegrained.py), {fine['encoder']}, commit {fine['commit']}; window 10",
                  "", "| task | first stage | queries | run | nDCG@10 | Recall@100 | Δ nDCG@10 |",
                  "|---|---|---|---|---|---|---|"]
        lines += _off_on_rows(fine["tasks"])
    print("\n".join(lines))
    return {}


def _off_on_rows(tables: dict) -> list[str]:
    """Markdown rows, one per run of each collection or task, with its nDCG@10 change against ``off``."""
    rows = []
    for name, table in tables.items():
        base = table["off"]["ndcg@10"]
        for run, m in table.items():
            if isinstance(m, dict):
                delta = "" if run == "off" else f"{m['ndcg@10'] - base:+.4f}"
                rows.append(f"| {name} | {table['first_stage']} | {table['queries']} | {run} | {m['ndcg@10']} | "
                            f"{m['recall@100']} | {delta} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=["ingest", "quality", "finegrained", "report"])
    parser.add_argument("--finegrained", type=Path, default=ROOT / "bench" / "out" / "finegrained",
                        help="finegrained: the tasks bench/finegrained.py wrote")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "paraformer")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--base-home", type=Path, default=Path(str(ROOT / "bench" / "out" / "home")))
    parser.add_argument("--docs", type=int, default=None, help="ingest: the first N SciFact documents (default all)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-queries", type=int, default=None, help="quality: a seeded sample of train queries")
    parser.add_argument("--negatives", type=int, default=10, help="quality: BM25 top-n negatives")
    parser.add_argument("--test-queries", type=int, default=None, help="quality: a seeded sample per collection")
    parser.add_argument("--latency-queries", type=int, default=100)
    parser.add_argument("--classic", default=",".join(CLASSIC))
    parser.add_argument("--modes", default="pooled,faithful")
    parser.add_argument("--default-mode", default="pooled", help="quality: the mode the classic collections get")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["FOVEAL_MODELS_DIR"] = str(args.out / "models")
    os.environ["FOVEAL_HOME"] = str(args.out / "home")
    started = time.perf_counter()
    args.classic = [c for c in args.classic.split(",") if c]
    args.modes = [m for m in args.modes.split(",") if m]
    if args.phase == "report":
        phase_report(args)
        return
    result = {"ingest": phase_ingest, "quality": phase_quality, "finegrained": phase_finegrained}[args.phase](args)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    (args.out / f"{args.phase}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
