"""Fusing ranked lists from several retrievers into one.

Pure functions over ``{retriever: [(key, score), ...]}`` (each list best first). Both keep, for every key, the
rank and score it had in each list, so hits can show where they came from.

* :func:`reciprocal_rank_fusion`: ``sum_r w_r / (k + rank_r)`` (Cormack et al. 2009; rank from 1, ``k = 60``).
* :func:`linear_fusion`: ``sum_r w_r * norm(score_r)`` with min-max or z-score normalization per list; a key a
  retriever did not return gets that retriever's floor (0 after min-max, the list minimum after z-score).
* ``method: adaptive`` (:func:`adaptive_weights`): linear fusion whose two weights are set per query,
  without labels, from signals of the two lists themselves (:func:`adaptive_signals`): the total weight
  ``T = w_bm25 + w_dense`` is split as ``w_dense = T * sigmoid(logit(w_dense / T) + sum_i c_i * signal_i)``, so the
  weights always sum to the configured total and all-zero coefficients give the configured split (plain linear
  fusion). Coefficients fitted on development collections (bench/robust.py, leave-one-collection-out) did not
  beat plain linear fusion, so :data:`DEFAULT_COEFFICIENTS` are zero and ``adaptive`` is not the default. This is query-performance prediction used
  for fusion weighting, in the spirit of score-distribution QPP (Shtok et al., "Predicting query performance by
  query-drift estimation", TOIS 2012) and of per-query fusion weights learned across collections; the signals are
  our own choice, measured in docs/robust.md.

Two stages around linear fusion, both on by default for hybrid requests (issue 15, docs/robust.md):

* **Score completion** (``completed`` of :func:`linear_fusion`; the keys from :func:`completion_keys`): each
  retriever also scores the candidates only the other one returned within its window, so both lists are
  normalized over the same candidate set and no candidate is scored by a floor standing in for a score the
  retriever would give it (Vespa ranks every candidate with every rank feature the same way; a fusion of
  truncated lists cannot). The pipeline computes the scores (BM25 restricted to those documents; the dense
  vector's best passage).
* **Score regularization** (:func:`regularize`; Diaz, "Regularizing ad hoc retrieval scores", CIKM 2005): the fused
  head is smoothed over its documents' nearest neighbours among themselves, so a document close to other
  high-scoring documents rises (the cluster hypothesis).

The fusion ``window`` bounds what *scores*, not what is *returned*: only the first ``window`` entries of each list
contribute (and fix the normalization), while every key of every list is returned. Keys seen only below the window
get the floor score and follow, ordered by the best rank they had in any list. That makes the fused order
independent of how deep the lists were fetched, which is what paging needs: a request for ``k + offset`` hits
fetches each list that deep, and the first ``n`` fused keys are the same whatever the depth past ``n`` (as long as
each list is a prefix-stable ranking). Remaining ties are broken by best rank, then by the key itself, so the
order is total and deterministic.

Example::

    >>> fused = reciprocal_rank_fusion({"bm25": [("a", 9.0), ("b", 3.0)], "dense": [("b", 0.9)]})
    >>> [key for key, _ in fused]
    ['b', 'a']
"""

from __future__ import annotations

import math
from typing import Hashable, Mapping, Sequence

import numpy as np

from foveal.config import ADAPTIVE_SIGNALS, FusionConfig, FusionMethod, Normalization

RankedLists = Mapping[str, Sequence[tuple[Hashable, float]]]
#: key -> {retriever: {"rank": r, "score": s}}
Sources = dict[Hashable, dict[str, dict[str, float]]]


def collect_sources(lists: RankedLists, window: int | None = None) -> Sources:
    """Rank (from 1) and score of each key in each list, over the first ``window`` entries (all when None)."""
    sources: Sources = {}
    for name, ranked in lists.items():
        for rank, (key, score) in enumerate(ranked[:window] if window else ranked, start=1):
            sources.setdefault(key, {})[name] = {"rank": rank, "score": float(score)}
    return sources


def reciprocal_rank_fusion(
    lists: RankedLists,
    rank_constant: int = 60,
    weights: Mapping[str, float] | None = None,
    window: int | None = None,
) -> list[tuple[Hashable, float]]:
    sources = collect_sources(lists, window)
    fused = {
        key: sum((weights or {}).get(name, 1.0) / (rank_constant + seen["rank"]) for name, seen in per.items())
        for key, per in sources.items()
    }
    return _sorted(fused, lists, floor=0.0)


def normalize_scores(scores: Sequence[float], method: Normalization) -> list[float]:
    if not scores:
        return []
    if method == Normalization.minmax:
        low, high = min(scores), max(scores)
        if high == low:
            return [1.0 for _ in scores]
        return [(s - low) / (high - low) for s in scores]
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    if std == 0:
        return [0.0 for _ in scores]
    return [(s - mean) / std for s in scores]


def linear_fusion(
    lists: RankedLists,
    normalization: Normalization = Normalization.minmax,
    weights: Mapping[str, float] | None = None,
    window: int | None = None,
    completed: Mapping[str, Mapping[Hashable, float]] | None = None,
) -> list[tuple[Hashable, float]]:
    """``completed``: per list, the scores that retriever gives the keys it lacks within its window (score
    completion, :func:`completion_keys`); they are normalized together with the list, so every list is
    normalized over the same candidates. A key still lacking a score gets the list's floor."""
    normalized: dict[str, dict[Hashable, float]] = {}
    floors: dict[str, float] = {}
    for name, ranked in lists.items():
        ranked = list(ranked[:window] if window else ranked)
        extra = (completed or {}).get(name)
        if extra:
            ranked += [(key, score) for key, score in extra.items()]
        values = normalize_scores([s for _, s in ranked], normalization)
        normalized[name] = {key: v for (key, _), v in zip(ranked, values)}
        floors[name] = min(values) if (values and normalization == Normalization.zscore) else 0.0
    # each key's sum runs over the lists in the same order as ``sum`` would (0 + first + second ...), so the
    # scores are the same to the last bit; plain loops, since this runs over every candidate of every search
    parts = [((weights or {}).get(name, 1.0), per, floors[name]) for name, per in normalized.items()]
    fused: dict[Hashable, float] = {}
    for per in normalized.values():
        for key in per:
            if key not in fused:
                total = 0
                for weight, values, missing in parts:
                    total += weight * values.get(key, missing)
                fused[key] = total
    # a key below the window of every list scores as if missing from all of them
    floor = sum((weights or {}).get(name, 1.0) * floors[name] for name in normalized)
    return _sorted(fused, lists, floor=floor)


#: All zero (``adaptive`` then equals plain linear fusion): no coefficients fitted by bench/robust.py beat plain
#: linear fusion leave-one-collection-out (docs/robust.md), so none ship; a request or index passes its own.
DEFAULT_COEFFICIENTS: dict[str, float] = {"bias": 0.0, "endorsement": 0.0, "overlap": 0.0, "bm25_drop": 0.0,
                                          "dense_drop": 0.0}
#: How many of each list's first entries the signals look at.
SIGNAL_DEPTH = 10


def _drop(ranked: Sequence[tuple[Hashable, float]]) -> float:
    """Share of the list's score range spent within its first SIGNAL_DEPTH entries: (s1 - s10) / (s1 - s_last)."""
    if len(ranked) < 2:
        return 0.0
    first, tenth, last = ranked[0][1], ranked[min(SIGNAL_DEPTH, len(ranked)) - 1][1], ranked[-1][1]
    return float((first - tenth) / (first - last)) if first > last else 0.0


def adaptive_signals(lists: RankedLists, window: int | None = None) -> dict[str, float]:
    """Label-free signals of one query's ``bm25`` and ``dense`` lists (each over its first ``window`` entries):

    * ``endorsement``: how well BM25 scores (min-max) dense's first 10, minus how well dense scores BM25's first 10
      (a document the other list lacks counts 0); in -1..1, positive when BM25 confirms dense more than the reverse.
    * ``overlap``: share of the first 10 the two lists have in common (0..1).
    * ``bm25_drop``, ``dense_drop``: share of each list's score range spent on its first 10 (0..1).
    * ``bias``: always 1.
    """
    bm25 = list(lists.get("bm25", ()))[:window] if window else list(lists.get("bm25", ()))
    dense = list(lists.get("dense", ()))[:window] if window else list(lists.get("dense", ()))
    norm_b = dict(zip((k for k, _ in bm25), normalize_scores([s for _, s in bm25], Normalization.minmax)))
    norm_d = dict(zip((k for k, _ in dense), normalize_scores([s for _, s in dense], Normalization.minmax)))
    top_b = [k for k, _ in bm25[:SIGNAL_DEPTH]]
    top_d = [k for k, _ in dense[:SIGNAL_DEPTH]]
    endorse_d = sum(norm_b.get(k, 0.0) for k in top_d) / len(top_d) if top_d else 0.0
    endorse_b = sum(norm_d.get(k, 0.0) for k in top_b) / len(top_b) if top_b else 0.0
    overlap = len(set(top_b) & set(top_d)) / SIGNAL_DEPTH
    return {"bias": 1.0, "endorsement": float(endorse_d - endorse_b), "overlap": float(overlap),
            "bm25_drop": _drop(bm25), "dense_drop": _drop(dense)}


def adaptive_weights(
    lists: RankedLists, config: FusionConfig
) -> tuple[dict[str, float], dict[str, float]]:
    """(per-query weights ``{"bm25", "dense"}`` summing to the configured total, the signals they came from)."""
    base_b = float(config.weights.get("bm25", 1.0))
    base_d = float(config.weights.get("dense", 1.0))
    total = base_b + base_d
    signals = adaptive_signals(lists, config.window)
    if total <= 0 or not lists.get("bm25") or not lists.get("dense"):
        return {"bm25": base_b, "dense": base_d}, signals
    coefficients = config.coefficients if config.coefficients is not None else DEFAULT_COEFFICIENTS
    share = min(max(base_d / total, 1e-6), 1 - 1e-6)
    logit = math.log(share / (1 - share)) + sum(coefficients.get(n, 0.0) * signals[n] for n in ADAPTIVE_SIGNALS)
    dense = total / (1.0 + math.exp(-logit)) if logit > -700 else 0.0
    return {"bm25": total - dense, "dense": dense}, signals


def fuse_explained(lists: RankedLists, config: FusionConfig,
                   completed: Mapping[str, Mapping[Hashable, float]] | None = None,
                   ) -> tuple[list[tuple[Hashable, float]], dict]:
    """:func:`fuse`, plus what it decided for this query (``adaptive``: the weights and the signals).
    ``completed``: the score completion of linear and adaptive fusion (RRF fuses ranks and ignores it)."""
    if config.method == FusionMethod.rrf:
        return reciprocal_rank_fusion(lists, config.rank_constant, config.weights, config.window), {}
    if config.method == FusionMethod.adaptive:
        weights, signals = adaptive_weights(lists, config)
        info = {"weights": {k: round(v, 6) for k, v in weights.items()},
                "signals": {k: round(v, 6) for k, v in signals.items() if k != "bias"}}
        return linear_fusion(lists, config.normalization, weights, config.window, completed), info
    return linear_fusion(lists, config.normalization, config.weights, config.window, completed), {}


def fuse(lists: RankedLists, config: FusionConfig,
         completed: Mapping[str, Mapping[Hashable, float]] | None = None) -> list[tuple[Hashable, float]]:
    return fuse_explained(lists, config, completed)[0]


def completion_keys(lists: RankedLists, window: int | None = None) -> dict[str, list[Hashable]]:
    """Per list, the keys the other lists hold within their first ``window`` entries and it does not (what score
    completion asks each retriever to score), in first-seen order. Only the windows count, so the answer does not
    depend on how deep the lists were fetched."""
    heads = {name: [key for key, _ in (ranked[:window] if window else ranked)] for name, ranked in lists.items()}
    union = list(dict.fromkeys(key for head in heads.values() for key in head))
    held = {name: set(head) for name, head in heads.items()}
    return {name: [key for key in union if key not in held[name]] for name in heads}


def regularize(
    fused: Sequence[tuple[Hashable, float]],
    vectors: Mapping[Hashable, Sequence[float]],
    weight: float,
    depth: int,
    neighbours: int,
) -> tuple[list[tuple[Hashable, float]], int]:
    """Score regularization (Diaz, "Regularizing ad hoc retrieval scores", CIKM 2005) of the first ``depth``
    entries of ``fused`` (best first): with z the score standardised over them, each becomes ``(1 - weight) * z +
    weight * mean z of its neighbours``, its ``neighbours`` nearest among them by the cosine of ``vectors`` (unit
    length, by key). A key without a vector keeps its z and is nobody's neighbour. The regularized head is mapped
    back to the fused scale (``mean + std * z'``) and reordered; the rest keep their order below it, shifted down
    by the least that keeps the scores monotone. Returns (the list, how many head keys changed rank); with weight 0,
    fewer than ``neighbours + 2`` vectors, or all head scores equal, ``fused`` unchanged."""
    fused = list(fused)
    head = fused[:depth]
    with_vectors = [i for i, (key, _) in enumerate(head) if key in vectors]
    if weight <= 0 or len(with_vectors) < neighbours + 2:
        return fused, 0
    scores = np.array([s for _, s in head], dtype=np.float64)
    mean, std = float(scores.mean()), float(scores.std())
    if std == 0:
        return fused, 0
    z = (scores - mean) / std
    matrix = np.stack([np.asarray(vectors[head[i][0]], dtype=np.float32) for i in with_vectors])
    sims = matrix @ matrix.T
    np.fill_diagonal(sims, -np.inf)
    nearest = np.argpartition(-sims, neighbours - 1, axis=1)[:, :neighbours]
    smoothed = z.copy()
    rows = np.asarray(with_vectors)
    smoothed[rows] = (1.0 - weight) * z[rows] + weight * z[rows[nearest]].mean(axis=1)
    order = np.argsort(-smoothed, kind="stable")
    new_head = [(head[i][0], mean + std * float(smoothed[i])) for i in order]
    moved = int(np.count_nonzero(order != np.arange(len(head))))
    tail = fused[depth:]
    if tail:
        shift = max(0.0, tail[0][1] - new_head[-1][1])
        if shift > 0:
            shift += max(abs(tail[0][1]), 1.0) * 1e-9
            tail = [(key, score - shift) for key, score in tail]
    return new_head + tail, moved


def _sorted(fused: dict[Hashable, float], lists: RankedLists, floor: float) -> list[tuple[Hashable, float]]:
    """Every key of every list, best first; keys outside ``fused`` (below every window) score ``floor``.

    Ties: the key seen earliest in any list first, then the smaller key, so the order is total and does not
    depend on dict or set iteration order."""
    first_seen: dict[Hashable, int] = {}
    for ranked in lists.values():
        for position, (key, _) in enumerate(ranked):
            seen = first_seen.get(key)
            if seen is None or position < seen:
                first_seen[key] = position
    # (the position ``i`` settles what the three cannot, as the stable sort did: ``key`` itself is never compared)
    order = sorted((-fused.get(key, floor), seen, _orderable(key), i, key)
                   for i, (key, seen) in enumerate(first_seen.items()))
    return [(key, -negated) for negated, _, _, _, key in order]


def _orderable(key: Hashable):
    # keys are doc_keys (ints) in the pipeline; anything else sorts by its type name and repr
    return (0, key, "") if isinstance(key, int) else (1, type(key).__name__, repr(key))
