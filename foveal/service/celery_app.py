"""The Celery app (``FOVEAL_QUEUE=celery``): Redis is the broker; job records are Redis hashes
(:mod:`foveal.service.redis_jobs`); ``foveal worker`` runs it.

Every task ends its part of the job, whatever happens (the bounds are in :mod:`foveal.service.settings`):

* success, or documents refused one by one: counted (once per task key, so a redelivery changes nothing).
* a transient error (the index's write lock, SQLite busy, I/O, Elasticsearch unreachable): retried with backoff;
  after ``FOVEAL_TASK_MAX_RETRIES`` its documents are reported failed with the error.
* any other error: its documents are reported failed with the error, at once.
* the soft time limit (``FOVEAL_TASK_TIME_LIMIT_S``): its documents are reported failed; the hard limit (15 s
  later by default) kills the child, and ``IngestTask.on_failure`` (run by the worker's main process) reports
  them.
* the worker dies (SIGKILL, OOM): ``task_acks_late`` leaves the message unacknowledged in Redis, and a live worker's
  sweep (every ``FOVEAL_RESTORE_INTERVAL_S``) delivers it again once ``FOVEAL_VISIBILITY_TIMEOUT_S`` (90 s, always
  above the hard time limit and the longest retry countdown, so a running task is never handed to a second worker)
  has passed since it was taken. After ``FOVEAL_TASK_MAX_DELIVERIES`` starts of the same task, it is given up.
* the index was deleted (and maybe created again) since the batch was submitted: the task carries the index's
  instance id, and every document is reported failed ("index deleted") instead of written into the new index.

Other choices: ``worker_prefetch_multiplier=1`` (a worker holds one unacknowledged batch at a time);
``task_ignore_result`` (the job record is the result; nothing is stored per task, so nothing piles up); the
model loads in the pool's child process on its first task, never in the parent before a fork (CUDA-safe).
"""

from __future__ import annotations

import json
import logging
import os
import time

from celery import Celery, Task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.signals import worker_process_init

from foveal.service.redis_jobs import REDIS_CONNECT_TIMEOUT_S, REDIS_SOCKET_TIMEOUT_S, RedisJobs
from foveal.service.settings import MAX_RETRY_COUNTDOWN_S, ServiceSettings

log = logging.getLogger(__name__)
#: One JSON line per task run (the embedded queue writes the same lines: :meth:`foveal.service.jobs.EmbeddedQueue`).
job_log = logging.getLogger("foveal.jobs")

_apps: dict[tuple, Celery] = {}


def get_celery(settings: ServiceSettings | None = None) -> Celery:
    settings = settings or ServiceSettings.from_env()
    key = (settings.redis_url, settings.redis_prefix, settings.celery_queue, settings.visibility_timeout_s,
           settings.task_time_limit_s, settings.restore_interval_s, settings.task_max_retries,
           settings.task_max_deliveries)
    app = _apps.get(key)
    if app is None:
        app = _apps[key] = _make(settings)
    return app


def __getattr__(name: str) -> Celery:
    """``app``: the Celery app for this process's environment, so the ``celery`` command can find it
    (``celery -A foveal.service.celery_app inspect ping``, the compose worker health check). Built on first use."""
    if name == "app":
        return get_celery()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _make(settings: ServiceSettings) -> Celery:
    app = Celery("foveal", broker=settings.redis_url)
    transport = {
        "visibility_timeout": settings.visibility_timeout_s,
        # sweep for expired unacknowledged tasks every restore_interval_s (kombu's default throttle would make it
        # ten times that)
        "unacked_restore_interval": settings.restore_interval_s,
        "unacked_restore_throttle": 1,
        # bounded broker round trips: a publish during a Redis outage fails in seconds (the API answers 503)
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S,
        "socket_timeout": REDIS_SOCKET_TIMEOUT_S,
    }
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.task_time_limit_s,
        task_time_limit=settings.hard_time_limit_s,
        broker_transport_options=transport,
        # the job record in Redis is the result: no per-task result is stored (nor kept, were one ever asked for)
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        result_expires=3600,
        task_default_queue=settings.celery_queue,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=REDIS_CONNECT_TIMEOUT_S,
        # the worker reconnects for as long as Redis is away (ingest resumes when it returns, without a restart)
        broker_connection_retry=True,
        broker_connection_max_retries=None,
        # a publish (the API's POST) retries briefly, then fails: the caller gets a 503 with Retry-After, not a hang
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        worker_hijack_root_logger=False,
        worker_proc_alive_timeout=300,  # the child loads the model in worker_process_init (below)
    )
    retries = settings.task_max_retries
    jobs: list[RedisJobs] = []

    def records() -> RedisJobs:
        if not jobs:
            jobs.append(RedisJobs(settings))
        return jobs[0]

    class IngestTask(Task):
        def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
            """Whatever escaped the task body, and the hard time limit (called in the worker's main process after
            it killed the child): report the task's documents failed, so the job ends."""
            try:
                job_id, task_key, index, documents = args[:4]
                if type(exc).__name__ == "TimeLimitExceeded":
                    reason = f"the task ran past the hard time limit of {settings.hard_time_limit_s} s and was stopped"
                else:
                    reason = f"internal error: {type(exc).__name__}: {exc}"
                records().complete(job_id, task_key, 0, _failed(documents, reason))
            except Exception:  # a broken on_failure must not take the worker's main process down
                log.exception("could not report task %s failed", task_id)

    # shared=False: this app's task only (Celery adds a shared task to every app made later, with this closure's
    # settings; a process that builds apps for two settings, as the tests do, would run the first app's task)
    @app.task(name="foveal.ingest_batch", bind=True, base=IngestTask, max_retries=retries, shared=False)
    def ingest_batch(self, job_id: str, task_key: str, index: str, documents: list, instance: str | None = None,
                     request_id: str | None = None) -> None:
        started = time.perf_counter()
        try:
            _run(self, job_id, task_key, index, documents, instance)
        finally:  # one JSON line per task run, with the request id of the upsert that queued it
            job_log.info(json.dumps({"event": "ingest_task", "request_id": request_id, "job_id": job_id,
                                     "task": task_key, "index": index, "attempt": self.request.retries + 1,
                                     "documents": len(documents),
                                     "duration_ms": round((time.perf_counter() - started) * 1000, 3)}))

    def _run(self, job_id: str, task_key: str, index: str, documents: list, instance: str | None) -> None:
        import redis

        from foveal.service.worker import RETRYABLE, index_batch, worker_engine

        try:
            starts = records().started(job_id, task_key, self.request.retries)
            if starts > settings.task_max_deliveries:
                done, errors = 0, _failed(documents, f"given up: its worker died {starts - 1} times while running it "
                                                     "(FOVEAL_TASK_MAX_DELIVERIES)")
            else:
                done, errors = index_batch(worker_engine(), index, documents, instance)
        except SoftTimeLimitExceeded:
            done, errors = 0, _failed(documents, f"the task ran past the time limit of {settings.task_time_limit_s} s "
                                                 "(FOVEAL_TASK_TIME_LIMIT_S); some of its documents may be indexed, "
                                                 "post them again (in smaller batches) to be sure")
        except RETRYABLE as exc:
            if self.request.retries < retries:
                try:
                    records().count_retry()
                except Exception:  # noqa: BLE001 - a counter must not stop the retry
                    pass
                raise self.retry(exc=exc, countdown=min(MAX_RETRY_COUNTDOWN_S, 2 ** self.request.retries))
            done, errors = 0, _failed(documents, f"gave up after {retries + 1} attempts: {exc}")
        except redis.RedisError as exc:  # the job record cannot be read: deliver again later
            raise Reject(exc, requeue=True) from exc
        except Exception as exc:  # a bug or a non-transient backend error must not leave the job open
            log.exception("task %s failed", task_key)
            done, errors = 0, _failed(documents, f"internal error: {type(exc).__name__}: {exc}")
        try:
            records().complete(job_id, task_key, done, errors)
        except redis.RedisError as exc:  # indexed (idempotently) but not counted: run it again once Redis is back
            raise Reject(exc, requeue=True) from exc

    return app


def _failed(documents: list, reason: str) -> list[dict]:
    from foveal.service.worker import all_failed

    return all_failed(documents, reason)


@worker_process_init.connect
def _load_in_child(**_kwargs) -> None:
    """Open the indexes (and so load the model) in each pool child, after the fork, outside any task's time
    limit. The parent never loads a model, so forking is safe with CUDA."""
    from foveal.registry import preload_models
    from foveal.service.worker import worker_engine

    engine = worker_engine()
    refused = engine.open_all(pipelines=False)  # an index that cannot be trusted is logged, not fatal
    if preload_models():  # the model loads lazily; load it here, not inside a task's time limit
        engine.load_encoders(refused)


def run_worker(concurrency: int = 1, queues: str | None = None, loglevel: str = "INFO") -> None:
    """Start a Celery worker (prefork pool) on the ingest queue; blocks."""
    settings = ServiceSettings.from_env()
    app = get_celery(settings)
    os.environ.setdefault("FOVEAL_QUEUE", "celery")
    app.worker_main(
        ["worker", "--hostname=celery@%h", f"--concurrency={concurrency}", "--pool=prefork", f"--queues={queues or settings.celery_queue}",
         f"--loglevel={loglevel}", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    )
