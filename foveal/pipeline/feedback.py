"""Pseudo-relevance feedback: RM3 on the lexical query, Rocchio on the dense query vector.

* :func:`rm3` follows the relevance model of Lavrenko & Croft (SIGIR 2001), "RM3" in the interpolated form of
  Abdul-Jaleel et al. (TREC 2004): ``P(w|R) ∝ Σ_d P(w|d) · P(d|q)`` over the first ``fb_docs`` documents, the
  ``fb_terms`` most likely terms kept and renormalised, then mixed with the original query's maximum-likelihood
  model: ``w = λ · P(w|q) + (1 - λ) · P(w|R)``. ``P(d|q)`` is each document's retrieval score over the sum of the
  feedback scores (scores are positive for BM25).
* :func:`rocchio` is Rocchio's relevance feedback (1971) with pseudo-relevant documents only (no negative set):
  ``q' = q + β · mean(feedback vectors)``, renormalised to unit length when the input was.

Both are pure functions; invariants the tests pin: no feedback (zero documents, or ``β = 0``, or ``λ = 1``)
returns the original query exactly.
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping, Sequence

import numpy as np


def query_model(terms: Sequence[str]) -> dict[str, float]:
    """The maximum-likelihood language model of the query: term counts over the query length."""
    counts = Counter(terms)
    total = sum(counts.values())
    return {t: c / total for t, c in counts.items()} if total else {}


def rm3(
    query_terms: Sequence[str],
    feedback: Sequence[tuple[Sequence[str], float]],
    fb_terms: int = 10,
    original_weight: float = 0.5,
) -> dict[str, float]:
    """Expanded query ``{term: weight}`` (weights sum to 1) from the analysed query and ``feedback``, a list of
    (analysed document terms, retrieval score) best first. No feedback documents: the original query model."""
    original = query_model(query_terms)
    usable = [(terms, max(0.0, float(score))) for terms, score in feedback if len(terms)]
    if not usable or original_weight >= 1.0 or fb_terms <= 0:
        return original
    total_score = sum(score for _, score in usable)
    relevance: Counter[str] = Counter()
    for terms, score in usable:
        prior = score / total_score if total_score > 0 else 1.0 / len(usable)
        length = len(terms)
        for term, count in Counter(terms).items():
            relevance[term] += prior * count / length
    top = sorted(relevance.items(), key=lambda kv: (-kv[1], kv[0]))[:fb_terms]
    mass = sum(w for _, w in top)
    expanded: dict[str, float] = {t: original_weight * w for t, w in original.items()}
    for term, weight in top:
        expanded[term] = expanded.get(term, 0.0) + (1.0 - original_weight) * weight / mass
    return expanded


def rocchio(vector: np.ndarray, feedback: np.ndarray | None, beta: float = 0.5) -> np.ndarray:
    """``vector + beta * mean(feedback rows)``, unit length again if ``vector`` was. ``beta == 0`` or no feedback
    rows: ``vector`` itself, unchanged."""
    if beta == 0 or feedback is None or len(feedback) == 0:
        return vector
    moved = vector.astype(np.float32) + float(beta) * np.asarray(feedback, dtype=np.float32).mean(axis=0)
    norm = float(np.linalg.norm(vector))
    if abs(norm - 1.0) < 1e-3:
        length = float(np.linalg.norm(moved))
        if length > 0:
            moved = moved / length
    return moved.astype(vector.dtype, copy=False)


def weights_summary(weights: Mapping[str, float], limit: int = 20) -> list[list]:
    """The heaviest terms as ``[[term, weight], ...]`` (what the response's ``query_info`` shows)."""
    top = sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return [[t, round(w, 4)] for t, w in top]
