"""TempScale sweep: embedding collapse and dense retrieval quality across attention temperatures.

    .venv/bin/python bench/tempscale.py [--docs 1500] [--temperatures 1.0,0.9,0.8,0.7]

1. Collapse (the paper's symptom): mean pairwise cosine between embeddings of unrelated texts, for the 200 longest
   and the 200 shortest SciFact abstracts, each encoded whole (max_seq_length 512, no segmentation), per τ.
2. Dense nDCG@10 on SciFact with foveal's passages + MaxP, per τ, on the train split (to choose) and the test split
   (to report). To fit a 2-core CPU the corpus is a subset: every document judged in either split plus random
   distractors up to --docs; absolute figures are therefore higher than on the full corpus, the comparison
   between temperatures is what this measures.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common import DATA as DATA_ROOT  # noqa: E402

import numpy as np  # noqa: E402

from foveal.config import EncoderConfig  # noqa: E402
from foveal.encoders.sentence_transformer import SentenceTransformerEncoder  # noqa: E402
from foveal.encoders.tempscale import mean_pairwise_cosine  # noqa: E402
from foveal.evaluation import evaluate, read_qrels, read_queries  # noqa: E402

DATA = DATA_ROOT / "scifact"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1500)
    parser.add_argument("--temperatures", default="1.0,0.9,0.8,0.7")
    args = parser.parse_args()
    temperatures = [float(t) for t in args.temperatures.split(",")]

    corpus = [json.loads(line) for line in open(DATA / "corpus.jsonl", encoding="utf-8")]
    by_id = {d["_id"]: d for d in corpus}
    qrels = {split: read_qrels(DATA / "qrels" / f"{split}.tsv") for split in ("train", "test")}
    queries = read_queries(DATA / "queries.jsonl")
    judged = sorted({doc for split in qrels.values() for per in split.values() for doc in per if doc in by_id})
    rng = random.Random(0)
    others = [d for d in by_id if d not in set(judged)]
    rng.shuffle(others)
    ids = judged + others[: max(0, args.docs - len(judged))]
    texts = [f"{by_id[i]['title']}\n{by_id[i]['text']}" for i in ids]
    by_length = sorted(corpus, key=lambda d: len(d["text"]))
    short = [f"{d['title']} {d['text']}" for d in by_length[:200]]
    long = [f"{d['title']} {d['text']}" for d in by_length[-200:]]

    rows = []
    for tau in temperatures:
        encoder = SentenceTransformerEncoder(EncoderConfig(attention_temperature=tau))
        whole = SentenceTransformerEncoder.__new__(SentenceTransformerEncoder)  # same model, 512-token window
        whole.__dict__.update(encoder.__dict__)
        whole.content_tokens = 510
        collapse_long = mean_pairwise_cosine(whole.encode_queries(long).vectors)
        collapse_short = mean_pairwise_cosine(whole.encode_queries(short).vectors)
        docs = encoder.encode_documents(texts)
        matrix = np.concatenate([d.vectors for d in docs])
        owner = np.concatenate([np.full(len(d.passages), i) for i, d in enumerate(docs)])
        row = {"tau": tau, "collapse_long": collapse_long, "collapse_short": collapse_short}
        for split, judgments in qrels.items():
            qids = [q for q in judgments if q in queries]
            vectors = encoder.encode_queries([queries[q] for q in qids]).vectors
            scores = vectors @ matrix.T
            run = {}
            for qid, row_scores in zip(qids, scores):
                best = np.full(len(ids), -np.inf)
                np.maximum.at(best, owner, row_scores)  # MaxP
                top = np.argsort(-best)[:100]
                run[qid] = {ids[j]: float(best[j]) for j in top}
            row[split] = evaluate(judgments, run)["ndcg@10"]
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    best = max(rows, key=lambda r: r["train"])
    print(f"\nSciFact subset: {len(ids)} documents ({len(judged)} judged); chosen on train: tau={best['tau']}\n")
    print("| τ | mean cosine, 200 longest | mean cosine, 200 shortest | dense nDCG@10 train | dense nDCG@10 test |")
    print("|---|---|---|---|---|")
    for r in rows:
        mark = " **(best on train)**" if r is best else ""
        print(f"| {r['tau']}{mark} | {r['collapse_long']:.4f} | {r['collapse_short']:.4f} | {r['train']:.4f} | "
              f"{r['test']:.4f} |")


if __name__ == "__main__":
    main()
