"""The storage seams: one small Protocol each.

Integer ids tie the stores together. Every document gets a ``doc_key`` (an integer the document store assigns,
stable for the document's life, never reused); its passages get ``passage_id = doc_key << PASSAGE_BITS | ordinal``,
so all vectors of a document form one id range and can be removed without looking them up.

Two seams carry the recovery design (see :mod:`foveal.index.collection`): :class:`DocStore`, the commit point and
its change log, and :class:`DerivedIndex`, anything rebuilt from it (the vector index, the lexical index, and the
vector sets and event vectors of later stages). ``Collection`` drives every derived index through the same five
calls, so replay, rebuild and the persisted positions are written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

#: Bits of a passage id that number the passages of one document (at most 2**14 = 16384 passages a document).
PASSAGE_BITS = 14
MAX_PASSAGES = 1 << PASSAGE_BITS


def sorted_unique(keys) -> np.ndarray:
    """``keys`` (an array or any iterable of ints) as a sorted unique int64 array. An array that already is one
    (every allow-list the stores build) comes back as it is, after an O(n) check: ``np.unique`` hashes before it
    sorts and cost 7 ms on 50,000 sorted keys."""
    if isinstance(keys, np.ndarray):
        keys = np.ascontiguousarray(keys, dtype=np.int64).ravel()
    else:
        keys = np.fromiter((int(k) for k in keys), dtype=np.int64)
    if keys.size < 2 or bool(np.all(keys[1:] > keys[:-1])):
        return keys
    keys = np.sort(keys)
    return keys[np.concatenate(([True], keys[1:] != keys[:-1]))]


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
    #: True when the index lives on a server every process sees (Elasticsearch); False for a copy in this
    #: process's memory (FAISS), which each process replays into and saves as a snapshot file.
    shared: bool

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

    def save(self, path: Path, **extra: int) -> None:
        """Durably record the index (or, for a server index, which one it is) and ``extra`` counters (``seq``)."""
        ...

    def drop(self) -> None:
        """Delete what the index keeps outside ``save``'s file (a server-side index); a no-op otherwise."""
        ...


@dataclass(slots=True)
class LexicalDocument:
    doc_key: int
    id: str
    title: str
    text: str
    #: the document's metadata, for a backend that indexes it (tantivy's ``meta`` terms); None: not indexed
    metadata: dict | None = None


@runtime_checkable
class LexicalIndex(Protocol):
    """BM25 over title and text."""

    #: True for every lexical backend foveal has: the index (a tantivy folder, an Elasticsearch index) is seen by
    #: every process, so readers reload it (:meth:`refresh`) and only the writer adds to it.
    shared: bool

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

    def refresh(self) -> None:
        """See what the last commit (of any process) holds."""
        ...

    def drop(self) -> None:
        """Delete the index's data (its folder, its server-side index)."""
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


@dataclass(slots=True)
class Change:
    """One row of the change log: document ``doc_key`` (id ``id``) was upserted or deleted at position ``seq``."""

    seq: int
    doc_key: int
    id: str
    op: str


class LogPrunedError(Exception):
    """The change log no longer holds every change after the asked position (it was pruned below the lowest
    position any derived index persisted): reload that index's snapshot, or rebuild it from the store."""


class DerivedIndexDamaged(Exception):
    """A derived index's persisted state cannot be trusted (missing parts, truncated, wrong checksum); it is
    rebuilt from the document store."""


@runtime_checkable
class DocStore(Protocol):
    """Documents, their passage vectors and the change log: the commit point of every write.

    ``write`` is one transaction that also appends one log row per document with a new, increasing ``seq``;
    ``max_seq`` is the head. ``changes_since`` streams the log past a position and raises
    :class:`LogPrunedError` when rows it would need were pruned.
    """

    def hashes(self, ids: Sequence[str]) -> dict[str, tuple[int, str]]: ...

    def get_documents(self, doc_keys: Iterable[int]) -> dict[int, StoredDocument]: ...

    def get_by_id(self, doc_id: str) -> StoredDocument | None: ...

    def iter_documents(self, batch: int = 1000) -> Iterator[list[StoredDocument]]: ...

    def vectors_of(self, doc_keys: Iterable[int]) -> tuple[np.ndarray, np.ndarray]: ...

    def iter_vectors(self, batch: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...

    def filter_keys(self, ids=None, metadata=None, time_bounds=None) -> set[int]: ...

    def passage_ids_of(self, doc_keys: Iterable[int]) -> np.ndarray: ...

    def count(self) -> int: ...

    def passage_count(self) -> int: ...

    def max_seq(self) -> int: ...

    def changes_since(self, seq: int) -> Iterable[Change]: ...

    def write(self, upserts: Sequence[Any], deletes: Sequence[str] = ()) -> dict[str, int]: ...

    def prune_log(self, below: int) -> int:
        """Drop log rows with ``seq < below`` (every derived index persisted a position at or past them)."""
        ...

    def check(self) -> list[str]:
        """Problems found by the store's own integrity check (empty when sound)."""
        ...

    def close(self) -> None: ...

    def drop(self) -> None: ...


@runtime_checkable
class DerivedIndex(Protocol):
    """Anything rebuilt from the document store and kept in step with it through the change log.

    ``held`` is the position this process's view holds; :meth:`position` re-reads the position the index's own
    durable record holds. Only a writer under the collection's write lock calls :meth:`persist`, and
    :meth:`apply` or :meth:`rebuild` on a shared index; a reader calls :meth:`follow` on a shared index, and
    :meth:`apply` (or :meth:`rebuild`, :meth:`open`) on its private copy, which changes only its own memory.
    """

    #: Named in log lines and errors ("vectors", "lexical").
    name: str
    #: The data is seen by every process (a tantivy folder, Elasticsearch): readers reload it and never add to it.
    #: False: each process holds a private copy (FAISS in memory) and replays into it; the file is a snapshot.
    shared: bool
    held: int

    def open(self) -> None:
        """Load the persisted state and set ``held`` to its position; raise :class:`DerivedIndexDamaged` when it
        cannot be trusted."""
        ...

    def position(self) -> int:
        """The position the durable record holds now (re-read, not remembered); 0 when there is none."""
        ...

    def apply(self, store: DocStore, changes: Iterable[Change]) -> None:
        """Bring the index up to date for these changes (idempotent: remove each document, add its current
        state). A shared index makes them durable before returning."""
        ...

    def rebuild(self, store: DocStore) -> None:
        """Discard everything and rebuild from the store's current state."""
        ...

    def persist(self, position: int) -> None:
        """Durably record that the index holds every change up to ``position``."""
        ...

    def follow(self) -> None:
        """A reader's step: see what the writer last persisted, and set ``held`` (never moves a position)."""
        ...

    def check(self, store: DocStore) -> str | None:
        """Why the index disagrees with the store after a full catch-up (a count that differs), or None."""
        ...

    def drop(self) -> None: ...
