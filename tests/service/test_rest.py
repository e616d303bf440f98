"""The /v1 REST surface on the embedded queue: indexes, documents (202 + job), jobs, filters, limits, ops."""

from __future__ import annotations


import pytest
from fastapi.testclient import TestClient

from foveal.service.settings import ServiceSettings
from tests.conftest import TINY_CORPUS

from tests.service.helpers import wait_done as _wait


@pytest.fixture()
def client(engine):
    from foveal.api.app import create_app

    settings = ServiceSettings(max_batch_docs=20, max_doc_bytes=5000, task_docs=2, max_request_bytes=50_000)
    with TestClient(create_app(engine, settings=settings)) as c:
        yield c




def test_index_lifecycle_documents_and_jobs(client):
    assert client.post("/v1/indexes", json={"name": "docs", "config": {"fusion": {"method": "rrf"}}}).status_code == 201
    assert client.post("/v1/indexes", json={"name": "docs"}).status_code == 409
    bad = {"_id": "empty", "title": "", "text": ""}
    wrong_dim = {"_id": "vec", "vector": [0.1, 0.2]}
    accepted = client.post("/v1/indexes/docs/documents", json={"documents": TINY_CORPUS + [bad, wrong_dim]})
    assert accepted.status_code == 202 and accepted.headers["location"] == accepted.json()["status_url"]
    job = _wait(client, accepted.json()["job_id"])
    assert (job["state"], job["total"], job["done"], job["failed"]) == ("done", 8, 6, 2)
    assert {e["id"] for e in job["errors"]} == {"empty", "vec"}
    assert all(e["reason"] for e in job["errors"])

    # a redelivered / repeated batch changes nothing in any store
    again = _wait(client, client.post("/v1/indexes/docs/documents", json={"documents": TINY_CORPUS}).json()["job_id"])
    assert again["done"] == 6
    stats = client.get("/v1/indexes/docs").json()
    assert stats["documents"] == stats["passages"] == stats["vectors"] == stats["lexical_documents"] == 6

    assert client.get("/v1/indexes").json() == [{"name": "docs", "documents": 6}]
    doc = client.get("/v1/indexes/docs/documents/tides").json()
    assert doc["_id"] == "tides" and doc["metadata"] == {"topic": "science"}
    body = {"query": "sea", "k": 3, "pipeline": "dense", "filter": {"metadata": {"topic": "cooking"}}}
    assert sorted(h["id"] for h in client.post("/v1/indexes/docs/search", json=body).json()["hits"]) == [
        "bread", "coffee"]
    assert client.delete("/v1/indexes/docs/documents/tides").json() == {"deleted": "tides"}
    assert client.get("/v1/indexes/docs/documents/tides").status_code == 404
    assert client.delete("/v1/indexes/docs/documents/tides").status_code == 404
    assert client.delete("/v1/indexes/docs").json() == {"deleted": "docs"}
    assert client.get("/v1/indexes/docs").status_code == 404


@pytest.mark.parametrize(
    "method, path, body, status, fragment",
    [
        ("post", "/v1/indexes/nope/documents", {"documents": [{"_id": "a", "text": "x"}]}, 404, "index 'nope'"),
        ("post", "/v1/indexes/tiny/documents", {"documents": [{"_id": "a", "text": "x"}] * 21}, 413, "at most 20"),
        ("post", "/v1/indexes/tiny/documents", {"documents": [{"_id": "a", "text": "x" * 6000}]}, 413, "at most 5000"),
        ("post", "/v1/indexes/tiny/documents", {"documents": []}, 422, "documents"),
        ("post", "/v1/indexes/tiny/documents", {"documents": [{"_id": 5, "text": "x"}]}, 422, "_id"),
        ("post", "/v1/indexes/tiny/documents", {"documents": [{"_id": "a", "metadata": []}]}, 422, "metadata"),
        ("post", "/v1/indexes/tiny/documents", {"documents": [{"_id": "a", "text": "x" * 60_000}]}, 413,
         "FOVEAL_MAX_REQUEST_BYTES"),
        ("get", "/v1/jobs/0123456789abcdef0123456789abcdef", None, 404, "does not exist"),
        ("get", "/v1/jobs/not-a-job", None, 422, "job_id"),
        ("post", "/v1/indexes", {"name": "x", "config": {"vector": {"factory": "Nope"}}}, 422, "factory"),
        ("post", "/v1/indexes/tiny/search", {"query": "x", "filter": {"timestamp": {"gte": "soon"}}}, 422,
         "timestamp"),
        ("post", "/v1/indexes/tiny/search", {"query": "x", "filter": {"metadata": {"a": {"b": 1}}}}, 422, "metadata"),
    ],
)
def test_bad_input_gets_a_clear_4xx(client, tiny, method, path, body, status, fragment):
    response = getattr(client, method)(path, **({"json": body} if body is not None else {}))
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]["message"]


def test_readyz_and_metrics(client, tiny):
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"queue": "ok", "index:tiny": "ok"}
    client.post("/v1/indexes/tiny/search", json={"query": "tides"})
    text = client.get("/metrics").text
    assert 'foveal_http_requests_total{method="POST",route="/v1/indexes/{name}/search",status="200"} 1.0' in text
    assert "foveal_http_request_duration_seconds_bucket" in text
    assert 'foveal_index_documents{index="tiny"} 6.0' in text
    assert 'foveal_queue_depth{queue="embedded"} 0.0' in text and 'foveal_jobs{state="done"}' in text


def test_readyz_reports_an_unreachable_redis(engine, monkeypatch):
    from foveal.api.app import create_app

    settings = ServiceSettings(queue="celery", redis_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(engine, settings=settings)) as c:
        response = c.get("/readyz")
        assert response.status_code == 503 and response.json()["checks"]["redis"].startswith("down")


def test_embedded_queue_resumes_after_a_restart(engine, home):
    """A batch accepted while no worker runs is indexed by the next process that starts one."""
    from foveal.api.app import create_app

    paused = ServiceSettings(embedded_workers=0)
    engine.create_index("later")
    with TestClient(create_app(engine, settings=paused)) as c:
        job_id = c.post("/v1/indexes/later/documents", json={"documents": TINY_CORPUS[:2]}).json()["job_id"]
        assert c.get(f"/v1/jobs/{job_id}").json()["state"] == "queued"
    with TestClient(create_app(engine, settings=ServiceSettings())) as c:
        job = _wait(c, job_id)
        assert (job["state"], job["done"]) == ("done", 2)


def test_an_unexpected_error_keeps_the_error_shape(engine, tiny, monkeypatch):
    """A bug answers 500 with the same ``{"error": ...}`` body as every refusal, never a plain-text page."""
    from foveal.api.app import create_app

    def broken(*_args, **_kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(engine, "search", broken)
    with TestClient(create_app(engine, settings=ServiceSettings()), raise_server_exceptions=False) as c:
        response = c.post("/v1/indexes/tiny/search", json={"query": "tides"})
    assert response.status_code == 500
    error = response.json()["error"]
    # no exception text reaches the caller: the request id lets the operator find the logged traceback
    assert error["type"] == "InternalError" and "boom" not in response.text and "RuntimeError" not in response.text
    assert error["details"]["request_id"] == response.headers["x-request-id"]
