"""Paging is correct up to ``k + offset`` on every pipeline, and stable (issue 10, finding 2).

1,500 documents carry precomputed random unit vectors and random words from a small vocabulary, so no model
encodes documents (queries still go through the session's encoder) and BM25 matches most of the corpus.
"""

import random

import numpy as np
import pytest

from foveal.documents import parse_document
from foveal.pipeline.request import SearchRequest
from foveal.pipeline.search import SearchPipeline
from foveal.rerank.base import Candidate

N_DOCS = 1500
VOCAB = [f"word{i}" for i in range(40)]
QUERY = "word1 word2 word3 word4 word5 word6"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, encoder):
    from foveal.engine import Engine

    engine = Engine(tmp_path_factory.mktemp("paging"))
    rng = np.random.default_rng(3)
    words = random.Random(3)
    vectors = rng.normal(size=(N_DOCS, encoder.dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    documents = []
    for i in range(N_DOCS):
        # a few exact duplicates, so BM25 ties are exercised
        text = "word1 word2" if i % 97 == 0 else " ".join(words.choice(VOCAB) for _ in range(12))
        documents.append(parse_document({"_id": f"d{i:04d}", "text": text, "vector": vectors[i].tolist(),
                                         "metadata": {"even": i % 2 == 0}}))
    collection = engine.create_index("paging")
    for start in range(0, N_DOCS, 500):
        collection.upsert(documents[start : start + 500])
    collection.flush()
    yield collection
    engine.close()


class ByKeyReranker:
    """A stand-in rerank stage: rescored by a hash of the doc key, over its own window (as the real one does)."""

    name = "by_key"

    def rerank(self, request, candidates, collection):
        head, tail = list(candidates[:30]), list(candidates[30:])
        head.sort(key=lambda c: -((c.doc_key * 2654435761) % 1000))
        floor = min((c.score for c in head), default=0.0)
        return [Candidate(c.doc_key, 1000.0 - i, c.evidence, c.passage) for i, c in enumerate(head)] + [
            Candidate(c.doc_key, min(c.score, floor) - 1, c.evidence, c.passage) for c in tail
        ]


def _ids(searcher, **kwargs):
    return [h.id for h in searcher.search(SearchRequest(query=QUERY, **kwargs)).hits]


@pytest.mark.parametrize("rerank", [False, True])
@pytest.mark.parametrize("pipeline", ["bm25", "dense", "hybrid"])
def test_pages_concatenate_to_one_request(corpus, pipeline, rerank):
    searcher = SearchPipeline(corpus, rerankers=[ByKeyReranker()] if rerank else [])
    whole = _ids(searcher, k=1000, pipeline=pipeline)
    if pipeline == "bm25":
        matching = len(corpus.lexical.search(QUERY, 10_000))
        assert len(whole) == min(1000, matching) and matching > 1000
    else:
        assert len(whole) == 1000
    assert len(set(whole)) == len(whole)
    pages = []
    for offset in range(0, 1000, 100):
        pages += _ids(searcher, k=100, offset=offset, pipeline=pipeline)
    assert pages == whole
    assert _ids(searcher, k=100, offset=900, pipeline=pipeline) == whole[900:1000]


def test_hybrid_reaches_past_the_fusion_window(corpus):
    searcher = SearchPipeline(corpus, rerankers=[])
    response = searcher.search(SearchRequest(query=QUERY, k=1000, fusion={"window": 50}))
    assert len(response.hits) == 1000
    assert [h.rank for h in response.hits] == list(range(1, 1001))
    scores = [h.score for h in response.hits]
    assert scores == sorted(scores, reverse=True)
    small = _ids(searcher, k=50, fusion={"window": 50})
    assert small == [h.id for h in response.hits[:50]]


def test_filtered_pages_are_stable(corpus):
    searcher = SearchPipeline(corpus, rerankers=[])
    flt = {"metadata": {"even": True}}
    whole = _ids(searcher, k=700, filter=flt)
    assert len(whole) == 700 and all(int(i[1:]) % 2 == 0 for i in whole)
    pages = []
    for offset in range(0, 700, 70):
        pages += _ids(searcher, k=70, offset=offset, filter=flt)
    assert pages == whole


class _Store:
    def __init__(self, pids):
        self.pids = pids

    def passage_ids_of(self, keys):
        keys = set(keys)
        return np.array([p for p in self.pids if (p >> 14) in keys], dtype=np.int64)


class _Collection:
    def __init__(self, vectors, pids):
        self.vectors, self.store = vectors, _Store(pids)


@pytest.mark.parametrize("factory", ["Flat", "HNSW16"])
@pytest.mark.parametrize("filtered", [False, True])
def test_maxp_keeps_fetching_until_enough_documents(factory, filtered):
    """20 long documents of 300 passages all near the query crowd the first 4 x depth passages."""
    from foveal.index.faiss_index import FaissVectorIndex

    rng = np.random.default_rng(1)
    dim = 16
    query = np.zeros(dim, np.float32)
    query[0] = 1.0
    index = FaissVectorIndex(dim, factory)
    pids = []
    vectors = []
    for key in range(1, 21):  # long documents, very close to the query
        for ordinal in range(300):
            v = query + 0.05 * rng.normal(size=dim)
            vectors.append(v / np.linalg.norm(v))
            pids.append((key << 14) | ordinal)
    for key in range(100, 600):  # short documents, farther
        v = rng.normal(size=dim)
        vectors.append(v / np.linalg.norm(v))
        pids.append(key << 14)
    index.add(np.array(pids, np.int64), np.array(vectors, np.float32))
    searcher = SearchPipeline(_Collection(index, pids), rerankers=[])
    allowed = set(range(1, 21)) | set(range(100, 600, 3)) if filtered else None
    ranked, passages = searcher._dense(query, 60, allowed)
    keys = [k for k, _ in ranked]
    assert len(keys) == 60 and len(set(keys)) == 60
    assert set(range(1, 21)) <= set(keys)
    if filtered:
        assert set(keys) <= allowed
    scores = [s for _, s in ranked]
    assert scores == sorted(scores, reverse=True)
