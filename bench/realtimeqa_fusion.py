"""RealTimeQA 2020-2022 under each fusion setting: a collection the fusion protocol (bench/robust.py) never saw.

    .venv/bin/python bench/realtimeqa_fusion.py --home bench/out/events-home

Reads the index ``bench/realtimeqa.py`` built (read only) and searches every judged question, with its date as
``now`` ("dated") and without ("undated"), under: the old default (linear min-max, no Rocchio), z-score without
Rocchio, and the current default (z-score + Rocchio). Prints nDCG@10 and Recall@100 per year split.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common import DATA, commit  # noqa: E402

import realtimeqa  # noqa: E402
from foveal.engine import Engine  # noqa: E402
from foveal.evaluation import evaluate  # noqa: E402
from foveal.pipeline.request import SearchRequest  # noqa: E402
from foveal.pipeline.search import SearchPipeline  # noqa: E402

FUSIONS = [("linear min-max, no Rocchio (the old default)", {"normalization": "minmax", "rocchio": {"enabled": False}}),
           ("z-score, no Rocchio", {"rocchio": {"enabled": False}}),
           ("z-score + Rocchio (the default)", None)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=str(ROOT / "bench" / "out" / "events-home"))
    args = parser.parse_args()
    engine = Engine(args.home)
    collection = engine.get(realtimeqa.INDEX)
    questions, qrels = realtimeqa.read_questions(DATA / "realtimeqa-2020-2022")
    splits = {"2020-2021": sorted(q for q, (_, d) in questions.items() if d < "2022"),
              "2022": sorted(q for q, (_, d) in questions.items() if d >= "2022")}
    print(f"RealTimeQA, {collection.store.count()} documents; all-MiniLM-L6-v2 ({collection.config.encoder.backend}), "
          f"commit {commit()}\n")
    print("| questions | fusion | dated nDCG@10 / R@100 | undated nDCG@10 / R@100 |\n|---|---|---|---|")
    pipeline = SearchPipeline(collection, rerankers=[])
    for split, ids in splits.items():
        for name, fusion in FUSIONS:
            cells = []
            for dated in (True, False):
                run = {}
                for start in range(0, len(ids), 64):
                    chunk = ids[start:start + 64]
                    requests = [SearchRequest(query=questions[q][0], k=100, fusion=fusion, fields=["evidence"],
                                              text="none", now=realtimeqa.moment(questions[q][1]) if dated else None)
                                for q in chunk]
                    for q, response in zip(chunk, pipeline.search_many(requests)):
                        run[q] = {h.id: float(101 - h.rank) for h in response.hits}
                m = evaluate(qrels, run, ids)
                cells.append(f"{m['ndcg@10']:.4f} / {m['recall@100']:.4f}")
            print(f"| {split} ({len(ids)}) | {name} | {cells[0]} | {cells[1]} |", flush=True)
    engine.close()


if __name__ == "__main__":
    main()
