"""Issue 15, other label-free candidates tried beside score completion and regularization (docs/robust.md):

    PYTHONPATH=. .venv/bin/python bench/robust_more.py --home bench/out/home

Per judged query of each development collection (base indexes, read-only) it builds the previous default's lists
(BM25, and dense after Rocchio as the pipeline runs it) and these variants of one side:

* ``bm25_qtf``: BM25 with each analysed query term weighted by how often the query holds it (Lucene scores a query
  clause per occurrence; foveal's BM25 query holds each term once).
* ``bm25_imp{g}``: BM25 with each term weighted by the encoder's judgement of it, ``1 - cos(q, q without the words
  of that term)``, normalised to mean 1, to the power g (leave-one-term-out importance).
* ``rocchio_parts``: the dense side from the query vector averaged with its sentences' vectors (queries of
  several sentences; Rocchio after it as usual).

Each variant is fused with the other side as the previous default fuses (linear, z-score), and the table prints
nDCG@10 per collection beside the previous default's. Output cached under bench/out/robust-more/ (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common import DATA, commit  # noqa: E402
from robust import ndcg10  # noqa: E402

from foveal.config import FusionConfig  # noqa: E402
from foveal.engine import Engine  # noqa: E402
from foveal.evaluation import read_qrels, read_queries  # noqa: E402
from foveal.index.base import passage_id  # noqa: E402
from foveal.pipeline.feedback import rocchio  # noqa: E402
from foveal.pipeline.fusion import fuse  # noqa: E402
from foveal.pipeline.search import PASSAGES_PER_DOCUMENT  # noqa: E402

DEPTH = 100
ZSCORE = FusionConfig(method="linear", normalization="zscore")
#: (label, BM25 side, dense side) of each fused run; the first is the previous default.
RUNS = [("previous default (z-score + Rocchio)", "bm25", "rocchio"),
        ("query term frequency", "bm25_qtf", "rocchio"),
        ("encoder term importance, g = 0.5", "bm25_imp0.5", "rocchio"),
        ("encoder term importance, g = 1", "bm25_imp1.0", "rocchio"),
        ("encoder term importance, g = 2", "bm25_imp2.0", "rocchio"),
        ("query sentences on the dense side", "bm25", "rocchio_parts")]
COLLECTIONS = ["adi", "time", "cranfield", "cacm", "lisa", "scifact-train"]


def sentences(text: str) -> list[str]:
    parts = [p.strip() for p in re.split(r"(?<=[.?!;])\s+|\n+", text) if len(p.strip().split()) >= 3]
    return parts if len(parts) > 1 else []


def lists_of(engine: Engine, base: str, split: str, limit: int | None) -> dict:
    collection = engine.get(base)
    searcher = engine.pipeline(base)
    store, lexical, encoder = collection.store, collection.lexical, collection.encoder
    id_of = dict(store._connect().execute("SELECT doc_key, id FROM documents"))
    queries = read_queries(DATA / base / "queries.jsonl")
    qrels = read_qrels(DATA / base / "qrels" / f"{split}.tsv")
    ids = [q for q in queries if q in qrels and any(r > 0 for r in qrels[q].values())][:limit]
    vectors = encoder.encode_queries([queries[q] for q in ids]).vectors
    first_limit = min(DEPTH * PASSAGES_PER_DOCUMENT, len(collection.vectors))

    def bm25(weights=None, text=""):
        return sorted(lexical.search(text, DEPTH, term_weights=weights), key=lambda kv: (-kv[1], kv[0]))

    def dense_after_rocchio(vec):
        scores, found = collection.vectors.search(vec[None, :], first_limit)
        first = (first_limit, scores[0], found[0])
        dense, best = searcher._dense(vec, DEPTH, first=first)
        keys = [k for k, _ in dense[:5]]
        pids, vecs = store.vectors_of(keys)
        wanted = {passage_id(k, best[k]) for k in keys if k in best}
        rows = [i for i, p in enumerate(np.asarray(pids).tolist()) if p in wanted]
        moved = rocchio(vec, vecs[rows] if rows else None, 0.25)
        rescored = searcher._rescored(moved, vec, first, collection.config.fusion.rocchio, {})
        return searcher._dense(moved, DEPTH, first=rescored)[0]

    out = {}
    for qid, vector in zip(ids, vectors):
        text = queries[qid]
        lists = {"bm25": bm25(text=text), "rocchio": dense_after_rocchio(vector)}
        terms = lexical.analyze(text)
        counts: dict[str, float] = {}
        for t in terms:
            counts[t] = counts.get(t, 0.0) + 1.0
        lists["bm25_qtf"] = bm25(counts) if counts else lists["bm25"]
        unique = list(dict.fromkeys(terms))
        words = text.split()
        word_terms = [set(lexical.analyze(w)) for w in words]
        importance = None
        if len(unique) > 1:
            variants = [" ".join(w for w, wt in zip(words, word_terms) if t not in wt) for t in unique]
            importance = np.clip(1.0 - encoder.encode_queries(variants).vectors @ vector, 1e-4, None)
            importance = importance / importance.mean()
        for g in (0.5, 1.0, 2.0):
            lists[f"bm25_imp{g}"] = (bm25({t: float(v) ** g for t, v in zip(unique, importance)})
                                     if importance is not None else lists["bm25"])
        parts = sentences(text)
        if parts:
            mean = vector + encoder.encode_queries(parts).vectors.mean(axis=0)
            lists["rocchio_parts"] = dense_after_rocchio((mean / np.linalg.norm(mean)).astype(vector.dtype))
        else:
            lists["rocchio_parts"] = lists["rocchio"]
        out[qid] = {label: [[id_of[k], float(s)] for k, s in ranked] for label, ranked in lists.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", default=str(ROOT / "bench" / "out" / "home"))
    parser.add_argument("--collections", default=",".join(COLLECTIONS))
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "robust-more"))
    args = parser.parse_args()
    engine = Engine(Path(args.home))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.collections.split(",")
    table = {}
    for name in names:
        base, _, split = name.partition("-")
        split = split or "test"
        path = out / f"{name}.json"
        if not path.exists():
            path.write_text(json.dumps(lists_of(engine, base, split, 300 if name == "scifact-train" else None)))
        data = json.loads(path.read_text())
        qrels = read_qrels(DATA / base / "qrels" / f"{split}.tsv")
        for label, a, b in RUNS:
            runs = {qid: [d for d, _ in fuse({"bm25": per[a], "dense": per[b]}, ZSCORE)] for qid, per in data.items()}
            table[label, name] = float(np.mean([ndcg10(runs[qid], qrels[qid]) for qid in data]))
        for side in ("bm25", "bm25_qtf"):
            table[side, name] = float(np.mean([ndcg10([d for d, _ in per[side]], qrels[qid]) for qid, per in data.items()]))
    engine.close()
    print(f"nDCG@10; all-MiniLM-L6-v2 (torch), commit {commit()}; fused runs: linear z-score over the two lists\n")
    print("| run | " + " | ".join(names) + " | mean Δ vs previous default |")
    print("|---|" + "---|" * (len(names) + 1))
    base_label = RUNS[0][0]
    for label in [r[0] for r in RUNS] + ["bm25", "bm25_qtf"]:
        delta = np.mean([table[label, n] - table[base_label, n] for n in names]) if label.startswith(("previous", "query", "encoder")) else None
        cells = " | ".join(f"{table[label, n]:.4f}" for n in names)
        print(f"| {label if label not in ('bm25', 'bm25_qtf') else label + ' alone'} | {cells} | "
              f"{'' if delta is None else f'{delta:+.4f}'} |")


if __name__ == "__main__":
    main()
