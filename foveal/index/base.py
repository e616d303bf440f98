"""The storage seams: one small Protocol each.

Integer ids tie the stores together. Every document gets a ``doc_key`` (an integer the document store assigns,
stable for the document's life, never reused); its passages get ``passage_id = doc_key << PASSAGE_BITS | ordinal``,
so all vectors of a document form one id range and can be removed without looking them up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence, runtime_checkable

import numpy as np

#: Bits of a passage id that number the passages of one document (at most 2**14 = 16384 passages a document).
PASSAGE_BITS = 14
MAX_PASSAGES = 1 << PASSAGE_BITS


def passage_id(doc_key: int, ordinal: int) -> int:
    return (doc_key << PASSAGE_BITS) | ordinal


def doc_key_of(pid: int) -> int:
    return pid >> PASSAGE_BITS


def passage_ordinal(pid: int) -> int:
    return pid & (MAX_PASSAGES - 1)


@runtime_checkable
class VectorIndex(Protocol):
    """Passage vectors by integer id; inner product on unit vectors."""

    dimension: int

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def remove_documents(self, doc_keys: Iterable[int]) -> None:
        """Remove every passage vector of these documents (a no-op for unknown keys)."""
        ...

    def search(
        self, vectors: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of shape (n, k); missing results have id -1. ``allowed`` (passage ids), when given,
        restricts the search to those vectors inside the index, not by filtering its top k."""
        ...

    def __len__(self) -> int: ...

    def save(self, path: Path) -> None: ...


@dataclass(slots=True)
class LexicalDocument:
    doc_key: int
    id: str
    title: str
    text: str


@runtime_checkable
class LexicalIndex(Protocol):
    """BM25 over title and text."""

    def upsert(self, documents: Sequence[LexicalDocument]) -> None: ...

    def remove(self, doc_ids: Iterable[str]) -> None: ...

    def commit(self) -> None: ...

    def search(self, query: str, k: int, allowed: Iterable[int] | None = None) -> list[tuple[int, float]]:
        """[(doc_key, score)] best first. ``allowed`` (doc_keys), when given, restricts the match set inside the
        index, not by filtering its top k."""
        ...

    def analyze(self, text: str) -> list[str]:
        """The terms the index would see for ``text`` (used to explain matches)."""
        ...

    def __len__(self) -> int: ...


@dataclass(slots=True)
class StoredDocument:
    doc_key: int
    id: str
    title: str
    text: str
    metadata: dict[str, Any]
    timestamp: float | None
    content_hash: str
    #: Character spans of the passages in ``full_text`` (title + newline + text).
    passages: list[tuple[int, int]]
    n_tokens: int = 0

    @property
    def full_text(self) -> str:
        if self.title and self.text:
            return f"{self.title}\n{self.text}"
        return self.title or self.text
