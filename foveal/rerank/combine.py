"""The final combination of stage scores, so each stage adds to the ranking instead of replacing it.

Pyramid-ERNIE ("Pre-trained Language Model based Ranking in Baidu Search", Zou et al., KDD 2021) trains its
ranker with a pointwise term anchored to human grades precisely so that its score stays calibrated across queries
and can be mixed with the other ranking signals. Here the final score is a small linear combination
``sum_f w_f * x_f`` of features in [0, 1]:

* ``first_stage``: the candidate's first-stage score (fused score for hybrid), min-max normalised over the
  candidate list of its query;
* ``pyramid``: the calibrated rerank score (a sigmoid, anchored by the pointwise term);
* any other stage that wrote ``evidence[name]["score"]`` (a research stage), when its weight is given.

The weights are fitted on held-out SciFact *train* queries (:func:`fit_two_weights`), never on test.

**The confidence gate.** A reranker trained on one domain can lower the ranking of another. Because the pointwise
term anchors the calibrated score to grades (0.9 for a relevant document, 0.1 for an irrelevant one), the best
calibrated score over the window is a per-query confidence that means the same on every query: when it stays below
the gate, the reranker recognised no candidate as relevant, and the query keeps its first-stage order
(:func:`gate_open`). The gate and the weights that ship are chosen leave-one-collection-out on development
collections (``bench/robust_rerank.py``), never on the collection reported.

Example::

    >>> combine({"first_stage": 0.8, "pyramid": 0.3}, {"first_stage": 0.4, "pyramid": 0.6})
    0.5
"""

from __future__ import annotations

from typing import Mapping, Sequence

from foveal.config import Normalization
from foveal.evaluation import evaluate
from foveal.pipeline.fusion import normalize_scores


def combine(features: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """``sum_f w_f * x_f`` over the weighted features; a missing feature counts 0."""
    return round(sum(w * float(features.get(name, 0.0)) for name, w in weights.items()), 12)


def confidence(scores: Sequence[float]) -> float:
    """A query's rerank confidence: the best calibrated rerank score of its window (0 for an empty window)."""
    return max((float(s) for s in scores), default=0.0)


def gate_open(scores: Sequence[float], gate: float | None) -> bool:
    """Whether a query is reranked: always without a gate, else when its :func:`confidence` reaches ``gate``."""
    return gate is None or confidence(scores) >= gate


def minmax(values: Sequence[float]) -> list[float]:
    return normalize_scores(values, Normalization.minmax)


def fit_two_weights(
    features: Mapping[str, Mapping[str, Mapping[str, float]]],
    qrels: Mapping[str, Mapping[str, int]],
    names: tuple[str, str] = ("first_stage", "pyramid"),
    steps: int = 20,
) -> tuple[dict[str, float], list[tuple[float, float]]]:
    """Grid-search ``alpha`` in ``w = {names[0]: 1 - alpha, names[1]: alpha}`` for the best nDCG@10.

    ``features``: query id -> doc id -> feature -> value. Returns the weights and the (alpha, nDCG@10) curve.
    """
    curve = []
    for step in range(steps + 1):
        alpha = step / steps
        weights = {names[0]: round(1 - alpha, 6), names[1]: round(alpha, 6)}
        run = {q: {d: combine(f, weights) for d, f in docs.items()} for q, docs in features.items()}
        curve.append((alpha, evaluate(qrels, run)["ndcg@10"]))
    best_alpha = max(curve, key=lambda point: (point[1], -abs(point[0] - 0.5)))[0]
    return {names[0]: round(1 - best_alpha, 6), names[1]: round(best_alpha, 6)}, curve
