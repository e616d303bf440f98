"""The embedded queue's leases, with real processes sharing one FOVEAL_HOME: a task a live process runs is never
taken by another (its heartbeat renews the lease, and a process that starts, and so recovers, leaves it alone); a
task whose holder was SIGKILLed is taken again once its lease ran out.

Finding 8 of issue 10: ``start()`` requeued every running task, those of other live processes included. The task
body is a stand-in (no index, no model) that logs when it starts and ends; the lease is 3 s here (30 s by default)
and every task holds its worker longer than that, so only the heartbeat keeps it from a second worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT

HOLD_S = 4.0  # longer than the lease: without a heartbeat every task would be handed out again

_PROCESS = r"""
import json, os, sys, time
from pathlib import Path

import foveal.service.worker as worker
from foveal.service.jobs import EmbeddedQueue
from foveal.service.settings import ServiceSettings

home, log, hold, mode = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]


def stand_in(engine, index, documents, instance=None):
    with open(log, "a") as out:
        out.write(f"start {documents[0]['_id']} {os.getpid()}\n")
    time.sleep(hold)
    with open(log, "a") as out:
        out.write(f"end {documents[0]['_id']} {os.getpid()}\n")
    return len(documents), []


worker.index_batch = stand_in
queue = EmbeddedQueue(Path(home), ServiceSettings.from_env())
if mode == "work":
    queue.start()  # recovers first: this is where the old code took the other process's running tasks
    while queue.stats()["queue_depth"]:
        time.sleep(0.1)
    queue.stop()
else:  # claim one task, report it, and hang until killed
    print(queue.claim()[0], flush=True)
    time.sleep(600)
"""


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "FOVEAL_HOME": str(home), "FOVEAL_EMBEDDED_WORKERS": "2",
            "FOVEAL_LEASE_S": "3", "FOVEAL_VISIBILITY_TIMEOUT_S": "3"}


def _spawn(home: Path, log: Path, mode: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _PROCESS, str(home), str(log), str(HOLD_S), mode],
                            env=_env(home), **kwargs)


def _lines(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def _submit(home: Path, n: int) -> str:
    from foveal.service.jobs import EmbeddedQueue
    from foveal.service.settings import ServiceSettings

    queue = EmbeddedQueue(home, ServiceSettings(task_docs=1))
    return queue.submit("any", [{"_id": f"doc-{i}", "text": "x"} for i in range(n)], [], n)["id"]


def test_two_processes_share_a_home_and_no_task_runs_twice(tmp_path):
    from foveal.service.jobs import EmbeddedQueue
    from foveal.service.settings import ServiceSettings

    home, log = tmp_path / "home", tmp_path / "runs.log"
    job_id = _submit(home, 6)
    first = _spawn(home, log, "work")
    try:
        deadline = time.monotonic() + 120
        while not any(line[0] == "start" for line in _lines(log)):  # the first process holds a task ...
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        second = _spawn(home, log, "work")  # ... when the second starts
        assert second.wait(300) == 0
        assert first.wait(300) == 0
    finally:
        for proc in (first, locals().get("second")):
            if proc is not None and proc.poll() is None:
                proc.kill()
    starts = [line[1] for line in _lines(log) if line[0] == "start"]
    assert sorted(starts) == [f"doc-{i}" for i in range(6)], _lines(log)  # every task ran, and exactly once
    assert len({line[2] for line in _lines(log)}) == 2  # both processes worked
    job = EmbeddedQueue(home, ServiceSettings()).job(job_id)
    assert (job["state"], job["done"], job["failed"]) == ("done", 6, 0), job


def test_a_task_whose_holder_died_is_taken_once_its_lease_ran_out(tmp_path, monkeypatch):
    import foveal.service.worker as worker
    from foveal.service.jobs import EmbeddedQueue
    from foveal.service.settings import ServiceSettings

    home, log = tmp_path / "home", tmp_path / "runs.log"
    job_id = _submit(home, 1)
    holder = _spawn(home, log, "claim", stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        claimed = holder.stdout.readline().strip()
        assert claimed == f"{job_id}:0"
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(10)
    ran: list[str] = []
    monkeypatch.setattr(worker, "index_batch", lambda engine, index, documents, instance=None:
                        (ran.append(documents[0]["_id"]) or len(documents), []))
    for key, value in _env(home).items():
        monkeypatch.setenv(key, value)
    queue = EmbeddedQueue(home, ServiceSettings.from_env())
    deadline = time.monotonic() + 120
    while not queue.run_one(None):  # nothing to take until the dead holder's lease ran out
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert ran == ["doc-0"]
    job = queue.job(job_id)
    assert (job["state"], job["done"], job["failed"]) == ("done", 1, 0), job


def test_a_task_whose_holders_keep_dying_is_given_up(tmp_path):
    """A batch that kills its worker every time (say, out of memory) must not keep the job open forever."""
    from foveal.service.jobs import EmbeddedQueue
    from foveal.service.settings import ServiceSettings

    home = tmp_path / "home"
    job_id = _submit(home, 1)
    settings = ServiceSettings(task_max_deliveries=3)
    for _ in range(3):  # three holders claim it and die: the heartbeat stops, the lease runs out
        holder = EmbeddedQueue(home, settings)
        assert holder.claim() is not None
        holder._stop_heartbeat()
        holder._conn().execute("UPDATE tasks SET lease_until = 0")  # its lease ran out (no need to wait for it)
    survivor = EmbeddedQueue(home, settings)
    assert survivor.run_one(None)  # given up without running it
    job = survivor.job(job_id)
    assert (job["state"], job["done"], job["failed"]) == ("done", 0, 1), job
    assert "died 3 times" in job["errors"][0]["reason"]


def test_a_queue_file_of_the_previous_release_opens_and_its_stranded_task_runs(tmp_path, monkeypatch):
    """A queue.sqlite written before leases had holders: the columns are added in place, and a task it left running
    (an hour's lease, no heartbeat) is requeued by the next start instead of waiting out its lease."""
    import json
    import sqlite3

    import foveal.service.worker as worker
    from foveal.service.jobs import _SCHEMA, EmbeddedQueue
    from foveal.service.settings import ServiceSettings

    home = tmp_path / "home"
    home.mkdir()
    with sqlite3.connect(home / "queue.sqlite") as conn:
        conn.executescript(_SCHEMA)  # the first release's tables, as it wrote them
        conn.execute("INSERT INTO jobs (id, idx, total, created, updated) VALUES ('j', 'any', 1, 0, 0)")
        conn.execute("INSERT INTO tasks (id, job_id, idx, payload, state, attempts, lease_until) "
                     "VALUES ('j:0', 'j', 'any', ?, 'running', 1, ?)", (json.dumps([{"_id": "a"}]), time.time() + 3600))
    monkeypatch.setattr(worker, "index_batch", lambda engine, index, documents, instance=None: (len(documents), []))
    queue = EmbeddedQueue(home, ServiceSettings())
    assert queue.recover() == 1
    assert queue.run_one(None)
    job = queue.job("j")
    assert (job["state"], job["done"]) == ("done", 1), job
