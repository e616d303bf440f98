"""The encoder seam.

An :class:`Encoder` turns queries into one vector each and documents into one vector per passage. Query stages
(:class:`QueryStage`, e.g. LexSemBridge modulation or event context) may then modify a query vector before
retrieval; they see the request, so per-request context such as ``now`` reaches them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

import numpy as np

from foveal.encoders.segment import Passage

if TYPE_CHECKING:
    from foveal.pipeline.request import SearchRequest


@dataclass(slots=True)
class EncodedQueries:
    vectors: np.ndarray  # (n, dim) float32, unit norm
    #: Tokens dropped per query because it exceeded the window (reported on the response, never silent).
    truncated_tokens: list[int] = field(default_factory=list)


@dataclass(slots=True)
class EncodedDocument:
    passages: list[Passage]
    vectors: np.ndarray  # (len(passages), dim) float32, unit norm
    n_tokens: int = 0


@runtime_checkable
class Encoder(Protocol):
    name: str
    dimension: int
    #: The passage window in tokens, special tokens included.
    max_seq_length: int

    def encode_queries(self, texts: Sequence[str]) -> EncodedQueries: ...

    def encode_documents(self, texts: Sequence[str]) -> list[EncodedDocument]: ...


@runtime_checkable
class QueryStage(Protocol):
    """Modifies query vectors after encoding (LexSemBridge, event-aware context, ...)."""

    name: str

    def apply(self, request: "SearchRequest", vector: np.ndarray) -> tuple[np.ndarray, dict]:
        """Return the new unit-norm vector and the evidence to put on the response."""
        ...
