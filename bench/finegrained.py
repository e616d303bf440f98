"""The LexSemBridge paper's two fine-grained retrieval tasks (arXiv 2508.17858), built from SciFact's corpus.

    .venv/bin/python bench/finegrained.py [--data ../shared/data/scifact] [--out bench/out/finegrained] [--seed 13]

The authors' text evaluation data (``Jasaxion/LexSemBridge_eval``, a zip on Hugging Face) could not be read from
here, and their repository holds only the builder of the *image* variant (a crop of the first p% of an image as the
query, the source image as its one relevant item). The text tasks are therefore built by this documented rule, which
follows that construction (the query is a part of one passage, the qrel is that passage) and the paper's description
(keyword queries; part-of-passage spans of 16-256 tokens):

* **Documents**: only those judged relevant to SciFact's *test* queries (``qrels/test.tsv``), never a train
  document; one query per document (title + text as indexed), documents with fewer than 16 words skipped.
* **keyword**: the document's 5 terms with the highest tf-idf (idf over the whole corpus; terms are lower-cased
  words of 3+ letters, English stopwords out, ties broken by first occurrence), in the order they first occur in the
  document, joined by spaces.
* **part-of-passage** (``passage``): a span of ``L`` consecutive whitespace tokens of the document, ``L`` uniform in
  16..min(256, length), its start uniform over the positions where it fits.
* **qrel**: the source document, relevance 1. Seeded (``--seed``); the same seed gives the same files.

Output, BEIR layout without a corpus (search the SciFact index): ``<out>/<task>/queries.jsonl`` and
``<out>/<task>/qrels/test.tsv``, plus ``<out>/README.json`` with the rule and counts. Never committed (bench/out).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
from collections import Counter
from pathlib import Path

from common import DATA

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("keyword", "passage")
KEYWORDS = 5
MIN_SPAN, MAX_SPAN = 16, 256
_WORD = re.compile(r"[a-z][a-z\-]{2,}")
STOPWORDS = frozenset("""a about above after again against all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had has have having he her
here hers herself him himself his how however i if in into is it its itself just may me might more most must my myself no
nor not now of off on once only or other ought our ours ourselves out over own same she should so some such than that the
their theirs them themselves then there these they this those through thus to too under until up upon very was we were
what when where which while who whom why will with within without would you your yours yourself yourselves using used use
via whether among across per""".split())


def terms(text: str) -> list[str]:
    return [w.strip("-") for w in _WORD.findall(text.lower()) if w.strip("-") not in STOPWORDS and len(w.strip("-")) > 2]


def build(data: Path, out: Path, seed: int = 13) -> dict:
    corpus = {}
    with open(data / "corpus.jsonl") as handle:
        for line in handle:
            doc = json.loads(line)
            title, text = doc.get("title", ""), doc.get("text", "")
            corpus[str(doc["_id"])] = f"{title}\n{text}" if title and text else title or text
    pool = set()
    with open(data / "qrels" / "test.tsv") as handle:
        next(handle)
        for line in handle:
            _, doc_id, score = line.rstrip("\n").split("\t")
            if int(score) > 0:
                pool.add(doc_id)
    df = Counter()
    for text in corpus.values():
        df.update(set(terms(text)))
    n = len(corpus)
    rng = random.Random(seed)
    queries: dict[str, list[tuple[str, str, str]]] = {t: [] for t in TASKS}
    for doc_id in sorted(pool, key=lambda d: (len(d), d)):
        text = corpus.get(doc_id)
        if text is None:
            continue
        words = text.split()
        if len(words) < MIN_SPAN:
            continue
        tokens = terms(text)
        tf = Counter(tokens)
        first = {t: i for i, t in reversed(list(enumerate(tokens)))}
        best = sorted(tf, key=lambda t: (-tf[t] * math.log(n / df[t]), first[t]))[:KEYWORDS]
        keyword = " ".join(sorted(best, key=first.get))
        length = rng.randint(MIN_SPAN, min(MAX_SPAN, len(words)))
        start = rng.randint(0, len(words) - length)
        span = " ".join(words[start : start + length])
        queries["keyword"].append((f"kw-{doc_id}", keyword, doc_id))
        queries["passage"].append((f"pp-{doc_id}", span, doc_id))
    counts = {}
    for task, rows in queries.items():
        folder = out / task
        (folder / "qrels").mkdir(parents=True, exist_ok=True)
        with open(folder / "queries.jsonl", "w") as handle:
            for qid, text, _ in rows:
                handle.write(json.dumps({"_id": qid, "text": text}) + "\n")
        with open(folder / "qrels" / "test.tsv", "w") as handle:
            handle.write("query-id\tcorpus-id\tscore\n")
            for qid, _, doc_id in rows:
                handle.write(f"{qid}\t{doc_id}\t1\n")
        counts[task] = len(rows)
    summary = {"source": str(data), "pool_documents": len(pool), "queries": counts, "seed": seed,
               "keywords": KEYWORDS, "span_tokens": [MIN_SPAN, MAX_SPAN], "rule": "bench/finegrained.py docstring"}
    (out / "README.json").write_text(json.dumps(summary, indent=2))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DATA / "scifact"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "finegrained"))
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    print(json.dumps(build(Path(args.data), Path(args.out), args.seed), indent=2))


if __name__ == "__main__":
    main()
