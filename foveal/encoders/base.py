"""The encoder seam.

An :class:`Encoder` turns queries into one vector each and documents into one vector per passage. Query stages
(:class:`QueryStage`, e.g. LexSemBridge modulation or event context) may then modify a query vector before
retrieval; they see the request, so per-request context such as ``now`` reaches them.

Some stages need more than the pooled vector: LexSemBridge builds its vocabulary vector from the query's token ids
(SLR) or its token states (LLR, CLR). A stage that sets ``needs_tokens = True`` is called as
``apply(request, vector, tokens)`` with the :class:`QueryTokens` of the *same* forward pass that produced the
vector; the pipeline then asks the encoder for them with ``encode_queries(texts, with_tokens=True)``. Encoders and
stages that know nothing of tokens keep working: the pipeline never passes ``with_tokens`` or ``tokens`` unless a
stage asked for them.

Shape chosen for the tokens: **one unpadded array per query** (``token_ids[i]``: ``(L_i,)`` int64 with the special
tokens, ``[CLS] ... [SEP]``; ``token_states[i]``: ``(L_i, H)`` float32, the transformer's last hidden states,
before pooling). Unpadded, because a stage works on one query at a time and must never see padding as tokens; the
attention mask of an unpadded query is all ones, and :meth:`EncodedQueries.padded` rebuilds the padded batch
(ids, mask, states) for code that wants one tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

import numpy as np

from foveal.encoders.segment import Passage

if TYPE_CHECKING:
    from foveal.pipeline.request import SearchRequest


@dataclass(slots=True)
class QueryTokens:
    """One query's tokens as the encoder's forward pass saw them (unpadded, special tokens included)."""

    ids: np.ndarray  # (L,) int64: [CLS] query tokens [SEP]
    states: np.ndarray  # (L, H) float32: last hidden states, before pooling

    @property
    def attention_mask(self) -> np.ndarray:
        """All ones: an unpadded query has no padding to mask."""
        return np.ones(len(self.ids), dtype=np.int64)


@dataclass(slots=True)
class EncodedQueries:
    vectors: np.ndarray  # (n, dim) float32, unit norm
    #: Tokens dropped per query because it exceeded the window (reported on the response, never silent).
    truncated_tokens: list[int] = field(default_factory=list)
    #: Per query, unpadded (see the module docstring); None unless ``encode_queries(..., with_tokens=True)``.
    token_ids: list[np.ndarray] | None = None
    token_states: list[np.ndarray] | None = None

    @property
    def attention_mask(self) -> list[np.ndarray] | None:
        """Per query, all ones (the token arrays are unpadded); None when no tokens were asked for."""
        if self.token_ids is None:
            return None
        return [np.ones(len(ids), dtype=np.int64) for ids in self.token_ids]

    def tokens(self, row: int) -> QueryTokens | None:
        """Query ``row``'s tokens, or None when they were not asked for."""
        if self.token_ids is None or self.token_states is None:
            return None
        return QueryTokens(self.token_ids[row], self.token_states[row])

    def padded(self, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The tokens as one right-padded batch: ids ``(n, L)``, attention mask ``(n, L)``, states ``(n, L, H)``
        (padded states are 0)."""
        if self.token_ids is None or self.token_states is None:
            raise ValueError("these queries were encoded without tokens; use encode_queries(..., with_tokens=True)")
        n = len(self.token_ids)
        width = max((len(ids) for ids in self.token_ids), default=0)
        hidden = self.token_states[0].shape[1] if n else 0
        ids = np.full((n, width), pad_id, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        states = np.zeros((n, width, hidden), dtype=np.float32)
        for row, (row_ids, row_states) in enumerate(zip(self.token_ids, self.token_states)):
            ids[row, : len(row_ids)] = row_ids
            mask[row, : len(row_ids)] = 1
            states[row, : len(row_ids)] = row_states
        return ids, mask, states


@dataclass(slots=True)
class EncodedDocument:
    passages: list[Passage]
    vectors: np.ndarray  # (len(passages), dim) float32, unit norm
    n_tokens: int = 0
    #: Only from encoders asked for sentence vectors: (n_sentences, dim) float32 unit rows and their char spans.
    sentence_vectors: np.ndarray | None = None
    sentence_spans: list[tuple[int, int]] | None = None


@runtime_checkable
class Encoder(Protocol):
    name: str
    dimension: int
    #: The passage window in tokens, special tokens included.
    max_seq_length: int

    def encode_queries(self, texts: Sequence[str], with_tokens: bool = False) -> EncodedQueries:
        """One unit vector per query; with ``with_tokens`` also each query's token ids and states (same pass)."""
        ...

    def encode_documents(self, texts: Sequence[str]) -> list[EncodedDocument]: ...


@runtime_checkable
class QueryStage(Protocol):
    """Modifies query vectors after encoding (LexSemBridge, event-aware context, ...).

    ``needs_tokens`` is optional (read with ``getattr(stage, "needs_tokens", False)``): a stage that sets it True
    receives ``tokens``, the :class:`QueryTokens` of the forward pass that produced the query vector (the states of
    the *encoder's* pass: a stage before it may have changed the vector, never the tokens). Other stages are called
    with two arguments, as before.
    """

    name: str

    def apply(
        self, request: "SearchRequest", vector: np.ndarray, tokens: QueryTokens | None = None
    ) -> tuple[np.ndarray, dict]:
        """Return the new unit-norm vector and the evidence to put on the response."""
        ...
