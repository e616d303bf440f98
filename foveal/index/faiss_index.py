"""FAISS vector index behind :class:`~foveal.index.base.VectorIndex`.

The CPU index is the source of truth; when faiss sees GPUs (and ``vector.gpu`` is ``auto``) searches run on a GPU
replica that is rebuilt after writes. Any factory string works (``Flat``, ``HNSW32``, ``IVF256,PQ16``); the metric
is inner product on unit vectors.

Indexes that cannot remove vectors (HNSW) keep a tombstone set that searches skip through an ``IDSelector``;
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
import os
import threading
from pathlib import Path
from typing import Iterable

import faiss
import numpy as np

from foveal.errors import ConfigError
from foveal.index.base import PASSAGE_BITS

#: Vectors per IVF list to collect before training (FAISS warns below 39).
_TRAIN_PER_LIST = 39


def gpu_count() -> int:
    try:
        return faiss.get_num_gpus()
    except AttributeError:  # faiss-cpu builds have no GPU symbols
        return 0


class FaissVectorIndex:
    #: A private copy in this process's memory: every process replays the log into its own and saves snapshots.
    shared = False

    def __init__(self, dimension: int, factory: str = "Flat", *, gpu: str = "auto", nprobe: int = 16,
                 ef_search: int = 128) -> None:
        self.dimension = dimension
        self.factory = factory
        self.nprobe = nprobe
        self.ef_search = ef_search
        self._lock = threading.RLock()
        try:
            probe = faiss.index_factory(dimension, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ConfigError(f"vector.factory {factory!r} is not a FAISS index factory string: {exc}") from None
        self._needs_training = not probe.is_trained
        self._supports_remove = not _is_hnsw(probe)
        self._train_size = 0
        if self._needs_training:
            ivf = _try(faiss.extract_index_ivf, probe)
            nlist = ivf.nlist if ivf is not None else 1
            self._train_size = max(_TRAIN_PER_LIST * nlist, 256 * 39 if "PQ" in factory.upper() else 0)
        self._main = faiss.IndexIDMap2(probe)
        self._buffer = faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))  # exact, until training is possible
        #: HNSW: positions (not ids) of removed vectors in ``_main``; a re-added id gets a new position, so a
        #: document's replacement never revives its removed vectors.
        self._tombstones: set[int] = set()
        self._use_gpu = gpu == "auto" and gpu_count() > 0
        self._gpu_replica = None
        self._dirty = True

    # -- writes --------------------------------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.dimension):
            raise ValueError(f"expected vectors of shape ({len(ids)}, {self.dimension}), got {vectors.shape}")
        with self._lock:
            if self._main.is_trained:
                self._main.add_with_ids(vectors, ids)
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
        self._main.add_with_ids(vectors, buffered_ids)
        self._buffer.reset()

    def remove_documents(self, doc_keys: Iterable[int]) -> None:
        keys = np.fromiter(set(int(k) for k in doc_keys), dtype=np.int64)
        if keys.size == 0:
            return
        with self._lock:
            # one pass over the id maps finds every passage of these documents; one remove call per index
            # (each remove_ids call scans the whole index, so removing key by key would be quadratic)
            for index, removable in ((self._buffer, True), (self._main, self._supports_remove)):
                if index.ntotal == 0:
                    continue
                id_map = faiss.vector_to_array(index.id_map)
                hit = np.isin(id_map >> PASSAGE_BITS, keys)
                if removable:
                    doomed = id_map[hit]
                    if doomed.size == 0:
                        continue
                    index.remove_ids(faiss.IDSelectorBatch(doomed))
                else:
                    positions = set(np.nonzero(hit)[0].tolist()) - self._tombstones
                    if not positions:
                        continue
                    self._tombstones.update(positions)
                self._dirty = True

    def __len__(self) -> int:
        return int(self._main.ntotal + self._buffer.ntotal - len(self._tombstones))

    # -- search --------------------------------------------------------------------------------------------------
    def search(self, vectors: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``allowed`` (passage ids) restricts the search to those vectors, inside FAISS (an IDSelector)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dimension)
        selector = None
        if allowed is not None:
            allowed = np.ascontiguousarray(allowed, dtype=np.int64)
            if allowed.size == 0:
                return np.zeros((len(vectors), k), np.float32), np.full((len(vectors), k), -1, np.int64)
            selector = faiss.IDSelectorBatch(allowed)
        with self._lock:
            results = []
            if self._main.ntotal:
                results.append(self._search_main(vectors, k, selector, allowed))
            if self._buffer.ntotal:
                if selector is None:
                    results.append(self._buffer.search(vectors, min(k, self._buffer.ntotal)))
                else:
                    results.append(self._buffer.search(vectors, min(k, self._buffer.ntotal),
                                                       params=faiss.SearchParameters(sel=selector)))
        if not results:
            return np.zeros((len(vectors), k), np.float32), np.full((len(vectors), k), -1, np.int64)
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

    def _search_main(self, vectors: np.ndarray, k: int, selector=None, allowed: np.ndarray | None = None):
        k = min(k, self._main.ntotal)
        params = None
        inner = self._main.index
        if _is_hnsw(inner):
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
            if self._tombstones:
                # the selector sees positions in the inner index: search it and map positions to ids here
                tombstones = np.fromiter(self._tombstones, np.int64)
                if allowed is None:
                    params.sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(tombstones))
                else:  # positions of allowed ids that are not tombstoned (a replaced document reuses its ids)
                    id_map = faiss.vector_to_array(self._main.id_map)
                    keep = np.nonzero(np.isin(id_map, allowed))[0].astype(np.int64)
                    keep = np.setdiff1d(keep, tombstones)
                    if keep.size == 0:
                        return (np.zeros((len(vectors), 0), np.float32), np.zeros((len(vectors), 0), np.int64))
                    params.sel = faiss.IDSelectorBatch(keep)
                # keep a reference so the selector outlives the call
                self._selector_ref = params.sel
                k = min(k, len(self))
                if k <= 0:
                    return (np.zeros((len(vectors), 0), np.float32), np.zeros((len(vectors), 0), np.int64))
                scores, positions = inner.search(vectors, k, params=params)
                id_map = faiss.vector_to_array(self._main.id_map)
                return scores, np.where(positions >= 0, id_map[np.maximum(positions, 0)], -1)
        elif faiss.try_extract_index_ivf(inner) is not None:
            params = faiss.SearchParametersIVF(nprobe=self.nprobe)
        if selector is not None:
            # deleted documents have no passage ids in the allow-list, so it also covers HNSW tombstones
            params = params or faiss.SearchParameters()
            params.sel = selector
            self._allowed_ref = selector
        if self._use_gpu and params is None:
            replica = self._gpu()
            if replica is not None:
                return replica.search(vectors, k)
        if params is not None:
            return self._main.search(vectors, k, params=params)
        return self._main.search(vectors, k)

    def _gpu(self):  # pragma: no cover - needs a GPU build of faiss and a GPU
        if self._dirty or self._gpu_replica is None:
            try:
                self._gpu_replica = faiss.index_cpu_to_all_gpus(self._main)
            except (AttributeError, RuntimeError):
                self._use_gpu = False
                self._gpu_replica = None
            self._dirty = False
        return self._gpu_replica

    # -- persistence ---------------------------------------------------------------------------------------------
    def save(self, path: Path, **extra: int) -> None:
        """Write everything (index, training buffer, tombstones, ``extra`` counters) to one file, atomically:
        a temporary file, fsync, rename over the old one, fsync the folder (so the rename survives a power loss).
        The header carries a SHA-256 of the three arrays, so a file damaged later is refused by :meth:`load`
        (and rebuilt from the document store) instead of served."""
        path = Path(path)
        with self._lock:
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
            _fsync_dir(path.parent)

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
        return index, header


def _digest(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in ("main", "buffer", "tombstones"):
        array = np.ascontiguousarray(arrays[name])
        digest.update(name.encode() + str(array.dtype).encode() + str(array.size).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_hnsw(index) -> bool:
    inner = faiss.downcast_index(index)
    return isinstance(inner, (faiss.IndexHNSW,)) or "HNSW" in type(inner).__name__


def _try(fn, *args):
    try:
        return fn(*args)
    except RuntimeError:
        return None
