"""The rerank seam.

A :class:`Reranker` gets the fused candidates (best first) and returns them rescored and reordered. It can read
anything it needs from the collection: documents, and the per-passage vectors kept beside the index
(``collection.store.vectors_of``), which is what query-conditioned pooling stages (Paraformer, X-Pool) attend over.
A stage writes its score under its own name in ``candidate.evidence`` so the hit shows what each stage did.

The query vector: a reranker that sets ``needs_query_vector = True`` (read with
``getattr(reranker, "needs_query_vector", False)``) is called with a fourth, keyword argument ``query_vector``: the
encoder's unit vector of ``request.query`` from the pipeline's own forward pass (before any query stage changed
it), or ``None`` when the search encoded no query (``pipeline: bm25``; the stage then encodes it if it needs it).
Other rerankers are called with three arguments, as before.

Per request, ``request.stage_on(name, default)`` says whether a stage runs (``stages: {name: bool}``, else the
index's setting).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    from foveal.index.collection import Collection
    from foveal.pipeline.request import SearchRequest


@dataclass(slots=True)
class Candidate:
    """A document on its way through the search pipeline."""

    doc_key: int
    score: float
    #: stage name -> what that stage saw or did (rank and score per retriever, fused score, rerank score, ...)
    evidence: dict[str, Any] = field(default_factory=dict)
    #: Ordinal of the best-matching passage, when a stage knows it.
    passage: int | None = None


@runtime_checkable
class Reranker(Protocol):
    name: str

    def rerank(
        self, request: "SearchRequest", candidates: Sequence[Candidate], collection: "Collection"
    ) -> list[Candidate]: ...


def order_rescored(scored: list[tuple[float, Candidate]], unscored: list[tuple[Candidate, str]],
                   name: str) -> list[Candidate]:
    """Candidates a stage rescored, best first, then those it could not score (``(candidate, why)``), kept in their
    first-stage order just below the lowest rescored one so scores stay monotone; ``evidence[name]`` says why."""
    scored.sort(key=lambda pair: -pair[0])
    out = []
    for score, c in scored:
        c.score = score
        out.append(c)
    floor = min((s for s, _ in scored), default=0.0)
    for step, (c, why) in enumerate(unscored, start=1):
        c.evidence[name] = {"skipped": why, "first_stage_score": c.score}
        c.score = floor - 1e-6 * step
        out.append(c)
    return out
