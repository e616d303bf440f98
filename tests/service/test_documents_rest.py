"""Listing, scrolling and exporting documents over REST; delete by filter; metadata updates without encoding."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from foveal.api.app import create_app
from foveal.service.settings import ServiceSettings
from tests.conftest import TINY_CORPUS

KEYS = "r read sk-docs-read-0123456789; w write sk-docs-write-0123456789"
READ = {"Authorization": "Bearer sk-docs-read-0123456789"}
WRITE = {"Authorization": "Bearer sk-docs-write-0123456789"}


@pytest.fixture()
def client(engine, tiny):
    with TestClient(create_app(engine, settings=ServiceSettings(api_keys=KEYS))) as c:
        yield c


def test_scroll_every_document_in_pages(client):
    seen, after = [], None
    while True:
        page = client.get("/v1/indexes/tiny/documents", params={"limit": 4, **({"after": after} if after else {})},
                          headers=READ).json()
        seen += [d["_id"] for d in page["documents"]]
        after = page["next"]
        if after is None:
            break
    assert sorted(seen) == sorted(d["_id"] for d in TINY_CORPUS) and len(seen) == len(set(seen))
    assert client.get("/v1/indexes/tiny/documents?after=x", headers=READ).status_code == 422
    assert client.get("/v1/indexes/nope/documents", headers=READ).status_code == 404


def test_export_streams_json_lines_in_the_ingest_format(client):
    everything = client.post("/v1/indexes/tiny/documents/_export", headers=READ)
    assert everything.status_code == 200 and everything.headers["content-type"].startswith("application/x-ndjson")
    records = [json.loads(line) for line in everything.text.splitlines()]
    assert {r["_id"] for r in records} == {d["_id"] for d in TINY_CORPUS}
    tides = next(r for r in records if r["_id"] == "tides")
    assert tides["timestamp"].startswith("2024-01-05") and tides["metadata"] == {"topic": "science"}
    cooking = client.post("/v1/indexes/tiny/documents/_export", headers=READ,
                          json={"filter": {"metadata": {"topic": "cooking"}}})
    assert sorted(json.loads(l)["_id"] for l in cooking.text.splitlines()) == ["bread", "coffee"]


def test_delete_by_filter_needs_write_and_deletes_the_matches(client, tiny):
    body = {"filter": {"metadata": {"topic": "science"}}}
    assert client.post("/v1/indexes/tiny/documents/_delete_by_filter", headers=READ, json=body).status_code == 403
    answer = client.post("/v1/indexes/tiny/documents/_delete_by_filter", headers=WRITE, json=body).json()
    assert answer["deleted"] == 2 and sorted(answer["ids"]) == ["tides", "volcano"]
    assert tiny.store.count() == 4
    hits = client.post("/v1/indexes/tiny/search", headers=READ, json={"query": "magma lava", "pipeline": "bm25"})
    assert "volcano" not in [h["id"] for h in hits.json()["hits"]]
    bad = client.post("/v1/indexes/tiny/documents/_delete_by_filter", headers=WRITE, json={"filter": {"nope": 1}})
    assert bad.status_code == 422


def test_metadata_update_keeps_vectors_and_reaches_filters(client, tiny, monkeypatch):
    before = tiny.store.vectors_of([tiny.store.get_by_id("bread").doc_key])[1]
    monkeypatch.setattr(type(tiny), "prepare", lambda *a, **k: pytest.fail("encoded again"))
    body = {"documents": [{"_id": "bread", "metadata": {"topic": "baking", "stars": 5}},
                          {"_id": "chess", "timestamp": "2023-05-01T00:00:00Z"},
                          {"_id": "gone", "metadata": {"x": 1}}]}
    assert client.post("/v1/indexes/tiny/documents/_update", headers=READ, json=body).status_code == 403
    answer = client.post("/v1/indexes/tiny/documents/_update", headers=WRITE, json=body).json()
    assert answer == {"updated": ["bread", "chess"], "unchanged": [], "missing": ["gone"]}
    again = client.post("/v1/indexes/tiny/documents/_update", headers=WRITE, json={"documents": body["documents"][:1]})
    assert again.json()["unchanged"] == ["bread"]
    bread = client.get("/v1/indexes/tiny/documents/bread", headers=READ).json()
    assert bread["metadata"] == {"topic": "baking", "stars": 5} and bread["text"].startswith("Yeast")
    after = tiny.store.vectors_of([tiny.store.get_by_id("bread").doc_key])[1]
    assert (before == after).all()
    found = client.post("/v1/indexes/tiny/search", headers=READ, json={
        "query": "dough", "pipeline": "dense", "filter": {"metadata": {"topic": "baking"}}}).json()["hits"]
    assert [h["id"] for h in found] == ["bread"]
    dated = client.post("/v1/indexes/tiny/search", headers=READ, json={
        "query": "chess", "pipeline": "bm25", "filter": {"timestamp": {"lt": "2024-01-01"}}}).json()["hits"]
    assert [h["id"] for h in dated] == ["chess"]
    replaced = client.post("/v1/indexes/tiny/documents/_update", headers=WRITE,
                           json={"documents": [{"_id": "bread", "metadata": {"only": "this"}}], "merge": False})
    assert replaced.status_code == 200
    assert client.get("/v1/indexes/tiny/documents/bread", headers=READ).json()["metadata"] == {"only": "this"}
    bad = client.post("/v1/indexes/tiny/documents/_update", headers=WRITE,
                      json={"documents": [{"_id": "bread", "timestamp": "soon"}]})
    assert bad.status_code == 422 and "timestamp" in bad.json()["error"]["message"]
