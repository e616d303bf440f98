"""Fusing ranked lists from several retrievers into one.

Pure functions over ``{retriever: [(key, score), ...]}`` (each list best first). Both keep, for every key, the
rank and score it had in each list, so hits can show where they came from.

* :func:`reciprocal_rank_fusion`: ``sum_r w_r / (k + rank_r)`` (Cormack et al. 2009; rank from 1, ``k = 60``).
* :func:`linear_fusion`: ``sum_r w_r * norm(score_r)`` with min-max or z-score normalization per list; a key a
  retriever did not return gets that retriever's floor (0 after min-max, the list minimum after z-score).

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

from foveal.config import FusionConfig, FusionMethod, Normalization

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
) -> list[tuple[Hashable, float]]:
    normalized: dict[str, dict[Hashable, float]] = {}
    floors: dict[str, float] = {}
    for name, ranked in lists.items():
        ranked = ranked[:window] if window else ranked
        values = normalize_scores([s for _, s in ranked], normalization)
        normalized[name] = {key: v for (key, _), v in zip(ranked, values)}
        floors[name] = min(values) if (values and normalization == Normalization.zscore) else 0.0
    keys = {key for per in normalized.values() for key in per}
    fused = {
        key: sum(
            (weights or {}).get(name, 1.0) * per.get(key, floors[name]) for name, per in normalized.items()
        )
        for key in keys
    }
    # a key below the window of every list scores as if missing from all of them
    floor = sum((weights or {}).get(name, 1.0) * floors[name] for name in normalized)
    return _sorted(fused, lists, floor=floor)


def fuse(lists: RankedLists, config: FusionConfig) -> list[tuple[Hashable, float]]:
    if config.method == FusionMethod.rrf:
        return reciprocal_rank_fusion(lists, config.rank_constant, config.weights, config.window)
    return linear_fusion(lists, config.normalization, config.weights, config.window)


def _sorted(fused: dict[Hashable, float], lists: RankedLists, floor: float) -> list[tuple[Hashable, float]]:
    """Every key of every list, best first; keys outside ``fused`` (below every window) score ``floor``.

    Ties: the key seen earliest in any list first, then the smaller key, so the order is total and does not
    depend on dict or set iteration order."""
    first_seen: dict[Hashable, int] = {}
    for ranked in lists.values():
        for position, (key, _) in enumerate(ranked):
            first_seen[key] = min(first_seen.get(key, position), position)
    scored = [(key, fused.get(key, floor)) for key in first_seen]
    return sorted(scored, key=lambda item: (-item[1], first_seen[item[0]], _orderable(item[0])))


def _orderable(key: Hashable):
    # keys are doc_keys (ints) in the pipeline; anything else sorts by its type name and repr
    return (0, key, "") if isinstance(key, int) else (1, type(key).__name__, repr(key))
