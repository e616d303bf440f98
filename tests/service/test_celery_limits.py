"""A real Celery worker on the real Redis ends every job, whatever its task does: raises a non-retryable error, runs
past the soft time limit, or hangs where the soft limit cannot reach it (the worker's main process kills the child
at the hard limit). The task body is a stand-in chosen by document id, and the home holds no index, so the worker
loads no model; the time limit is 2 s here (60 s by default), the hard one 3 s.

Finding 8 of issue 10: only retryable exceptions completed a task, so each of these jobs stayed open forever.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.redis

_WORKER = r"""
import signal, time

import foveal.service.worker as worker


def stand_in(engine, index, documents, instance=None):
    kind = documents[0]["_id"]
    if kind == "bug":
        raise RuntimeError("a bug")
    if kind == "hang":  # deaf to the soft time limit (SIGUSR1), as a long call into C code is
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    time.sleep(60)
    return len(documents), []


worker.index_batch = stand_in
from foveal.service.celery_app import run_worker

run_worker(concurrency=1, loglevel="WARNING")
"""


def test_every_task_outcome_ends_its_job_in_a_real_worker(redis_env, home, monkeypatch):
    from foveal.service.jobs import CeleryQueue
    from foveal.service.settings import ServiceSettings

    monkeypatch.setenv("FOVEAL_TASK_TIME_LIMIT_S", "2")
    queue = CeleryQueue(ServiceSettings.from_env())
    jobs = {kind: queue.submit("any", [{"_id": kind, "text": "x"}], [], 1)["id"] for kind in ("bug", "slow", "hang")}
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FOVEAL_HOME": str(home)}
    worker = subprocess.Popen([sys.executable, "-c", _WORKER], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not all(queue.job(j)["state"] == "done" for j in jobs.values()):
            assert worker.poll() is None and time.monotonic() < deadline, {k: queue.job(j) for k, j in jobs.items()}
            time.sleep(0.2)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
    reasons = {kind: [e["reason"] for e in queue.job(j)["errors"]] for kind, j in jobs.items()}
    assert reasons["bug"] == ["internal error: RuntimeError: a bug"]
    assert len(reasons["slow"]) == 1 and "ran past the time limit of 2 s" in reasons["slow"][0]
    assert reasons["hang"] == ["the task ran past the hard time limit of 3 s and was stopped"]
    assert all(queue.job(j)["failed"] == 1 and queue.job(j)["done"] == 0 for j in jobs.values())
