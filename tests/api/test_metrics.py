"""/metrics: stage histograms after a search, ingest counters, queue depth per queue, index sizes; the Grafana
dashboard queries only metrics that exist; JSON log lines per request and per job carry the request id."""

from __future__ import annotations

import json
import logging
import re
import time

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from foveal.api.app import create_app
from foveal.pipeline.request import SearchRequest
from foveal.service.settings import ServiceSettings
from tests.conftest import ROOT

DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"


@pytest.fixture()
def client(engine, tiny):
    with TestClient(create_app(engine, settings=ServiceSettings(task_docs=2))) as c:
        yield c


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def stage_counts(client) -> dict[str, float]:
    found = samples(client.get("/metrics").text)
    return {dict(labels)["stage"]: value for (name, labels), value in found.items() if name == "foveal_stage_seconds_count"}


def wait(client, job_id: str) -> dict:
    deadline = time.monotonic() + 60
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] == "done" or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def test_a_search_adds_one_observation_to_each_of_its_stages(client):
    before = stage_counts(client)
    assert client.post("/v1/indexes/tiny/search", json={"query": "moon tides", "pipeline": "hybrid"}).status_code == 200
    after = stage_counts(client)
    for stage in ("query_encode", "retrieve_bm25", "retrieve_dense", "fuse", "fetch"):
        assert after.get(stage, 0) - before.get(stage, 0) == 1, (stage, before, after)
    text = client.get("/metrics").text
    assert re.search(r'foveal_stage_seconds_bucket\{le="\+Inf",stage="fuse"\} \d', text)
    assert re.search(r'foveal_stage_seconds_sum\{stage="retrieve_dense"\} \d', text)
    # a bm25 search runs neither the encoder nor dense retrieval
    client.post("/v1/indexes/tiny/search", json={"query": "moon tides", "pipeline": "bm25"})
    again = stage_counts(client)
    assert again["retrieve_bm25"] - after["retrieve_bm25"] == 1
    assert (again["query_encode"], again["retrieve_dense"]) == (after["query_encode"], after["retrieve_dense"])


def test_an_agent_run_times_each_searcher_node(client):
    before = stage_counts(client).get("agent_node", 0)
    with client.stream("POST", "/v1/agent/ask", json={"question": "How does yeast make bread rise, and what causes "
                                                                  "ocean tides?", "index": "tiny"}) as response:
        body = response.read().decode()
    nodes = body.count("event: node")
    assert nodes >= 2 and stage_counts(client)["agent_node"] - before == nodes


def test_ingest_counters_queue_depth_and_index_sizes(client):
    job = client.post("/v1/indexes/tiny/documents", json={"documents": [
        {"_id": "a", "text": "one"}, {"_id": "b", "text": "two"}, {"_id": "c", "text": "three"},
        {"_id": "bad", "text": ""}]}).json()
    assert wait(client, job["job_id"])["done"] == 3
    found = samples(client.get("/metrics").text)
    ingest = {dict(labels)["outcome"]: value for (name, labels), value in found.items()
              if name == "foveal_ingest_documents_total"}
    assert ingest == {"accepted": 3.0, "indexed": 3.0, "failed": 1.0}
    assert found[("foveal_ingest_task_retries_total", ())] == 0.0
    assert found[("foveal_queue_depth", (("queue", "embedded"),))] == 0.0
    assert found[("foveal_index_documents", (("index", "tiny"),))] == 9.0
    assert found[("foveal_index_passages", (("index", "tiny"),))] >= 9.0
    assert found[("foveal_index_vectors", (("index", "tiny"),))] >= 9.0
    assert found[("foveal_index_bytes", (("index", "tiny"),))] > 10_000


def test_a_retried_task_is_counted(engine, tiny, monkeypatch):
    from foveal.errors import IndexLockedError
    from foveal.service import worker

    real = worker.index_batch
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise IndexLockedError("busy for a moment")
        return real(*args, **kwargs)

    monkeypatch.setattr(worker, "index_batch", flaky)
    with TestClient(create_app(engine, settings=ServiceSettings())) as c:
        job = c.post("/v1/indexes/tiny/documents", json={"documents": [{"_id": "r", "text": "retry me"}]}).json()
        assert wait(c, job["job_id"])["done"] == 1
        found = samples(c.get("/metrics").text)
    assert found[("foveal_ingest_task_retries_total", ())] == 1.0


def test_every_metric_the_grafana_dashboard_queries_exists(client):
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10
    client.post("/v1/indexes/tiny/search", json={"query": "tides"})
    job = client.post("/v1/indexes/tiny/documents", json={"documents": [{"_id": "g", "text": "grafana"}]}).json()
    wait(client, job["job_id"])
    exposed = {s for (s, _labels) in samples(client.get("/metrics").text)}
    queried = {name for expr in exprs for name in re.findall(r"\b(foveal_[a-z_]+)", expr)}
    assert queried and not sorted(queried - exposed), sorted(queried - exposed)
    stages = {"foveal_stage_seconds_bucket", "foveal_ingest_documents_total", "foveal_queue_depth"}
    assert stages <= queried


def test_json_log_lines_per_request_and_per_job_carry_the_request_id(client, caplog):
    import io

    from foveal import logs

    stream = io.StringIO()
    handler = logs.configure(stream=stream)
    handler.setStream(stream)
    try:
        response = client.post("/v1/indexes/tiny/documents", headers={"X-Request-ID": "req-web-42"},
                               json={"documents": [{"_id": "l1", "text": "log me"}]})
        wait(client, response.json()["job_id"])
        client.post("/v1/indexes/tiny/search", headers={"X-Request-ID": "req-web-43"}, json={"query": "log"})
        time.sleep(0.1)
    finally:
        logging.getLogger("foveal").removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [l for l in lines if l["logger"] == "foveal.access"]
    jobs = [l for l in lines if l["logger"] == "foveal.jobs"]
    assert {"req-web-42", "req-web-43"} <= {l["request_id"] for l in access}
    search = next(l for l in access if l["request_id"] == "req-web-43")
    assert search["route"] == "/v1/indexes/{name}/search" and search["status"] == 200 and search["level"] == "INFO"
    assert jobs and jobs[0]["request_id"] == "req-web-42" and jobs[0]["event"] == "ingest_task"
    assert jobs[0]["job_id"] == response.json()["job_id"] and jobs[0]["outcome"] == "done" and jobs[0]["done"] == 1


def test_search_micro_batches_are_counted_per_index(client, engine):
    """foveal_query_batches_total and foveal_query_batch_items_total: a lone search is a batch of one; searches that
    share a batch count once in batches and each in items."""
    import threading

    def counts():
        found = samples(client.get("/metrics").text)
        return (found.get(("foveal_query_batches_total", (("index", "tiny"),)), 0.0),
                found.get(("foveal_query_batch_items_total", (("index", "tiny"),)), 0.0))

    client.post("/v1/indexes/tiny/search", json={"query": "tides"})
    batches, items = counts()
    for query in ("moon", "bread", "volcano"):
        assert client.post("/v1/indexes/tiny/search", json={"query": query}).status_code == 200
    assert counts() == (batches + 3, items + 3)
    pipeline = engine.pipeline("tiny")
    release = threading.Event()
    real = pipeline._batcher.run_batch

    def slow(requests):  # holds the first batch so that the others queue up behind it and share the next one
        release.wait(10)
        return real(requests)

    pipeline._batcher.run_batch = slow
    try:
        threads = [threading.Thread(target=engine.search, args=("tiny", SearchRequest(query=f"tides {i}")))
                   for i in range(5)]
        for thread in threads:
            thread.start()
        deadline = time.time() + 10
        while pipeline._batcher._active < 5 and time.time() < deadline:
            time.sleep(0.01)
        release.set()
        for thread in threads:
            thread.join(30)
    finally:
        pipeline._batcher.run_batch = real
    after_batches, after_items = counts()
    assert after_items == items + 3 + 5
    assert after_batches - (batches + 3) < 5  # at least two of the five shared a batch


def test_http_requests_are_counted_by_a_pure_asgi_middleware(client):
    """Every answer is counted by method, route template and status (the route's own errors, an unmatched path, a
    request that raised below), and timed. The counting layer is not a ``BaseHTTPMiddleware``: that one runs each
    request in a task of its own and streams its response through a memory channel (a cost on every search)."""
    from starlette.middleware.base import BaseHTTPMiddleware

    assert not [m for m in client.app.user_middleware if m.cls is BaseHTTPMiddleware]

    def count(method, route, status):
        key = ("foveal_http_requests_total", (("method", method), ("route", route), ("status", status)))
        return samples(client.get("/metrics").text).get(key, 0.0)

    search = "/v1/indexes/{name}/search"
    before = (count("POST", search, "200"), count("POST", search, "404"), count("GET", "unmatched", "404"),
              count("POST", search, "500"))
    assert client.post("/v1/indexes/tiny/search", json={"query": "tides"}).status_code == 200
    assert client.post("/v1/indexes/nope/search", json={"query": "tides"}).status_code == 404
    assert client.get("/no/such/path").status_code == 404
    engine = client.app.state.engine
    real = engine.search
    engine.search = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom"))
    try:
        assert client.post("/v1/indexes/tiny/search", json={"query": "tides"}).status_code == 500
    finally:
        engine.search = real
    after = (count("POST", search, "200"), count("POST", search, "404"), count("GET", "unmatched", "404"),
             count("POST", search, "500"))
    assert after == tuple(b + 1 for b in before)
    found = samples(client.get("/metrics").text)
    timed = ("foveal_http_request_duration_seconds_count", (("method", "POST"), ("route", search)))
    assert found[timed] >= 3  # the 200, the 404 and the 500 searches
