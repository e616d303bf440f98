"""One contract for every backend of each seam: lexical (tantivy, Elasticsearch), vector (FAISS Flat, HNSW and IVF,
Elasticsearch Flat and HNSW), document store (SQLite, Elasticsearch), and a whole collection on each family.

The Elasticsearch cases run only when ``FOVEAL_ES_URL`` points to a server; otherwise they are skipped with that
reason (no server exists on the machines this project is developed on). Each ES case uses its own index prefix
and deletes its indexes afterwards.
"""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

from foveal.config import ElasticsearchConfig, IndexConfig, LexicalConfig, VectorConfig
from foveal.documents import parse_document
from foveal.index.base import LexicalDocument, passage_id
from foveal.index.sqlite_store import PreparedDocument
from foveal.registry import load_vector_index, make_docstore, make_lexical_index, make_vector_index
from tests.conftest import TINY_CORPUS

ES_URL = os.environ.get("FOVEAL_ES_URL")
_needs_es = [
    pytest.mark.es,
    pytest.mark.skipif(not ES_URL, reason="FOVEAL_ES_URL is not set: no Elasticsearch server to test against"),
]


#: ``elasticsearch`` runs against the server at FOVEAL_ES_URL; ``elasticsearch-fake`` against tests/index/fake_es.py
#: (an in-memory stand-in under the official client), which exercises the backend's code where no server exists.
ES_KINDS = ("elasticsearch", "elasticsearch-fake")


def _es(kind: str):
    return pytest.param(kind, marks=_needs_es, id=kind)


def _backend(kind: str) -> str:
    return "elasticsearch" if kind in ES_KINDS else kind


@pytest.fixture()
def es_for():
    """``es_for(kind)``: the ElasticsearchConfig for a case, with a fresh index prefix; for the fake, a client
    answered by an in-memory FakeElasticsearch. The case's ES indexes are deleted afterwards."""
    from foveal.index import es_backend

    made = []

    def make(kind: str) -> ElasticsearchConfig:
        prefix = f"foveal-test-{uuid.uuid4().hex[:10]}-"
        if kind == "elasticsearch-fake":
            from elasticsearch import Elasticsearch

            from tests.index.fake_es import FakeElasticsearch

            config = ElasticsearchConfig(url=f"http://fake-{prefix[:-1]}:9200", index_prefix=prefix)
            client = Elasticsearch(config.url, request_timeout=config.request_timeout)
            FakeElasticsearch().install(client)
            es_backend._clients[(config.url, config.request_timeout)] = client
        else:
            config = ElasticsearchConfig(index_prefix=prefix, request_timeout=30)
        made.append((kind, config))
        return config

    yield make
    for kind, config in made:
        if kind == "elasticsearch-fake":
            es_backend._clients.pop((config.url, config.request_timeout), None)
        elif ES_URL:  # by name: servers refuse wildcard deletes (action.destructive_requires_name)
            client = es_backend.client_for(config)
            names = list(client.indices.get(index=f"{config.index_prefix}*", allow_no_indices=True))
            if names:
                client.indices.delete(index=",".join(names), ignore_unavailable=True)


# -- lexical ----------------------------------------------------------------------------------------------------------
LEXICAL_DOCS = [
    LexicalDocument(1, "a", "Running shoes", "Shoes for runners who run on roads."),
    LexicalDocument(2, "b", "Cooking rice", "Rinse the rice, then simmer it covered."),
    LexicalDocument(3, "c", "The history of shoes", "People have worn sandals for millennia."),
]


@pytest.fixture(params=["tantivy", _es("elasticsearch"), "elasticsearch-fake"])
def open_lexical(request, tmp_path, es_for):
    """A function that opens (or reopens) the same lexical index."""
    config = LexicalConfig(backend=_backend(request.param))
    es_config = es_for(request.param) if request.param in ES_KINDS else None

    def opener():
        return make_lexical_index(tmp_path / "idx" / "lexical", config, es=es_config, name="contract")

    opener.es_config = es_config
    return opener


def _keys(hits):
    return [k for k, _ in hits]


def test_lexical_empty_index(open_lexical):
    index = open_lexical()
    assert len(index) == 0 and index.search("anything", 5) == []


def test_lexical_add_search_count(open_lexical):
    index = open_lexical()
    index.upsert(LEXICAL_DOCS)
    index.commit()
    assert len(index) == 3
    assert _keys(index.search("run", 5)) == [1]  # stemmed: running, runners, run
    assert set(_keys(index.search("shoes", 5))) == {1, 3}
    hits = index.search("shoes rice", 5)
    assert all(s > 0 for _, s in hits) and [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    assert index.search("the of and", 5) == []  # stop words only
    assert index.search('shoes AND ( title:"', 5)  # text, never query syntax
    assert index.analyze("The runners are running") == ["runner", "run"]


def test_lexical_upsert_replaces_and_remove_deletes(open_lexical):
    index = open_lexical()
    index.upsert(LEXICAL_DOCS)
    index.commit()
    index.upsert([LexicalDocument(2, "b", "Cooking pasta", "Boil water and salt it.")])
    index.commit()
    assert index.search("rice", 5) == [] and _keys(index.search("pasta", 5)) == [2] and len(index) == 3
    index.remove(["a", "unknown"])
    index.commit()
    assert len(index) == 2 and index.search("runner", 5) == []


def test_lexical_replay_is_idempotent(open_lexical):
    index = open_lexical()
    for _ in range(2):
        index.upsert(LEXICAL_DOCS)
        index.remove(["c"])
        index.upsert(LEXICAL_DOCS[2:])
        index.commit()
    assert len(index) == 3 and _keys(index.search("sandals", 5)) == [3]


def test_lexical_persists_across_reopen(open_lexical):
    index = open_lexical()
    index.upsert(LEXICAL_DOCS)
    index.commit()
    before = index.search("shoes", 5)
    reopened = open_lexical()
    assert len(reopened) == 3
    assert _keys(reopened.search("shoes", 5)) == _keys(before)
    assert np.allclose([s for _, s in reopened.search("shoes", 5)], [s for _, s in before], rtol=1e-5)


def test_lexical_title_boost(open_lexical, tmp_path, request):
    backend = _backend(request.node.callspec.params["open_lexical"])
    es_config = open_lexical.es_config
    docs = [LexicalDocument(1, "t", "rice", "a grain"), LexicalDocument(2, "x", "grain", "rice rice rice is here")]
    results = []
    for boost in (0.0, 10.0):
        cfg = LexicalConfig(backend=backend, title_boost=boost)
        idx = make_lexical_index(tmp_path / f"b{boost}" / "lexical", cfg, es=es_config, name=f"boost{int(boost)}")
        idx.upsert(docs)
        idx.commit()
        results.append(_keys(idx.search("rice", 2))[0])
    assert results == [2, 1]


# -- vectors ----------------------------------------------------------------------------------------------------------
DIM = 8


def test_lexical_allowed_filters_inside_the_query(open_lexical):
    index = open_lexical()
    index.upsert(LEXICAL_DOCS)
    index.commit()
    assert set(_keys(index.search("shoes", 5, allowed=[3, 2]))) == {3}
    assert _keys(index.search("shoes", 1, allowed={3})) == [3]  # k=1 still finds the allowed match (no post-filter)
    assert index.search("shoes", 5, allowed=[]) == [] and index.search("shoes", 5, allowed=[2]) == []
    assert set(_keys(index.search("shoes", 5, allowed=None))) == {1, 3}


def _unit(rng, n):
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(
    params=[
        ("faiss", "Flat"),
        ("faiss", "HNSW16"),
        ("faiss", "IVF2,Flat"),
        pytest.param(("elasticsearch", "Flat"), marks=_needs_es, id="elasticsearch-Flat"),
        pytest.param(("elasticsearch", "HNSW16"), marks=_needs_es, id="elasticsearch-HNSW16"),
        ("elasticsearch-fake", "HNSW16"),
    ],
    ids=lambda p: "-".join(p) if isinstance(p, tuple) else p,
)
def vector_setup(request, tmp_path, es_for):
    kind, factory = request.param
    es_config = es_for(kind) if kind in ES_KINDS else None
    config = VectorConfig(backend=_backend(kind), factory=factory, gpu="off")
    path = tmp_path / "vectors.npz"

    def make():
        return make_vector_index(DIM, config, es=es_config, name="contract")

    def reopen():
        return load_vector_index(path, DIM, config, es=es_config, name="contract")[0]

    return make, reopen, path


def _doc_vectors(rng, keys_and_counts):
    ids, vecs = [], []
    for key, count in keys_and_counts:
        ids.extend(passage_id(key, i) for i in range(count))
        vecs.append(_unit(rng, count))
    return np.array(ids, np.int64), np.concatenate(vecs)


def test_vector_empty_index(vector_setup):
    index = vector_setup[0]()
    scores, ids = index.search(np.ones((1, DIM), np.float32) / np.sqrt(DIM), 3)
    assert len(index) == 0 and ids.shape == (1, 3) and (ids == -1).all()


def test_vector_add_search_count(vector_setup):
    rng = np.random.default_rng(1)
    index = vector_setup[0]()
    ids, vecs = _doc_vectors(rng, [(1, 3), (2, 1), (3, 2), (4, 4)])
    index.add(ids, vecs)
    assert len(index) == 10
    scores, found = index.search(vecs[[0, 5]], 2)
    assert found[:, 0].tolist() == [ids[0], ids[5]]  # each vector finds itself first
    assert np.allclose(scores[:, 0], 1.0, atol=1e-3)  # inner product of unit vectors
    assert (scores[:, 0] >= scores[:, 1]).all()
    _, many = index.search(vecs[:1], 20)
    assert sorted(many[0][many[0] >= 0].tolist()) == sorted(ids.tolist()) and (many[0][10:] == -1).all()


def test_vector_allowed_returns_k_allowed_passages(vector_setup):
    rng = np.random.default_rng(2)
    index = vector_setup[0]()
    ids, vecs = _doc_vectors(rng, [(1, 3), (2, 1), (3, 2), (4, 4)])
    index.add(ids, vecs)
    allowed = np.array([passage_id(3, 0), passage_id(3, 1), passage_id(2, 0)], np.int64)
    scores, found = index.search(vecs[[0]], 2, allowed=allowed)  # the query is doc 1's own vector
    assert set(found[0].tolist()) <= set(allowed.tolist()) and (found[0] >= 0).all()  # k hits, all allowed
    assert scores[0, 0] >= scores[0, 1]
    _, own = index.search(vecs[[5]], 3, allowed=allowed)  # passage_id(3, 1) finds itself first
    assert own[0, 0] == passage_id(3, 1) and sorted(own[0].tolist()) == sorted(allowed.tolist())
    _, none = index.search(vecs[[0]], 2, allowed=np.zeros(0, np.int64))
    assert (none == -1).all()


@pytest.mark.parametrize("share", [0.01, 0.5])
def test_vector_filter_over_thousands_of_passages_returns_k(vector_setup, share):
    """Issue 10 finding 3: selective (1 %) and broad (50 %) allow-lists over 2,000 passages of long documents."""
    rng = np.random.default_rng(3)
    index = vector_setup[0]()
    ids, vecs = _doc_vectors(rng, [(key, 40) for key in range(1, 51)])  # 50 documents of 40 passages
    index.add(ids, vecs)
    allowed = ids[rng.random(len(ids)) < share]
    k = 15
    scores, found = index.search(vecs[:2], k, allowed=allowed)
    assert (found >= 0).sum(axis=1).tolist() == [k, k]
    assert set(found.ravel().tolist()) <= set(allowed.tolist())
    exact = allowed[np.argsort(-(vecs[np.isin(ids, allowed)] @ vecs[0]), kind="stable")[:k]]
    if share < 0.05:  # selective: searched exactly on every backend
        assert found[0].tolist() == exact.tolist()


def test_es_knn_filter_sizes_num_candidates(es_for):
    """A selective kNN filter asks ES for at least as many candidates as the filter allows, which makes Lucene
    score the allowed vectors exactly (the fake has no approximation, so the request is what is checked)."""
    from foveal.index import es_backend

    config = es_for("elasticsearch-fake")
    index = make_vector_index(DIM, VectorConfig(backend="elasticsearch", factory="HNSW16", gpu="off"), es=config,
                              name="knn")
    rng = np.random.default_rng(4)
    ids, vecs = _doc_vectors(rng, [(key, 10) for key in range(1, 101)])
    index.add(ids, vecs)
    client = es_backend.client_for(config)
    sent = []
    original = client.search

    def recording(**kwargs):
        sent.append(kwargs.get("knn"))
        return original(**kwargs)

    client.search = recording
    try:
        allowed = ids[::2][:400]
        _, found = index.search(vecs[:1], 5, allowed=allowed)
    finally:
        client.search = original
    assert (found >= 0).all()
    assert sent[-1]["k"] == 5 and sent[-1]["num_candidates"] >= 400


def test_vector_remove_and_replace_documents(vector_setup):
    rng = np.random.default_rng(2)
    index = vector_setup[0]()
    ids, vecs = _doc_vectors(rng, [(1, 3), (2, 2), (3, 1)])
    index.add(ids, vecs)
    index.remove_documents([1, 99])  # unknown keys are a no-op
    assert len(index) == 3
    _, found = index.search(vecs[:1], 6)
    assert not any((f >> 14) == 1 for f in found[0] if f >= 0)
    # upsert of document 2 as one passage: remove its passages, add the new one (what replay does)
    new_ids, new_vecs = _doc_vectors(rng, [(2, 1)])
    index.remove_documents([2])
    index.add(new_ids, new_vecs)
    assert len(index) == 2
    _, found = index.search(new_vecs, 1)
    assert found[0, 0] == passage_id(2, 0)


def test_vector_replay_is_idempotent(vector_setup):
    rng = np.random.default_rng(3)
    index = vector_setup[0]()
    ids, vecs = _doc_vectors(rng, [(1, 2), (2, 2)])
    for _ in range(3):
        index.remove_documents([1, 2])
        index.add(ids, vecs)
    assert len(index) == 4


def test_vector_persists_across_reopen(vector_setup):
    make, reopen, path = vector_setup
    rng = np.random.default_rng(4)
    index = make()
    ids, vecs = _doc_vectors(rng, [(1, 2), (2, 3)])
    index.add(ids, vecs)
    index.remove_documents([1])
    index.save(path, seq=17)
    reopened, header = load_vector_index(path, DIM, VectorConfig(backend=_backend_of(index), factory=index.factory,
                                                                 gpu="off"), es=getattr(index, "es", None),
                                         name="contract")
    assert header["seq"] == 17 and len(reopened) == 3
    _, found = reopened.search(vecs[2:3], 1)
    assert found[0, 0] == ids[2]


def _backend_of(index) -> str:
    return "elasticsearch" if getattr(index, "shared", False) else "faiss"


# -- document store ---------------------------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", _es("elasticsearch"), "elasticsearch-fake"])
def open_store(request, tmp_path, es_for):
    config = IndexConfig.parse({"docstore": {"backend": _backend(request.param)}})
    es_config = es_for(request.param) if request.param in ES_KINDS else None
    stores = []

    def opener():
        store = make_docstore(tmp_path / "docs.sqlite", config.docstore, es=es_config, name="contract")
        stores.append(store)
        return store

    yield opener
    for store in stores:
        store.close()


def _prepared(doc_id, text, passages=1, seed=0):
    doc = parse_document({"_id": doc_id, "title": doc_id.title(), "text": text, "metadata": {"n": passages}})
    spans = [(0, len(doc.full_text))] * passages
    return PreparedDocument(doc, spans, _unit(np.random.default_rng(seed), passages), n_tokens=5 * passages)


def test_store_empty(open_store):
    store = open_store()
    assert store.count() == 0 and store.passage_count() == 0 and store.max_seq() == 0
    assert list(store.changes_since(0)) == [] and store.get_by_id("x") is None and store.hashes(["x"]) == {}
    assert list(store.iter_vectors()) == [] and len(store.vectors_of([1])[0]) == 0


def test_store_write_read_count(open_store):
    store = open_store()
    docs = [_prepared("a", "alpha", 2, 1), _prepared("b", "beta", 1, 2)]
    keys = store.write(docs)
    assert set(keys) == {"a", "b"} and len(set(keys.values())) == 2
    assert store.count() == 2 and store.passage_count() == 3
    a = store.get_by_id("a")
    span = (0, len(docs[0].document.full_text))
    assert (a.id, a.text, a.metadata, a.n_tokens, a.passages) == ("a", "alpha", {"n": 2}, 10, [span, span])
    assert store.hashes(["a", "zzz"]) == {"a": (keys["a"], docs[0].document.content_hash)}
    assert set(store.get_documents([keys["a"], keys["b"], 12345])) == {keys["a"], keys["b"]}
    ids, vecs = store.vectors_of([keys["a"]])
    assert ids.tolist() == [passage_id(keys["a"], 0), passage_id(keys["a"], 1)]
    assert np.allclose(vecs, docs[0].vectors)
    all_ids = np.concatenate([i for i, _ in store.iter_vectors()])
    assert sorted(all_ids.tolist()) == sorted([passage_id(keys["a"], 0), passage_id(keys["a"], 1),
                                               passage_id(keys["b"], 0)])


def test_store_filter_keys_and_passage_ids(open_store):
    store = open_store()

    def doc(doc_id, metadata, timestamp=None, passages=1):
        parsed = parse_document({"_id": doc_id, "text": doc_id, "metadata": metadata, "timestamp": timestamp})
        spans = [(0, len(parsed.full_text))] * passages
        return PreparedDocument(parsed, spans, _unit(np.random.default_rng(0), passages), n_tokens=1)

    keys = store.write([
        doc("a", {"flag": True, "n": 1, "s": "x"}, 100, passages=2),
        doc("b", {"flag": 1, "n": "1", "s": "y"}, 200),
        doc("c", {"flag": False, "n": 1.0}, None, passages=3),
        doc("d", {"s": "x"}, 300),
    ])
    store.write([], deletes=["d"])
    a, b, c = keys["a"], keys["b"], keys["c"]
    assert store.filter_keys() == {a, b, c}
    assert store.filter_keys(ids=["a", "c", "d", "zzz"]) == {a, c} and store.filter_keys(ids=[]) == set()
    assert store.filter_keys(metadata={"flag": True}) == {a}  # a bool matches only bools
    assert store.filter_keys(metadata={"flag": 1}) == {b}  # a number only numbers
    assert store.filter_keys(metadata={"n": 1}) == {a, c} and store.filter_keys(metadata={"n": "1"}) == {b}
    assert store.filter_keys(metadata={"s": ["x", "y"]}) == {a, b}  # a list is any-of
    assert store.filter_keys(metadata={"s": "x", "n": 1}) == {a} and store.filter_keys(metadata={"nope": 1}) == set()
    assert store.filter_keys(time_bounds={"gte": 100, "lt": 200}) == {a}  # no timestamp: never in a range
    assert store.filter_keys(time_bounds={"gt": 100}) == {b} and store.filter_keys(time_bounds={"lte": 200}) == {a, b}
    assert store.filter_keys(ids=["a", "b"], metadata={"s": "y"}, time_bounds={"gte": 0}) == {b}
    assert sorted(store.passage_ids_of([a, c, 12345]).tolist()) == sorted(
        [passage_id(a, 0), passage_id(a, 1)] + [passage_id(c, i) for i in range(3)])
    assert len(store.passage_ids_of([])) == 0


def test_store_filter_ranges_and_exists(open_store):
    """Metadata ranges (numbers; ISO dates against date text) and exists, typed as equality is."""
    store = open_store()

    def doc(doc_id, metadata):
        parsed = parse_document({"_id": doc_id, "text": doc_id, "metadata": metadata})
        return PreparedDocument(parsed, [(0, len(parsed.full_text))], _unit(np.random.default_rng(0), 1), n_tokens=1)

    keys = store.write([
        doc("a", {"year": 2019, "day": "2024-03-01", "note": None}),
        doc("b", {"year": 2021.5, "day": "2024-06-01T12:00:00Z"}),
        doc("c", {"year": "2020", "day": "not a date", "tags": ["x"]}),
        doc("d", {"year": True}),
    ])
    a, b, c, d = (keys[k] for k in "abcd")
    rng = lambda dates=False, **bounds: {"range": bounds, "dates": dates}  # noqa: E731
    assert store.filter_keys(metadata={"year": rng(gte=2019)}) == {a, b}  # text "2020" and True are no numbers
    assert store.filter_keys(metadata={"year": rng(gt=2019, lt=2022)}) == {b}
    assert store.filter_keys(metadata={"year": rng(lte=2019)}) == {a}
    may = 1714521600.0  # 2024-05-01T00:00:00Z
    assert store.filter_keys(metadata={"day": rng(True, gte=may)}) == {b}
    assert store.filter_keys(metadata={"day": rng(True, lt=may)}) == {a}
    assert store.filter_keys(metadata={"note": {"exists": True}}) == {a}  # null is present
    assert store.filter_keys(metadata={"tags": {"exists": True}}) == {c}
    assert store.filter_keys(metadata={"day": {"exists": False}}) == {d}
    assert store.filter_keys(metadata={"year": rng(gte=2000), "note": {"exists": False}}) == {b}
    store.write([doc("b", {"year": 1990})])  # an update replaces the indexed fields
    store.write([], deletes=["a"])
    assert store.filter_keys(metadata={"year": rng(gte=2000)}) == set()
    assert store.filter_keys(metadata={"year": 1990}) == {b}
    assert store.filter_keys(metadata={"day": {"exists": True}}) == {c}


def test_store_upsert_keeps_the_key_and_delete_logs(open_store):
    store = open_store()
    first = store.write([_prepared("a", "alpha"), _prepared("b", "beta")])
    seq_after_first = store.max_seq()
    assert seq_after_first > 0
    again = store.write([_prepared("a", "alpha two", 3, 5)])
    assert again == {"a": first["a"]} and store.get_by_id("a").text == "alpha two"
    assert store.passage_count() == 4 and len(store.vectors_of([first["a"]])[0]) == 3
    store.write([], ["b", "never-there"])
    assert store.get_by_id("b") is None and store.count() == 1 and store.hashes(["b"]) == {}
    assert len(store.vectors_of([first["b"]])[0]) == 0
    changes = list(store.changes_since(seq_after_first))
    assert store.max_seq() > seq_after_first
    assert all(seq_after_first < c.seq <= store.max_seq() for c in changes)
    last = {c.id: (c.op, c.doc_key) for c in changes}  # the latest change of each document after that point
    assert last == {"a": ("upsert", first["a"]), "b": ("delete", first["b"])}
    assert {c.id for c in store.changes_since(0)} == {"a", "b"}
    assert list(store.changes_since(store.max_seq())) == []


def test_store_keys_are_never_given_to_another_document(open_store):
    store = open_store()
    a = store.write([_prepared("a", "x")])["a"]
    store.write([], ["a"])
    b = store.write([_prepared("b", "y")])["b"]
    assert b != a


def test_store_persists_across_reopen(open_store):
    store = open_store()
    keys = store.write([_prepared("a", "alpha", 2), _prepared("b", "beta")])
    seq = store.max_seq()
    store.close()
    reopened = open_store()
    assert reopened.count() == 2 and reopened.max_seq() == seq and reopened.get_by_id("b").text == "beta"
    assert reopened.write([_prepared("c", "gamma")])["c"] not in keys.values()


# -- a whole collection on each family of backends ---------------------------------------------------------------------
@pytest.fixture(params=["local", _es("elasticsearch"), "elasticsearch-fake"])
def collection_config(request, es_for):
    if request.param == "local":
        return IndexConfig()
    es_config = es_for(request.param)
    backends = {"backend": "elasticsearch"}
    return IndexConfig.parse({"vector": {**backends, "factory": "HNSW16"}, "lexical": backends,
                              "docstore": backends, "elasticsearch": es_config.model_dump()})


def test_collection_contract(engine, collection_config):
    from foveal.index.collection import Collection
    from foveal.pipeline.request import SearchRequest

    collection = engine.create_index("contract", collection_config)
    docs = [parse_document(d) for d in TINY_CORPUS]
    assert len(collection.upsert(docs).added) == len(docs)
    assert len(collection.upsert(docs).unchanged) == len(docs)  # replay of the same batch changes nothing
    for pipeline in ("bm25", "dense", "hybrid"):
        hits = engine.search("contract", SearchRequest(query="moon and sea tides", k=3, pipeline=pipeline)).hits
        assert hits[0].id == "tides", pipeline
    collection.upsert([parse_document(dict(TINY_CORPUS[0], text="The sun also pulls on the oceans."))])
    collection.delete(["chess"])
    hits = engine.search("contract", SearchRequest(query="sicilian defence chess", k=10, pipeline="bm25")).hits
    assert "chess" not in [h.id for h in hits]
    collection.close()
    reopened = Collection.open(collection.path, "contract")
    stats = reopened.stats()
    assert stats["documents"] == len(docs) - 1 and stats["vectors"] == stats["passages"]
    assert stats["lexical_documents"] == len(docs) - 1
    assert reopened.get("tides").text == "The sun also pulls on the oceans."
    assert [k for k, _ in reopened.lexical.search("sun", 5)] == [reopened.get("tides").doc_key]
    reopened.close()


def test_collection_filtered_search(engine, collection_config):
    from foveal.pipeline.request import SearchRequest

    collection = engine.create_index("filtered", collection_config)
    collection.upsert([parse_document(d) for d in TINY_CORPUS])
    for pipeline in ("bm25", "dense", "hybrid"):
        request = SearchRequest(query="rises", k=1, pipeline=pipeline, filter={"metadata": {"topic": "science"}})
        assert [h.id for h in engine.search("filtered", request).hits] == ["volcano"], pipeline
        request = SearchRequest(query="moon tides", k=5, pipeline=pipeline, filter={"ids": ["bread", "coffee"]})
        assert {h.id for h in engine.search("filtered", request).hits} <= {"bread", "coffee"}, pipeline
        request = SearchRequest(query="moon tides", k=5, pipeline=pipeline,
                                filter={"timestamp": {"gte": "2024-01-01"}})
        assert [h.id for h in engine.search("filtered", request).hits] == ["tides"], pipeline
    collection.close()


# -- what only the Elasticsearch document store has to prove (no transactions) ----------------------------------------
@pytest.fixture(params=[_es("elasticsearch"), "elasticsearch-fake"])
def es_store(request, tmp_path, es_for):
    config = IndexConfig.parse({"docstore": {"backend": "elasticsearch"}})
    return make_docstore(tmp_path / "docs.sqlite", config.docstore, es=es_for(request.param), name="contract")


def test_es_store_writer_dying_mid_batch_is_healed_by_the_next_writer(es_store, monkeypatch):
    es_store.write([_prepared("a", "alpha")])
    head = es_store.max_seq()
    real_put = es_store._put_counters
    calls = []

    def dies_before_publishing(counters, token):
        calls.append(counters)
        if len(calls) == 2:  # the reservation went through, the documents were written; publishing fails
            raise RuntimeError("process died")
        return real_put(counters, token)

    monkeypatch.setattr(es_store, "_put_counters", dies_before_publishing)
    with pytest.raises(RuntimeError):
        es_store.write([_prepared("orphan", "written, never published")])
    monkeypatch.setattr(es_store, "_put_counters", real_put)
    assert es_store.max_seq() == head and list(es_store.changes_since(head)) == []  # readers never see half a batch
    keys = es_store.write([_prepared("b", "beta")])
    changes = {c.id for c in es_store.changes_since(head)}
    assert changes == {"orphan", "b"}  # the next writer published past the orphan, so replay reaches it
    assert keys["b"] != es_store.get_by_id("orphan").doc_key  # reserved keys are not handed out twice


def test_es_store_refuses_a_concurrent_writer(es_store, monkeypatch):
    from foveal.errors import IndexLockedError

    es_store.write([_prepared("a", "alpha")])
    stale = es_store._counters()  # what this writer read ...
    other = make_docstore(None, IndexConfig.parse({"docstore": {"backend": "elasticsearch"}}).docstore,
                          es=es_store.es, name="contract")
    other.write([_prepared("b", "beta")])  # ... before another writer advanced the counters
    monkeypatch.setattr(es_store, "_counters", lambda: stale)
    with pytest.raises(IndexLockedError):
        es_store.write([_prepared("c", "gamma")])
    assert es_store.get_by_id("c") is None and other.get_by_id("b").text == "beta"


@pytest.fixture(params=[_es("elasticsearch"), "elasticsearch-fake"])
def es_collection_config(request, es_for):
    backends = {"backend": "elasticsearch"}
    return IndexConfig.parse({"vector": {**backends, "factory": "HNSW16"}, "lexical": backends,
                              "docstore": backends, "elasticsearch": es_for(request.param).model_dump()})


def test_es_collection_reader_follows_without_writing(engine, es_collection_config, monkeypatch):
    from foveal.index.collection import Collection

    writer = engine.create_index("shared", es_collection_config)
    reader = Collection.open(writer.path, "shared")

    def no_writes(*_args, **_kwargs):
        raise AssertionError("a reader wrote to the shared server-side index")

    for method in ("add", "remove_documents"):
        monkeypatch.setattr(reader.vectors, method, no_writes)
    for method in ("upsert", "remove"):
        monkeypatch.setattr(reader.lexical, method, no_writes)
    writer.upsert([parse_document(d) for d in TINY_CORPUS[:3]])
    reader.refresh()
    key = reader.get("bread").doc_key
    assert [k for k, _ in reader.lexical.search("yeast dough", 3)][0] == key
    ids, vectors = reader.store.vectors_of([key])
    assert reader.vectors.search(vectors[:1], 1)[1][0, 0] == ids[0]
    reader.close()
    writer.close()


def test_es_deleting_the_index_deletes_its_server_indexes(engine, es_collection_config):
    from foveal.index.es_backend import client_for, index_names

    collection = engine.create_index("doomed", es_collection_config)
    collection.upsert([parse_document(TINY_CORPUS[0])])
    client = client_for(es_collection_config.elasticsearch)
    names = list(index_names(es_collection_config.elasticsearch.index_prefix, "doomed").values())
    assert all(client.indices.exists(index=n) for n in names)
    engine.delete_index("doomed")
    assert not any(client.indices.exists(index=n) for n in names)
    again = engine.create_index("doomed", es_collection_config)  # a new index of that name starts empty
    assert again.store.count() == 0 and len(again.vectors) == 0 and len(again.lexical) == 0
