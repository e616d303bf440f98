"""Every failure is the ``{"error": {type, message, details}}`` envelope, with a request id, a meaningful field path
and no exception text; validation is strict (no boolean taken as a number, no blank query) in REST and CLI."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
from fastapi import Request
from fastapi.testclient import TestClient

from foveal.service.settings import ServiceSettings


@pytest.fixture()
def app(engine):
    from foveal.api.app import create_app

    return create_app(engine, settings=ServiceSettings(embedded_workers=0))


@pytest.fixture()
def client(app):
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _envelope(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message", "details"}, body
    return body["error"]


def test_unknown_route_and_wrong_method_are_envelopes(client):
    missing = client.get("/v2/nothing")
    assert missing.status_code == 404 and _envelope(missing)["type"] == "NotFoundError"
    assert missing.headers["x-request-id"]
    wrong = client.put("/v1/indexes")
    assert wrong.status_code == 405 and _envelope(wrong)["type"] == "MethodNotAllowedError"
    assert set(wrong.headers["allow"].split(", ")) == {"GET", "POST"}


def test_malformed_json_says_line_and_column(client, tiny):
    response = client.post("/v1/indexes/tiny/search", content=b'{"query": "tides",\n "k": }',
                           headers={"content-type": "application/json"})
    assert response.status_code == 422
    error = _envelope(response)
    assert "body: invalid JSON at line 2 column 7" in error["message"], error
    assert error["details"] == [{"field": "body", "message": error["message"].split("body: ", 1)[1]}]


def test_field_paths_name_the_callers_field(client, tiny):
    docs = [{"_id": "a", "text": "x"}] * 3 + [{"_id": 5, "text": "x"}]
    error = _envelope(client.post("/v1/indexes/tiny/documents", json={"documents": docs}))
    assert [p["field"] for p in error["details"]] == ["documents.3._id"]
    bad_filter = {"query": "x", "filter": {"metadata": {"topic": {"nested": 1}}}}
    error = _envelope(client.post("/v1/indexes/tiny/search", json=bad_filter))
    # one problem (not one per branch of the union, nor a branch tag in the path); an object is a range or an
    # exists condition, so what is wrong is its unknown key
    assert [p["field"] for p in error["details"]] == ["filter.metadata.topic.nested"]
    named_like_a_type = {"query": "x", "filter": {"metadata": {"str": {"nested": 1}}}}
    error = _envelope(client.post("/v1/indexes/tiny/search", json=named_like_a_type))
    assert [p["field"] for p in error["details"]] == ["filter.metadata.str.nested"]
    bad_bound = {"query": "x", "filter": {"metadata": {"year": {"gte": True}}}}
    error = _envelope(client.post("/v1/indexes/tiny/search", json=bad_bound))
    assert [p["field"] for p in error["details"]] == ["filter.metadata.year.gte"]


def test_an_error_inside_middleware_is_a_json_500_without_exception_text(app, monkeypatch):
    from foveal.api import ops

    class BrokenClock:
        @staticmethod
        def perf_counter():
            raise RuntimeError("secret detail /etc/shadow")

    monkeypatch.setattr(ops, "time", BrokenClock)  # the metrics middleware reads it on every request
    with TestClient(app, raise_server_exceptions=False) as c:
        response = c.get("/healthz", headers={"X-Request-ID": "trace-42"})
    assert response.status_code == 500
    error = _envelope(response)
    assert error["type"] == "InternalError" and error["details"] == {"request_id": "trace-42"}
    assert "secret" not in response.text and "RuntimeError" not in response.text
    assert response.headers["x-request-id"] == "trace-42"


def test_request_ids_are_kept_when_sane_and_made_otherwise(client, tiny, caplog):
    kept = client.get("/healthz", headers={"X-Request-ID": "abc.DEF_1-2"})
    assert kept.headers["x-request-id"] == "abc.DEF_1-2"
    for insane in ("has space", "x" * 129, "semi;colon"):
        made = client.get("/healthz", headers={"X-Request-ID": insane}).headers["x-request-id"]
        assert made != insane and len(made) == 32 and int(made, 16) >= 0
    # errors carry one as well, and every request is one JSON access-log line with its route template
    with caplog.at_level(logging.INFO, logger="foveal.access"):
        refused = client.post("/v1/indexes/tiny/search", json={"query": "x", "k": 0}, headers={"X-Request-ID": "r-1"})
    assert refused.status_code == 422 and refused.headers["x-request-id"] == "r-1"
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "foveal.access"]
    line = next(entry for entry in lines if entry["request_id"] == "r-1")
    assert line["method"] == "POST" and line["route"] == "/v1/indexes/{name}/search" and line["status"] == 422
    assert isinstance(line["duration_ms"], float) and "key" in line


def test_request_id_is_in_request_state(app):
    seen = {}

    @app.get("/_probe")
    def probe(request: Request):
        seen["id"] = request.state.request_id
        return {}

    with TestClient(app) as c:
        response = c.get("/_probe", headers={"X-Request-ID": "state-1"})
    assert seen["id"] == "state-1" == response.headers["x-request-id"]


def test_readyz_hides_exception_text_from_non_admins(engine, monkeypatch):
    """With FOVEAL_OPEN_OPS a read key (or none) sees each check's verdict, never its exception text; an admin key
    sees the reason."""
    from foveal.api.app import create_app

    monkeypatch.setenv("FOVEAL_API_KEYS", "reader read reader-secret-0123456789;ops admin admin-secret-0123456789")
    monkeypatch.setenv("FOVEAL_OPEN_OPS", "1")
    app = create_app(engine, settings=ServiceSettings.from_env())
    with TestClient(app, raise_server_exceptions=False) as c:
        monkeypatch.setattr(app.state.queue, "ping", lambda: (_ for _ in ()).throw(RuntimeError("at /srv/secret")))
        for headers in ({"X-API-Key": "reader-secret-0123456789"}, {}):
            response = c.get("/readyz", headers=headers)
            assert response.status_code == 503
            assert response.json()["checks"]["queue"] == "down" and "secret" not in response.text
        admin = c.get("/readyz", headers={"X-API-Key": "admin-secret-0123456789"})
        assert "at /srv/secret" in admin.json()["checks"]["queue"]


@pytest.mark.parametrize("body, field", [
    ({"query": "tides", "k": True}, "k"),
    ({"query": "tides", "offset": False}, "offset"),
    ({"query": "tides", "filter": {"timestamp": {"gte": True}}}, "filter.timestamp.gte"),
    ({"query": "tides", "filter": {"ids": [True]}}, "filter.ids.0"),
    ({"query": "   "}, "query"),
    ({"query": "\n\t "}, "query"),
])
def test_search_is_strict(client, tiny, body, field):
    response = client.post("/v1/indexes/tiny/search", json=body)
    assert response.status_code == 422, response.text
    assert field in [p["field"] for p in _envelope(response)["details"]]


@pytest.mark.parametrize("doc, field", [
    ({"_id": "t", "text": "x", "timestamp": True}, "documents.0.timestamp"),
    ({"_id": "t", "text": "x", "timestamp": False}, "documents.0.timestamp"),
    ({"_id": "t", "vector": [True] * 4}, "documents.0.vector.0"),
])
def test_documents_are_strict(client, tiny, doc, field):
    response = client.post("/v1/indexes/tiny/documents", json={"documents": [doc]})
    assert response.status_code == 422, response.text
    assert field in [p["field"] for p in _envelope(response)["details"]]


def test_agent_refuses_a_blank_question_and_boolean_numbers(client, tiny):
    blank = client.post("/v1/agent/ask", json={"question": "   ", "index": "tiny"})
    assert blank.status_code == 422 and "blank" in _envelope(blank)["message"]
    boolean = client.post("/v1/agent/ask", json={"question": "tides?", "index": "tiny", "concurrency": True})
    assert boolean.status_code == 422 and _envelope(boolean)["details"][0]["field"] == "concurrency"


def test_parse_timestamp_refuses_booleans_the_cli_way(tmp_path):
    from foveal.documents import parse_document
    from foveal.errors import DocumentError

    with pytest.raises(DocumentError, match="boolean"):
        parse_document({"_id": "a", "text": "x", "timestamp": True})


@pytest.mark.parametrize("command", [["search", "   "], ["ask", "  \t"]])
def test_cli_refuses_a_blank_query(home, command):
    result = subprocess.run([sys.executable, "-m", "foveal.cli", *command], capture_output=True, text=True,
                            env={**os.environ, "FOVEAL_HOME": str(home)}, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "blank" in result.stderr


def test_logs_written_while_serving_carry_the_request_id(engine, tiny, monkeypatch, caplog):
    from foveal.api.app import create_app

    original = engine.search

    def logging_search(*args, **kwargs):  # runs in a threadpool worker, like every search
        logging.getLogger("foveal.index").warning("slow segment")
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "search", logging_search)
    with TestClient(create_app(engine, settings=ServiceSettings())) as c, caplog.at_level(logging.INFO):
        response = c.post("/v1/indexes/tiny/search", json={"query": "tides"}, headers={"X-Request-ID": "log-7"})
    assert response.status_code == 200
    record = next(r for r in caplog.records if r.getMessage() == "slow segment")
    assert record.request_id == "log-7"
