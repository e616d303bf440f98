"""A real Redis for the queue tests: FOVEAL_REDIS_URL (or 127.0.0.1:6379) when it answers, else a private
``redis-server`` on a free port that is stopped afterwards. Tests use DB 15 of a shared server and their own key
prefix and queue name, and delete their keys afterwards."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid

import pytest


def _answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2).ping())
    except Exception:
        return False


@pytest.fixture(scope="session")
def redis_base_url():
    shared = os.environ.get("FOVEAL_REDIS_URL", "redis://127.0.0.1:6379/0")
    if _answers(shared):
        yield shared.rsplit("/", 1)[0] + "/15"
        return
    if shutil.which("redis-server") is None:
        pytest.skip("no Redis answers and redis-server is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        if _answers(url):
            break
        time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture()
def redis_env(redis_base_url, monkeypatch):
    """Environment for one celery-mode test: its own key prefix and queue."""
    import redis

    tag = uuid.uuid4().hex[:8]
    env = {
        "FOVEAL_QUEUE": "celery",
        "FOVEAL_REDIS_URL": redis_base_url,
        "FOVEAL_REDIS_PREFIX": f"foveal-test-{tag}:",
        "FOVEAL_CELERY_QUEUE": f"foveal-test-{tag}",
        "FOVEAL_JOB_TTL_S": "600",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env
    client = redis.Redis.from_url(redis_base_url)
    doomed = list(client.scan_iter(match=f"foveal-test-{tag}*"))
    if doomed:
        client.delete(*doomed)
