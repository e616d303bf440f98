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
``FOVEAL_MAX_REQUEST_BYTES``    ``104857600``                largest request body, counted while it streams in
                                                             (chunked bodies too; 413 above)
``FOVEAL_SEARCH_TIMEOUT_S``     ``10``                       time budget of one REST search; past it 503
                                                             ``OverloadedError`` (the search thread still finishes)
``FOVEAL_MAX_QUEUE_DEPTH``      ``10000``                    ingest backpressure: with this many tasks not done,
                                                             POST documents is 503 ``OverloadedError`` + Retry-After
``FOVEAL_MIN_FREE_DISK_MB``     ``512``                      ingest backpressure: below this much free space on
                                                             FOVEAL_HOME's disk, POST documents is 503 as above
``FOVEAL_TASK_TIME_LIMIT_S``    ``60``                       time limit of one task (soft: its documents are then
                                                             reported failed; hard, 15 s later (a quarter of the
                                                             limit when shorter), the child is killed and the
                                                             documents are reported failed as well)
``FOVEAL_VISIBILITY_TIMEOUT_S`` ``90``                       celery: a task whose worker died is redelivered this
                                                             long after it was taken; always raised to at least
                                                             the hard time limit + 10 s (the longest retry
                                                             countdown, 5 s, and a margin)
``FOVEAL_RESTORE_INTERVAL_S``   ``10``                       celery: how often a worker looks for tasks whose
                                                             visibility timeout ran out (a killed worker's batch)
``FOVEAL_TASK_MAX_DELIVERIES``  ``3``                        a task whose worker died this many times while running
                                                             it is given up (its documents reported failed)
``FOVEAL_LEASE_S``              ``30``                       embedded: a claimed task's lease, renewed every third
                                                             of it while the task runs; a task whose holder died is
                                                             claimed again once the lease runs out
``FOVEAL_TASK_MAX_RETRIES``     ``8``                        retries (exponential backoff) before a batch fails
``FOVEAL_JOB_TTL_S``            ``604800``                   how long job records are kept (7 days)
``FOVEAL_API_KEYS``             (none)                       API keys, ``NAME SCOPES SECRET [INDEXES]`` entries
                                                             separated by ``;`` or newlines (see
                                                             :mod:`foveal.api.auth`); none: the API is open
``FOVEAL_API_KEYS_FILE``        (none)                       a file of such entries, one a line, ``#`` comments;
                                                             re-read when it changes (rotation without restart)
``FOVEAL_ALLOW_OPEN``           ``0``                        ``1``: ``foveal serve`` may bind a non-loopback
                                                             address without keys (dangerous: only behind
                                                             something that authenticates)
``FOVEAL_OPEN_OPS``             ``0``                        ``1``: ``/metrics`` and ``/readyz``'s checks need no key
``FOVEAL_CORS_ORIGINS``         (none: closed)               comma-separated origins browsers may call from
                                                             (``*``: any)
``FOVEAL_RATE_LIMIT_RPS``       ``0`` (off)                  requests a second per key (bursts of twice that);
                                                             429 with ``Retry-After`` above
``FOVEAL_MAX_AGENT_RUNS``       ``2``                        concurrent agent runs per key (429 above; 0: no limit)
``FOVEAL_SNAPSHOT_DIR``         ``$FOVEAL_HOME/snapshots``   where snapshots are written (REST names snapshots,
                                                             never paths)
``FOVEAL_ES_SNAPSHOT_REPO``     (none)                       Elasticsearch snapshot repository; without it,
                                                             snapshots of Elasticsearch-backed indexes are refused
==============================  ===========================  ======================================================

Read where they are used (:mod:`foveal.config`), each time, so an index opened later sees a change:
``FOVEAL_ES_SERVERS`` (Elasticsearch servers by name, ``main=http://es:9200;archive=http://es2:9200``; an index
config picks one with ``elasticsearch.server``), ``FOVEAL_ES_URL`` (the server named ``default``) and
``FOVEAL_MODELS_DIR`` (default ``$FOVEAL_HOME/models``: the models a REST config may name; ``foveal train`` registers
its output there).

With Redis unreachable (``celery``), ingest and job reads answer 503 ``BackendUnavailableError`` with
``Retry-After`` (search keeps serving; ``/readyz`` fails its ``redis`` check); every Redis and broker round trip is
bounded (:mod:`foveal.service.redis_jobs`), and the API and workers reconnect on their own when Redis returns.

``FOVEAL_MAX_SEARCH_REQUEST_BYTES`` (default ``2097152``, too long a name for the table): the largest body of a
search, ``/v1/agent/ask`` or body-based ``documents/_get`` / ``documents/_delete`` request (413 above). FastAPI
parses JSON on the event loop, so read requests are kept small; 1,000 ASCII ids of 512 characters (0.5 MB) fit.

``FOVEAL_DEBUG_INGEST_SLEEP_S`` is a test hook only: a worker sleeps that long per document before it commits a
batch, so a test can kill it in the middle of one. Never set it in production.

How soon a task ends, whatever happens (both bounds hold with the defaults above):

* its worker dies (SIGKILL, OOM, power): Celery redelivers it within ``FOVEAL_VISIBILITY_TIMEOUT_S`` +
  ``FOVEAL_RESTORE_INTERVAL_S`` (100 s) while any worker runs; the embedded queue within ``FOVEAL_LEASE_S`` (30 s)
  plus a worker's poll; after ``FOVEAL_TASK_MAX_DELIVERIES`` such deaths its documents are reported failed.
* it runs too long: at ``FOVEAL_TASK_TIME_LIMIT_S`` its documents are reported failed (Celery).
* it raises anything: retried with backoff when the error is transient (at most ``FOVEAL_TASK_MAX_RETRIES``
  times), otherwise its documents are reported failed with the error at once.

Size ``FOVEAL_TASK_DOCS`` so one task takes well under the time limit on your hardware.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from foveal.errors import ConfigError

#: At most this many per-document errors are kept per job (the counters stay exact).
MAX_JOB_ERRORS = 1000
#: The hard time limit of a Celery task is this much above the soft one (time to report the documents failed):
#: a quarter of the soft limit, 1 to 15 s.
HARD_LIMIT_GRACE_S = 15
#: The longest countdown before a Celery retry. A task waiting for its countdown is held unacknowledged by the
#: worker, so the visibility timeout must outlast countdown + hard time limit (or it would be delivered twice).
MAX_RETRY_COUNTDOWN_S = 5


def _float(name: str, default: float, low: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not value >= low or value == float("inf"):
        raise ConfigError(f"{name}={raw} must be a finite number of at least {low:g}")
    return value


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


def _bool(name: str) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}={raw!r}; allowed: 1 or 0 (true/false, yes/no, on/off)")


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
    max_search_request_bytes: int = 2 * 1024 * 1024
    search_timeout_s: float = 10.0
    max_queue_depth: int = 10_000
    min_free_disk_mb: int = 512
    task_time_limit_s: int = 60
    visibility_timeout_s: int = 90
    restore_interval_s: int = 10
    task_max_deliveries: int = 3
    lease_s: int = 30
    task_max_retries: int = 8
    job_ttl_s: int = 7 * 24 * 3600
    # access (foveal.api.auth); the key entries may hold secrets: kept out of repr
    api_keys: str = field(default="", repr=False)
    api_keys_file: str = ""
    allow_open: bool = False
    open_ops: bool = False
    cors_origins: tuple[str, ...] = ()
    rate_limit_rps: float = 0.0
    max_agent_runs: int = 2
    snapshot_dir: str | None = None
    es_snapshot_repo: str | None = None

    @property
    def hard_time_limit_s(self) -> int:
        return self.task_time_limit_s + min(HARD_LIMIT_GRACE_S, max(1, self.task_time_limit_s // 4))

    @property
    def redeliver_after_s(self) -> int:
        """How long a Celery task may show no sign of life (neither sent nor started) before the API's reconciler
        sends it again: past the visibility timeout a message kombu still holds in ``unacked`` has been restored
        and started (a start is a sign of life), and a running one has met its hard time limit; so only a message
        the broker lost is older than this (a second copy would still be harmless). 90 + 75 + 2 x 10 = 185 s by
        default; a lost message waits at most this plus one sweep, once the queue ahead of it has drained."""
        return self.visibility_timeout_s + self.hard_time_limit_s + 2 * self.restore_interval_s

    @classmethod
    def from_env(cls) -> "ServiceSettings":
        queue = os.environ.get("FOVEAL_QUEUE", "embedded").strip().lower() or "embedded"
        if queue not in ("embedded", "celery"):
            raise ConfigError(f"FOVEAL_QUEUE={queue!r}; allowed: embedded, celery")
        time_limit = _int("FOVEAL_TASK_TIME_LIMIT_S", 60, 1)
        hard_limit = cls(task_time_limit_s=time_limit).hard_time_limit_s
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
            max_search_request_bytes=_int("FOVEAL_MAX_SEARCH_REQUEST_BYTES", 2 * 1024 * 1024, 1),
            search_timeout_s=_float("FOVEAL_SEARCH_TIMEOUT_S", 10.0, 0.001),
            max_queue_depth=_int("FOVEAL_MAX_QUEUE_DEPTH", 10_000, 1),
            min_free_disk_mb=_int("FOVEAL_MIN_FREE_DISK_MB", 512),
            task_time_limit_s=time_limit,
            # the visibility timeout must outlast the longest task, or a running task would be delivered twice
            visibility_timeout_s=max(_int("FOVEAL_VISIBILITY_TIMEOUT_S", 90, 1),
                                     hard_limit + MAX_RETRY_COUNTDOWN_S + 5),
            restore_interval_s=_int("FOVEAL_RESTORE_INTERVAL_S", 10, 1),
            task_max_deliveries=_int("FOVEAL_TASK_MAX_DELIVERIES", 3, 1),
            lease_s=_int("FOVEAL_LEASE_S", 30, 1),
            task_max_retries=_int("FOVEAL_TASK_MAX_RETRIES", 8),
            job_ttl_s=_int("FOVEAL_JOB_TTL_S", 7 * 24 * 3600, 1),
            api_keys=os.environ.get("FOVEAL_API_KEYS", ""),
            api_keys_file=os.environ.get("FOVEAL_API_KEYS_FILE", "").strip(),
            allow_open=_bool("FOVEAL_ALLOW_OPEN"),
            open_ops=_bool("FOVEAL_OPEN_OPS"),
            cors_origins=tuple(o.strip() for o in os.environ.get("FOVEAL_CORS_ORIGINS", "").split(",") if o.strip()),
            rate_limit_rps=_float("FOVEAL_RATE_LIMIT_RPS", 0.0),
            max_agent_runs=_int("FOVEAL_MAX_AGENT_RUNS", 2),
            snapshot_dir=os.environ.get("FOVEAL_SNAPSHOT_DIR") or None,
            es_snapshot_repo=os.environ.get("FOVEAL_ES_SNAPSHOT_REPO") or None,
        )
