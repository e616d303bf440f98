"""Against a real Redis and real `foveal worker` processes: batches posted over REST are indexed, and a worker
killed with SIGKILL in the middle of a batch loses nothing and duplicates nothing once restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ROOT, TINY_CORPUS


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
    # in flight for ~1.2 s; a redelivery comes 13 s (time limit 8 s + 5) after the kill
    monkeypatch.setenv("FOVEAL_TASK_DOCS", "4")
    monkeypatch.setenv("FOVEAL_TASK_TIME_LIMIT_S", "8")
    monkeypatch.setenv("FOVEAL_VISIBILITY_TIMEOUT_S", "1")  # raised to time limit + 5 by the settings
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

            worker = _start_worker(home)
            job = _wait(client, job_id, lambda j: j["state"] == "done", 120)
            assert (job["state"], job["total"], job["done"], job["failed"]) == ("done", 12, 12, 0), job
    finally:
        _kill(worker)

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
