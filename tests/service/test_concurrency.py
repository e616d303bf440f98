"""Searches during ingest see committed documents only, each complete in every store; a worker never writes a
deleted index."""

from __future__ import annotations

import fcntl
import threading
import time
from contextlib import contextmanager

import numpy as np
from fastapi.testclient import TestClient

from foveal.documents import parse_document
from foveal.index.base import PASSAGE_BITS
from foveal.service.settings import ServiceSettings
from tests.conftest import TINY_CORPUS

DIM = 384  # the default encoder's
WORDS = ["river", "delta", "sediment", "glacier", "basalt", "estuary", "dune", "moraine", "lagoon", "fjord"]


def _corpus(n: int) -> list[dict]:
    """``n`` documents, each with its own text, a token no other document has, and a vector of its own."""
    rng = np.random.default_rng(7)
    docs = []
    for i in range(n):
        words = " ".join(rng.choice(WORDS, size=4))
        vector = rng.standard_normal(DIM)
        docs.append({"_id": f"d{i}", "text": f"{words} survey token{i:04d}x",
                     "vector": (vector / np.linalg.norm(vector)).tolist()})
    return docs


@contextmanager
def _between_batches(collection):
    """Hold the index's write lock (``write.lock``, flock: what every writer holds for the length of one batch),
    so that no batch is half-way through while the stores are checked."""
    with open(collection.path / "write.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def test_every_hit_seen_during_ingest_is_complete_in_every_store(engine):
    """Readers search while the queue indexes 60 documents in batches of 5. Every hit they see must be a
    committed document: its GET answers 200 with the same text at once (the store is the commit point; a hit from
    a derived index that the store does not hold is a half-written document). And once no batch is in flight, the
    document must be in every store: its unique token finds it by BM25 and its own vector finds it first by dense
    search. Each document's text and token are its own, so a hit from the wrong store, version or document shows.
    """
    from foveal.api.app import create_app

    docs = _corpus(60)
    text_of = {d["_id"]: d["text"] for d in docs}
    collection = engine.create_index("busy")
    with TestClient(create_app(engine, settings=ServiceSettings(task_docs=5))) as client:
        job_id = client.post("/v1/indexes/busy/documents", json={"documents": docs}).json()["job_id"]
        failures: list[str] = []
        seen_counts: list[int] = []
        checked: set[str] = set()
        checked_lock = threading.Lock()
        stop = threading.Event()

        def complete_everywhere(doc_id: str) -> str | None:
            number = int(doc_id[1:])
            got = client.get(f"/v1/indexes/busy/documents/{doc_id}")
            if got.status_code != 200 or got.json()["text"] != text_of[doc_id]:
                return f"{doc_id}: GET {got.status_code} {got.text[:200]}"
            bm25 = client.post("/v1/indexes/busy/search",
                               json={"query": f"token{number:04d}x", "pipeline": "bm25", "k": 3}).json()["hits"]
            if [h["id"] for h in bm25[:1]] != [doc_id]:
                return f"{doc_id}: its token finds {[h['id'] for h in bm25]} by BM25"
            collection.refresh()
            query = np.asarray([docs[number]["vector"]], dtype=np.float32)
            _, ids = collection.vectors.search(query, 1)
            key = collection.get(doc_id).doc_key
            if int(ids[0][0]) >> PASSAGE_BITS != key:
                return f"{doc_id}: its vector finds key {int(ids[0][0]) >> PASSAGE_BITS}, not {key}"
            return None

        def reader() -> None:
            while not stop.is_set():
                r = client.post("/v1/indexes/busy/search", json={"query": "river survey", "k": 100})
                if r.status_code != 200:
                    failures.append(r.text)
                    continue
                hits = r.json()["hits"]
                seen_counts.append(len(hits))
                for hit in hits:  # at once, no lock held: a hit is a committed, complete document
                    got = client.get(f"/v1/indexes/busy/documents/{hit['id']}")
                    if hit["text"] != text_of.get(hit["id"]) or got.status_code != 200 \
                            or got.json()["text"] != hit["text"]:
                        failures.append(f"hit {hit['id']}: GET {got.status_code}, text {hit['text']!r}")
                with checked_lock:
                    fresh = sorted({h["id"] for h in hits} - checked)
                    checked.update(fresh)
                if fresh:
                    with _between_batches(collection):
                        failures.extend(p for p in map(complete_everywhere, fresh) if p)

        threads = [threading.Thread(target=reader) for _ in range(2)]
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
        assert seen_counts and min(seen_counts) < 60  # some searches really ran while the ingest was under way
        with _between_batches(collection):
            assert [p for p in map(complete_everywhere, text_of) if p] == []
        assert len(checked) > 5


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
