import pytest
from fastapi.testclient import TestClient

from foveal.api.app import create_app


@pytest.fixture()
def client(engine, tiny):
    with TestClient(create_app(engine)) as c:
        yield c


def test_healthz(client):
    assert client.get("/healthz").json()["status"] == "ok"


def test_search_returns_hits_with_evidence(client):
    response = client.post("/v1/indexes/tiny/search", json={"query": "roasting coffee beans", "k": 2})
    assert response.status_code == 200
    body = response.json()
    assert body["hits"][0]["id"] == "coffee" and body["pipeline"] == "hybrid"
    assert {"bm25", "dense", "fused"} <= set(body["hits"][0]["evidence"])
    assert body["hits"][0]["passage"]["text"].startswith("Coffee roasting")


@pytest.mark.parametrize(
    "path, body, status, fragment",
    [
        ("/v1/indexes/nope/search", {"query": "x"}, 404, "index 'nope' does not exist"),
        ("/v1/indexes/tiny/search", {"query": "x", "k": 0}, 422, "k: Input should be greater than or equal to 1"),
        ("/v1/indexes/tiny/search", {"query": "x", "k": 5000}, 422, "k: Input should be less than or equal to 1000"),
        ("/v1/indexes/tiny/search", {"query": ""}, 422, "query"),
        ("/v1/indexes/tiny/search", {"query": "x", "pipeline": "magic"}, 422, "pipeline"),
        ("/v1/indexes/tiny/search", {"query": "x", "colour": "red"}, 422, "colour"),
        ("/v1/indexes/tiny/search", {"query": "x", "fusion": {"method": "borda"}}, 422, "allowed: rrf, linear"),
        ("/v1/indexes/Bad..Name/search", {"query": "x"}, 422, "name"),
    ],
)
def test_bad_requests_say_why(client, path, body, status, fragment):
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]["message"]


def test_malformed_json_body(client):
    response = client.post("/v1/indexes/tiny/search", content=b"{nope", headers={"content-type": "application/json"})
    assert response.status_code == 422 and "invalid request" in response.json()["error"]["message"]


def test_foveal_serve_freezes_what_it_loaded_at_start_out_of_full_collections(engine, tiny, monkeypatch):
    """``foveal serve`` builds the app with ``freeze_heap``: after the models and indexes load, they leave the
    cyclic collector's full passes (270 ms each with the models loaded; under load they were the slow 15 % of
    requests). An app embedded elsewhere (``create_app`` default) freezes nothing."""
    import gc

    from typer.testing import CliRunner

    from foveal import cli

    gc.unfreeze()
    try:
        with TestClient(create_app(engine)) as c:
            assert c.get("/healthz").status_code == 200 and gc.get_freeze_count() == 0
        with TestClient(create_app(engine, freeze_heap=True)) as c:
            assert c.get("/healthz").status_code == 200
            assert gc.get_freeze_count() > 10_000  # the model and the libraries, at least
        gc.unfreeze()
        made = {}
        monkeypatch.setattr("foveal.api.app.create_app", lambda **kw: made.update(kw) or "app")
        monkeypatch.setattr("uvicorn.run", lambda application, **kw: made.update(served=application, uvicorn=kw))
        monkeypatch.setattr("foveal.logs.configure", lambda *a, **k: None)  # leaves the loggers as tests need them
        result = CliRunner().invoke(cli.app, ["serve"])
        assert result.exit_code == 0, result.output
        assert made["freeze_heap"] is True and made["served"] == "app"
        # foveal.access is the one access line per request: uvicorn's own would be a second, plain one
        assert made["uvicorn"]["access_log"] is False
    finally:
        gc.unfreeze()
