"""Deleting an index fences its jobs: a batch submitted for it, queued or already running when it is deleted, ends
with its documents reported failed ("index deleted") and never writes into an index re-created under the same name.

Finding 7 of issue 10: the old job wrote into the new index (documents 8, vectors 8, lexical 40) and reported 40
done. Documents carry their own vectors, so no document is encoded.
"""

from __future__ import annotations

import zlib

import numpy as np
from fastapi.testclient import TestClient

from foveal.service.settings import ServiceSettings


def _vector(seed: int, dimension: int = 384) -> list[float]:
    return np.random.default_rng(seed).standard_normal(dimension).astype(np.float32).tolist()


def _docs(prefix: str, n: int, word: str) -> list[dict]:
    seed = zlib.crc32(prefix.encode())
    return [{"_id": f"{prefix}-{i}", "text": f"{word} record {prefix} number {i}", "vector": _vector(seed + i)}
            for i in range(n)]


def _drain(queue, engine) -> None:
    while queue.run_one(engine):
        pass


def _check_new_index_only(client, engine, new_docs: list[dict]) -> None:
    stats = client.get("/v1/indexes/swap").json()
    assert (stats["documents"], stats["vectors"], stats["lexical_documents"]) == (8, 8, 8), stats
    hits = client.post("/v1/indexes/swap/search", json={"query": "zebrafish", "pipeline": "bm25", "k": 100}).json()
    assert sorted(h["id"] for h in hits["hits"]) == sorted(d["_id"] for d in new_docs)
    stale = client.post("/v1/indexes/swap/search", json={"query": "quokka", "pipeline": "bm25", "k": 100}).json()
    assert stale["hits"] == []


def _check_fenced(job: dict, total: int) -> None:
    assert (job["state"], job["total"], job["done"], job["failed"]) == ("done", total, 0, total), job
    assert all("index deleted" in e["reason"] for e in job["errors"]), job["errors"]


def test_queued_batches_of_a_deleted_index_end_failed_and_never_reach_its_successor(engine):
    from foveal.api.app import create_app

    engine.create_index("swap")
    with TestClient(create_app(engine, settings=ServiceSettings(embedded_workers=0, task_docs=10))) as client:
        queue = client.app.state.queue
        old = client.post("/v1/indexes/swap/documents", json={"documents": _docs("old", 40, "quokka")})
        assert old.status_code == 202
        assert client.delete("/v1/indexes/swap").status_code == 200
        # no worker has run: deleting the index ended its queued tasks
        _check_fenced(client.get(f"/v1/jobs/{old.json()['job_id']}").json(), 40)
        assert client.post("/v1/indexes", json={"name": "swap"}).status_code == 201
        new_docs = _docs("new", 8, "zebrafish")
        new = client.post("/v1/indexes/swap/documents", json={"documents": new_docs})
        _drain(queue, engine)
        _check_fenced(client.get(f"/v1/jobs/{old.json()['job_id']}").json(), 40)
        assert client.get(f"/v1/jobs/{new.json()['job_id']}").json()["done"] == 8
        _check_new_index_only(client, engine, new_docs)


def test_a_running_batch_is_fenced_under_the_write_lock(engine, monkeypatch):
    """The index is deleted and re-created while a task runs (after it opened the index and checked its id, while
    it prepares its documents): the commit must refuse, and the job must say why."""
    from foveal.api.app import create_app
    from foveal.documents import parse_document
    from foveal.index.collection import Collection

    engine.create_index("swap")
    new_docs = _docs("new", 8, "zebrafish")
    prepare = Collection.prepare
    swapped: list[bool] = []

    def prepare_then_swap(self, documents):
        prepared = prepare(self, documents)
        if not swapped:
            swapped.append(True)
            engine.delete_index("swap")
            engine.create_index("swap").upsert([parse_document(d) for d in new_docs])
        return prepared

    monkeypatch.setattr(Collection, "prepare", prepare_then_swap)
    with TestClient(create_app(engine, settings=ServiceSettings(embedded_workers=0, task_docs=40))) as client:
        old = client.post("/v1/indexes/swap/documents", json={"documents": _docs("old", 40, "quokka")})
        assert old.status_code == 202
        _drain(client.app.state.queue, engine)
        assert swapped
        _check_fenced(client.get(f"/v1/jobs/{old.json()['job_id']}").json(), 40)
        _check_new_index_only(client, engine, new_docs)


def test_deleting_an_index_waits_for_a_batch_being_committed(engine):
    """The fence is checked under the write lock, so deletion takes that lock too: a writer past its check always
    finishes its commit before the folder goes (or it would write into a folder re-created under the name)."""
    import threading

    collection = engine.create_index("swap")
    deleter = threading.Thread(target=engine.delete_index, args=("swap",))
    with collection._file_lock():  # a writer between its instance check and its commit
        deleter.start()
        deleter.join(1.0)
        assert deleter.is_alive()  # the deletion waits for the writer
        assert engine.exists("swap")
    deleter.join(60)
    assert not deleter.is_alive() and not engine.exists("swap")
