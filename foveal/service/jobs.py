"""Ingest jobs and the queue behind them, in two implementations with one interface.

* :class:`EmbeddedQueue` (the default): a persistent queue in ``$FOVEAL_HOME/queue.sqlite``. A POST is answered
  202 only after its tasks are committed there; worker threads (in the API process, or ``foveal worker``) claim a
  task with a lease (the visibility timeout), run it, and mark it done in the same transaction that updates the
  job's counters. A task whose worker died is claimed again when its lease runs out, or at once when a process
  starts (``recover``), so a restart resumes everything accepted.
* :class:`CeleryQueue` (``FOVEAL_QUEUE=celery``): tasks go to Celery on Redis (the 202 is sent after Redis took the
  message); job records are Redis hashes with a TTL. Workers are ``foveal worker`` processes.

A job is ``{id, index, state, total, done, failed, errors[]}``; ``state`` is ``queued`` (nothing processed),
``running`` or ``done`` (every document indexed or refused; refused ones are in ``errors`` with id and reason).
Counters are updated once per task key, so a redelivered task never counts twice.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from foveal.errors import NotFoundError
from foveal.service.settings import ServiceSettings

#: At most this many per-document errors are kept per job (the counters stay exact).
MAX_JOB_ERRORS = 1000


class JobNotFoundError(NotFoundError):
    pass


def job_view(job_id: str, index: str, total: int, done: int, failed: int, errors: list, created: float,
             updated: float) -> dict[str, Any]:
    processed = done + failed
    state = "done" if processed >= total else ("running" if processed > 0 else "queued")
    return {"id": job_id, "index": index, "state": state, "total": total, "done": done, "failed": failed,
            "errors": errors, "created": created, "updated": updated}


def split(documents: list[Any], size: int) -> list[list[Any]]:
    return [documents[i : i + size] for i in range(0, len(documents), size)]


class IngestQueue(Protocol):
    kind: str

    def submit(self, index: str, documents: list[Any], rejected: list[dict[str, Any]], total: int) -> dict: ...

    def job(self, job_id: str) -> dict[str, Any]: ...

    def stats(self) -> dict[str, Any]:
        """``{"jobs": {state: count}, "queue_depth": n, "documents_indexed": n}``."""
        ...

    def ping(self) -> None:
        """Raise when the queue's backend is not reachable."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


# -- embedded ------------------------------------------------------------------------------------------------------
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, idx TEXT NOT NULL, total INTEGER NOT NULL, done INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0, errors TEXT NOT NULL DEFAULT '[]', created REAL NOT NULL, updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, job_id TEXT NOT NULL, idx TEXT NOT NULL, payload TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done')), attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0, lease_until REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks(state, not_before);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class EmbeddedQueue:
    kind = "embedded"

    def __init__(self, home: Path, settings: ServiceSettings, engine_factory=None) -> None:
        self.path = Path(home) / "queue.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self._engine_factory = engine_factory
        self._local = threading.local()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conn().executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # an accepted batch survives power loss
            conn.execute("PRAGMA busy_timeout=60000")
            self._local.conn = conn
        return conn

    # -- producer --------------------------------------------------------------------------------------------------
    def submit(self, index: str, documents: list[Any], rejected: list[dict[str, Any]], total: int) -> dict:
        job_id = uuid.uuid4().hex
        now = time.time()
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "INSERT INTO jobs (id, idx, total, failed, errors, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (job_id, index, total, len(rejected), json.dumps(rejected[:MAX_JOB_ERRORS]), now, now),
            )
            for n, chunk in enumerate(split(documents, self.settings.task_docs)):
                conn.execute(
                    "INSERT INTO tasks (id, job_id, idx, payload, state) VALUES (?, ?, ?, ?, 'queued')",
                    (f"{job_id}:{n}", job_id, index, json.dumps(chunk)),
                )
            conn.execute("DELETE FROM jobs WHERE updated < ?", (now - self.settings.job_ttl_s,))
            conn.execute("DELETE FROM tasks WHERE state = 'done' AND job_id NOT IN (SELECT id FROM jobs)")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._wake.set()
        return self.job(job_id)

    def job(self, job_id: str) -> dict[str, Any]:
        row = self._conn().execute(
            "SELECT id, idx, total, done, failed, errors, created, updated FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        if row is None:
            raise JobNotFoundError(f"job {job_id!r} does not exist (or has expired)", job=job_id)
        return job_view(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), row[6], row[7])

    def stats(self) -> dict[str, Any]:
        conn = self._conn()
        jobs = {"queued": 0, "running": 0, "done": 0}
        for total, done, failed in conn.execute("SELECT total, done, failed FROM jobs"):
            jobs["done" if done + failed >= total else ("running" if done + failed else "queued")] += 1
        depth = conn.execute("SELECT COUNT(*) FROM tasks WHERE state != 'done'").fetchone()[0]
        row = conn.execute("SELECT value FROM counters WHERE name = 'documents_indexed'").fetchone()
        return {"jobs": jobs, "queue_depth": depth, "documents_indexed": row[0] if row else 0}

    def ping(self) -> None:
        self._conn().execute("SELECT 1 FROM tasks LIMIT 1").fetchall()

    # -- consumer --------------------------------------------------------------------------------------------------
    def recover(self) -> int:
        """Requeue tasks left running by a process that is gone (call when no other worker shares this home)."""
        return self._conn().execute("UPDATE tasks SET state = 'queued' WHERE state = 'running'").rowcount

    def claim(self) -> tuple[str, str, str, list[Any], int] | None:
        now = time.time()
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(
                "SELECT id, job_id, idx, payload, attempts FROM tasks WHERE (state = 'queued' AND not_before <= ?) "
                "OR (state = 'running' AND lease_until < ?) ORDER BY rowid LIMIT 1",
                (now, now),
            ).fetchone()
            if row is not None:
                conn.execute(
                    "UPDATE tasks SET state = 'running', attempts = attempts + 1, lease_until = ? WHERE id = ?",
                    (now + self.settings.visibility_timeout_s, row[0]),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if row is None:
            return None
        return row[0], row[1], row[2], json.loads(row[3]), row[4] + 1

    def complete(self, task_id: str, job_id: str, done: int, errors: list[dict[str, Any]]) -> None:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            changed = conn.execute(
                "UPDATE tasks SET state = 'done', payload = '[]' WHERE id = ? AND state != 'done'", (task_id,)
            ).rowcount
            if changed:
                row = conn.execute("SELECT errors FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row is not None:
                    kept = (json.loads(row[0]) + errors)[:MAX_JOB_ERRORS]
                    conn.execute(
                        "UPDATE jobs SET done = done + ?, failed = failed + ?, errors = ?, updated = ? WHERE id = ?",
                        (done, len(errors), json.dumps(kept), time.time(), job_id),
                    )
                conn.execute(
                    "INSERT INTO counters (name, value) VALUES ('documents_indexed', ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                    (done,),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def retry_later(self, task_id: str, attempts: int) -> None:
        delay = min(60.0, 0.5 * 2 ** (attempts - 1))
        self._conn().execute(
            "UPDATE tasks SET state = 'queued', not_before = ? WHERE id = ? AND state = 'running'",
            (time.time() + delay, task_id),
        )

    def run_one(self, engine) -> bool:
        """Claim and run one task; False when there was nothing to do."""
        from foveal.service.worker import RETRYABLE, index_batch

        claimed = self.claim()
        if claimed is None:
            return False
        task_id, job_id, index, documents, attempts = claimed
        try:
            done, errors = index_batch(engine, index, documents)
        except RETRYABLE as exc:
            if attempts <= self.settings.task_max_retries:
                self.retry_later(task_id, attempts)
                return True
            done, errors = 0, [{"id": d.get("_id") if isinstance(d, dict) else None,
                                "reason": f"gave up after {attempts} attempts: {exc}"} for d in documents]
        except Exception as exc:  # a bug must not wedge the queue: report it on every document of the task
            done, errors = 0, [{"id": d.get("_id") if isinstance(d, dict) else None,
                                "reason": f"internal error: {type(exc).__name__}: {exc}"} for d in documents]
        self.complete(task_id, job_id, done, errors)
        return True

    def work(self, engine, stop: threading.Event | None = None, idle_s: float = 0.2) -> None:
        """Run tasks until ``stop`` is set."""
        stop = stop or self._stop
        while not stop.is_set():
            if not self.run_one(engine):
                self._wake.wait(idle_s)
                self._wake.clear()

    def start(self) -> None:
        if self.settings.embedded_workers <= 0 or self._threads:
            return
        self.recover()
        engine = self._engine_factory() if self._engine_factory else None
        for n in range(self.settings.embedded_workers):
            thread = threading.Thread(target=self.work, args=(engine,), name=f"foveal-ingest-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=60)
        self._threads.clear()

    def wait(self, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Block until the job is done (for the CLI and tests)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["state"] == "done" or time.monotonic() > deadline:
                return job
            time.sleep(0.05)


# -- celery on redis -----------------------------------------------------------------------------------------------
_COMPLETE = """
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'done', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'failed', #ARGV - 4)
redis.call('HSET', KEYS[1], 'updated', ARGV[3])
for i = 5, #ARGV do
  if redis.call('LLEN', KEYS[3]) < 1000 then redis.call('RPUSH', KEYS[3], ARGV[i]) end
end
redis.call('INCRBY', KEYS[4], ARGV[2])
local ttl = tonumber(ARGV[4])
redis.call('EXPIRE', KEYS[1], ttl); redis.call('EXPIRE', KEYS[2], ttl); redis.call('EXPIRE', KEYS[3], ttl)
return 1
"""


class CeleryQueue:
    kind = "celery"

    def __init__(self, settings: ServiceSettings) -> None:
        import redis

        self.settings = settings
        self.redis = redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
        self.prefix = settings.redis_prefix
        self._complete = self.redis.register_script(_COMPLETE)

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def submit(self, index: str, documents: list[Any], rejected: list[dict[str, Any]], total: int) -> dict:
        from foveal.service.celery_app import get_celery

        job_id = uuid.uuid4().hex
        now = time.time()
        ttl = self.settings.job_ttl_s
        with self.redis.pipeline() as pipe:
            pipe.hset(self._key("job", job_id), mapping={"index": index, "total": total, "done": 0,
                                                       "failed": len(rejected), "created": now, "updated": now})
            if rejected:
                pipe.rpush(self._key("job", job_id, "errors"), *[json.dumps(e) for e in rejected[:MAX_JOB_ERRORS]])
            pipe.zadd(self._key("jobs"), {job_id: now})
            pipe.zremrangebyscore(self._key("jobs"), 0, now - ttl)
            pipe.expire(self._key("job", job_id), ttl)
            pipe.expire(self._key("job", job_id, "errors"), ttl)
            pipe.execute()
        app = get_celery(self.settings)
        for n, chunk in enumerate(split(documents, self.settings.task_docs)):
            # apply_async returns once Redis has the message: only then is the batch accepted
            app.send_task("foveal.ingest_batch", args=[job_id, f"{job_id}:{n}", index, chunk],
                          queue=self.settings.celery_queue)
        return self.job(job_id)

    def job(self, job_id: str) -> dict[str, Any]:
        data = {k.decode(): v.decode() for k, v in self.redis.hgetall(self._key("job", job_id)).items()}
        if not data:
            raise JobNotFoundError(f"job {job_id!r} does not exist (or has expired)", job=job_id)
        errors = [json.loads(e) for e in self.redis.lrange(self._key("job", job_id, "errors"), 0, MAX_JOB_ERRORS)]
        return job_view(job_id, data["index"], int(data["total"]), int(data["done"]), int(data["failed"]), errors,
                        float(data["created"]), float(data["updated"]))

    def complete(self, job_id: str, task_key: str, done: int, errors: list[dict[str, Any]]) -> bool:
        """Count a task once (a redelivered task returns False and changes nothing)."""
        keys = [self._key("job", job_id), self._key("job", job_id, "tasks"), self._key("job", job_id, "errors"),
                self._key("documents_indexed")]
        args = [task_key, done, time.time(), self.settings.job_ttl_s, *[json.dumps(e) for e in errors]]
        if not self.redis.exists(keys[0]):
            return False  # expired or unknown job: nothing to count
        return bool(self._complete(keys=keys, args=args))

    def stats(self) -> dict[str, Any]:
        jobs = {"queued": 0, "running": 0, "done": 0}
        ids = [i.decode() for i in self.redis.zrange(self._key("jobs"), -10_000, -1)]
        with self.redis.pipeline() as pipe:
            for job_id in ids:
                pipe.hmget(self._key("job", job_id), "total", "done", "failed")
            rows = pipe.execute() if ids else []
        for total, done, failed in rows:
            if total is None:
                continue
            processed = int(done) + int(failed)
            jobs["done" if processed >= int(total) else ("running" if processed else "queued")] += 1
        depth = int(self.redis.llen(self.settings.celery_queue))
        indexed = int(self.redis.get(self._key("documents_indexed")) or 0)
        return {"jobs": jobs, "queue_depth": depth, "documents_indexed": indexed}

    def ping(self) -> None:
        self.redis.ping()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.redis.close()


def make_queue(home: Path, settings: ServiceSettings, engine_factory=None) -> IngestQueue:
    if settings.queue == "celery":
        return CeleryQueue(settings)
    return EmbeddedQueue(home, settings, engine_factory)
