"""FAISS vector index behind :class:`~foveal.index.base.VectorIndex`.

The CPU index is the source of truth; when faiss sees GPUs (and ``vector.gpu`` is ``auto``) searches, filtered and
unfiltered, run on a GPU replica that every write updates in place (:mod:`foveal.index.faiss_gpu`; HNSW has none).
Any factory string works (``Flat``, ``HNSW32``, ``IVF256,PQ16``); the metric is inner product on unit vectors.

Indexes that cannot remove vectors in place (HNSW, and IVF, whose removal would leave ``IndexIDMap2`` pointing at
the wrong ids) keep a tombstone set that searches skip through an ``IDSelector``, and are rebuilt without them
(build, then swap) once tombstones pass :attr:`FaissVectorIndex.compact_fraction` of what is stored;
indexes that need training (IVF, PQ) hold vectors in an exact flat buffer until enough have arrived to train on, so
that results are right from the first document on.

Example::

    >>> index = FaissVectorIndex(4, "Flat")
    >>> index.add(np.array([7 << 14]), np.eye(4, dtype="float32")[:1])
    >>> index.search(np.eye(4, dtype="float32")[:1], 1)[1].tolist()
    [[114688]]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import faiss
import numpy as np

from foveal.errors import ConfigError
from foveal.fsutil import fsync_dir
from foveal.index.faiss_gpu import GpuReplica, replicable
from foveal.index.base import PASSAGE_BITS, sorted_unique
from foveal.index.packed_scan import PackedScan

log = logging.getLogger(__name__)

#: Vectors per IVF list to collect before training (FAISS warns below 39).
_TRAIN_PER_LIST = 39

#: Exhaustive (Flat) inner-product searches of at least this many queries go through BLAS (one matrix product)
#: instead of one SIMD scan per query. This FAISS build ships 128,000, so every search scanned per query: a
#: micro-batch of 32 queries over 100,000 vectors took 200 ms, and 31 ms through BLAS; a single query 16 ms, and
#: 13 ms (``bench/perf.py``; the results are the same to float32 rounding).
BLAS_THRESHOLD = 1
faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD

#: ``FOVEAL_PACKED_SCAN=off`` keeps every Flat search in FAISS (see :mod:`foveal.index.packed_scan`).
PACKED_SCAN = os.environ.get("FOVEAL_PACKED_SCAN", "auto").strip().lower()
#: The largest Flat main index (its vectors, in MB) given a packed scan: it costs about twice that in memory.
PACKED_SCAN_MAX_MB = float(os.environ.get("FOVEAL_PACKED_SCAN_MAX_MB", "1024"))
#: Rows appended since the packed scan was made that start a rebuild (or a sixteenth of what it covers, if more).
PACKED_TAIL_ROWS = 4096
#: After a removal renumbered the main index, the scan is made again only once no other came for this long
#: (seconds): a stream of updates would otherwise remake it after each one. FAISS answers meanwhile.
PACKED_QUIET_S = 1.0


class ReadWriteLock:
    """Many readers or one writer. Searches read; writers take it only for the mutation itself (a compaction
    builds outside it and swaps under it), so searches run concurrently with each other and never see a half-made
    change. Writers are preferred (a waiting writer holds off new readers), so a steady stream of searches cannot
    starve an ingest. Re-entrant for the writing thread (``add`` may train, which also writes)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: int | None = None
        self._depth = 0
        self._waiting_writers = 0

    @contextmanager
    def read(self):
        me = threading.get_ident()
        if self._writer == me:  # a writer reading its own state
            yield
            return
        with self._cond:
            while self._writer is not None or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self):
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._depth += 1
            else:
                self._waiting_writers += 1
                try:
                    while self._writer is not None or self._readers:
                        self._cond.wait()
                finally:
                    self._waiting_writers -= 1
                self._writer, self._depth = me, 1
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if not self._depth:
                    self._writer = None
                    self._cond.notify_all()


@dataclass(slots=True)
class DocFilter:
    """An allow-list of documents resolved against one state of the index, built once per query: a bitmap over the
    main index's positions (tombstones already cleared) and the allowed ids of the training buffer. Stale (the main
    index was swapped or grew) filters are rebuilt from ``doc_keys`` by :meth:`FaissVectorIndex.search`."""

    doc_keys: np.ndarray
    main: int
    ntotal: int
    buffer_total: int
    tombstones: int
    mask: np.ndarray
    buffer_ids: np.ndarray

    @property
    def count(self) -> int:
        """How many vectors the filter allows."""
        return int(self.mask.sum()) + int(self.buffer_ids.size)


def member(values: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """``values`` in ``sorted_keys`` (non-negative int64), through a bitmap indexed by key: O(len(values))."""
    if sorted_keys.size == 0 or values.size == 0:
        return np.zeros(values.shape, dtype=bool)
    top = int(sorted_keys[-1])
    bitmap = np.zeros(top + 1, dtype=bool)
    bitmap[sorted_keys] = True
    inside = (values >= 0) & (values <= top)
    out = np.zeros(values.shape, dtype=bool)
    out[inside] = bitmap[values[inside]]
    return out


def gpu_count() -> int:
    try:
        return faiss.get_num_gpus()
    except AttributeError:  # faiss-cpu builds have no GPU symbols
        return 0


class FaissVectorIndex:
    #: A private copy in this process's memory: every process replays the log into its own and saves snapshots.
    shared = False
    #: An allow-list of at most ``max(exact_search_min, exact_search_fraction * live vectors)`` vectors is searched
    #: exactly (its vectors gathered from the index and scored by brute-force inner product), as Qdrant's full-scan
    #: threshold and Elasticsearch's exact fallback do: a graph or inverted-list search restricted to a few allowed
    #: vectors visits mostly forbidden ones and can return fewer than ``k``. Broader allow-lists go through the
    #: index with an ``IDSelector``, widening ``nprobe`` / ``efSearch`` until ``k`` are found (then exact).
    exact_search_min = 1024
    exact_search_fraction = 0.05
    #: Indexes that keep tombstones (HNSW, IVF) are rebuilt once tombstones exceed this share of stored vectors
    #: (and ``compact_min_tombstones``), so repeated updates do not grow the index without bound.
    compact_fraction = 0.2
    compact_min_tombstones = 64
    #: A Flat main index of at least this many vectors is scanned through a packed matrix
    #: (:mod:`foveal.index.packed_scan`); below it FAISS's own scan is cheap enough.
    packed_scan_min = 16_384
    #: Make the packed scan in a background thread (searches use FAISS meanwhile); tests build it inline.
    packed_scan_background = True

    def __init__(self, dimension: int, factory: str = "Flat", *, gpu: str = "auto", nprobe: int = 16,
                 ef_search: int = 128) -> None:
        self.dimension = dimension
        self.factory = factory
        self.nprobe = nprobe
        self.ef_search = ef_search
        #: read by searches, written by the short mutations of writers; a compaction builds without it
        self._rw = ReadWriteLock()
        #: serialises writers (add, remove, compact), so a compaction reads a main index nobody mutates
        self._writer_lock = threading.RLock()
        try:
            probe = faiss.index_factory(dimension, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ConfigError(f"vector.factory {factory!r} is not a FAISS index factory string: {exc}") from None
        self._needs_training = not probe.is_trained
        # only flat-code indexes renumber their positions on removal, as IndexIDMap2 assumes; an IVF's
        # remove_ids keeps the old positions, which would then point at the wrong ids: those keep tombstones
        self._supports_remove = isinstance(faiss.downcast_index(probe), faiss.IndexFlatCodes)
        self._train_size = 0
        if self._needs_training:
            ivf = _try(faiss.extract_index_ivf, probe)
            nlist = ivf.nlist if ivf is not None else 1
            self._train_size = max(_TRAIN_PER_LIST * nlist, 256 * 39 if "PQ" in factory.upper() else 0)
        self._main = faiss.IndexIDMap2(probe)
        self._buffer = faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))  # exact, until training is possible
        #: Positions (not ids) of removed vectors in ``_main`` (indexes that cannot remove); a re-added id gets a
        #: new position, so a document's replacement never revives its removed vectors.
        self._tombstones: set[int] = set()
        self._use_gpu = gpu == "auto" and gpu_count() > 0
        self._gpu_replica: GpuReplica | None = None
        #: a GPU index takes one search at a time (faiss's GPU indexes are not thread-safe), and is built once
        self._gpu_lock = threading.Lock()
        #: "cpu" (no GPU, or vector.gpu off), "gpu" (searches use the replica), or why the GPU is not used
        self.gpu_status = "gpu" if self._use_gpu else "cpu"
        #: how many times the main index was copied to the GPU (an incremental write copies nothing)
        self.gpu_builds = 0
        self._dirty = True
        self._id_map_cache: tuple[int, int, np.ndarray, np.ndarray] | None = None
        #: (the id map it sorts, positions in id order, the ids in that order), for :meth:`vectors`
        self._sorted_ids: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        #: how many compactions ran (for tests and stats)
        self.compactions = 0
        #: bumped whenever ``_main``'s positions are renumbered or it is replaced (appends keep it); ``_epoch_at``:
        #: when it last was (``time.monotonic``)
        self._epoch = 0
        self._epoch_at = 0.0
        inner = faiss.downcast_index(probe)
        self._packable = isinstance(inner, faiss.IndexFlat) and inner.metric_type == faiss.METRIC_INNER_PRODUCT
        self._packed: PackedScan | None = None
        self._packed_lock = threading.Lock()
        self._packed_building = False
        #: set when a packed scan could not be made (logged once): FAISS answers from then on
        self._packed_failed = False
        #: how many packed scans were made (for tests and stats)
        self.packed_builds = 0

    # -- writes --------------------------------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.dimension):
            raise ValueError(f"expected vectors of shape ({len(ids)}, {self.dimension}), got {vectors.shape}")
        with self._writer_lock, self._rw.write():
            if self._main.is_trained:
                _ensure_direct_map(self._main.index)
                self._main.add_with_ids(vectors, ids)
                if self._gpu_replica is not None:
                    self._gpu_replica.add(ids, vectors)
            else:
                self._buffer.add_with_ids(vectors, ids)
                if self._buffer.ntotal >= self._train_size:
                    self._train_from_buffer()
            self._dirty = True

    def _train_from_buffer(self) -> None:
        n = self._buffer.ntotal
        buffered_ids = faiss.vector_to_array(self._buffer.id_map).astype(np.int64)
        vectors = self._buffer.index.reconstruct_n(0, n)
        self._main.train(vectors)
        _ensure_direct_map(self._main.index)
        self._main.add_with_ids(vectors, buffered_ids)
        self._new_epoch()
        self._buffer.reset()
        self._gpu_replica = None  # copied from the trained index on the next search

    def remove_documents(self, doc_keys: Iterable[int]) -> None:
        keys = np.fromiter(set(int(k) for k in doc_keys), dtype=np.int64)
        if keys.size == 0:
            return
        with self._writer_lock:
            with self._rw.write():
                # one pass over the id maps finds every passage of these documents; one remove call per index
                # (each remove_ids call scans the whole index, so removing key by key would be quadratic)
                for index, removable in ((self._buffer, True), (self._main, self._supports_remove)):
                    if index.ntotal == 0:
                        continue
                    id_map = faiss.vector_to_array(index.id_map)
                    hit = np.isin(id_map >> PASSAGE_BITS, keys)
                    if index is self._main and self._gpu_replica is not None:
                        self._gpu_replica.remove(id_map[hit])
                    if removable:
                        doomed = id_map[hit]
                        if doomed.size == 0:
                            continue
                        index.remove_ids(faiss.IDSelectorBatch(doomed))
                        if index is self._main:  # positions renumbered: the cached map is stale even when a
                            self._id_map_cache = None  # later add brings the count back to what it was
                            self._new_epoch()
                    else:
                        positions = set(np.nonzero(hit)[0].tolist()) - self._tombstones
                        if not positions:
                            continue
                        self._tombstones.update(positions)
                    self._dirty = True
            if self._needs_compaction():
                self.compact()

    def _needs_compaction(self) -> bool:
        dead = len(self._tombstones)
        return dead >= self.compact_min_tombstones and dead > self.compact_fraction * max(1, self._main.ntotal)

    def compact(self) -> None:
        """Rebuild the main index without its tombstones: build a new index from the live vectors, then swap it
        in. Searches keep running on the old index while the new one is built (they wait only for the swap);
        writers wait, so the old index does not change under the build."""
        with self._writer_lock:
            with self._rw.write():
                if not self._tombstones:
                    return
                old = self._main
                dead = np.fromiter(self._tombstones, np.int64, len(self._tombstones))
                _ensure_direct_map(old.index)
            # -- no reader lock from here: the build reads ``old``, which only writers (held off) could change
            fresh = self._build_compacted(old, dead)
            with self._rw.write():
                self._main = fresh
                self._new_epoch()
                self._tombstones = set()
                self._gpu_replica = None  # copied from the compacted index on the next search
                self._id_map_cache = None
                self._dirty = True
                self.compactions += 1

    @staticmethod
    def _build_compacted(old, dead: np.ndarray):
        """A new ``IndexIDMap2`` holding the vectors of ``old`` not at a ``dead`` position, ids kept."""
        id_map = faiss.vector_to_array(old.id_map).astype(np.int64)
        live = np.setdiff1d(np.arange(old.ntotal, dtype=np.int64), dead)
        fresh_inner = faiss.clone_index(old.index)  # keeps the training (IVF centroids, PQ codebooks)
        fresh_inner.reset()
        fresh = faiss.IndexIDMap2(fresh_inner)
        _ensure_direct_map(fresh.index)
        for start in range(0, live.size, 65_536):
            chunk = live[start : start + 65_536]
            fresh.add_with_ids(np.ascontiguousarray(old.index.reconstruct_batch(chunk), np.float32), id_map[chunk])
        return fresh

    def __len__(self) -> int:
        return int(self._main.ntotal + self._buffer.ntotal - len(self._tombstones))

    # -- search --------------------------------------------------------------------------------------------------
    def doc_filter(self, doc_keys: np.ndarray) -> DocFilter:
        """Resolve an allow-list of documents (sorted unique doc_keys) against the index as it is now: one bitmap
        lookup per stored vector, no per-key work (see :class:`DocFilter`)."""
        keys = np.ascontiguousarray(doc_keys, dtype=np.int64)
        with self._rw.read():
            return self._doc_filter(keys)

    def _doc_filter(self, keys: np.ndarray) -> DocFilter:
        main = self._main
        _, doc_of = self._maps()
        mask = member(doc_of, keys)
        if self._tombstones:
            mask[np.fromiter(self._tombstones, np.int64, len(self._tombstones))] = False
        buffer_ids = np.zeros(0, np.int64)
        if self._buffer.ntotal:
            ids = faiss.vector_to_array(self._buffer.id_map).astype(np.int64)
            buffer_ids = ids[member(ids >> PASSAGE_BITS, keys)]
        return DocFilter(keys, id(main), int(main.ntotal), int(self._buffer.ntotal), len(self._tombstones), mask,
                         buffer_ids)

    def search(self, vectors: np.ndarray, k: int, allowed: "np.ndarray | DocFilter | None" = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """``allowed`` restricts the search to those vectors inside the index (never a post-filter): ``k`` results
        come back whenever ``k`` allowed vectors exist, on every index type (see :attr:`exact_search_min` for
        how). It is a :class:`DocFilter` (documents, from :meth:`doc_filter`) or an array of passage ids."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dimension)
        empty = np.zeros((len(vectors), k), np.float32), np.full((len(vectors), k), -1, np.int64)
        if isinstance(allowed, DocFilter) and allowed.doc_keys.size == 0:
            return empty
        if allowed is not None and not isinstance(allowed, DocFilter):
            allowed = sorted_unique(allowed)
            if allowed.size == 0:
                return empty
        with self._rw.read():
            if isinstance(allowed, DocFilter) and (
                    allowed.main != id(self._main) or allowed.ntotal != self._main.ntotal
                    or allowed.buffer_total != self._buffer.ntotal or allowed.tombstones != len(self._tombstones)):
                allowed = self._doc_filter(allowed.doc_keys)  # the index changed since the filter was built
            results = []
            if self._main.ntotal:
                results.append(self._search_main(vectors, k, allowed))
            if self._buffer.ntotal:
                buffer_allowed = allowed.buffer_ids if isinstance(allowed, DocFilter) else allowed
                if buffer_allowed is None:
                    results.append(self._buffer.search(vectors, min(k, self._buffer.ntotal)))
                elif buffer_allowed.size:
                    selector = faiss.IDSelectorBatch(buffer_allowed)
                    results.append(self._buffer.search(vectors, min(k, self._buffer.ntotal),
                                                       params=faiss.SearchParameters(sel=selector)))
        if not results:
            return empty
        scores = np.concatenate([r[0] for r in results], axis=1)
        ids = np.concatenate([r[1] for r in results], axis=1)
        scores = np.where(ids < 0, -np.inf, scores)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        scores = np.take_along_axis(scores, order, 1)
        ids = np.take_along_axis(ids, order, 1)
        if ids.shape[1] < k:
            pad = k - ids.shape[1]
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        scores = np.where(ids < 0, 0.0, scores).astype(np.float32)
        return scores, ids

    def _maps(self) -> tuple[np.ndarray, np.ndarray]:
        """Position -> id and position -> doc_key of ``_main`` (cached until the main index changes)."""
        key = (id(self._main), int(self._main.ntotal))
        cache = self._id_map_cache
        if cache is None or cache[:2] != key:
            id_map = faiss.vector_to_array(self._main.id_map).astype(np.int64)
            cache = self._id_map_cache = (*key, id_map, id_map >> PASSAGE_BITS)
        return cache[2], cache[3]

    def _id_map(self) -> np.ndarray:
        return self._maps()[0]

    def vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The stored vectors of these passage ids, as a search scores them (decoded: approximate for PQ/SQ codes,
        as the index's own scores are): ``(vectors (n, d) float32, held (n,) bool)``. An id the index does not
        hold (removed, or never added) gets a zero row and ``held`` False; a removed-then-re-added id gets its
        live vector, never the tombstoned one."""
        ids = np.ascontiguousarray(ids, dtype=np.int64).ravel()
        out = np.zeros((ids.size, self.dimension), np.float32)
        held = np.zeros(ids.size, bool)
        if ids.size == 0:
            return out, held
        with self._rw.read():
            if self._main.ntotal:
                id_map = self._id_map()
                cache = self._sorted_ids
                if cache is None or cache[0] is not id_map:
                    order = np.argsort(id_map, kind="stable")
                    cache = self._sorted_ids = (id_map, order, id_map[order])
                _, order, sorted_ids = cache
                # equal ids sit in position order: the last is the newest (a re-added id's live vector)
                at = np.searchsorted(sorted_ids, ids, side="right") - 1
                at_ok = np.maximum(at, 0)
                hit = (at >= 0) & (sorted_ids[at_ok] == ids)
                positions = order[at_ok]
                if self._tombstones:
                    dead = np.fromiter(self._tombstones, np.int64, len(self._tombstones))
                    hit &= ~np.isin(positions, dead)
                if hit.any():
                    out[hit] = self._main.index.reconstruct_batch(positions[hit])
                    held |= hit
            if self._buffer.ntotal and not held.all():
                buffered = faiss.vector_to_array(self._buffer.id_map).astype(np.int64)
                rest = ~held & np.isin(ids, buffered)
                if rest.any():
                    out[rest] = self._buffer.reconstruct_batch(ids[rest])
                    held |= rest
        return out, held

    def _search_main(self, vectors: np.ndarray, k: int, allowed: "np.ndarray | DocFilter | None" = None):
        main, inner = self._main, self._main.index
        if self._use_gpu:
            found = self._search_gpu(vectors, k, allowed)
            if found is not None:
                return found
        if allowed is None and not self._tombstones:
            # filtered searches stay with FAISS: its scan skips what the filter excludes, where the packed scan
            # would score every row (a 10 % filter: 13.0 ms of hybrid search through it against 7.6 ms, one query on
            # 100k, bench/perf.py filters)
            packed = self._packed_for(inner)
            if packed is not None:
                scores, positions = packed.search(vectors, min(k, main.ntotal), self._stored(inner))
            else:
                scores, positions = self._widening_search(inner, vectors, min(k, main.ntotal), None)
            return scores, self._ids_of(positions)
        # the selectors see positions in the inner index: search it and map positions to ids here
        id_map = self._id_map()
        tombstones = np.fromiter(self._tombstones, np.int64, len(self._tombstones))
        bitmap = None
        if allowed is None:
            live = None
            candidates = main.ntotal - tombstones.size
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(tombstones))
        elif isinstance(allowed, DocFilter):  # a bitmap over positions, tombstones already cleared
            live = np.flatnonzero(allowed.mask).astype(np.int64)
            candidates = int(live.size)
            bitmap = np.packbits(allowed.mask, bitorder="little")
            selector = None
        else:  # positions of allowed ids that are not tombstoned (a replaced document reuses its ids)
            live = np.nonzero(np.isin(id_map, allowed, assume_unique=False))[0].astype(np.int64)
            if tombstones.size:
                live = np.setdiff1d(live, tombstones, assume_unique=True)
            candidates = int(live.size)
            selector = None
        if candidates <= 0:
            return np.zeros((len(vectors), 0), np.float32), np.zeros((len(vectors), 0), np.int64)
        k = min(k, candidates)
        live_total = main.ntotal - tombstones.size
        if live is not None and live.size <= max(self.exact_search_min, self.exact_search_fraction * live_total):
            scores, positions = self._exact(inner, vectors, k, live)
            return scores, id_map[positions]
        if selector is None:
            # the bitmap (kept alive in ``bitmap`` for the search) is a membership test of one bit per position
            selector = faiss.IDSelectorBitmap(bitmap) if bitmap is not None else faiss.IDSelectorBatch(live)
        scores, positions = self._widening_search(inner, vectors, k, selector)
        if (positions >= 0).sum(axis=1).min() < k:  # the index could not reach them all: score them exactly
            if live is None:
                live = np.setdiff1d(np.arange(main.ntotal, dtype=np.int64), tombstones)
            scores, positions = self._exact(inner, vectors, k, live)
        return scores, np.where(positions >= 0, id_map[np.maximum(positions, 0)], -1)

    # -- the packed scan ------------------------------------------------------------------------------------------
    def _new_epoch(self) -> None:
        self._epoch += 1
        self._epoch_at = time.monotonic()

    def _packed_for(self, inner) -> PackedScan | None:
        """The packed scan of ``_main`` when it is up to date (rows appended since are scored from FAISS's
        storage), else None; starts making one (or a fresh one, once enough rows were appended) when due. Called
        under the read lock."""
        n = int(inner.ntotal)
        if (not self._packable or self._packed_failed or self._use_gpu or PACKED_SCAN == "off"
                or n < self.packed_scan_min or n * self.dimension * 4 > PACKED_SCAN_MAX_MB * 2**20):
            return None
        packed = self._packed
        if packed is None or packed.epoch != self._epoch or packed.covered > n:
            if time.monotonic() - self._epoch_at >= PACKED_QUIET_S:
                self._start_packed_build()
            return None
        if n - packed.covered > max(PACKED_TAIL_ROWS, packed.covered // 16):
            self._start_packed_build()
        return packed

    def _stored(self, inner) -> np.ndarray:
        """FAISS's own storage of a Flat index as an ``(ntotal, d)`` array (a view: valid under the read lock)."""
        n = int(inner.ntotal)
        flat = faiss.downcast_index(inner)
        return faiss.rev_swig_ptr(flat.get_xb(), n * self.dimension).reshape(n, self.dimension)

    def _start_packed_build(self) -> None:
        with self._packed_lock:
            if self._packed_building:
                return
            self._packed_building = True
        if self.packed_scan_background:
            threading.Thread(target=self._build_packed, name="foveal-packed-scan", daemon=True).start()
        else:
            self._build_packed()

    def _build_packed(self) -> None:
        """Copy the rows the current scan lacks (under the read lock: an add may move FAISS's storage), pack them
        outside it, and swap the new scan in if ``_main`` kept its positions meanwhile."""
        try:
            with self._rw.read():
                epoch, inner = self._epoch, self._main.index
                old = self._packed if self._packed is not None and self._packed.epoch == epoch else None
                keep = PackedScan.reusable(old, int(inner.ntotal))
                start = keep[-1].stop if keep else 0
                rows = self._stored(inner)[start:].copy()
            packed = PackedScan.build(epoch, rows, start=start, shards=keep)
            if epoch == self._epoch:
                self._packed = packed
                self.packed_builds += 1
        except Exception as exc:  # noqa: BLE001 - FAISS answers instead; the search itself never fails on this
            self._packed_failed = True
            log.warning("packed scan disabled for this index: %s: %s", type(exc).__name__, exc)
        finally:
            with self._packed_lock:
                self._packed_building = False

    def _ids_of(self, positions: np.ndarray) -> np.ndarray:
        id_map = self._id_map()
        return np.where(positions >= 0, id_map[np.maximum(positions, 0)], -1)

    def _widening_search(self, inner, vectors: np.ndarray, k: int, selector):
        """Search ``inner`` (positions), widening efSearch (HNSW) or nprobe (IVF) by 4x until every row has
        ``k`` results or the whole index was in reach."""
        if _is_hnsw(inner):
            # (the breadth to start at, the most there is, the search parameters at a breadth)
            plan = (max(self.ef_search, k), int(inner.ntotal), lambda n: faiss.SearchParametersHNSW(efSearch=n))
        elif (ivf := faiss.try_extract_index_ivf(inner)) is not None:
            plan = (min(self.nprobe, ivf.nlist), int(ivf.nlist), lambda n: faiss.SearchParametersIVF(nprobe=n))
        else:
            plan = None
        if plan is not None:
            breadth, widest, make_params = plan
            while True:
                params = make_params(breadth)
                if selector is not None:
                    params.sel = selector
                scores, positions = inner.search(vectors, k, params=params)
                if (positions >= 0).sum(axis=1).min() >= k or breadth >= widest:
                    return scores, positions
                breadth = min(breadth * 4, widest)
        if selector is None:
            return inner.search(vectors, k)
        return inner.search(vectors, k, params=faiss.SearchParameters(sel=selector))

    @staticmethod
    def _exact(inner, vectors: np.ndarray, k: int, positions: np.ndarray):
        """Brute-force inner product over the vectors at ``positions`` (gathered from the index's own storage;
        decoded, so approximate for PQ/SQ codes as the index's own scores are)."""
        scores = np.empty((len(vectors), 0), np.float32)
        found = np.empty((len(vectors), 0), np.int64)
        for start in range(0, positions.size, 65_536):  # bounded memory for a large fallback
            chunk = positions[start : start + 65_536]
            stored = np.ascontiguousarray(inner.reconstruct_batch(chunk), np.float32)
            scores = np.concatenate([scores, vectors @ stored.T], axis=1)
            found = np.concatenate([found, np.broadcast_to(chunk, (len(vectors), chunk.size))], axis=1)
            if scores.shape[1] > k:
                top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
                scores, found = np.take_along_axis(scores, top, 1), np.take_along_axis(found, top, 1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(found, order, 1)

    def _search_gpu(self, vectors: np.ndarray, k: int, allowed: "np.ndarray | DocFilter | None"):
        """The replica's answer, or None for the CPU to answer: narrow allow-lists stay on the CPU, which scores
        them exactly at once (see :attr:`exact_search_min`)."""
        live_total = self._main.ntotal - len(self._tombstones)
        if allowed is None:
            size = None
        elif isinstance(allowed, DocFilter):
            size = int(allowed.mask.sum())
        else:
            size = int(allowed.size)
        if size is not None and size <= max(self.exact_search_min, self.exact_search_fraction * live_total):
            return None
        with self._gpu_lock:
            replica = self._gpu()
            if replica is None:
                return None
            if isinstance(allowed, DocFilter):
                return replica.search(vectors, k, allowed_docs=allowed.doc_keys, allowed_count=size)
            return replica.search(vectors, k, allowed_ids=allowed)

    def _gpu(self) -> GpuReplica | None:
        """The GPU replica of the main index, copied when there is none yet (or too many dead positions); None
        when this index searches on the CPU (``gpu_status`` says why)."""
        replica = self._gpu_replica
        if replica is not None and not replica.stale:
            return replica
        if not self._main.is_trained or self._main.ntotal == 0:
            return None
        reason = replicable(self._main.index)
        if reason is not None:
            self._use_gpu, self.gpu_status = False, reason
            return None
        try:
            self._gpu_replica = GpuReplica(self._main, self._tombstones, nprobe=self.nprobe)
        except (AttributeError, RuntimeError) as exc:  # a faiss without GPU symbols, or a GPU that refuses
            self._use_gpu, self._gpu_replica = False, None
            self.gpu_status = f"no GPU replica: {type(exc).__name__}: {exc}"
            return None
        self.gpu_builds += 1
        return self._gpu_replica

    # -- persistence ---------------------------------------------------------------------------------------------
    def save(self, path: Path, **extra: int) -> None:
        """Write everything (index, training buffer, tombstones, ``extra`` counters) to one file, atomically:
        a temporary file, fsync, rename over the old one, fsync the folder (so the rename survives a power loss).
        The header carries a SHA-256 of the three arrays, so a file damaged later is refused by :meth:`load`
        (and rebuilt from the document store) instead of served."""
        path = Path(path)
        with self._rw.read():
            arrays = {
                "main": faiss.serialize_index(self._main),
                "buffer": faiss.serialize_index(self._buffer),
                "tombstones": np.fromiter(self._tombstones, np.int64, len(self._tombstones)),
            }
            header = {"factory": self.factory, "dimension": self.dimension, "tombstone_positions": True,
                      "sha256": _digest(arrays), **extra}
            arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            fsync_dir(path.parent)

    def drop(self) -> None:
        """Nothing outside the saved file."""

    @classmethod
    def load(cls, path: Path, dimension: int, factory: str, **kwargs) -> tuple["FaissVectorIndex", dict]:
        """Open a saved index; returns it and the ``extra`` counters it was saved with."""
        index = cls(dimension, factory, **kwargs)
        with np.load(Path(path)) as data:
            header = json.loads(bytes(data["header"]).decode())
            if header["factory"] != factory or header["dimension"] != dimension:
                raise ConfigError(f"saved vector index is {header['factory']}/{header['dimension']}, "
                                  f"config asks for {factory}/{dimension}")
            arrays = {name: data[name] for name in ("main", "buffer", "tombstones")}
            # files written before the checksum existed (up to 45b262d) have none: trusted as before, and given one
            # by the next save
            if "sha256" in header and header["sha256"] != _digest(arrays):
                raise ValueError(f"{Path(path).name}: checksum mismatch (the file is damaged)")
            index._main = faiss.deserialize_index(arrays["main"])
            index._buffer = faiss.deserialize_index(arrays["buffer"])
            index._tombstones = set(arrays["tombstones"].tolist())
            if index._tombstones and not header.get("tombstone_positions"):  # older files held ids
                id_map = faiss.vector_to_array(index._main.id_map)
                index._tombstones = set(np.nonzero(np.isin(id_map, list(index._tombstones)))[0].tolist())
        if index._main.is_trained:
            _ensure_direct_map(index._main.index)  # files saved before direct maps were kept: now, not in a search
        return index, header


def _digest(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in ("main", "buffer", "tombstones"):
        array = np.ascontiguousarray(arrays[name])
        digest.update(name.encode() + str(array.dtype).encode() + str(array.size).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _is_hnsw(index) -> bool:
    inner = faiss.downcast_index(index)
    return isinstance(inner, (faiss.IndexHNSW,)) or "HNSW" in type(inner).__name__


def _ensure_direct_map(inner) -> None:
    """IVF indexes need a direct map (position -> list entry) to hand back stored vectors for exact search and
    compaction; positions are sequential and never removed (tombstones), so the cheap array form holds."""
    ivf = faiss.try_extract_index_ivf(inner)
    if ivf is not None and ivf.direct_map.type == faiss.DirectMap.NoMap:
        ivf.make_direct_map(True)


def _try(fn, *args):
    try:
        return fn(*args)
    except RuntimeError:
        return None
