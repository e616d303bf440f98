import numpy as np
import pytest

from foveal.errors import ConfigError
from foveal.index.base import PASSAGE_BITS, doc_key_of, passage_id, passage_ordinal
from foveal.index.faiss_index import FaissVectorIndex

DIM = 16


def _data(n_docs, passages=2, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.array([passage_id(d, p) for d in range(1, n_docs + 1) for p in range(passages)], dtype=np.int64)
    vectors = rng.normal(size=(len(ids), DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return ids, vectors


def test_passage_ids_round_trip():
    pid = passage_id(12345, 17)
    assert doc_key_of(pid) == 12345 and passage_ordinal(pid) == 17 and pid >> PASSAGE_BITS == 12345


@pytest.mark.parametrize("factory", ["Flat", "HNSW16", "IVF4,Flat", "IVF4,PQ4"])
def test_add_search_remove_save_load(factory, tmp_path):
    ids, vectors = _data(60)
    index = FaissVectorIndex(DIM, factory, gpu="off", nprobe=4)
    index.add(ids, vectors)
    assert len(index) == len(ids)
    scores, found = index.search(vectors[:5], 3)
    exact = factory in ("Flat", "HNSW16", "IVF4,Flat")
    if exact:  # a vector finds itself first
        assert found[:, 0].tolist() == ids[:5].tolist()
        np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-4)
    # remove documents 1 and 2 (all their passages)
    index.remove_documents([1, 2])
    assert len(index) == len(ids) - 4
    _, found = index.search(vectors[:4], 10)
    assert not ({doc_key_of(i) for i in found.ravel().tolist() if i >= 0} & {1, 2})
    # upsert: re-add document 1
    index.add(ids[:2], vectors[:2])
    if exact:
        assert index.search(vectors[:1], 1)[1][0, 0] == ids[0]
    path = tmp_path / "v.npz"
    index.save(path, seq=7)
    loaded, header = FaissVectorIndex.load(path, DIM, factory, gpu="off", nprobe=4)
    assert header["seq"] == 7 and len(loaded) == len(index)
    np.testing.assert_array_equal(loaded.search(vectors[:8], 5)[1], index.search(vectors[:8], 5)[1])


def test_trainable_index_is_exact_until_trained_then_trains():
    index = FaissVectorIndex(DIM, "IVF2,Flat", gpu="off", nprobe=2)
    ids, vectors = _data(20)  # 40 vectors < 2 * 39 needed to train
    index.add(ids, vectors)
    assert not index._main.is_trained and index._buffer.ntotal == 40
    assert index.search(vectors[:3], 1)[1][:, 0].tolist() == ids[:3].tolist()
    more_ids, more = _data(30, seed=1)
    index.add(more_ids + (100 << PASSAGE_BITS), more)
    assert index._main.is_trained and index._buffer.ntotal == 0 and len(index) == 100


def test_empty_index_returns_minus_one():
    index = FaissVectorIndex(DIM, "Flat", gpu="off")
    scores, ids = index.search(np.ones((2, DIM), np.float32), 3)
    assert ids.shape == (2, 3) and (ids == -1).all()


def test_fewer_results_than_k_are_padded():
    index = FaissVectorIndex(DIM, "Flat", gpu="off")
    ids, vectors = _data(1)
    index.add(ids, vectors)
    _, found = index.search(vectors[:1], 5)
    assert found[0, :2].tolist() != [-1, -1] and (found[0, 2:] == -1).all()


def test_bad_factory_is_a_config_error():
    with pytest.raises(ConfigError, match="factory"):
        FaissVectorIndex(DIM, "NotAnIndex")


def test_wrong_shape_is_refused():
    index = FaissVectorIndex(DIM, "Flat", gpu="off")
    with pytest.raises(ValueError, match="shape"):
        index.add(np.array([1]), np.ones((1, DIM + 1), np.float32))


def test_ids_are_right_after_removing_and_adding_as_many():
    """Flat renumbers positions on removal; the cached position -> id map was keyed by the vector count only, so
    removing n vectors and adding n others between two searches answered with the ids of before."""
    index = FaissVectorIndex(DIM, "Flat", gpu="off")
    ids, vectors = _data(20)
    index.add(ids, vectors)
    assert index.search(vectors[15:16], 1)[1][0, 0] == ids[15]
    index.remove_documents(range(1, 6))  # documents 1-5: 10 vectors
    more_ids, more = _data(5, seed=3)  # 10 vectors
    index.add(more_ids + (1000 << PASSAGE_BITS), more)
    assert index.search(vectors[15:16], 1)[1][0, 0] == ids[15]


def test_flat_searches_go_through_blas():
    """This FAISS build ships ``distance_compute_blas_threshold = 128000``: every exhaustive search scanned one
    query at a time (a micro-batch of 32 over 100k vectors: 200 ms against 31 ms through BLAS). Importing the
    index sets it back, and a batch's scores agree with single searches to float32 rounding."""
    import faiss

    from foveal.index import faiss_index

    assert faiss.cvar.distance_compute_blas_threshold == faiss_index.BLAS_THRESHOLD <= 2
    rng = np.random.default_rng(3)
    index = faiss_index.FaissVectorIndex(16, "Flat", gpu="off")
    vectors = rng.standard_normal((300, 16)).astype(np.float32)
    index.add(np.arange(300, dtype=np.int64) << 14, vectors)
    queries = rng.standard_normal((8, 16)).astype(np.float32)
    batch_scores, batch_ids = index.search(queries, 5)
    for row, query in enumerate(queries):
        scores, ids = index.search(query[None, :], 5)
        assert ids[0].tolist() == batch_ids[row].tolist()
        assert np.allclose(scores[0], batch_scores[row], atol=1e-4)


@pytest.mark.parametrize("factory", ["Flat", "HNSW16", "IVF4,Flat"])
def test_vectors_hands_back_what_a_search_scores_live_vectors_only(factory):
    """``vectors(ids)`` (what the Rocchio pass rescores with): the stored vector of each id a search can return,
    nothing for a removed document, and a re-added document's new vector, never its tombstoned one."""
    ids, vectors = _data(60)
    index = FaissVectorIndex(DIM, factory, gpu="off", nprobe=4)
    index.add(ids, vectors)
    got, held = index.vectors(ids[[5, 0, 7]])
    assert held.all()
    np.testing.assert_allclose(got, vectors[[5, 0, 7]], atol=1e-6)
    scores, found = index.search(vectors[9:10], 4)
    stored, _ = index.vectors(found[0])
    np.testing.assert_allclose(stored @ vectors[9], scores[0], atol=1e-5)  # the search's own scores
    index.remove_documents([1])  # ids 0 and 1
    got, held = index.vectors(ids[[0, 1, 2]])
    assert held.tolist() == [False, False, True] and not got[:2].any()
    replaced = -vectors[:2]
    index.add(ids[:2], replaced)  # document 1 again, with other vectors
    got, held = index.vectors(ids[:2])
    assert held.all()
    np.testing.assert_allclose(got, replaced, atol=1e-6)
    assert not index.vectors(np.array([passage_id(999, 0)], np.int64))[1].any()


def test_vectors_of_an_untrained_index_come_from_its_buffer():
    index = FaissVectorIndex(DIM, "IVF2,Flat", gpu="off", nprobe=2)
    ids, vectors = _data(10)
    index.add(ids, vectors)
    assert index._buffer.ntotal == 20 and not index._main.ntotal
    got, held = index.vectors(ids[::-1])
    assert held.all()
    np.testing.assert_allclose(got, vectors[::-1], atol=1e-6)
