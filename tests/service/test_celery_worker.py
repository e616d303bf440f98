"""Against a real Redis and real `foveal worker` processes: batches posted over REST are indexed; a worker
killed with SIGKILL in the middle of a batch loses nothing and duplicates nothing, its batch redelivered once the
(test-sized) visibility timeout ran out; batches queued for an index that is then deleted and created again end
failed ("index deleted") and never write into the new one; no per-task Celery result is kept in Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ROOT, TINY_CORPUS
from tests.service.test_job_fencing import _docs as _vector_docs


def _start_worker(home, extra: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "FOVEAL_HOME": str(home), "PYTHONPATH": str(ROOT), **(extra or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "foveal.cli", "worker", "--concurrency", "1", "--loglevel", "WARNING"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the worker and its pool children
    except ProcessLookupError:
        pass
    proc.wait(10)


def _wait(client, job_id: str, until, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if until(job) or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def _docs(prefix: str, n: int) -> list[dict]:
    return [{"_id": f"{prefix}-{i}", "title": f"Report {prefix} {i}",
             "text": f"Field note {i} on {prefix}: glaciers, rivers and the weather of week {i}."} for i in range(n)]


@pytest.mark.redis
def test_worker_indexes_and_survives_sigkill(redis_env, home, engine, monkeypatch):
    from foveal.api.app import create_app

    # tasks of 4 documents; the test hook makes each document take 0.3 s before a batch commits, so a batch is
    # in flight for ~1.2 s; a redelivery comes 20 s (hard time limit 10 s + 10) after the batch was taken (90 s by
    # default, with a time limit of 60 s)
    monkeypatch.setenv("FOVEAL_TASK_DOCS", "4")
    monkeypatch.setenv("FOVEAL_TASK_TIME_LIMIT_S", "8")
    monkeypatch.setenv("FOVEAL_VISIBILITY_TIMEOUT_S", "1")  # raised to hard time limit + 10 by the settings
    monkeypatch.setenv("FOVEAL_RESTORE_INTERVAL_S", "2")
    engine.create_index("kill")
    worker = _start_worker(home, {"FOVEAL_DEBUG_INGEST_SLEEP_S": "0.3"})
    try:
        with TestClient(create_app(engine)) as client:
            assert client.get("/readyz").json()["checks"]["redis"] == "ok"
            first = client.post("/v1/indexes/kill/documents", json={"documents": TINY_CORPUS[:3]})
            second = client.post("/v1/indexes/kill/documents", json={"documents": TINY_CORPUS[3:]})
            assert first.status_code == second.status_code == 202
            for accepted in (first, second):
                job = _wait(client, accepted.json()["job_id"], lambda j: j["state"] == "done", 180)
                assert (job["state"], job["done"], job["failed"]) == ("done", 3, 0), job
            hits = client.post("/v1/indexes/kill/search", json={"query": "roasting coffee beans", "k": 1}).json()
            assert hits["hits"][0]["id"] == "coffee"

            # 12 documents = 3 tasks; kill the worker while the second task is in flight
            third = client.post("/v1/indexes/kill/documents", json={"documents": _docs("glacier", 12)})
            job_id = third.json()["job_id"]
            job = _wait(client, job_id, lambda j: j["done"] >= 4, 60)
            assert job["done"] == 4, job
            time.sleep(0.5)  # the next task sleeps 1.2 s before it can commit
            _kill(worker)
            killed = client.get(f"/v1/jobs/{job_id}").json()
            assert killed["state"] == "running" and killed["done"] < 12, killed

            # while no worker runs: batches queued for index "fence", which is then deleted and created again
            assert client.post("/v1/indexes", json={"name": "fence"}).status_code == 201
            stale = client.post("/v1/indexes/fence/documents", json={"documents": _vector_docs("old", 8, "quokka")})
            assert client.delete("/v1/indexes/fence").status_code == 200
            assert client.post("/v1/indexes", json={"name": "fence"}).status_code == 201
            fresh_docs = _vector_docs("new", 8, "zebrafish")
            fresh = client.post("/v1/indexes/fence/documents", json={"documents": fresh_docs})

            worker = _start_worker(home)
            job = _wait(client, job_id, lambda j: j["state"] == "done", 120)
            assert (job["state"], job["total"], job["done"], job["failed"]) == ("done", 12, 12, 0), job

            job_ids = [first.json()["job_id"], second.json()["job_id"], job_id]
            fenced = _wait(client, stale.json()["job_id"], lambda j: j["state"] == "done", 120)
            assert (fenced["state"], fenced["done"], fenced["failed"]) == ("done", 0, 8), fenced
            assert all("index deleted" in e["reason"] for e in fenced["errors"]), fenced["errors"]
            kept = _wait(client, fresh.json()["job_id"], lambda j: j["state"] == "done", 120)
            assert (kept["state"], kept["done"], kept["failed"]) == ("done", 8, 0), kept
            stats = client.get("/v1/indexes/fence").json()
            assert (stats["documents"], stats["vectors"], stats["lexical_documents"]) == (8, 8, 8), stats
            body = {"query": "quokka", "pipeline": "bm25", "k": 100}
            assert client.post("/v1/indexes/fence/search", json=body).json()["hits"] == []
            job_ids += [stale.json()["job_id"], fresh.json()["job_id"]]
    finally:
        _kill(worker)

    # the job records are the results: Celery keeps none of its own (they used to pile up in Redis)
    import redis

    client = redis.Redis.from_url(redis_env["FOVEAL_REDIS_URL"])
    for key in client.scan_iter(match="celery-task-meta-*", count=1000):
        stored = client.get(key) or b""
        assert not any(j.encode() in stored for j in job_ids), (key, stored)

    # every accepted document exactly once in every store, as a fresh process sees the files
    from foveal.engine import Engine

    fresh = Engine(home)
    try:
        stats = fresh.get("kill").stats()
        ids = [d["_id"] for d in TINY_CORPUS] + [d["_id"] for d in _docs("glacier", 12)]
        assert all(fresh.get("kill").get(i) is not None for i in ids)
        assert stats["documents"] == len(ids) == 18
        assert stats["passages"] == stats["vectors"] == 18  # one passage each: no duplicate vectors
        assert stats["lexical_documents"] == 18
        oplog_upserts = list(fresh.get("kill").store.changes_since(0))
        assert len(oplog_upserts) == 18  # each document was written once: the redelivered batch changed nothing
    finally:
        fresh.close()
