"""Values that cannot break an index: out-of-range timestamps, vectors float32 cannot hold, NaN and infinities.

Before, ``timestamp: 1e300`` (or ``-1e15``, or ``9999-12-31T23:59:59-05:00``, which is year 10000 in UTC) was
accepted, and then the document's GET and every hybrid search over the index answered 500; a ``1e39`` component
passed the finiteness check in float64 and was indexed as NaN; a NaN fusion weight ranked by NaN.
"""

from __future__ import annotations


import numpy as np
import pytest
from fastapi.testclient import TestClient

from foveal.service.settings import ServiceSettings

from tests.service.helpers import wait_done as _wait

DIM = 384  # the default encoder's


def _vector(head: list[float], fill: float = 0.1) -> list[float]:
    return head + [fill] * (DIM - len(head))


BAD_DOCUMENTS = [
    ({"_id": "t-huge", "text": "ledger", "timestamp": 1e300}, "timestamp"),
    ({"_id": "t-past", "text": "ledger", "timestamp": -1e15}, "timestamp"),
    ({"_id": "t-y10k", "text": "ledger", "timestamp": "9999-12-31T23:59:59-05:00"}, "timestamp"),
    ({"_id": "t-y0", "text": "ledger", "timestamp": "0001-01-01T00:00:00+01:00"}, "timestamp"),
    ({"_id": "t-bigint", "text": "ledger", "timestamp": 10**30}, "timestamp"),
    ({"_id": "v-over", "vector": _vector([1e39])}, "'vector'[0]"),
    ({"_id": "v-under", "vector": _vector([0.5, 0.5, 1e-40])}, "'vector'[2]"),
    ({"_id": "v-tiny-norm", "vector": [1e-30] * DIM}, "norm"),
    ({"_id": "v-huge-norm", "vector": [1e20] * DIM}, "norm"),
]
EDGES = [
    {"_id": "first", "text": "ledger of the first day", "timestamp": "0001-01-01T00:00:00Z"},
    {"_id": "last", "text": "ledger of the last second", "timestamp": "9999-12-31T23:59:59Z"},
    {"_id": "offset", "text": "ledger with an offset", "timestamp": "9999-12-31T23:59:59+05:00"},
]


@pytest.fixture()
def client(engine):
    from foveal.api.app import create_app

    engine.create_index("vals")
    with TestClient(create_app(engine, settings=ServiceSettings(max_doc_bytes=50_000))) as c:
        yield c




def test_values_an_index_cannot_hold_are_refused_and_the_index_keeps_serving(client):
    batch = [doc for doc, _ in BAD_DOCUMENTS] + EDGES
    accepted = client.post("/v1/indexes/vals/documents", json={"documents": batch})
    assert accepted.status_code == 202, accepted.text
    job = _wait(client, accepted.json()["job_id"])
    reasons = {e["id"]: e["reason"] for e in job["errors"]}
    for doc, fragment in BAD_DOCUMENTS:
        assert fragment in reasons.get(doc["_id"], ""), (doc["_id"], reasons)
    assert (job["state"], job["done"], job["failed"]) == ("done", len(EDGES), len(BAD_DOCUMENTS))
    for doc, _ in BAD_DOCUMENTS:
        assert client.get(f"/v1/indexes/vals/documents/{doc['_id']}").status_code == 404
    assert client.get("/v1/indexes/vals/documents/first").json()["timestamp"] == "0001-01-01T00:00:00Z"
    assert client.get("/v1/indexes/vals/documents/last").json()["timestamp"] == "9999-12-31T23:59:59Z"
    assert client.get("/v1/indexes/vals/documents/offset").json()["timestamp"] == "9999-12-31T18:59:59Z"
    for pipeline in ("bm25", "dense", "hybrid"):
        response = client.post("/v1/indexes/vals/search", json={"query": "ledger", "pipeline": pipeline})
        assert response.status_code == 200, response.text
        assert {h["id"] for h in response.json()["hits"]} == {"first", "last", "offset"}
    stats = client.get("/v1/indexes/vals").json()
    assert stats["documents"] == stats["vectors"] == stats["lexical_documents"] == len(EDGES)


def test_a_vector_at_the_edge_of_float32_is_found_by_its_own_direction(client):
    """Components near float32's limits that it can hold are kept, and the stored unit vector is a real one."""
    head = [1e18, 1.2e-38]  # the largest components whose squares float32 still sums, and a smallest normal one
    body = {"documents": [{"_id": "edge", "vector": _vector(head, 0.0)},
                          {"_id": "plain", "text": "an ordinary ledger"}]}
    job = _wait(client, client.post("/v1/indexes/vals/documents", json=body).json()["job_id"])
    assert (job["done"], job["failed"]) == (2, 0), job
    collection = client.app.state.engine.get("vals")
    query = np.zeros((1, DIM), dtype=np.float32)
    query[0, 0] = 1.0
    scores, ids = collection.vectors.search(query, 1)
    assert np.isfinite(scores).all() and scores[0, 0] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/v1/indexes/vals/search", '{"query": "x", "fusion": {"weights": {"bm25": NaN, "dense": 1}}}',
         "fusion.weights.bm25"),
        ("/v1/indexes/vals/search", '{"query": "x", "fusion": {"weights": {"dense": Infinity}}}', "fusion.weights"),
        ("/v1/indexes/vals/search", '{"query": "x", "filter": {"metadata": {"a": NaN}}}', "filter.metadata"),
        ("/v1/indexes/vals/search", '{"query": "x", "filter": {"metadata": {"a": [1, -Infinity]}}}',
         "filter.metadata"),
        ("/v1/indexes/vals/search", '{"query": "x", "filter": {"metadata": {"a": 100000000000000000000000}}}',
         "64-bit"),
        ("/v1/indexes/vals/search", '{"query": "x", "filter": {"timestamp": {"gte": Infinity}}}',
         "filter.timestamp"),
        ("/v1/indexes/vals/search", '{"query": "x", "filter": {"timestamp": {"lte": 1e300}}}', "out of range"),
        ("/v1/indexes/vals/search", '{"query": "x", "filter": {"timestamp": {"lt": "9999-12-31T23:59:59-01:00"}}}',
         "out of range"),
        ("/v1/indexes", '{"name": "nan", "config": {"fusion": {"weights": {"dense": NaN}}}}', "fusion.weights"),
        ("/v1/indexes", '{"name": "nan", "config": {"lexical": {"title_boost": Infinity}}}', "title_boost"),
        ("/v1/indexes", '{"name": "nan", "config": {"rerank": {"budget_ms": Infinity}}}', "budget_ms"),
        ("/v1/indexes/vals/documents", '{"documents": [{"_id": "a", "vector": [NaN, 1]}]}', "documents.0.vector"),
        ("/v1/indexes/vals/documents", '{"documents": [{"_id": "a", "text": "x", "timestamp": Infinity}]}',
         "documents.0.timestamp"),
        ("/v1/indexes/vals/documents", '{"documents": [{"_id": "a", "text": "x", "metadata": {"m": [NaN]}}]}',
         "documents.0.metadata"),
    ],
)
def test_nan_and_infinity_are_refused_anywhere_with_a_422_naming_the_field(client, home, path, body, field):
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]["message"], response.json()
    assert sorted(p.name for p in (home / "indexes").iterdir()) == ["vals"]
    assert client.get("/v1/indexes").status_code == 200
