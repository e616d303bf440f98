"""Fusing ranked lists from several retrievers into one.

Pure functions over ``{retriever: [(key, score), ...]}`` (each list best first). Both keep, for every key, the
rank and score it had in each list, so hits can show where they came from.

* :func:`reciprocal_rank_fusion`: ``sum_r w_r / (k + rank_r)`` (Cormack et al. 2009; rank from 1, ``k = 60``).
* :func:`linear_fusion`: ``sum_r w_r * norm(score_r)`` with min-max or z-score normalization per list; a key a
  retriever did not return gets that retriever's floor (0 after min-max, the list minimum after z-score).

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
    return _sorted(fused, lists)


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
    return _sorted(fused, lists)


def fuse(lists: RankedLists, config: FusionConfig) -> list[tuple[Hashable, float]]:
    if config.method == FusionMethod.rrf:
        return reciprocal_rank_fusion(lists, config.rank_constant, config.weights, config.window)
    return linear_fusion(lists, config.normalization, config.weights, config.window)


def _sorted(fused: dict[Hashable, float], lists: RankedLists) -> list[tuple[Hashable, float]]:
    # ties: the key seen earliest in any list first, so results are deterministic
    first_seen: dict[Hashable, int] = {}
    for ranked in lists.values():
        for position, (key, _) in enumerate(ranked):
            first_seen[key] = min(first_seen.get(key, position), position)
    return sorted(fused.items(), key=lambda item: (-item[1], first_seen.get(item[0], 0)))
