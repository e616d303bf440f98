"""The freshness stage: a decay on the document's age, applied after fusion and the rerank stages, before the page
is cut (issue 13; the decay functions are Elasticsearch's ``function_score`` decays).

For a candidate whose document has a ``timestamp``, ``age = max(0, now - timestamp)`` and
``d = max(0, age - offset)``; the factor is

* ``exp``:    ``decay ** (d / scale)``
* ``gauss``:  ``decay ** ((d / scale) ** 2)``
* ``linear``: ``max(0, 1 - (1 - decay) * d / scale)``

raised to ``floor`` when below it: 1 at age 0 (and within ``offset``), ``decay`` at ``offset + scale``, never below
``floor``. A document without a timestamp gets ``undated`` (1 by default). A document dated after ``now`` has age 0.

The factor scales the candidate's final score (a negative score is divided by it, so a lower factor always means a
lower score) and the candidates are re-sorted. It acts on the first ``fusion.window`` candidates only, the same
fixed head the rerankers see, so pages stay consistent: the tail keeps its order below the head. It never acts
inside a retriever's ranking (fusion reads those ranks untouched). Each candidate of the head carries
``evidence["freshness"]``: the factor, the age in days and the score before.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from foveal.config import DecayFunction, FreshnessConfig

if TYPE_CHECKING:
    from foveal.index.collection import Collection
    from foveal.pipeline.request import SearchRequest
    from foveal.rerank.base import Candidate

NAME = "freshness"
DAY = 86_400.0


def decay_factor(age_s: float | None, config: FreshnessConfig) -> float:
    """The factor for a document ``age_s`` seconds old (``None``: undated)."""
    if age_s is None:
        return float(config.undated)
    d = max(0.0, max(0.0, age_s) / DAY - config.offset_days)
    x = d / config.scale_days
    function = DecayFunction(config.function)
    if function == DecayFunction.exp:
        f = math.exp(math.log(config.decay) * x)
    elif function == DecayFunction.gauss:
        f = math.exp(math.log(config.decay) * x * x)
    else:
        f = max(0.0, 1.0 - (1.0 - config.decay) * x)
    return max(float(config.floor), min(1.0, f))


def effective_config(request: "SearchRequest", base: FreshnessConfig) -> tuple[bool, FreshnessConfig]:
    """(runs?, settings): the index's ``freshness`` section, overridden by the request's ``freshness`` fields; a
    request that gives ``freshness`` asks for the stage unless ``stages.freshness`` is false."""
    from foveal.events import stage_wanted

    asked = getattr(request, "freshness", None)
    config = base
    if asked is not None:
        config = FreshnessConfig.model_validate({**base.model_dump(mode="json"), **asked.model_dump(exclude_none=True)})
    default = base.enabled or asked is not None
    return stage_wanted(request, NAME, default), config


def apply_freshness(request: "SearchRequest", candidates: "list[Candidate]", collection: "Collection",
                    head: int) -> "list[Candidate]":
    """Scale the first ``head`` candidates' scores by their factor and re-sort them; the tail stays below."""
    from foveal.events import now_seconds

    runs, config = effective_config(request, collection.config.freshness)
    if not runs or not candidates:
        return candidates
    now = now_seconds(request)
    top, tail = list(candidates[:head]), candidates[head:]
    documents = collection.store.get_documents(c.doc_key for c in top)
    for c in top:
        doc = documents.get(c.doc_key)
        stamp = doc.timestamp if doc is not None else None
        age = None if stamp is None else now - stamp
        factor = decay_factor(age, config)
        before = c.score
        c.score = before * factor if before >= 0 else (before / factor if factor > 0 else -math.inf)
        entry: dict[str, Any] = {"factor": round(factor, 6), "score_before": before}
        if age is not None:
            entry["age_days"] = round(max(0.0, age) / DAY, 4)
        c.evidence[NAME] = entry
    top.sort(key=lambda c: (-c.score, c.doc_key))
    if top and tail and math.isfinite(top[-1].score) and tail[0].score >= top[-1].score:
        shift = tail[0].score - top[-1].score + 1e-6  # keep the tail's order, strictly below the head
        for c in tail:
            c.evidence.setdefault("freshness_tail", {"score_before": c.score})
            c.score -= shift
    return top + list(tail)
