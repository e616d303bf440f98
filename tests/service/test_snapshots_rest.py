"""Admin REST for snapshots: names only (never paths), 404/422/409 in the error envelope, restore fences the
replaced index's queued batches. Documents carry their own vectors, so nothing is encoded."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient

from foveal.service.settings import ServiceSettings


def _docs(prefix: str, n: int, word: str) -> list[dict]:
    seed = zlib.crc32(prefix.encode())
    return [{"_id": f"{prefix}-{i}", "text": f"{word} record {i}",
             "vector": np.random.default_rng(seed + i).standard_normal(384).astype(np.float32).tolist()}
            for i in range(n)]


@pytest.fixture()
def client(engine, tmp_path):
    from foveal.api.app import create_app

    settings = ServiceSettings(embedded_workers=0, task_docs=10, snapshot_dir=str(tmp_path / "snaps"))
    with TestClient(create_app(engine, settings=settings)) as c:
        yield c


def _drain(client) -> None:
    while client.app.state.queue.run_one(client.app.state.engine):
        pass


def _bm25(client, index: str, word: str) -> set[str]:
    body = client.post(f"/v1/indexes/{index}/search", json={"query": word, "pipeline": "bm25", "k": 100}).json()
    return {h["id"] for h in body["hits"]}


def test_create_list_get_restore_delete(client, tmp_path):
    assert client.post("/v1/indexes", json={"name": "notes"}).status_code == 201
    client.post("/v1/indexes/notes/documents", json={"documents": _docs("a", 3, "heron")})
    _drain(client)
    made = client.post("/v1/indexes/notes/snapshots", json={"name": "first"})
    assert made.status_code == 201, made.json()
    assert (made.json()["name"], made.json()["documents"]) == ("first", 3)
    assert (tmp_path / "snaps" / "first" / "manifest.json").exists()  # the operator's folder
    auto = client.post("/v1/indexes/notes/snapshots")
    assert auto.status_code == 201 and auto.json()["name"].startswith("notes-")
    assert [s["name"] for s in client.get("/v1/snapshots", params={"index": "notes"}).json()] == [
        "first", auto.json()["name"]]
    manifest = client.get("/v1/snapshots/first").json()
    assert set(manifest["files"]) == {"docs.sqlite", "config.json"} and manifest["position"] == 3

    client.post("/v1/indexes/notes/documents", json={"documents": _docs("b", 2, "osprey")})
    _drain(client)
    # a batch accepted before the restore is fenced: it never lands in the restored index
    queued = client.post("/v1/indexes/notes/documents", json={"documents": _docs("c", 2, "puffin")})
    restored = client.post("/v1/snapshots/first/restore")
    assert restored.status_code == 200, restored.json()
    _drain(client)
    job = client.get(f"/v1/jobs/{queued.json()['job_id']}").json()
    assert (job["done"], job["failed"]) == (0, 2), job
    assert _bm25(client, "notes", "heron") == {"a-0", "a-1", "a-2"}
    assert _bm25(client, "notes", "osprey") == set() and _bm25(client, "notes", "puffin") == set()
    stats = client.get("/v1/indexes/notes").json()
    assert (stats["documents"], stats["vectors"], stats["lexical_documents"]) == (3, 3, 3)

    copy = client.post("/v1/snapshots/first/restore", json={"index": "copy"})
    assert copy.status_code == 200 and copy.json()["index"] == "copy"
    assert _bm25(client, "copy", "heron") == {"a-0", "a-1", "a-2"}
    assert client.delete("/v1/snapshots/first").status_code == 200
    assert client.get("/v1/snapshots/first").status_code == 404


@pytest.mark.parametrize("method,path,body,status", [
    ("get", "/v1/snapshots/nope", None, 404),
    ("post", "/v1/snapshots/nope/restore", None, 404),
    ("delete", "/v1/snapshots/nope", None, 404),
    ("post", "/v1/indexes/nope/snapshots", None, 404),
    ("get", "/v1/snapshots/Bad%20Name", None, 422),
    ("get", "/v1/snapshots", {"index": "../x"}, 422),
    ("post", "/v1/indexes/notes/snapshots", {"name": "../../etc"}, 422),
    ("post", "/v1/indexes/notes/snapshots", {"name": "/tmp/x"}, 422),
    ("post", "/v1/indexes/notes/snapshots", {"path": "/tmp/x"}, 422),
    ("post", "/v1/snapshots/nope/restore", {"index": "../x"}, 422),
    ("post", "/v1/snapshots/nope/restore", {"dir": "/tmp"}, 422),
])
def test_refusals_use_the_error_envelope_and_take_no_path(client, method, path, body, status, tmp_path):
    client.post("/v1/indexes", json={"name": "notes"})
    if method == "get":
        response = client.get(path, params=body)
    else:
        response = getattr(client, method)(path, **({"json": body} if body is not None else {}))
    assert response.status_code == status, response.text
    assert set(response.json()["error"]) == {"type", "message", "details"}
    assert not (tmp_path / "x").exists()


def test_corrupted_snapshot_is_refused_over_rest_and_the_index_serves(client, tmp_path):
    client.post("/v1/indexes", json={"name": "notes"})
    client.post("/v1/indexes/notes/documents", json={"documents": _docs("a", 2, "heron")})
    _drain(client)
    assert client.post("/v1/indexes/notes/snapshots", json={"name": "s"}).status_code == 201
    assert client.post("/v1/indexes/notes/snapshots", json={"name": "s"}).status_code == 409
    (tmp_path / "snaps" / "s" / "config.json").write_text("{}")
    refused = client.post("/v1/snapshots/s/restore")
    assert refused.status_code == 422 and "sha256" in refused.json()["error"]["message"]
    assert _bm25(client, "notes", "heron") == {"a-0", "a-1"}


def test_elasticsearch_backed_index_is_refused(client, engine, monkeypatch):
    from foveal.config import IndexConfig
    from foveal.snapshots import Snapshots

    monkeypatch.delenv("FOVEAL_ES_SNAPSHOT_REPO", raising=False)
    client.post("/v1/indexes", json={"name": "notes"})
    # an index whose stored config names Elasticsearch (written as an operator's CLI config could)
    path = engine.path_of("notes") / "config.json"
    config = IndexConfig.parse(__import__("json").loads(path.read_text()))
    engine.get("notes").config = config.model_copy(update={"lexical": config.lexical.model_copy(
        update={"backend": "elasticsearch"})})
    response = client.post("/v1/indexes/notes/snapshots")
    assert response.status_code == 409
    assert "FOVEAL_ES_SNAPSHOT_REPO" in response.json()["error"]["message"]
    assert Snapshots(engine, client.app.state.settings.snapshot_dir).list() == []


def test_snapshot_routes_need_an_admin_key_and_keep_to_its_indexes(engine, tmp_path, monkeypatch):
    """Snapshots are admin routes; an admin key limited to some indexes sees, restores and deletes only their
    snapshots, and cannot restore one of them into another index."""
    from foveal.api.app import create_app

    monkeypatch.setenv("FOVEAL_API_KEYS", "root admin root-secret-0123456789;"
                                          "tenant admin tenant-secret-0123456789 notes;"
                                          "reader read reader-secret-0123456789")
    settings = ServiceSettings.from_env()
    settings = ServiceSettings(**{**{f: getattr(settings, f) for f in settings.__dataclass_fields__},
                                  "embedded_workers": 0, "snapshot_dir": str(tmp_path / "snaps")})
    root = {"X-API-Key": "root-secret-0123456789"}
    tenant = {"X-API-Key": "tenant-secret-0123456789"}
    with TestClient(create_app(engine, settings=settings)) as c:
        for name in ("notes", "other"):
            assert c.post("/v1/indexes", json={"name": name}, headers=root).status_code == 201
            assert c.post(f"/v1/indexes/{name}/snapshots", json={"name": f"{name}-s"},
                          headers=root).status_code == 201
        reader = c.get("/v1/snapshots", headers={"X-API-Key": "reader-secret-0123456789"})
        assert reader.status_code == 403
        assert c.get("/v1/snapshots").status_code == 401
        assert [s["name"] for s in c.get("/v1/snapshots", headers=tenant).json()] == ["notes-s"]
        assert c.get("/v1/snapshots/other-s", headers=tenant).status_code == 403
        assert c.post("/v1/indexes/other/snapshots", headers=tenant).status_code == 403
        assert c.post("/v1/snapshots/other-s/restore", headers=tenant).status_code == 403
        assert c.post("/v1/snapshots/notes-s/restore", json={"index": "other"}, headers=tenant).status_code == 403
        assert c.delete("/v1/snapshots/other-s", headers=tenant).status_code == 403
        assert {s["name"] for s in c.get("/v1/snapshots", headers=root).json()} == {"notes-s", "other-s"}
        assert c.post("/v1/snapshots/notes-s/restore", headers=tenant).status_code == 200
