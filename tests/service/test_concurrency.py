"""Searches during ingest see committed documents only and never fail; a worker never writes a deleted index."""

from __future__ import annotations

import threading
import time

from fastapi.testclient import TestClient

from foveal.documents import parse_document
from foveal.service.settings import ServiceSettings
from tests.conftest import TINY_CORPUS


def test_searches_during_ingest_see_only_committed_documents(engine):
    from foveal.api.app import create_app

    engine.create_index("busy")
    docs = [{"_id": f"d{i}", "text": f"river delta sediment survey number {i}"} for i in range(60)]
    with TestClient(create_app(engine, settings=ServiceSettings(task_docs=5))) as client:
        job_id = client.post("/v1/indexes/busy/documents", json={"documents": docs}).json()["job_id"]
        failures: list[str] = []
        seen_counts: list[int] = []
        stop = threading.Event()

        def searcher() -> None:
            while not stop.is_set():
                r = client.post("/v1/indexes/busy/search", json={"query": "river sediment", "k": 100})
                if r.status_code != 200:
                    failures.append(r.text)
                    continue
                hits = r.json()["hits"]
                # every hit is a complete, committed document (fetched from the store, never half-written)
                if any(not h["text"].startswith("river delta") for h in hits):
                    failures.append(str(hits))
                seen_counts.append(len(hits))

        threads = [threading.Thread(target=searcher) for _ in range(3)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while client.get(f"/v1/jobs/{job_id}").json()["state"] != "done" and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join()
        assert failures == []
        assert client.get(f"/v1/jobs/{job_id}").json()["done"] == 60
        final = client.post("/v1/indexes/busy/search", json={"query": "river sediment", "k": 100}).json()
        assert len(final["hits"]) == 60
        assert seen_counts and min(seen_counts) < 60  # some searches really ran while the ingest was under way


def test_a_worker_reopens_an_index_deleted_by_another_process(home, engine):
    from foveal.engine import Engine

    worker = Engine(home)
    try:
        engine.create_index("swap")
        old = worker.get_current("swap")
        # several rounds: a deleted file's inode number is often handed straight to the next one, so identity by
        # inode (or by coarse file times) would miss some of these
        for round_ in range(1, 6):
            engine.delete_index("swap")
            engine.create_index("swap").upsert([parse_document(doc) for doc in TINY_CORPUS[:round_]])
            new = worker.get_current("swap")
            assert new is not old and new.store.count() == round_
            assert worker.get_current("swap") is new  # unchanged folder: the open collection is kept
            old = new
    finally:
        worker.close()
