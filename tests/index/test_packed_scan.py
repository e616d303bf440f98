"""The packed scan of Flat indexes (``foveal/index/packed_scan.py``): the same hits as FAISS's own search, through
appends, removals, filters and shards, and never in the way of a search while it is made."""

import threading

import numpy as np
import pytest

from foveal.index import faiss_index, packed_scan
from foveal.index.base import PASSAGE_BITS
from foveal.index.faiss_index import FaissVectorIndex

DIM = 24


def _unit(rng, n):
    v = rng.standard_normal((n, DIM)).astype("float32")
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _ids(first, n, passages=1):
    keys = np.repeat(np.arange(first, first + n), passages)
    return (keys << PASSAGE_BITS) + np.tile(np.arange(passages), n)


@pytest.fixture
def pair(monkeypatch):
    """Two Flat indexes fed alike: one scanned through the packed matrix (made inline, small shards), one by
    FAISS alone."""
    monkeypatch.setattr(packed_scan, "SHARD_ROWS", 512)
    monkeypatch.setattr(faiss_index, "PACKED_TAIL_ROWS", 200)
    monkeypatch.setattr(faiss_index, "PACKED_QUIET_S", 0.0)
    packed, plain = FaissVectorIndex(DIM, "Flat"), FaissVectorIndex(DIM, "Flat")
    packed.packed_scan_min, packed.packed_scan_background = 100, False
    plain.packed_scan_min = 10**12
    return packed, plain


def _same(pair, queries, k, allowed_keys=None, ids=None):
    packed, plain = pair
    one = packed.doc_filter(allowed_keys) if allowed_keys is not None else ids
    two = plain.doc_filter(allowed_keys) if allowed_keys is not None else ids
    s1, i1 = packed.search(queries, k, one)
    s2, i2 = plain.search(queries, k, two)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, atol=1e-5)
    return i1


def _add(pair, ids, vectors):
    for index in pair:
        index.add(ids, vectors)


def test_the_packed_scan_finds_what_faiss_finds_through_appends_removals_and_filters(pair):
    rng = np.random.default_rng(7)
    packed, _ = pair
    _add(pair, _ids(0, 700, 2), _unit(rng, 1400))
    queries = _unit(rng, 5)
    _same(pair, queries, 40)  # made here: FAISS answers this first search
    assert packed.packed_builds == 1 and packed._packed.covered == 1400 and len(packed._packed.shards) == 3
    calls = []
    real = packed._widening_search
    packed._widening_search = lambda *a: calls.append(1) or real(*a)
    found = _same(pair, queries, 40)
    assert not calls, "FAISS searched although the packed scan was up to date"
    assert (found >= 0).all()
    # appended rows short of a rebuild: scored from FAISS's storage beside the shards
    _add(pair, _ids(700, 50, 2), _unit(rng, 100))
    _same(pair, queries, 40)
    assert packed.packed_builds == 1 and packed._packed.covered == 1400
    # a query equal to an appended vector finds it first
    new_vector = _unit(rng, 1)
    _add(pair, _ids(5000, 1), new_vector)
    assert _same(pair, new_vector, 3)[0, 0] == 5000 << PASSAGE_BITS
    # more appended rows: the partial shard is made again, the full ones are kept
    full = [s for s in packed._packed.shards if len(s) == packed_scan.SHARD_ROWS]
    _add(pair, _ids(800, 150, 2), _unit(rng, 300))
    _same(pair, queries, 40)
    assert packed.packed_builds == 2 and packed._packed.covered == packed._main.ntotal
    assert all(any(s is old for s in packed._packed.shards) for old in full)
    # filters (a doc filter's bitmap, an id list) stay with FAISS, whose scan skips what they exclude
    for index in pair:  # past the cut below which a filter's vectors are scored exactly, one by one
        index.exact_search_min, index.exact_search_fraction = 0, 0.0
    scans = []
    real_scan = packed._packed.search
    packed._packed.search = lambda *a: scans.append(1) or real_scan(*a)
    _same(pair, queries, 30, allowed_keys=np.arange(0, 950, 3))
    _same(pair, queries, 30, ids=_ids(0, 400, 2))
    assert not scans
    _same(pair, queries, 30)
    assert scans == [1]
    # removal renumbers FAISS's positions: FAISS answers until the scan is made again
    for index in pair:
        index.remove_documents(range(10, 200))
    _same(pair, queries, 40)
    _same(pair, queries, 40)
    assert packed.packed_builds == 3 and packed._packed.covered == packed._main.ntotal


def test_a_packed_scan_is_made_in_the_background_while_faiss_answers(pair, monkeypatch):
    rng = np.random.default_rng(8)
    packed, _ = pair
    packed.packed_scan_background = True
    started, release = threading.Event(), threading.Event()
    real = packed_scan.PackedScan.build

    def slow(*args, **kwargs):
        started.set()
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(packed_scan.PackedScan, "build", slow)
    _add(pair, _ids(0, 600), _unit(rng, 600))
    queries = _unit(rng, 3)
    _same(pair, queries, 10)
    assert started.wait(30)
    _same(pair, queries, 10)  # the build is stuck: searches go on through FAISS
    assert packed._packed is None
    release.set()
    for thread in threading.enumerate():
        if thread.name == "foveal-packed-scan":
            thread.join(30)
    assert packed.packed_builds == 1
    _same(pair, queries, 10)


def test_small_indexes_and_off_keep_faiss(pair, monkeypatch):
    rng = np.random.default_rng(9)
    packed, _ = pair
    _add(pair, _ids(0, 50), _unit(rng, 50))
    _same(pair, _unit(rng, 2), 5)
    assert packed.packed_builds == 0  # 50 < packed_scan_min
    _add(pair, _ids(50, 200), _unit(rng, 200))
    monkeypatch.setattr(faiss_index, "PACKED_SCAN", "off")
    _same(pair, _unit(rng, 2), 5)
    assert packed.packed_builds == 0
    hnsw = FaissVectorIndex(DIM, "HNSW8")
    hnsw.packed_scan_min, hnsw.packed_scan_background = 1, False
    monkeypatch.setattr(faiss_index, "PACKED_SCAN", "auto")
    hnsw.add(_ids(0, 300), _unit(rng, 300))
    hnsw.search(_unit(rng, 2), 5)
    assert hnsw.packed_builds == 0  # only exhaustive inner-product indexes


def test_after_a_removal_the_scan_is_made_again_only_once_removals_pause(pair, monkeypatch):
    """A stream of updates (each a removal, which renumbers FAISS's positions) does not remake the scan after
    every one: only once none came for ``PACKED_QUIET_S``. FAISS answers meanwhile, with the same hits."""
    import time

    rng = np.random.default_rng(10)
    packed, _ = pair
    monkeypatch.setattr(faiss_index, "PACKED_QUIET_S", 0.3)
    _add(pair, _ids(0, 600), _unit(rng, 600))
    queries = _unit(rng, 3)
    _same(pair, queries, 10)
    assert packed.packed_builds == 1
    for key in range(5):
        for index in pair:
            index.remove_documents([key])
        _same(pair, queries, 10)
    assert packed.packed_builds == 1 and packed._packed.epoch != packed._epoch
    time.sleep(0.35)
    _same(pair, queries, 10)  # quiet long enough: made again (inline here)
    assert packed.packed_builds == 2 and packed._packed.epoch == packed._epoch
    _same(pair, queries, 10)


def test_searches_beside_writes_and_background_builds_stay_sound(pair):
    """Threads search while a writer appends and removes and the scan is made again in the background: no search
    fails, each returns ids the index held, best first; once the writer stops, the hits equal FAISS's."""
    rng = np.random.default_rng(11)
    packed, plain = pair
    packed.packed_scan_background = True
    _add(pair, _ids(0, 800), _unit(rng, 800))
    queries = _unit(rng, 4)
    ever = set(_ids(0, 2000).tolist())
    stop = threading.Event()
    problems = []

    def search():
        while not stop.is_set():
            try:
                scores, ids = packed.search(queries, 20)
                assert (ids >= 0).all() and set(ids.ravel().tolist()) <= ever
                assert (np.diff(scores, axis=1) <= 1e-6).all()
            except Exception as exc:  # noqa: BLE001 - reported below
                problems.append(exc)
                return

    threads = [threading.Thread(target=search) for _ in range(3)]
    for t in threads:
        t.start()
    for start in range(800, 2000, 100):
        _add(pair, _ids(start, 100), _unit(rng, 100))
        if start % 300 == 0:
            for index in pair:
                index.remove_documents(range(start - 700, start - 690))
    stop.set()
    for t in threads:
        t.join(30)
    assert not problems, problems[:3]
    for thread in threading.enumerate():
        if thread.name == "foveal-packed-scan":
            thread.join(30)
    packed.packed_scan_background = False
    _same(pair, queries, 20)
    _same(pair, queries, 20)
    scan = packed._packed
    assert scan is not None and scan.epoch == packed._epoch
    assert packed._main.ntotal - scan.covered <= faiss_index.PACKED_TAIL_ROWS  # the rest: the tail, scored directly
