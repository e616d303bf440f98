"""TempScale on long inputs: collapse and retrieval with 512-token documents built from SciFact, per temperature.

    .venv/bin/python bench/tempscale_long.py [--temperatures 1.0,0.9,0.8,0.7] [--train-queries 100]
                                             [--test-queries 150] [--distractors 120]

SciFact abstracts are short (about 300 tokens with the title); length-induced collapse (Zhou et al., arXiv
2410.24200) shows on longer inputs. This builds them, deterministically (seed 0):

* a *long document* per judged abstract of the sampled queries: the whole abstract inserted at a random token
  position into unrelated, unjudged abstracts cut so that the whole is 505 tokens; it inherits the abstract's id
  and judgments (an abstract longer than that on its own stays alone and is cut at the window);
* ``--distractors`` more 505-token documents made of unjudged abstracts only. No unjudged abstract is used twice.

Every long document is encoded whole, in one 512-token window (no segmentation: the setting where collapse bites;
foveal's own 256-token passages are the other defence). Per τ it reports:

1. collapse: mean pairwise cosine between the distractor long documents (unrelated texts: lower is better), and
   for contrast between as many unrelated abstracts at their own length;
2. dense nDCG@10 of the sampled train queries (to choose τ) and test queries (to report).

Bounded for a 2-core CPU: the corpus is a few hundred long documents, so absolute nDCG is not comparable with the
full corpus; the comparison between temperatures is the measurement.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common import DATA  # noqa: E402

import numpy as np  # noqa: E402

from foveal.config import EncoderConfig  # noqa: E402
from foveal.encoders.sentence_transformer import SentenceTransformerEncoder  # noqa: E402
from foveal.encoders.tempscale import mean_pairwise_cosine  # noqa: E402
from foveal.evaluation import evaluate, read_qrels, read_queries  # noqa: E402


#: Content tokens per long document (a little under the 510 of a 512-token window, so nothing is cut).
WINDOW = 505


def build(data: Path, n_train: int, n_test: int, n_distractors: int, tokenizer, seed: int = 0):
    corpus = {d["_id"]: d for d in map(json.loads, open(data / "corpus.jsonl", encoding="utf-8"))}
    queries = read_queries(data / "queries.jsonl")
    rng = random.Random(seed)
    qrels = {}
    for split, n in (("train", n_train), ("test", n_test)):
        judged = read_qrels(data / "qrels" / f"{split}.tsv")
        qids = sorted(q for q in judged if q in queries and all(d in corpus for d in judged[q]))
        rng.shuffle(qids)
        qrels[split] = {q: judged[q] for q in qids[:n]}
    every_judged = set()
    for split in ("train", "test"):
        for per in read_qrels(data / "qrels" / f"{split}.tsv").values():
            every_judged.update(per)
    pool = sorted(d for d in corpus if d not in every_judged)
    rng.shuffle(pool)

    def text(doc_id: str) -> str:
        d = corpus[doc_id]
        return f"{d.get('title', '')}. {d.get('text', '')}".strip()

    def stream(budget: int) -> str:
        """Unused unjudged abstracts, joined and cut at exactly ``budget`` tokens."""
        parts: list[str] = []
        while True:
            joined = " ".join(parts)
            encoding = tokenizer.encode(joined, add_special_tokens=False)
            if len(encoding.ids) >= budget:
                return joined[: encoding.offsets[budget - 1][1]] if budget else ""
            parts.append(text(pool.pop()))

    def embed(doc_id: str) -> str:
        """The abstract, whole, at a random token position inside ~505 tokens of unrelated text."""
        own = text(doc_id)
        budget = max(0, WINDOW - len(tokenizer.encode(own, add_special_tokens=False).ids))
        filler = stream(budget)
        if not filler:
            return own
        offsets = tokenizer.encode(filler, add_special_tokens=False).offsets
        cut = offsets[rng.randrange(len(offsets))][0]
        return f"{filler[:cut]} {own} {filler[cut:]}".strip()

    needed = sorted({d for split in qrels.values() for per in split.values() for d in per})
    ids, texts = [], []
    for doc_id in needed:
        ids.append(doc_id)
        texts.append(embed(doc_id))
    distractors = []
    for i in range(n_distractors):
        ids.append(f"long-distractor-{i}")
        texts.append(stream(WINDOW))
        distractors.append(len(texts) - 1)
    natural = [text(d) for d in pool[:n_distractors]]  # unused unjudged abstracts at their own length
    return ids, texts, distractors, natural, qrels, queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA / "scifact")
    parser.add_argument("--temperatures", default="1.0,0.9,0.8,0.7")
    parser.add_argument("--train-queries", type=int, default=100)
    parser.add_argument("--test-queries", type=int, default=150)
    parser.add_argument("--distractors", type=int, default=120)
    args = parser.parse_args()
    temperatures = [float(t) for t in args.temperatures.split(",")]

    rows, corpus_size = [], 0
    for tau in temperatures:
        encoder = SentenceTransformerEncoder(EncoderConfig(attention_temperature=tau))
        encoder.content_tokens = 510  # whole documents in one 512-token window
        if not rows:
            ids, texts, distractors, natural, qrels, queries = build(
                args.data, args.train_queries, args.test_queries, args.distractors, encoder._tokenizer
            )
            corpus_size = len(ids)
        encoded = encoder.encode_queries(texts)  # one window each, no segmentation
        matrix = encoded.vectors
        row = {"tau": tau, "collapse": mean_pairwise_cosine(matrix[distractors]),
               "collapse_natural": mean_pairwise_cosine(encoder.encode_queries(natural).vectors),
               "truncated_docs": sum(1 for t in encoded.truncated_tokens if t > 0)}
        for split, judgments in qrels.items():
            qids = list(judgments)
            scores = encoder.encode_queries([queries[q] for q in qids]).vectors @ matrix.T
            run = {}
            for qid, row_scores in zip(qids, scores):
                top = np.argsort(-row_scores)[:100]
                run[qid] = {ids[j]: float(row_scores[j]) for j in top}
            row[split] = evaluate(judgments, run)["ndcg@10"]
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    best = max(rows, key=lambda r: r["train"])
    print(f"\nLong SciFact documents (505 tokens, judged abstract among unrelated ones; "
          f"{rows[0]['truncated_docs']} longer than the window on their own, cut): {corpus_size} documents, "
          f"{len(qrels['train'])} train / {len(qrels['test'])} test queries; chosen on train: τ={best['tau']}\n")
    print("| τ | mean cosine, unrelated 505-token docs | mean cosine, unrelated abstracts (own length) | "
          "dense nDCG@10 train | dense nDCG@10 test |")
    print("|---|---|---|---|---|")
    for r in rows:
        mark = " **(best on train)**" if r is best else ""
        print(f"| {r['tau']}{mark} | {r['collapse']:.4f} | {r['collapse_natural']:.4f} | {r['train']:.4f} | "
              f"{r['test']:.4f} |")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "tempscale_long.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
