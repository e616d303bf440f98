"""Repeated updates of an HNSW index through a Collection keep the FAISS index bounded (issue 10, bounded growth):
removed vectors were only tombstoned, so every update grew the index for good."""

import numpy as np

from foveal.documents import parse_document
from foveal.pipeline.request import SearchRequest
from foveal.pipeline.search import SearchPipeline


def test_upserts_and_deletes_keep_hnsw_bounded(engine, tmp_path):
    collection = engine.create_index("churn", {"vector": {"factory": "HNSW16", "gpu": "off"}})
    rng = np.random.default_rng(0)
    dim = collection.dimension
    n = 300

    def docs(keys):
        vectors = rng.normal(size=(len(keys), dim))
        return [parse_document({"_id": f"d{k}", "text": f"doc {k}", "vector": v.tolist()})
                for k, v in zip(keys, vectors)]

    latest = {d.id: d for d in docs(range(n))}
    collection.upsert(list(latest.values()))
    for round_ in range(12):
        changed = rng.choice(n, 60, replace=False).tolist()
        collection.delete([f"d{k}" for k in changed[:20]])
        for d in docs(changed[:20]) + docs(changed[20:]):
            latest[d.id] = d
        collection.upsert([latest[f"d{k}"] for k in changed])
        stored = collection.vectors._main.ntotal + collection.vectors._buffer.ntotal
        assert stored <= n * 1.2 + 60, round_  # compact_fraction is 0.2
        assert len(collection.vectors) == n
    assert collection.vectors.compactions > 0
    collection.flush()
    searcher = SearchPipeline(collection, rerankers=[])
    vectors = np.array([latest[f"d{k}"].vector for k in range(5)], np.float32)
    for k in range(5):
        vector = vectors[k] / np.linalg.norm(vectors[k])
        response = searcher._search_one(SearchRequest(query="x", k=1, pipeline="dense"), vector, None)
        assert response.hits[0].id == f"d{k}"
