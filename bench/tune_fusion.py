"""Choose fusion settings on a train split (never on test), then report the choice on test.

    .venv/bin/python bench/tune_fusion.py --dataset scifact

Needs the index that bench/quality.py builds. Candidate lists are computed once per query; each fusion variant is
then applied to the same lists, so the sweep costs one retrieval pass per split.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common import DATA  # noqa: E402

from foveal.config import FusionConfig  # noqa: E402
from foveal.engine import Engine  # noqa: E402
from foveal.evaluation import evaluate, read_qrels, read_queries  # noqa: E402
from foveal.pipeline.fusion import fuse  # noqa: E402

VARIANTS = {
    "rrf k=60 (default)": {},
    "rrf k=20": {"rank_constant": 20},
    "rrf k=60, dense x1.5": {"weights": {"bm25": 1.0, "dense": 1.5}},
    "rrf k=60, bm25 x1.5": {"weights": {"bm25": 1.5, "dense": 1.0}},
    "linear minmax": {"method": "linear", "normalization": "minmax"},
    "linear zscore": {"method": "linear", "normalization": "zscore"},
    "linear zscore, dense x1.5": {"method": "linear", "normalization": "zscore", "weights": {"bm25": 1.0, "dense": 1.5}},
}


def candidate_lists(engine, name, queries):
    searcher = engine.pipeline(name)
    collection = searcher.collection
    ids = list(queries)
    vectors = collection.encoder.encode_queries([queries[q] for q in ids]).vectors
    lists = {}
    for qid, vector in zip(ids, vectors):
        bm25 = collection.lexical.search(queries[qid], 100)
        dense, _ = searcher._dense(vector, 100)
        lists[qid] = {"bm25": bm25, "dense": dense}
    return lists


def score(lists, config, id_of, qrels):
    run = {}
    for qid, per in lists.items():
        fused = fuse(per, config)[:100]
        run[qid] = {id_of[k]: s for k, s in fused}
    return evaluate(qrels, run)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--home", default=str(ROOT / "bench" / "out" / "home"))
    args = parser.parse_args()
    data = DATA / args.dataset
    engine = Engine(args.home)
    collection = engine.get(args.dataset)
    conn = collection.store._connect()
    id_of = dict(conn.execute("SELECT doc_key, id FROM documents"))
    queries = read_queries(data / "queries.jsonl")
    results = {}
    for split in ("train", "test"):
        qrels = read_qrels(data / "qrels" / f"{split}.tsv")
        lists = candidate_lists(engine, args.dataset, {q: t for q, t in queries.items() if q in qrels})
        results[split] = {name: score(lists, FusionConfig(**v), id_of, qrels) for name, v in VARIANTS.items()}
    best = max(VARIANTS, key=lambda n: results["train"][n]["ndcg@10"])
    print(f"\n{args.dataset}: fusion variants, chosen on train (best: {best})\n")
    print("| variant | train nDCG@10 | test nDCG@10 | test Recall@100 |")
    print("|---|---|---|---|")
    for name in VARIANTS:
        tr, te = results["train"][name], results["test"][name]
        mark = " **(best on train)**" if name == best else ""
        print(f"| {name}{mark} | {tr['ndcg@10']:.4f} | {te['ndcg@10']:.4f} | {te['recall@100']:.4f} |")
    engine.close()


if __name__ == "__main__":
    main()
