"""The Celery app (``FOVEAL_QUEUE=celery``): Redis is broker and result store; ``foveal worker`` runs it.

Delivery guarantees, and why:

* ``task_acks_late`` + ``task_reject_on_worker_lost``: a task is acknowledged after it ran, so a worker killed in the
  middle of a batch (even by SIGKILL) leaves the message in Redis, and it is delivered again.
* a worker sweeps Redis for unacknowledged tasks whose visibility timeout ran out every
  ``FOVEAL_RESTORE_INTERVAL_S`` and queues them again.
* ``worker_prefetch_multiplier=1``: a worker holds one unacknowledged batch at a time.
* ``visibility_timeout`` (``FOVEAL_VISIBILITY_TIMEOUT_S``) is kept above the hard task time limit
  (``FOVEAL_TASK_TIME_LIMIT_S``), so a batch still running is never handed to a second worker.
* retries with exponential backoff on transient errors (the index's write lock, SQLite busy, I/O).
* tasks are idempotent (see :mod:`foveal.service.worker`), so a redelivery changes nothing.
* the model loads in the pool's child process on its first task, never in the parent before a fork (CUDA-safe).
"""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_process_init

from foveal.service.settings import ServiceSettings

_apps: dict[tuple, Celery] = {}


def get_celery(settings: ServiceSettings | None = None) -> Celery:
    settings = settings or ServiceSettings.from_env()
    key = (settings.redis_url, settings.celery_queue, settings.visibility_timeout_s, settings.task_time_limit_s,
           settings.restore_interval_s)
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
    app = Celery("foveal", broker=settings.redis_url, backend=settings.redis_url)
    transport = {
        "visibility_timeout": settings.visibility_timeout_s,
        # sweep for expired unacknowledged tasks every restore_interval_s (kombu's default throttle would make it
        # ten times that)
        "unacked_restore_interval": settings.restore_interval_s,
        "unacked_restore_throttle": 1,
    }
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.task_time_limit_s,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        result_expires=settings.job_ttl_s,
        task_default_queue=settings.celery_queue,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_proc_alive_timeout=300,  # the child loads the model in worker_process_init (below)
    )
    retries = settings.task_max_retries

    @app.task(name="foveal.ingest_batch", bind=True, max_retries=retries)
    def ingest_batch(self, job_id: str, task_key: str, index: str, documents: list) -> dict:
        from foveal.service.jobs import CeleryQueue
        from foveal.service.worker import RETRYABLE, index_batch, worker_engine

        try:
            done, errors = index_batch(worker_engine(), index, documents)
        except RETRYABLE as exc:
            if self.request.retries < retries:
                raise self.retry(exc=exc, countdown=min(60, 2 ** self.request.retries))
            done, errors = 0, [{"id": d.get("_id") if isinstance(d, dict) else None,
                                "reason": f"gave up after {retries + 1} attempts: {exc}"} for d in documents]
        counted = CeleryQueue(settings).complete(job_id, task_key, done, errors)
        return {"task": task_key, "done": done, "failed": len(errors), "counted": counted}

    return app


@worker_process_init.connect
def _load_in_child(**_kwargs) -> None:
    """Open the indexes (and so load the model) in each pool child, after the fork, outside any task's time
    limit. The parent never loads a model, so forking is safe with CUDA."""
    from foveal.registry import preload_models
    from foveal.service.worker import worker_engine

    engine = worker_engine()
    for name in engine.list_indexes():
        collection = engine.get(name)
        if preload_models():
            collection.encoder  # noqa: B018 - the model loads lazily; load it here, not inside a task's time limit


def run_worker(concurrency: int = 1, queues: str | None = None, loglevel: str = "INFO") -> None:
    """Start a Celery worker (prefork pool) on the ingest queue; blocks."""
    settings = ServiceSettings.from_env()
    app = get_celery(settings)
    os.environ.setdefault("FOVEAL_QUEUE", "celery")
    app.worker_main(
        ["worker", "--hostname=celery@%h", f"--concurrency={concurrency}", "--pool=prefork", f"--queues={queues or settings.celery_queue}",
         f"--loglevel={loglevel}", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    )
