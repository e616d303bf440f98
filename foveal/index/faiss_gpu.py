"""The GPU replica of a :class:`~foveal.index.faiss_index.FaissVectorIndex`: searches on a GPU, kept in step with
the CPU index write by write.

The CPU index stays the source of truth (it is what is saved and replayed); the replica is a copy of its main index
on one GPU, made once with ``faiss.index_cpu_to_gpu`` and then **updated incrementally**:

* an add appends the same vectors to the replica (``add``), and their ids to the replica's own position -> id
  array;
* a removal marks the removed ids' replica positions dead (their id becomes -1): GPU indexes cannot remove in
  place, and a re-added id gets a new position, so a replacement never revives what was removed;
* the replica is copied again only when the CPU index changes shape (training from its buffer, a compaction) or
  when dead positions pass :attr:`GpuReplica.rebuild_fraction`.

Searches, unfiltered and filtered, run on the replica as one exact top-``k'`` search followed by dropping dead
and not-allowed positions: ``k' = k + dead`` for an unfiltered search (exact: at most ``dead`` of them can be
dead), and ``k' ≈ 2 k · live / allowed + dead`` for an allow-list, widened 4x until every row has ``k`` allowed hits
or everything is in reach. GPU indexes take no ``IDSelector`` (faiss's GPU search ignores or refuses
``SearchParameters.sel``), so the filter is applied to the replica's answer; the CPU index keeps the narrow
allow-lists, which it scores exactly (:attr:`FaissVectorIndex.exact_search_min`), so the replica sees only broad
ones. When ``k'`` would pass what a GPU search can return (:data:`GPU_MAX_K`, faiss's limit), or the replica is of
an IVF index whose probes could not reach ``k`` allowed vectors, the search returns ``None`` and the CPU index
answers.

Which indexes get a replica: flat (``Flat``, ``IndexFlatIP``, exact) and IVF (``IVF…,Flat``/``PQ``/``SQ``, with the
index's ``nprobe``) once trained. HNSW has none: faiss has no GPU HNSW (its GPU graph index, CAGRA, needs the
cuVS build and a rebuild on every add), so HNSW indexes search on the CPU.

Only ``faiss.StandardGpuResources``, ``faiss.index_cpu_to_gpu`` and the replica's ``add``/``search``/``ntotal``
are used: the tests replace exactly these with fakes on machines without a GPU.
"""

from __future__ import annotations

import threading

import faiss
import numpy as np

from foveal.index.base import PASSAGE_BITS

#: The most neighbours one faiss GPU search returns (``GPU_MAX_SELECTION_K``).
GPU_MAX_K = 2048

_resources = None
_resources_lock = threading.Lock()


def gpu_resources():
    """One ``StandardGpuResources`` per process (its scratch memory and streams are shared by all replicas)."""
    global _resources
    with _resources_lock:
        if _resources is None:
            _resources = faiss.StandardGpuResources()
        return _resources


def replicable(inner) -> str | None:
    """Why ``inner`` (the index inside the ``IndexIDMap2``) can have no GPU replica, or None when it can."""
    downcast = faiss.downcast_index(inner)
    if isinstance(downcast, faiss.IndexHNSW) or "HNSW" in type(downcast).__name__:
        return "faiss has no GPU HNSW (CAGRA needs the cuVS build); HNSW indexes search on the CPU"
    if faiss.try_extract_index_ivf(inner) is not None or isinstance(downcast, faiss.IndexFlat):
        return None
    return f"faiss copies no {type(downcast).__name__} to a GPU; it searches on the CPU"


class GpuReplica:
    """A GPU copy of a CPU main index (an ``IndexIDMap2``); see the module docstring."""

    #: Copy the CPU index again once dead positions pass this share of the replica.
    rebuild_fraction = 0.25

    def __init__(self, main, tombstones: set[int] | frozenset[int] = frozenset(), *, device: int = 0,
                 nprobe: int = 16) -> None:
        inner = main.index
        self.index = faiss.index_cpu_to_gpu(gpu_resources(), device, inner)
        self.is_ivf = faiss.try_extract_index_ivf(inner) is not None
        if self.is_ivf:
            try:
                self.index.nprobe = nprobe
            except AttributeError:  # pragma: no cover - every GPU IVF index has nprobe
                pass
        #: replica position -> passage id (-1: dead)
        self.ids = faiss.vector_to_array(main.id_map).astype(np.int64)
        if tombstones:
            self.ids[np.fromiter(tombstones, np.int64, len(tombstones))] = -1
        self.dead = int((self.ids < 0).sum())
        #: how many times this replica took an incremental write (tests and stats)
        self.updates = 0

    # -- writes --------------------------------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        self.ids = np.concatenate([self.ids, np.asarray(ids, np.int64)])
        self.updates += 1

    def remove(self, doomed_ids: np.ndarray) -> None:
        hit = np.isin(self.ids, doomed_ids) & (self.ids >= 0)
        if hit.any():
            self.ids[hit] = -1
            self.dead += int(hit.sum())
            self.updates += 1

    @property
    def stale(self) -> bool:
        """Too many dead positions: the owner copies the CPU index again."""
        return self.dead > self.rebuild_fraction * max(1, self.ids.size)

    def __len__(self) -> int:
        return int(self.ids.size - self.dead)

    # -- search --------------------------------------------------------------------------------------------------
    def search(self, vectors: np.ndarray, k: int, *, allowed_ids: np.ndarray | None = None,
               allowed_docs: np.ndarray | None = None, allowed_count: int | None = None):
        """``(scores, ids)`` of the best ``k`` live (and allowed) vectors per row, ``-1`` padded; None when the GPU
        cannot answer this one (the caller searches the CPU index). The allow-list is passage ids
        (``allowed_ids``) or sorted document keys (``allowed_docs``, with ``allowed_count`` vectors)."""
        total = int(self.ids.size)
        live = total - self.dead
        if live <= 0 or total == 0:
            return None
        if allowed_ids is not None:
            allowed_ids = np.asarray(allowed_ids, np.int64)
            allowed_count = int(np.isin(allowed_ids, self.ids).sum())

            def allowed_mask(ids):
                return np.isin(ids, allowed_ids)
        elif allowed_docs is not None:
            keys = np.asarray(allowed_docs, np.int64)
            if allowed_count is None:
                allowed_count = int(_member(self.ids >> PASSAGE_BITS, keys).sum())

            def allowed_mask(ids):
                return _member(ids >> PASSAGE_BITS, keys)
        else:
            allowed_mask = None
        if allowed_mask is not None:
            wanted = min(k, allowed_count)
            if wanted == 0:
                return (np.zeros((len(vectors), 0), np.float32), np.zeros((len(vectors), 0), np.int64))
            breadth = min(total, int(np.ceil(2 * k * live / max(1, allowed_count))) + self.dead)
        else:
            wanted = min(k, live)
            breadth = min(total, k + self.dead)
        while True:
            if breadth > GPU_MAX_K:
                return None
            scores, positions = self.index.search(np.ascontiguousarray(vectors, np.float32), breadth)
            ids = np.where(positions >= 0, self.ids[np.maximum(positions, 0)], -1)
            keep = ids >= 0
            if allowed_mask is not None:
                keep &= allowed_mask(ids)
            if keep.sum(axis=1).min() >= wanted:
                break
            if breadth >= total:
                if self.is_ivf:  # the probes could not reach them all: the CPU widens nprobe, then scores exactly
                    return None
                break
            breadth = min(total, breadth * 4)
        # keep the first ``k`` kept hits of each row, in the replica's (descending) order
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
        kept = np.take_along_axis(keep, order, 1)
        scores = np.where(kept, np.take_along_axis(scores, order, 1), 0.0).astype(np.float32)
        ids = np.where(kept, np.take_along_axis(ids, order, 1), -1)
        return scores, ids


def _member(values: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """``values`` in ``sorted_keys`` (sorted unique), by binary search."""
    if sorted_keys.size == 0:
        return np.zeros(values.shape, dtype=bool)
    at = np.minimum(np.searchsorted(sorted_keys, values), sorted_keys.size - 1)
    return sorted_keys[at] == values
