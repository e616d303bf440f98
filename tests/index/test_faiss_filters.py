"""Filtered search returns k hits whenever k allowed vectors exist, on trained IVF and HNSW too (issue 10, finding 3),
and indexes that keep tombstones stay bounded under repeated updates (issue 10, bounded growth)."""

import threading

import numpy as np
import pytest

from foveal.index.base import doc_key_of, passage_id
from foveal.index.faiss_index import FaissVectorIndex

DIM = 16
N = 5000


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(N, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.array([passage_id(key, 0) for key in range(1, N + 1)], np.int64)
    queries = rng.normal(size=(4, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return ids, vectors, queries


def _built(factory, data, **kwargs):
    ids, vectors, _ = data
    index = FaissVectorIndex(DIM, factory, gpu="off", **kwargs)
    index.add(ids, vectors)
    assert index._main.is_trained and index._buffer.ntotal == 0  # really trained: the IVF path is exercised
    return index


def _exact(data, allowed, k):
    ids, vectors, queries = data
    mask = np.isin(ids, allowed)
    scores = queries @ vectors[mask].T
    return ids[mask][np.argsort(-scores, axis=1, kind="stable")[:, :k]]


_SHARED: dict = {}


def _shared(factory, data, **kwargs):
    """A built index for tests that only search it (HNSW construction is the slow part)."""
    key = (factory, tuple(sorted(kwargs.items())))
    if key not in _SHARED:
        _SHARED[key] = _built(factory, data, **kwargs)
    return _SHARED[key]


FACTORIES = [("IVF64,Flat", {"nprobe": 1}), ("HNSW16", {"ef_search": 16}), ("Flat", {})]


@pytest.mark.parametrize("factory,kwargs", FACTORIES, ids=[f for f, _ in FACTORIES])
@pytest.mark.parametrize("share", [0.01, 0.1, 0.5])
def test_filtered_search_returns_k(factory, kwargs, share, data):
    ids, _, queries = data
    index = _shared(factory, data, **kwargs)
    allowed = ids[np.random.default_rng(1).random(N) < share]
    k = 20
    scores, found = index.search(queries, k, allowed=allowed)
    assert (found >= 0).sum(axis=1).tolist() == [k] * len(queries)
    assert set(found.ravel().tolist()) <= set(allowed.tolist())
    for row in found:
        assert len(set(row.tolist())) == k
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    if share <= 0.05 or factory == "Flat":  # searched exactly: the true top k
        np.testing.assert_array_equal(found, _exact(data, allowed, k))


@pytest.mark.parametrize("factory,kwargs", FACTORIES, ids=[f for f, _ in FACTORIES])
def test_allow_list_smaller_than_k_is_returned_whole(factory, kwargs, data):
    ids, _, queries = data
    index = _shared(factory, data, **kwargs)
    allowed = ids[::250]  # 20 ids
    _, found = index.search(queries, 50, allowed=allowed)
    for row in found:
        assert sorted(i for i in row.tolist() if i >= 0) == sorted(allowed.tolist())


def test_broad_filter_on_ivf_widens_nprobe(data):
    """Above the exact threshold, the IVF search widens nprobe instead of returning what one list holds."""
    ids, _, queries = data
    index = _built("IVF64,Flat", data, nprobe=1)
    index.exact_search_min = 0
    index.exact_search_fraction = 0.0
    allowed = ids[np.random.default_rng(2).random(N) < 0.01]  # ~50 vectors: about one per list
    _, found = index.search(queries, 10, allowed=allowed)
    assert (found >= 0).sum(axis=1).tolist() == [10] * len(queries)


def test_unfiltered_ivf_returns_k_beyond_the_probed_lists(data):
    _, _, queries = data
    index = _built("IVF64,Flat", data, nprobe=1)
    _, found = index.search(queries, 1000)
    assert (found >= 0).sum(axis=1).tolist() == [1000] * len(queries)


def test_ivf_update_keeps_ids_right(data):
    """IVF's remove_ids left IndexIDMap2's positions pointing at other ids: a replaced document was lost."""
    ids, vectors, _ = data
    index = _built("IVF64,Flat", data, nprobe=64)
    replaced = list(range(1, 1001))
    index.remove_documents(replaced)
    index.add(ids[:1000], vectors[:1000])
    _, found = index.search(vectors[[0, 500, 1500, 4999]], 1)
    assert found[:, 0].tolist() == ids[[0, 500, 1500, 4999]].tolist()
    assert len(index) == N


@pytest.mark.parametrize("factory", ["HNSW16", "IVF16,Flat"])
def test_repeated_updates_keep_the_index_bounded(factory):
    rng = np.random.default_rng(9)
    index = FaissVectorIndex(DIM, factory, gpu="off", nprobe=16)
    keys = np.arange(1, 801)
    current = rng.normal(size=(len(keys), DIM)).astype(np.float32)
    current /= np.linalg.norm(current, axis=1, keepdims=True)
    pids = np.array([passage_id(int(k), 0) for k in keys], np.int64)
    index.add(pids, current)
    for _ in range(15):
        changed = rng.choice(len(keys), 120, replace=False)
        index.remove_documents(keys[changed].tolist())
        fresh = rng.normal(size=(len(changed), DIM)).astype(np.float32)
        fresh /= np.linalg.norm(fresh, axis=1, keepdims=True)
        current[changed] = fresh
        index.add(pids[changed], fresh)
        stored = index._main.ntotal + index._buffer.ntotal
        assert stored <= len(keys) * (1 + index.compact_fraction) + 120
        assert len(index) == len(keys)
    assert index.compactions > 0
    _, found = index.search(current[:50], 1)
    assert found[:, 0].tolist() == pids[:50].tolist()
    # a filter after compaction still sees only allowed, live vectors
    _, found = index.search(current[:5], 3, allowed=pids[:3])
    assert {int(i) for i in found.ravel()} == set(pids[:3].tolist())


def test_searches_run_while_a_compaction_builds(data, monkeypatch):
    ids, vectors, _ = data
    index = _built("HNSW16", data)
    index.compact_min_tombstones = 10**9  # compact only when asked
    index.remove_documents(range(1, 2001))
    building, release = threading.Event(), threading.Event()
    original = FaissVectorIndex._build_compacted

    def slow_build(old, dead):
        building.set()
        assert release.wait(60)
        return original(old, dead)

    monkeypatch.setattr(FaissVectorIndex, "_build_compacted", staticmethod(slow_build))
    compaction = threading.Thread(target=index.compact)
    compaction.start()
    assert building.wait(60)
    results = []
    reader = threading.Thread(target=lambda: results.append(index.search(vectors[2500:2501], 1)[1]))
    reader.start()
    reader.join(60)
    finished_during_build = not reader.is_alive()
    release.set()
    compaction.join(60)
    reader.join(60)
    assert finished_during_build, "a search waited for the compaction build"
    assert results[0][0, 0] == ids[2500]
    assert index.compactions == 1 and index._main.ntotal == N - 2000
    _, found = index.search(vectors[:3], 5)
    assert all(doc_key_of(int(i)) > 2000 for i in found.ravel())
