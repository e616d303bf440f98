"""A filtered HNSW search after a removal returns only allowed, live vectors."""

import numpy as np

from foveal.index.faiss_index import FaissVectorIndex


def test_hnsw_allow_list_holds_after_a_removal():
    rng = np.random.default_rng(0)
    index = FaissVectorIndex(dimension=8, factory="HNSW16")
    vectors = rng.normal(size=(6, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.array([(key << 14) for key in range(1, 7)], dtype=np.int64)
    index.add(ids, vectors)
    index.remove_documents([6])
    allowed = ids[:2]
    _, found = index.search(vectors[:1], 5, allowed=allowed)
    hits = {int(i) for i in found[0] if i >= 0}
    assert hits and hits <= set(allowed.tolist())
