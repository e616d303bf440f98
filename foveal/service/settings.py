"""Service settings, read from the environment once per process.

==============================  ===========================  ======================================================
variable                        default                      meaning
==============================  ===========================  ======================================================
``FOVEAL_QUEUE``                ``embedded``                 ``embedded`` (SQLite queue + in-process worker) or
                                                             ``celery`` (Celery on Redis; run ``foveal worker``)
``FOVEAL_REDIS_URL``            ``redis://127.0.0.1:6379/0`` broker, result store and job records for ``celery``
``FOVEAL_REDIS_PREFIX``         ``foveal:``                  prefix of foveal's own Redis keys (job records)
``FOVEAL_CELERY_QUEUE``         ``foveal-ingest``            the Celery queue ingest batches go to
``FOVEAL_EMBEDDED_WORKERS``     ``1``                        worker threads the API process runs (embedded; 0: none)
``FOVEAL_TASK_DOCS``            ``32``                       documents per queued task (a batch is split into tasks)
``FOVEAL_MAX_BATCH_DOCS``       ``1000``                     most documents one POST may carry (413 above)
``FOVEAL_MAX_DOC_BYTES``        ``2500000``                  largest document as JSON, in bytes (413 above)
``FOVEAL_MAX_REQUEST_BYTES``    ``104857600``                largest request body by Content-Length (413 above)
``FOVEAL_TASK_TIME_LIMIT_S``    ``900``                      hard time limit of one task
``FOVEAL_VISIBILITY_TIMEOUT_S`` ``3600``                     an unacknowledged task is redelivered after this;
                                                             always raised above the task time limit
``FOVEAL_RESTORE_INTERVAL_S``  ``10``                       how often a worker looks for tasks whose visibility
                                                             timeout ran out (a killed worker's batch)
``FOVEAL_TASK_MAX_RETRIES``     ``8``                        retries (exponential backoff) before a batch fails
``FOVEAL_JOB_TTL_S``            ``604800``                   how long job records are kept (7 days)
==============================  ===========================  ======================================================

``FOVEAL_DEBUG_INGEST_SLEEP_S`` is a test hook only: a worker sleeps that long per document before it commits a
batch, so a test can kill it in the middle of one. Never set it in production.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from foveal.errors import ConfigError


def _int(name: str, default: int, low: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < low:
        raise ConfigError(f"{name}={value} must be at least {low}")
    return value


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    queue: str = "embedded"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "foveal:"
    celery_queue: str = "foveal-ingest"
    embedded_workers: int = 1
    task_docs: int = 32
    max_batch_docs: int = 1000
    max_doc_bytes: int = 2_500_000
    max_request_bytes: int = 100 * 1024 * 1024
    task_time_limit_s: int = 900
    visibility_timeout_s: int = 3600
    restore_interval_s: int = 10
    task_max_retries: int = 8
    job_ttl_s: int = 7 * 24 * 3600

    @classmethod
    def from_env(cls) -> "ServiceSettings":
        queue = os.environ.get("FOVEAL_QUEUE", "embedded").strip().lower() or "embedded"
        if queue not in ("embedded", "celery"):
            raise ConfigError(f"FOVEAL_QUEUE={queue!r}; allowed: embedded, celery")
        time_limit = _int("FOVEAL_TASK_TIME_LIMIT_S", 900, 1)
        return cls(
            queue=queue,
            redis_url=os.environ.get("FOVEAL_REDIS_URL", "redis://127.0.0.1:6379/0"),
            redis_prefix=os.environ.get("FOVEAL_REDIS_PREFIX", "foveal:"),
            celery_queue=os.environ.get("FOVEAL_CELERY_QUEUE", "foveal-ingest"),
            embedded_workers=_int("FOVEAL_EMBEDDED_WORKERS", 1),
            task_docs=_int("FOVEAL_TASK_DOCS", 32, 1),
            max_batch_docs=_int("FOVEAL_MAX_BATCH_DOCS", 1000, 1),
            max_doc_bytes=_int("FOVEAL_MAX_DOC_BYTES", 2_500_000, 1),
            max_request_bytes=_int("FOVEAL_MAX_REQUEST_BYTES", 100 * 1024 * 1024, 1),
            task_time_limit_s=time_limit,
            # the visibility timeout must outlast the longest task, or a running task would be delivered twice
            visibility_timeout_s=max(_int("FOVEAL_VISIBILITY_TIMEOUT_S", 3600, 1), time_limit + 5),
            restore_interval_s=_int("FOVEAL_RESTORE_INTERVAL_S", 10, 1),
            task_max_retries=_int("FOVEAL_TASK_MAX_RETRIES", 8),
            job_ttl_s=_int("FOVEAL_JOB_TTL_S", 7 * 24 * 3600, 1),
        )
