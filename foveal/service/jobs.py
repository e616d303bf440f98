"""Ingest jobs and the queue behind them, in two implementations with one interface.

* :class:`EmbeddedQueue` (the default): a persistent queue in ``$FOVEAL_HOME/queue.sqlite``. A POST is answered
  202 only after the job and all its tasks are committed there, in one transaction; worker threads (in the API
  process, or ``foveal worker``) claim a task with a lease that a heartbeat renews while it runs, and mark it done in
  the same transaction that updates the job's counters. A task whose worker died is claimed again once its lease
  runs out (``FOVEAL_LEASE_S``), by any process sharing the home; a task a live process runs is never taken.
* :class:`CeleryQueue` (``FOVEAL_QUEUE=celery``): tasks go to Celery on Redis (the 202 is sent after Redis took
  every message of the batch); job records are Redis hashes with a TTL. Workers are ``foveal worker`` processes.

Every task carries the instance id of its index as it was at submission: a batch for an index deleted since (and
maybe created again under its name) reports its documents failed ("index deleted") and is never written into the
new index (:meth:`foveal.index.collection.Collection.upsert` checks the id under the write lock). Every outcome of
a task (success, refused documents, errors, retries exhausted, time limit, a worker that died too often) ends its
part of the job, so a job always reaches ``done``.

A job is ``{id, index, state, total, done, failed, errors[]}``; ``state`` is ``queued`` (nothing processed),
``running`` or ``done`` (every document indexed or refused; refused ones are in ``errors`` with id and reason).
Counters are updated once per task key, so a redelivered task never counts twice.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from contextlib import contextmanager

from foveal.errors import BackendUnavailableError, NotFoundError
from foveal.service.redis_jobs import RedisJobs
from foveal.service.settings import MAX_JOB_ERRORS, ServiceSettings

log = logging.getLogger(__name__)
#: One JSON line per task run (``event: ingest_task``), carrying the request id of the upsert that queued it.
job_log = logging.getLogger("foveal.jobs")


def _request_id() -> str | None:
    """The id of the request being served (None outside one, e.g. the CLI)."""
    from foveal.api.middleware import current_request_id

    return current_request_id.get()


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

    def submit(self, index: str, documents: list[Any], rejected: list[dict[str, Any]], total: int,
               instance: str | None = None) -> dict:
        """Queue a batch for the index whose instance id is ``instance`` (None: no fence); all or nothing."""
        ...

    def cancel_index(self, index: str, instance: str | None) -> int:
        """The index was deleted: end its queued tasks now where the queue can (their documents failed)."""
        ...

    def job(self, job_id: str) -> dict[str, Any]: ...

    def stats(self) -> dict[str, Any]:
        """``{"jobs": {state: count}, "queue_depth": n, "documents_indexed": n, "queues": {queue: depth},
        "ingest": {"accepted": n, "indexed": n, "failed": n, "retried": n}}`` (the last two optional)."""
        ...

    def recent(self, index: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The latest jobs (newest first), of one index or all."""
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
#: Columns added after the first release (a queue file written by it gains them in place): the index's instance id
#: the task was submitted for, the lease holder (one random id per queue object), and how many holders died.
_ADDED_COLUMNS = {"instance": "TEXT", "holder": "TEXT", "lost": "INTEGER NOT NULL DEFAULT 0", "request_id": "TEXT"}


#: Retry-After (seconds) sent with a 503 while the embedded queue's file cannot be written.
QUEUE_RETRY_AFTER_S = 30


def _bump(conn: sqlite3.Connection, name: str, by: int) -> None:
    """Add ``by`` to a persistent counter (inside the caller's transaction)."""
    if by:
        conn.execute("INSERT INTO counters (name, value) VALUES (?, ?) "
                     "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (name, by))


def _cannot_write(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_FULL, SQLITE_READONLY, SQLITE_IOERR, SQLITE_CANTOPEN: the machine's problem, not the request's."""
    text = str(exc).lower()
    return any(part in text for part in ("disk is full", "readonly", "disk i/o error", "unable to open"))


class EmbeddedQueue:
    """Tasks in SQLite, claimed with leases.

    A worker claims a task by writing its holder id and ``lease_until = now + FOVEAL_LEASE_S``; while the task runs,
    a heartbeat thread of the holder renews the lease every third of it. So a task is claimed again only when its
    holder stopped renewing (the process died, or hangs): never while another live process runs it, whichever
    process starts or recovers meanwhile. Completing is guarded by the task's state (counted once), so even a task
    whose holder was only paused past its lease is counted once.
    """

    kind = "embedded"

    def __init__(self, home: Path, settings: ServiceSettings, engine_factory=None) -> None:
        self.path = Path(home) / "queue.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.holder = uuid.uuid4().hex
        self._engine_factory = engine_factory
        self._local = threading.local()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._beat_lock = threading.Lock()
        self._beat_stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._held: set[str] = set()  # tasks this object's threads run: the heartbeat renews these only
        conn = self._conn()
        conn.executescript(_SCHEMA)
        have = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
        for column, kind in _ADDED_COLUMNS.items():
            if column not in have:
                try:
                    conn.execute(f"ALTER TABLE tasks ADD COLUMN {column} {kind}")
                except sqlite3.OperationalError as exc:  # another process added it first
                    if "duplicate column" not in str(exc):
                        raise

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
    def submit(self, index: str, documents: list[Any], rejected: list[dict[str, Any]], total: int,
               instance: str | None = None) -> dict:
        """Queue a batch in one transaction (the job and all its tasks, or nothing). ``instance`` is the index's
        instance id, checked again before the store commit (a batch for a deleted index is never written)."""
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
                    "INSERT INTO tasks (id, job_id, idx, payload, state, instance, request_id) "
                    "VALUES (?, ?, ?, ?, 'queued', ?, ?)",
                    (f"{job_id}:{n}", job_id, index, json.dumps(chunk), instance, _request_id()),
                )
            _bump(conn, "documents_accepted", len(documents))
            _bump(conn, "documents_failed", len(rejected))
            conn.execute("DELETE FROM jobs WHERE updated < ?", (now - self.settings.job_ttl_s,))
            conn.execute("DELETE FROM tasks WHERE state = 'done' AND job_id NOT IN (SELECT id FROM jobs)")
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL can)
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and _cannot_write(exc):
                log.warning("the embedded queue cannot be written: %s", exc)
                raise BackendUnavailableError("the ingest queue cannot be written (disk full or read-only); nothing "
                                              "was accepted, try again later", backend="queue",
                                              retry_after=QUEUE_RETRY_AFTER_S) from None
            raise
        self._wake.set()
        return self.job(job_id)

    def cancel_index(self, index: str, instance: str | None) -> int:
        """End the queued tasks of a deleted index now: each reports its documents failed ("index deleted").
        Tasks already running are fenced by the instance id under the index's write lock. Returns tasks ended."""
        from foveal.service.worker import all_failed, index_deleted_reason

        conn = self._conn()
        sql = "SELECT id, job_id, payload FROM tasks WHERE idx = ? AND state = 'queued'"
        params: tuple = (index,)
        if instance is not None:  # only that creation's tasks: a re-created index's own batches are kept
            sql += " AND (instance = ? OR instance IS NULL)"
            params += (instance,)
        ended = 0
        for task_id, job_id, payload in conn.execute(sql, params).fetchall():
            errors = all_failed(json.loads(payload), index_deleted_reason(index))
            if self.complete(task_id, job_id, 0, errors, only_if_queued=True):
                ended += 1
        return ended

    def job(self, job_id: str) -> dict[str, Any]:
        row = self._conn().execute(
            "SELECT id, idx, total, done, failed, errors, created, updated FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        if row is None:
            raise JobNotFoundError(f"job {job_id!r} does not exist (or has expired)", job=job_id)
        return job_view(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), row[6], row[7])

    def recent(self, index: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        sql = "SELECT id, idx, total, done, failed, errors, created, updated FROM jobs"
        params: tuple = ()
        if index is not None:
            sql, params = sql + " WHERE idx = ?", (index,)
        rows = self._conn().execute(sql + " ORDER BY created DESC, rowid DESC LIMIT ?", (*params, limit)).fetchall()
        return [job_view(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7]) for r in rows]

    def stats(self) -> dict[str, Any]:
        conn = self._conn()
        jobs = {"queued": 0, "running": 0, "done": 0}
        for total, done, failed in conn.execute("SELECT total, done, failed FROM jobs"):
            jobs["done" if done + failed >= total else ("running" if done + failed else "queued")] += 1
        depth = conn.execute("SELECT COUNT(*) FROM tasks WHERE state != 'done'").fetchone()[0]
        counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
        return {"jobs": jobs, "queue_depth": depth, "documents_indexed": counters.get("documents_indexed", 0),
                "queues": {"embedded": depth},
                "ingest": {"accepted": counters.get("documents_accepted", 0),
                           "indexed": counters.get("documents_indexed", 0),
                           "failed": counters.get("documents_failed", 0),
                           "retried": counters.get("tasks_retried", 0)}}

    def ping(self) -> None:
        self._conn().execute("SELECT 1 FROM tasks LIMIT 1").fetchall()

    # -- leases ----------------------------------------------------------------------------------------------------
    def _start_heartbeat(self) -> None:
        with self._beat_lock:
            if self._beat is None or not self._beat.is_alive():
                self._beat_stop.clear()
                self._beat = threading.Thread(target=self._heartbeat, name="foveal-queue-heartbeat", daemon=True)
                self._beat.start()

    def _heartbeat(self) -> None:
        """Renew the lease of every task this queue object holds, every third of a lease, until stopped."""
        interval = self.settings.lease_s / 3
        while not self._beat_stop.wait(interval):
            try:
                self.renew()
            except sqlite3.Error:
                pass  # busy for a moment: the next beat comes well before the lease runs out

    def renew(self) -> int:
        """Extend the leases of the tasks this holder runs now; returns how many."""
        with self._beat_lock:
            held = list(self._held)
        if not held:
            return 0
        marks = ",".join("?" * len(held))
        return self._conn().execute(
            f"UPDATE tasks SET lease_until = ? WHERE state = 'running' AND holder = ? AND id IN ({marks})",
            (time.time() + self.settings.lease_s, self.holder, *held),
        ).rowcount

    def _release(self, task_id: str) -> None:
        """Stop renewing a task's lease (it is done; or its end could not be recorded, and it runs again once the
        lease ran out, idempotently)."""
        with self._beat_lock:
            self._held.discard(task_id)

    def _stop_heartbeat(self) -> None:
        self._beat_stop.set()
        beat = self._beat
        if beat is not None:
            beat.join(timeout=10)

    # -- consumer --------------------------------------------------------------------------------------------------
    def recover(self) -> int:
        """Requeue tasks whose lease ran out (their holder died): never one a live process is running. A task left
        running by a release without holders (no heartbeat, an hour's lease) counts as expired."""
        return self._conn().execute(
            "UPDATE tasks SET state = 'queued', holder = NULL, lost = lost + 1 "
            "WHERE state = 'running' AND (lease_until < ? OR holder IS NULL)",
            (time.time(),),
        ).rowcount

    def claim(self) -> tuple[str, str, str, list[Any], int, str | None, int] | None:
        """Take the next task (queued and due, or running with a lease that ran out) for this holder; returns
        ``(task id, job id, index, documents, attempts, instance, holders that died)`` or None."""
        self._start_heartbeat()
        now = time.time()
        conn = self._conn()
        row = None
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(
                "SELECT id, job_id, idx, payload, attempts, instance, lost, state FROM tasks "
                "WHERE (state = 'queued' AND not_before <= ?) OR (state = 'running' AND lease_until < ?) "
                "ORDER BY rowid LIMIT 1",
                (now, now),
            ).fetchone()
            if row is not None:
                lost = row[6] + (1 if row[7] == "running" else 0)  # its holder stopped renewing: it died
                conn.execute(
                    "UPDATE tasks SET state = 'running', attempts = attempts + 1, lease_until = ?, holder = ?, "
                    "lost = ? WHERE id = ?",
                    (now + self.settings.lease_s, self.holder, lost, row[0]),
                )
            if row is not None:
                with self._beat_lock:
                    self._held.add(row[0])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            if row is not None:
                self._release(row[0])
            raise
        if row is None:
            return None
        return row[0], row[1], row[2], json.loads(row[3]), row[4] + 1, row[5], lost

    def complete(self, task_id: str, job_id: str, done: int, errors: list[dict[str, Any]], *,
                 only_if_queued: bool = False) -> bool:
        """Mark a task done and count it in its job, once (False when it was done already)."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            guard = "state = 'queued'" if only_if_queued else "state != 'done'"
            changed = conn.execute(
                f"UPDATE tasks SET state = 'done', payload = '[]' WHERE id = ? AND {guard}", (task_id,)
            ).rowcount
            if changed:
                row = conn.execute("SELECT errors FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row is not None:
                    kept = (json.loads(row[0]) + errors)[:MAX_JOB_ERRORS]
                    conn.execute(
                        "UPDATE jobs SET done = done + ?, failed = failed + ?, errors = ?, updated = ? WHERE id = ?",
                        (done, len(errors), json.dumps(kept), time.time(), job_id),
                    )
                _bump(conn, "documents_indexed", done)
                _bump(conn, "documents_failed", len(errors))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return bool(changed)

    def retry_later(self, task_id: str, attempts: int) -> None:
        delay = min(60.0, 0.5 * 2 ** (attempts - 1))
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            changed = conn.execute(
                "UPDATE tasks SET state = 'queued', holder = NULL, not_before = ? "
                "WHERE id = ? AND state = 'running' AND holder = ?",
                (time.time() + delay, task_id, self.holder),
            ).rowcount
            if changed:
                _bump(conn, "tasks_retried", 1)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def run_one(self, engine) -> bool:
        """Claim and run one task; False when there was nothing to do. Every outcome completes the task."""
        from foveal.service.worker import RETRYABLE, all_failed, index_batch

        claimed = self.claim()
        if claimed is None:
            return False
        task_id, job_id, index, documents, attempts, instance, lost = claimed
        started = time.perf_counter()
        outcome: dict[str, Any] = {"outcome": "error"}
        try:
            if lost >= self.settings.task_max_deliveries:
                errors = all_failed(documents, f"given up: its worker died {lost} times while running it "
                                               "(FOVEAL_TASK_MAX_DELIVERIES)")
                self.complete(task_id, job_id, 0, errors)
                return True
            try:
                done, errors = index_batch(engine, index, documents, instance)
            except RETRYABLE as exc:
                if attempts <= self.settings.task_max_retries:
                    self.retry_later(task_id, attempts)
                    outcome = {"outcome": "retry", "error": f"{type(exc).__name__}: {exc}"}
                    return True
                done, errors = 0, all_failed(documents, f"gave up after {attempts} attempts: {exc}")
            except Exception as exc:  # a bug must not wedge the queue: report it on every document of the task
                done, errors = 0, all_failed(documents, f"internal error: {type(exc).__name__}: {exc}")
            self.complete(task_id, job_id, done, errors)
            outcome = {"outcome": "done", "done": done, "failed": len(errors)}
            return True
        finally:
            self._release(task_id)
            self._log_task(task_id, job_id, index, attempts, started, outcome)

    def _log_task(self, task_id: str, job_id: str, index: str, attempts: int, started: float,
                  outcome: dict[str, Any]) -> None:
        """One JSON line per task run on ``foveal.jobs``, with the request id of the upsert that queued it."""
        try:
            row = self._conn().execute("SELECT request_id FROM tasks WHERE id = ?", (task_id,)).fetchone()
        except sqlite3.Error:
            row = None
        job_log.info(json.dumps({"event": "ingest_task", "request_id": row[0] if row else None, "job_id": job_id,
                                 "task": task_id, "index": index, "attempt": attempts, **outcome,
                                 "duration_ms": round((time.perf_counter() - started) * 1000, 3)}))

    def work(self, engine, stop: threading.Event | None = None, idle_s: float = 0.2) -> None:
        """Run tasks until ``stop`` is set."""
        stop = stop or self._stop
        while not stop.is_set():
            try:
                busy = self.run_one(engine)
            except Exception:  # the queue file was busy past its timeout, say: keep the thread, try again
                log.exception("ingest worker: a task could not be claimed or recorded; retrying")
                busy = False
            if not busy:
                self._wake.wait(idle_s)
                self._wake.clear()

    def start(self) -> None:
        if self.settings.embedded_workers <= 0 or self._threads:
            return
        self.recover()  # only expired leases: a task another live process holds is left to it
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
        self._stop_heartbeat()

    def wait(self, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Block until the job is done (for the CLI and tests)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["state"] == "done" or time.monotonic() > deadline:
                return job
            time.sleep(0.05)


# -- celery on redis -----------------------------------------------------------------------------------------------
#: Retry-After (seconds) sent with a 503 while Redis is away.
REDIS_RETRY_AFTER_S = 5


@contextmanager
def redis_outage(settings: ServiceSettings):
    """Turn a Redis (or broker) connection failure into :class:`BackendUnavailableError`: the caller gets a 503
    with ``Retry-After`` in the error envelope, not a 500, and the message names neither the address nor the
    exception text (the server log has them). Search never passes through here, so it keeps serving."""
    import redis
    from kombu.exceptions import OperationalError

    try:
        yield
    except (redis.RedisError, OperationalError, ConnectionError, TimeoutError) as exc:
        log.warning("Redis is unreachable: %s: %s", type(exc).__name__, exc)
        raise BackendUnavailableError("the ingest queue (Redis) is unreachable; try again later",
                                      backend="redis", retry_after=REDIS_RETRY_AFTER_S) from None


class CeleryQueue:
    """Tasks on Celery; job records in Redis (:mod:`foveal.service.redis_jobs` says how submission stays
    all-or-nothing)."""

    kind = "celery"

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.records = RedisJobs(settings)
        self.redis = self.records.redis

    def submit(self, index: str, documents: list[Any], rejected: list[dict[str, Any]], total: int,
               instance: str | None = None) -> dict:
        """Queue a batch; all or nothing (a failure on the way discards the record). With Redis away this is a
        :class:`BackendUnavailableError`, and nothing was accepted."""
        with redis_outage(self.settings):
            return self._submit(index, documents, rejected, total, instance)

    def _submit(self, index: str, documents: list[Any], rejected: list[dict[str, Any]], total: int,
                instance: str | None) -> dict:
        from foveal.service.celery_app import get_celery

        job_id = uuid.uuid4().hex
        self.records.create_pending(job_id, index, total, rejected)
        chunks = {f"{job_id}:{n}": [job_id, f"{job_id}:{n}", index, chunk, instance]
                  for n, chunk in enumerate(split(documents, self.settings.task_docs))}
        app = get_celery(self.settings)
        try:
            self.records.record_chunks(job_id, chunks)  # what the reconciler sends again should the broker lose it
            with app.producer_or_acquire() as producer:
                for arguments in chunks.values():
                    # send_task returns once Redis has the message; the job is accepted only when all have gone
                    self._send(app, arguments, producer)
        except BaseException:
            try:
                self.records.discard(job_id)
            except Exception:
                pass  # Redis is gone too: the unaccepted record is invisible and expires
            raise
        self.records.accept(job_id, accepted=len(documents), rejected=len(rejected))
        return self.job(job_id)

    def _send(self, app, arguments: list, producer=None) -> None:
        job_id, task_key, index, chunk, instance = arguments
        # the request id of the upsert travels with the message, so the worker's log line for the task carries it
        app.send_task("foveal.ingest_batch", args=[job_id, task_key, index, chunk],
                      kwargs={"instance": instance, "request_id": _request_id()},
                      queue=self.settings.celery_queue, producer=producer)

    def reconcile(self, now: float | None = None) -> int:
        """Send again every uncounted task of an accepted job that has shown no sign of life (sent or started) for
        ``settings.redeliver_after_s``: one the broker lost (see :mod:`foveal.service.redis_jobs`). Only while the
        queue is empty, so a task merely waiting behind others is never sent twice. Returns how many were sent."""
        from foveal.service.celery_app import get_celery

        if self.redis.llen(self.settings.celery_queue):
            return 0
        now = time.time() if now is None else now
        app, sent = get_celery(self.settings), 0
        ids = [raw.decode() for raw in self.redis.zrange(self.records.key("jobs"), -10_000, -1)]
        with self.redis.pipeline() as pipe:  # one round trip to find the jobs with uncounted tasks
            for job_id in ids:
                pipe.hlen(self.records.key("job", job_id, "chunks"))
            open_jobs = [job_id for job_id, n in zip(ids, pipe.execute() if ids else []) if n]
        for job_id in open_jobs:
            chunks, last_seen = self.records.uncounted(job_id)
            for task_key, arguments in chunks.items():
                idle = now - last_seen.get(task_key, 0.0)
                if idle > self.settings.redeliver_after_s:
                    log.warning("job %s: task %s showed no sign of life for %.0f s (lost by the broker?); sending "
                                "it again", job_id, task_key, idle)
                    self._send(app, json.loads(arguments))
                    self.records.mark_sent(job_id, task_key)
                    sent += 1
        return sent

    def _reconcile_loop(self) -> None:
        while not self._stopping.wait(self.settings.restore_interval_s):
            try:
                self.reconcile()
            except Exception as exc:  # Redis away: /readyz says so; try again next round
                log.warning("job reconciler: %s: %s", type(exc).__name__, exc)

    def job(self, job_id: str) -> dict[str, Any]:
        with redis_outage(self.settings):
            found = self.records.read(job_id)
        if found is None:
            raise JobNotFoundError(f"job {job_id!r} does not exist (or has expired)", job=job_id)
        data, errors = found
        return job_view(job_id, data["index"], int(data["total"]), int(data["done"]), int(data["failed"]), errors,
                        float(data["created"]), float(data["updated"]))

    def complete(self, job_id: str, task_key: str, done: int, errors: list[dict[str, Any]]) -> bool:
        """Count a task once (a redelivered task returns False and changes nothing)."""
        return self.records.complete(job_id, task_key, done, errors)

    def cancel_index(self, index: str, instance: str | None) -> int:
        """Nothing to do here: queued tasks of a deleted index are fenced by its instance id when they run (each
        reports its documents failed, without loading the model)."""
        return 0

    def stats(self) -> dict[str, Any]:
        jobs = {"queued": 0, "running": 0, "done": 0}
        ids = [i.decode() for i in self.redis.zrange(self.records.key("jobs"), -10_000, -1)]
        with self.redis.pipeline() as pipe:
            for job_id in ids:
                pipe.hmget(self.records.key("job", job_id), "total", "done", "failed")
            rows = pipe.execute() if ids else []
        for total, done, failed in rows:
            if total is None:
                continue
            processed = int(done) + int(failed)
            jobs["done" if processed >= int(total) else ("running" if processed else "queued")] += 1
        depth = int(self.redis.llen(self.settings.celery_queue))
        names = ("documents_indexed", "documents_accepted", "documents_failed", "tasks_retried")
        values = [int(v or 0) for v in self.redis.mget([self.records.key(n) for n in names])]
        counters = dict(zip(names, values))
        return {"jobs": jobs, "queue_depth": depth, "documents_indexed": counters["documents_indexed"],
                "queues": {self.settings.celery_queue: depth},
                "ingest": {"accepted": counters["documents_accepted"], "indexed": counters["documents_indexed"],
                           "failed": counters["documents_failed"], "retried": counters["tasks_retried"]}}

    def recent(self, index: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        found = []
        for raw in self.redis.zrevrange(self.records.key("jobs"), 0, 10_000):
            try:
                job = self.job(raw.decode())
            except JobNotFoundError:
                continue
            if index is None or job["index"] == index:
                found.append(job)
                if len(found) >= limit:
                    break
        return found

    def ping(self) -> None:
        self.redis.ping()

    def start(self) -> None:
        """Run the reconciler in this (API) process, every ``FOVEAL_RESTORE_INTERVAL_S``."""
        self._stopping = threading.Event()
        self._reconciler = threading.Thread(target=self._reconcile_loop, name="foveal-job-reconciler", daemon=True)
        self._reconciler.start()

    def stop(self) -> None:
        stopping = getattr(self, "_stopping", None)
        if stopping is not None:
            stopping.set()
            self._reconciler.join(timeout=5)
        self.redis.close()


def make_queue(home: Path, settings: ServiceSettings, engine_factory=None) -> IngestQueue:
    if settings.queue == "celery":
        return CeleryQueue(settings)
    return EmbeddedQueue(home, settings, engine_factory)
