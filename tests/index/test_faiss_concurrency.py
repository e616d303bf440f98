"""FAISS reads take no global lock: searches run side by side; writers wait only for their own mutation; a
document allow-list (bitmap) resolved against an older state of the index is re-resolved, never misapplied."""

import threading

import numpy as np

from foveal.index.base import passage_id
from foveal.index.faiss_index import FaissVectorIndex


def _index(n=200, dim=8, factory="Flat"):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = FaissVectorIndex(dim, factory, gpu="off")
    index.add(np.array([passage_id(i + 1, 0) for i in range(n)], np.int64), vectors)
    return index, vectors


def test_a_search_runs_while_another_search_holds_the_index():
    index, vectors = _index()
    holding, release = threading.Event(), threading.Event()

    def long_search():
        with index._rw.read():  # a search in progress
            holding.set()
            release.wait(30)

    other = threading.Thread(target=long_search)
    other.start()
    holding.wait(30)
    done = []
    searcher = threading.Thread(target=lambda: done.append(index.search(vectors[:1], 3)))
    searcher.start()
    searcher.join(30)
    finished_while_held = bool(done)
    release.set()
    other.join(30)
    assert finished_while_held
    assert done[0][1][0][0] == passage_id(1, 0)


def test_a_write_waits_for_running_searches_and_then_applies():
    index, vectors = _index()
    holding, release = threading.Event(), threading.Event()

    def long_search():
        with index._rw.read():
            holding.set()
            release.wait(30)

    reader = threading.Thread(target=long_search)
    reader.start()
    holding.wait(30)
    writer = threading.Thread(target=index.add, args=(np.array([passage_id(999, 0)], np.int64), vectors[:1]))
    writer.start()
    writer.join(0.2)
    blocked = writer.is_alive()  # the mutation waits for the search in progress
    release.set()
    reader.join(30)
    writer.join(30)
    assert blocked and len(index) == 201


def test_a_stale_document_filter_is_resolved_again():
    index, vectors = _index(n=50)
    keys = np.array([3, 60], np.int64)  # 60 does not exist yet
    resolved = index.doc_filter(keys)
    assert resolved.count == 1
    index.add(np.array([passage_id(60, 0), passage_id(60, 1)], np.int64), vectors[:2])
    _, ids = index.search(vectors[:1], 5, allowed=resolved)
    assert sorted(i for i in ids[0].tolist() if i >= 0) == sorted([passage_id(3, 0), passage_id(60, 0),
                                                                    passage_id(60, 1)])


def test_document_filter_matches_a_passage_id_filter_on_hnsw_with_tombstones():
    index, vectors = _index(n=3000, factory="HNSW16")
    index.remove_documents(range(1, 40))  # tombstones, below the compaction threshold
    rng = np.random.default_rng(2)
    keys = np.unique(rng.integers(1, 3001, size=900)).astype(np.int64)
    by_docs = index.search(vectors[:4], 10, allowed=index.doc_filter(keys))
    by_pids = index.search(vectors[:4], 10, allowed=np.array([passage_id(int(k), 0) for k in keys]))
    assert np.array_equal(by_docs[1], by_pids[1])
    assert not np.isin(by_docs[1] >> 14, np.arange(1, 40)).any()
