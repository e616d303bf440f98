"""Feedback from the fused list: Rocchio and RM3 fed by the first fusion's best documents instead of each retriever's own.

    PYTHONPATH=. .venv/bin/python bench/robust_feedback.py --home bench/out/home \
        --collections adi,time,cranfield,cacm,lisa,cranfield-weak,scifact-train

A candidate for issue 15 (docs/robust.md, "Everything tried"). The default pipeline moves the dense query vector
towards the best passages of the first 5 *dense* documents (Rocchio, beta 0.25) and fuses the z-scored lists.
Pseudo-relevance feedback is only as good as its feedback documents, and the fused list is usually better than
either list alone, so here the feedback documents come from a first fusion of the unexpanded bm25 and dense lists
(the default fusion config):

* ``froc``: Rocchio (5 documents, beta 0.25) over the fused top 5; a document only BM25 found gives its passage
  closest to the query vector. The moved vector rescores the first dense round, as the pipeline's Rocchio does.
* ``frm3_D_W``: RM3 on BM25 (``foveal.pipeline.feedback.rm3``: D feedback documents, 10 terms, original-query
  weight W), with the fused top D as feedback documents and their fused scores as P(d|q).
* ``frm3_D_W+froc``: both, fused; ``frm3_D_W+own``: RM3 from the fused list beside the default's own Rocchio.

Reads the base indexes of ``bench/quality.py`` read-only (cranfield-weak: Cranfield's index with BM25 built again by
bench/robust_dump.py's rule). Prints nDCG@10 per collection and candidate, each candidate's difference from the
default, and the mean difference over the collections present. Nothing here picks a default: a candidate would
still have to win leave-one-collection-out in bench/robust.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from common import DATA, commit  # noqa: E402
from robust_dump import first_sentence_removed  # noqa: E402

from foveal.config import FusionConfig  # noqa: E402
from foveal.engine import Engine  # noqa: E402
from foveal.evaluation import evaluate, read_qrels, read_queries  # noqa: E402
from foveal.index.base import LexicalDocument, doc_key_of, passage_id  # noqa: E402
from foveal.index.tantivy_index import TantivyLexicalIndex  # noqa: E402
from foveal.pipeline.feedback import rm3, rocchio  # noqa: E402
from foveal.pipeline.fusion import fuse  # noqa: E402
from foveal.pipeline.search import PASSAGES_PER_DOCUMENT  # noqa: E402

DEPTH = 100
RM3_GRID = [(5, 0.7), (5, 0.8), (5, 0.9), (10, 0.7), (10, 0.8), (10, 0.9)]  # feedback documents, original weight
TRAIN_LIMIT = 300  # SciFact train: the first 300 judged queries in file order, as bench/robust_dump.py


def feedback_rows(store, vector: np.ndarray, keys: list[int], best_passage: dict[int, int]):
    """Per feedback document, the vector of its best dense passage, or (found by BM25 only) of its passage
    closest to ``vector``."""
    pids, vectors = store.vectors_of(keys)
    pids = np.asarray(pids).tolist()
    rows = []
    for key in keys:
        if key in best_passage:
            mine = [i for i, pid in enumerate(pids) if pid == passage_id(key, best_passage[key])]
        else:
            mine = [i for i, pid in enumerate(pids) if doc_key_of(pid) == key]
            mine = [max(mine, key=lambda i: float(vectors[i] @ vector))] if mine else []
        if mine:
            rows.append(vectors[mine[0]])
    return np.stack(rows) if rows else None


def run_collection(engine: Engine, name: str) -> tuple[dict[str, float], int]:
    base, _, split = name.partition("-")
    split = "train" if split == "train" else "test"
    weak = name.endswith("-weak")
    collection = engine.get(base)
    searcher = engine.pipeline(base)
    store = collection.store
    id_of = dict(store._connect().execute("SELECT doc_key, id FROM documents"))
    lexical, text = collection.lexical, {}
    for batch in store.iter_documents():
        for d in batch:
            text[d.doc_key] = d.full_text
    if weak:  # bench/robust_dump.py's rule: BM25 without each document's title and first sentence
        lexical = TantivyLexicalIndex(None, collection.config.lexical)
        docs = [LexicalDocument(d.doc_key, d.id, "", first_sentence_removed(d.text))
                for batch in store.iter_documents() for d in batch]
        lexical.upsert(docs)
        lexical.commit()
        text = {d.doc_key: d.text for d in docs}
    analysed: dict[int, list[str]] = {}

    def terms(key: int) -> list[str]:
        if key not in analysed:
            analysed[key] = lexical.analyze(text[key])
        return analysed[key]

    def bm25(query: str, weights: dict | None = None) -> list[tuple[int, float]]:
        found = lexical.search(query, DEPTH) if weights is None else lexical.search("", DEPTH, term_weights=weights)
        found.sort(key=lambda kv: (-kv[1], kv[0]))
        return found

    folder = DATA / base
    qrels = read_qrels(folder / "qrels" / f"{split}.tsv")
    queries = read_queries(folder / "queries.jsonl")
    ids = [q for q in queries if q in qrels]
    if split == "train":
        ids = ids[:TRAIN_LIMIT]
    fusion = FusionConfig()  # the default: linear, z-scored, equal weights
    cfg = fusion.rocchio
    runs: dict[str, dict] = {}

    def add(label: str, qid: str, ranked) -> None:
        runs.setdefault(label, {})[qid] = {id_of[k]: float(s) for k, s in ranked[:DEPTH]}

    vectors = collection.encoder.encode_queries([queries[q] for q in ids]).vectors
    for qid, vector in zip(ids, vectors):
        query = queries[qid]
        lists = {"bm25": bm25(query)}
        limit = min(DEPTH * PASSAGES_PER_DOCUMENT, len(collection.vectors))
        scores, found = collection.vectors.search(vector[None, :], limit)
        first_round = (limit, scores[0], found[0])
        dense, best = searcher._dense(vector, DEPTH, first=first_round)

        def moved_list(keys: list[int]):
            moved = rocchio(vector, feedback_rows(store, vector, keys, best), cfg.beta)
            rescored = searcher._rescored(moved, vector, first_round, cfg, {})
            return searcher._dense(moved, DEPTH, first=rescored)[0]

        own = moved_list([k for k, _ in dense[: cfg.fb_docs]])
        add("default (own Rocchio)", qid, fuse({"bm25": lists["bm25"], "dense": own}, fusion))
        first = fuse({"bm25": lists["bm25"], "dense": dense}, fusion)
        froc = moved_list([k for k, _ in first[: cfg.fb_docs]])
        add("froc", qid, fuse({"bm25": lists["bm25"], "dense": froc}, fusion))
        query_terms = lexical.analyze(query)
        for fb_docs, weight in RM3_GRID:
            expanded = rm3(query_terms, [(terms(k), s) for k, s in first[:fb_docs]], 10, weight)
            frm3 = bm25(query, expanded) if expanded else []
            add(f"frm3_{fb_docs}_{weight}+froc", qid, fuse({"bm25": frm3, "dense": froc}, fusion))
            if (fb_docs, weight) == (5, 0.8):
                add(f"frm3_{fb_docs}_{weight}+own", qid, fuse({"bm25": frm3, "dense": own}, fusion))
    return {label: evaluate(qrels, run, ids)["ndcg@10"] for label, run in runs.items()}, len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=str(ROOT / "bench" / "out" / "home"))
    parser.add_argument("--collections", default="adi,time,cranfield,cacm,lisa,cranfield-weak,scifact-train")
    args = parser.parse_args()
    engine = Engine(args.home)
    names = [n for n in args.collections.split(",") if n]
    table: dict[str, dict[str, float]] = {}
    sizes = {}
    for name in names:
        table[name], sizes[name] = run_collection(engine, name)
        print(f"{name}: {sizes[name]} queries done", file=sys.stderr, flush=True)
    labels = list(next(iter(table.values())))
    base = "default (own Rocchio)"
    print(f"\nnDCG@10; all-MiniLM-L6-v2 ({engine.get(names[0].split('-')[0]).config.encoder.backend} backend); "
          f"bench/robust_feedback.py at {commit()}\n")
    print("| candidate | " + " | ".join(f"{n} ({sizes[n]})" for n in names) + " | mean Δ vs default |")
    print("|---|" + "---|" * (len(names) + 1))
    for label in labels:
        cells = []
        for n in names:
            value = table[n][label]
            cells.append(f"{value:.4f}" if label == base else f"{value:.4f} ({value - table[n][base]:+.4f})")
        mean = float(np.mean([table[n][label] - table[n][base] for n in names]))
        print(f"| {label} | " + " | ".join(cells) + f" | {mean:+.4f} |")
    engine.close()


if __name__ == "__main__":
    main()
