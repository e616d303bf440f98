"""Retrieval evaluation on BEIR-format data: TREC runs, qrels, and metrics from trec_eval (``pytrec_eval``).

Metrics: nDCG@10, Recall@100 and MRR@10 (reciprocal rank of the first relevant hit within the top 10).

Example::

    >>> qrels = {"q1": {"d1": 1}}
    >>> evaluate(qrels, {"q1": {"d1": 2.0, "d2": 1.0}})["ndcg@10"]
    1.0
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterable

import pytrec_eval

from foveal.errors import InvalidInputError

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


def read_qrels(path: Path | str) -> Qrels:
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"no such qrels file: {path}")
    qrels: Qrels = {}
    with open(path, encoding="utf-8") as handle:
        for line_no, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if not row or (line_no == 1 and row[0].lower() in ("query-id", "query_id", "qid")):
                continue
            if len(row) == 4:  # TREC qrels: qid 0 docid rel
                row = [row[0], row[2], row[3]]
            if len(row) != 3:
                raise InvalidInputError(f"{path}:{line_no}: expected 'query-id<TAB>corpus-id<TAB>score'")
            try:
                qrels.setdefault(row[0], {})[row[1]] = int(float(row[2]))
            except ValueError:
                raise InvalidInputError(f"{path}:{line_no}: score {row[2]!r} is not a number") from None
    return qrels


def read_queries(path: Path | str) -> dict[str, str]:
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"no such queries file: {path}")
    queries = {}
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                queries[str(obj["_id"])] = obj["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InvalidInputError(f"{path}:{line_no}: expected a JSON object with '_id' and 'text'") from None
    return queries


def write_run(path: Path | str, run: Run, tag: str = "foveal") -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for qid, scores in run.items():
            ranked = sorted(scores.items(), key=lambda kv: -kv[1])
            for rank, (doc_id, score) in enumerate(ranked, start=1):
                handle.write(f"{qid} Q0 {doc_id} {rank} {score:.6f} {tag}\n")


def read_run(path: Path | str) -> Run:
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"no such run file: {path}")
    run: Run = {}
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise InvalidInputError(f"{path}:{line_no}: expected 'qid Q0 docid rank score tag'")
            try:
                run.setdefault(parts[0], {})[parts[2]] = float(parts[4])
            except ValueError:
                raise InvalidInputError(f"{path}:{line_no}: score {parts[4]!r} is not a number") from None
    return run


def evaluate(qrels: Qrels, run: Run, queries: Iterable[str] | None = None) -> dict[str, float]:
    """Mean nDCG@10, Recall@100 and MRR@10 over the judged queries (a judged query missing from the run scores 0)."""
    judged = [q for q in (queries or qrels) if q in qrels and any(v > 0 for v in qrels[q].values())]
    if not judged:
        raise InvalidInputError("no judged query in common between the qrels and the queries")
    full_run = {q: run.get(q, {}) for q in judged}
    top10 = {q: dict(sorted(s.items(), key=lambda kv: -kv[1])[:10]) for q, s in full_run.items()}
    qrels_j = {q: qrels[q] for q in judged}
    main = pytrec_eval.RelevanceEvaluator(qrels_j, {"ndcg_cut.10", "recall.100"}).evaluate(full_run)
    rr = pytrec_eval.RelevanceEvaluator(qrels_j, {"recip_rank"}).evaluate(top10)
    n = len(judged)

    def mean(table, key):
        return sum(table.get(q, {}).get(key, 0.0) for q in judged) / n

    return {
        "ndcg@10": mean(main, "ndcg_cut_10"),
        "recall@100": mean(main, "recall_100"),
        "mrr@10": mean(rr, "recip_rank"),
        "queries": n,
    }
