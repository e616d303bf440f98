"""Elasticsearch configured but unreachable: an index built on the in-memory fake server, whose transport then
fails to connect (at the client's transport, the Elasticsearch boundary only). Searches answer 503
``BackendUnavailableError`` naming the server, without the raw exception text; ``/readyz`` is 503 on the index."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from tests.conftest import TINY_CORPUS

ES = {"backend": "elasticsearch"}


@pytest.fixture()
def fake_server(monkeypatch):
    """A fake Elasticsearch answering the client of the operator's default server (FOVEAL_ES_URL)."""
    from elasticsearch import Elasticsearch

    from foveal.index import es_backend
    from tests.index.fake_es import FakeElasticsearch

    url = f"http://fake-{uuid.uuid4().hex[:8]}:9200"
    monkeypatch.setenv("FOVEAL_ES_URL", url)
    monkeypatch.delenv("FOVEAL_ES_SERVERS", raising=False)
    client = Elasticsearch(url, request_timeout=30.0)
    FakeElasticsearch().install(client)
    es_backend._clients[(url, 30.0)] = client
    yield client
    es_backend._clients.pop((url, 30.0), None)


def _unreachable(*_args, **_kwargs):
    from elastic_transport import ConnectionError

    raise ConnectionError("Connection error caused by: NewConnectionError(fake-host:9200: [Errno 111] refused)")


def test_unreachable_elasticsearch_is_a_503_with_a_reason(fake_server, engine):
    from foveal.api.app import create_app
    from foveal.documents import parse_document

    collection = engine.create_index("esx", {"vector": ES, "lexical": ES, "docstore": ES,
                                             "elasticsearch": {"index_prefix": f"t{uuid.uuid4().hex[:8]}-"}})
    collection.upsert([parse_document(d) for d in TINY_CORPUS])
    collection.flush()
    with TestClient(create_app(engine), raise_server_exceptions=False) as client:
        body = {"query": "moon tides", "k": 1}
        assert client.post("/v1/indexes/esx/search", json=body).json()["hits"][0]["id"] == "tides"
        assert client.get("/readyz").status_code == 200

        fake_server.transport.perform_request = _unreachable
        for pipeline in ("hybrid", "bm25", "dense"):
            response = client.post("/v1/indexes/esx/search", json={**body, "pipeline": pipeline})
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert error["type"] == "BackendUnavailableError"
            assert error["message"] == "Elasticsearch at server 'default' is unreachable"
            assert "fake-" not in response.text and "Errno" not in response.text
            assert int(response.headers["Retry-After"]) >= 1
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["index:esx"].startswith("down")
        assert "unreachable" in ready.json()["checks"]["index:esx"]


def test_elasticsearch_unreachable_at_start_then_back(fake_server, engine, home):
    """A server started while Elasticsearch is away serves 503s for that index (not a crash at start), and the
    index opens once Elasticsearch answers again, without a restart."""
    from foveal.api.app import create_app
    from foveal.documents import parse_document
    from foveal.engine import Engine

    collection = engine.create_index("esx", {"lexical": ES, "docstore": ES,
                                             "elasticsearch": {"index_prefix": f"t{uuid.uuid4().hex[:8]}-"}})
    collection.upsert([parse_document(d) for d in TINY_CORPUS])
    collection.flush()
    answer = fake_server.transport.perform_request
    fake_server.transport.perform_request = _unreachable
    fresh = Engine(home)
    try:
        with TestClient(create_app(fresh), raise_server_exceptions=False) as client:
            body = {"query": "moon tides", "k": 1, "pipeline": "bm25"}
            response = client.post("/v1/indexes/esx/search", json=body)
            assert response.status_code == 503, response.text
            assert response.json()["error"]["message"] == "Elasticsearch at server 'default' is unreachable"
            assert client.get("/readyz").status_code == 503
            fake_server.transport.perform_request = answer
            assert client.post("/v1/indexes/esx/search", json=body).json()["hits"][0]["id"] == "tides"
            assert client.get("/readyz").status_code == 200
    finally:
        fresh.close()
