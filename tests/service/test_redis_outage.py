"""Redis goes away under the Celery queue (a private ``redis-server`` that the test stops and starts again on the
same port): search keeps serving, ingest and job reads answer 503 ``BackendUnavailableError`` in the error
envelope with ``Retry-After``, ``/readyz`` names the ``redis`` check, a refused POST leaves no job behind, and once
Redis is back the same API process accepts a batch that a worker indexes (no restart)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest
from fastapi.testclient import TestClient

from tests.service.test_celery_worker import _kill, _start_worker, _wait


class PrivateRedis:
    """A ``redis-server`` of this test's own, on a fixed free port, that can be stopped and started again."""

    def __init__(self, folder) -> None:
        self.folder = folder
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "yes",
                                      "--appendfsync", "always", "--dir", str(self.folder)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=2)
        for _ in range(100):
            try:
                if client.ping():
                    return
            except redis.RedisError:
                time.sleep(0.1)
        raise RuntimeError("the private redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture()
def private_redis(monkeypatch, tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path)
    server.start()
    for key, value in {"FOVEAL_QUEUE": "celery", "FOVEAL_REDIS_URL": server.url, "FOVEAL_REDIS_PREFIX": "outage:",
                       "FOVEAL_CELERY_QUEUE": "outage", "FOVEAL_RESTORE_INTERVAL_S": "1"}.items():
        monkeypatch.setenv(key, value)
    yield server
    server.stop()


def _assert_unavailable(response) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["type"] == "BackendUnavailableError"
    assert "Redis" in error["message"]
    assert int(response.headers["Retry-After"]) >= 1


@pytest.mark.redis
def test_redis_outage_and_return(private_redis, engine, tiny, home):
    import redis

    from foveal.api.app import create_app

    with TestClient(create_app(engine), raise_server_exceptions=False) as client:
        assert client.get("/readyz").json()["checks"]["redis"] == "ok"
        before = client.post("/v1/indexes/tiny/documents",
                             json={"documents": [{"_id": "before", "text": "Accepted before Redis went away."}]})
        assert before.status_code == 202, before.text

        private_redis.stop()
        refused = client.post("/v1/indexes/tiny/documents", json={"documents": [{"_id": "a", "text": "lost?"}]})
        _assert_unavailable(refused)
        _assert_unavailable(client.get(f"/v1/jobs/{before.json()['job_id']}"))
        search = client.post("/v1/indexes/tiny/search", json={"query": "moon tides", "k": 1})
        assert search.status_code == 200, search.text
        assert search.json()["hits"][0]["id"] == "tides"
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["redis"].startswith("down")

        private_redis.start()  # same port, same data: the refused POST left no job record (it accepted nothing)
        job_keys = redis.Redis.from_url(private_redis.url).keys("outage:job:*")
        assert {k.decode().split(":")[2] for k in job_keys} == {before.json()["job_id"]}
        assert client.get("/readyz").json()["checks"]["redis"] == "ok"
        accepted = client.post("/v1/indexes/tiny/documents",
                               json={"documents": [{"_id": "back", "text": "Redis came back and ingest resumed."}]})
        assert accepted.status_code == 202, accepted.text
        worker = _start_worker(home)
        try:
            jobs = [_wait(client, r.json()["job_id"], lambda j: j["state"] == "done", 120) for r in (before, accepted)]
        finally:
            _kill(worker)
        for job in jobs:  # the batch accepted before the outage is not lost, the one after it is indexed
            assert (job["state"], job["done"], job["failed"]) == ("done", 1, 0), job
        for doc_id in ("before", "back"):
            assert client.get(f"/v1/indexes/tiny/documents/{doc_id}").status_code == 200


def test_embedded_queue_that_cannot_be_written_is_a_503(engine, tiny, monkeypatch):
    """The embedded queue's SQLite file is full (a real SQLITE_FULL: max_page_count pinned to the file's size):
    ingest answers 503 with Retry-After, accepts nothing, and search keeps serving."""
    from foveal.api.app import create_app
    from foveal.service.jobs import EmbeddedQueue
    from foveal.service.settings import ServiceSettings

    full = {"on": False}
    open_conn = EmbeddedQueue._conn

    def conn(self):
        connection = open_conn(self)
        if full["on"]:
            pages = connection.execute("PRAGMA page_count").fetchone()[0]
            connection.execute(f"PRAGMA max_page_count = {pages}")
        return connection

    monkeypatch.setattr(EmbeddedQueue, "_conn", conn)
    with TestClient(create_app(engine, settings=ServiceSettings(embedded_workers=0)),
                    raise_server_exceptions=False) as client:
        before = client.get("/metrics").text
        full["on"] = True
        big = [{"_id": f"d{i}", "text": "glacier report " * 400} for i in range(20)]
        response = client.post("/v1/indexes/tiny/documents", json={"documents": big})
        assert response.status_code == 503, response.text
        assert response.json()["error"]["type"] == "BackendUnavailableError"
        assert int(response.headers["Retry-After"]) >= 1
        assert client.post("/v1/indexes/tiny/search", json={"query": "moon tides", "k": 1}).status_code == 200
        full["on"] = False
        assert [line for line in client.get("/metrics").text.splitlines() if line.startswith("foveal_jobs")] == \
            [line for line in before.splitlines() if line.startswith("foveal_jobs")]
