"""The rerank seam.

A :class:`Reranker` gets the fused candidates (best first) and returns them rescored and reordered. It can read
anything it needs from the collection: documents, and the per-passage vectors kept beside the index
(``collection.store.vectors_of``), which is what query-conditioned pooling stages (Paraformer, X-Pool) attend over.
A stage writes its score under its own name in ``candidate.evidence`` so the hit shows what each stage did.
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
