"""The MindSearch-style agent vs a single hybrid search on HotpotQA (dev150), as a markdown table.

    .venv/bin/python bench/agent_hotpotqa.py

For every question, the "cited passages" are the references of the agent's final answer, and for a single hybrid
search its top k hits. Reported: the share of questions whose two supporting paragraphs are both cited, the share
whose answer string (SQuAD-normalised) occurs in a cited passage, and the mean number of cited passages. The
single search is also run with k equal to the agent's mean citation count (rounded up), for a like-for-like
comparison. The index is built under bench/out/home on the first run (re-runs reuse it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import string
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common import DATA  # noqa: E402

from foveal.agents import NODE_FUSION, AgentSettings, build_agent  # noqa: E402
from foveal.engine import Engine  # noqa: E402
from foveal.evaluation import read_queries  # noqa: E402
from foveal.pipeline.ingest import ingest_file  # noqa: E402
from foveal.pipeline.request import SearchRequest  # noqa: E402


def normalise(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def score(cited: list[str], texts: dict[str, str], meta: dict) -> tuple[bool, bool]:
    both = set(meta["supporting_doc_ids"]) <= set(cited)
    haystack = " ".join(normalise(texts[d]) for d in cited if d in texts)
    answer = any(normalise(a) and normalise(a) in haystack for a in meta["answers"])
    return both, answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = DATA.parent
    parser.add_argument("--data", default=str(shared / "data" / "hotpotqa-dev150"))
    parser.add_argument("--home", default=str(ROOT / "bench" / "out" / "home"))
    parser.add_argument("--index", default="hotpotqa-dev150")
    parser.add_argument("--k", type=int, default=10, help="hits of the single hybrid search")
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions")
    parser.add_argument("--range", default=None,
                        help="questions FIRST-LAST (1-based, inclusive) of the file: issue 15's protocol chooses on "
                             "1-75 and reports on 76-150")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--select", type=int, default=4, help="passages each searcher node may cite")
    parser.add_argument("--node-fusion", default=None,
                        help="JSON: what the searcher nodes change in the index's fusion (default: the agent's own, "
                             "regularization off; '{}': the index's fusion as it is)")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()

    folder = Path(args.data)
    engine = Engine(args.home)
    collection = engine.open_or_create(args.index)
    report = ingest_file(collection, folder / "corpus.jsonl", batch_size=256)
    print(f"ingest: {json.dumps(report.summary())}", file=sys.stderr)
    texts = {}
    with open(folder / "corpus.jsonl") as handle:
        for line in handle:
            doc = json.loads(line)
            texts[doc["_id"]] = f"{doc.get('title', '')}\n{doc.get('text', '')}"
    questions = [json.loads(line) for line in open(folder / "queries.jsonl") if line.strip()][: args.limit]
    if args.range:
        first, last = (int(x) for x in args.range.split("-"))
        questions = questions[first - 1 : last]
    assert read_queries(folder / "queries.jsonl")  # the file is a BEIR queries file
    pipeline = engine.pipeline(args.index)
    node_fusion = NODE_FUSION if args.node_fusion is None else json.loads(args.node_fusion)
    agent = build_agent(pipeline, planner="rule", select=args.select, settings=AgentSettings(concurrency=args.concurrency,
                                                                         node_timeout=300), node_fusion=node_fusion)

    agent_cited: dict[str, list[str]] = {}
    statuses: dict[str, int] = {}
    nodes = 0
    t0 = time.perf_counter()
    for n, q in enumerate(questions, 1):
        final = asyncio.run(agent.run(q["text"]))[-1]["data"]
        statuses[final["status"]] = statuses.get(final["status"], 0) + 1
        nodes += sum(1 for node in final["graph"]["nodes"].values() if node["type"] == "searcher")
        agent_cited[q["_id"]] = [ref["doc_id"] for ref in final["references"].values()]
        if n % 25 == 0:
            print(f"agent: {n}/{len(questions)} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    agent_s = time.perf_counter() - t0
    mean_agent = sum(len(c) for c in agent_cited.values()) / len(questions)

    def single(k: int) -> dict[str, list[str]]:
        requests = [SearchRequest(query=q["text"], k=k, pipeline="hybrid") for q in questions]
        return {q["_id"]: [h.id for h in r.hits] for q, r in zip(questions, pipeline.search_many(requests))}

    matched_k = math.ceil(mean_agent)
    runs = [(f"single hybrid search, top {args.k}", single(args.k)),
            (f"single hybrid search, top {matched_k} (the agent's mean, rounded up)", single(matched_k)),
            (f"agent (rule planner, extractive searchers, select {args.select})", agent_cited)]
    rows = []
    per_question = {}
    for name, cited in runs:
        results = [score(cited[q["_id"]], texts, q["metadata"]) for q in questions]
        per_question[name] = results
        rows.append({
            "method": name,
            "both_supporting": sum(b for b, _ in results) / len(questions),
            "answer_in_cited": sum(a for _, a in results) / len(questions),
            "mean_cited": sum(len(cited[q["_id"]]) for q in questions) / len(questions),
        })
    print(f"\n{len(questions)} questions; agent: {nodes / len(questions):.2f} searcher nodes per question, "
          f"statuses {statuses}, {agent_s / len(questions):.2f} s per question; node fusion changes "
          f"{json.dumps(node_fusion)}\n")
    print("| method | both supporting paragraphs cited | answer string in cited passages | mean cited passages |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['method']} | {row['both_supporting']:.3f} | {row['answer_in_cited']:.3f} | "
              f"{row['mean_cited']:.2f} |")
    # paired bootstrap (2,000 resamples) of agent minus the single search at the agent's citation budget
    import numpy as np

    agent_r = per_question[runs[2][0]]
    single_r = per_question[runs[1][0]]
    rng = np.random.default_rng(0)
    for label, idx in (("both supporting paragraphs cited", 0), ("answer string in cited passages", 1)):
        diff = np.array([float(a[idx]) - float(b[idx]) for a, b in zip(agent_r, single_r)])
        means = diff[rng.integers(0, len(diff), size=(2000, len(diff)))].mean(axis=1)
        print(f"\nagent - single (top {matched_k}), {label}: {diff.mean():+.3f} "
              f"[{np.percentile(means, 2.5):+.3f}, {np.percentile(means, 97.5):+.3f}] (95%, paired bootstrap)")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"rows": rows, "statuses": statuses,
                                                   "searcher_nodes_per_question": nodes / len(questions)}, indent=2))


if __name__ == "__main__":
    main()
