"""Job records in Redis, for the Celery queue: written by the API (:class:`foveal.service.jobs.CeleryQueue`) and
counted by the worker's task (:mod:`foveal.service.celery_app`). Both import this module and neither imports the
other.

Keys (under ``FOVEAL_REDIS_PREFIX``)::

    job:<id>             hash  index, total, done, failed, created, updated, accepted (0 while its chunks are sent)
    job:<id>:errors      list  the first MAX_JOB_ERRORS {id, reason} of refused documents
    job:<id>:tasks       set   the task keys already counted (a redelivered task counts once)
    job:<id>:deliveries  hash  how many times each task (per retry) was started (a task whose worker dies each time
                               is given up after FOVEAL_TASK_MAX_DELIVERIES)
    job:<id>:chunks      hash  task key -> the task's arguments, for every task not counted yet (removed when counted)
    job:<id>:sent        hash  task key -> when the task was last sent or started (the reconciler reads it)
    jobs                 zset  accepted job ids by creation time (for stats)
    documents_indexed    int

Submission is all-or-nothing as the client sees it: the record is written with ``accepted=0`` and a short TTL,
every chunk is sent, and only then is it marked accepted (and the 202 sent). When a send fails the record is
deleted and the POST fails; chunks already sent may still be indexed (idempotently) but count for no job. An API
process that dies mid-way leaves an unaccepted record that no one can see and that expires.

The job record, not the broker, is the authority on what is left to do. Kombu's Redis transport can lose a message
when a process is SIGKILLed inside one of its non-atomic moves (BRPOP then the write to ``unacked``; the sweep's
removal from ``unacked`` then the push back), so every uncounted task keeps its arguments in ``job:<id>:chunks``,
and the API's reconciler (:meth:`foveal.service.jobs.CeleryQueue.reconcile`) sends again a task that shows no sign
of life for longer than any live copy could be away (``ServiceSettings.redeliver_after_s``). A task sent twice is
harmless: writes are idempotent and a task key is counted once.
"""

from __future__ import annotations

import json
import time
from typing import Any

from foveal.service.settings import MAX_JOB_ERRORS, ServiceSettings

#: How long a job record lives before it is accepted (only a submitting process that died leaves one that long).
PENDING_TTL_S = 3600

#: Bounds on one Redis round trip, so a request meets an outage in seconds rather than hanging: connecting (a
#: refused port fails at once, a silent host after this long), answering, and a single retry after a short pause
#: (redis-py's default is three retries with backoff, which multiplies the wait).
REDIS_CONNECT_TIMEOUT_S = 2.0
REDIS_SOCKET_TIMEOUT_S = 5.0


def redis_client(url: str):
    """A Redis client whose every call is bounded (see the constants above)."""
    import redis
    from redis.backoff import ConstantBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(url, socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
                                socket_timeout=REDIS_SOCKET_TIMEOUT_S, retry=Retry(ConstantBackoff(0.2), 1))

_COMPLETE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('HDEL', KEYS[5], ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[1])
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'done', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'failed', #ARGV - 4)
redis.call('HSET', KEYS[1], 'updated', ARGV[3])
for i = 5, #ARGV do
  if redis.call('LLEN', KEYS[3]) < tonumber(ARGV[4]) then redis.call('RPUSH', KEYS[3], ARGV[i]) end
end
redis.call('INCRBY', KEYS[4], ARGV[2])
local ttl = redis.call('TTL', KEYS[1])
if ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl); redis.call('EXPIRE', KEYS[3], ttl) end
return 1
"""


class RedisJobs:
    def __init__(self, settings: ServiceSettings, client=None) -> None:
        self.settings = settings
        self.redis = client or redis_client(settings.redis_url)
        self.prefix = settings.redis_prefix
        self._complete = self.redis.register_script(_COMPLETE)

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _job_keys(self, job_id: str) -> list[str]:
        return [self.key("job", job_id, *tail)
                for tail in ((), ("errors",), ("tasks",), ("deliveries",), ("chunks",), ("sent",))]

    # -- the API's side --------------------------------------------------------------------------------------------
    def create_pending(self, job_id: str, index: str, total: int, rejected: list[dict[str, Any]]) -> None:
        now = time.time()
        with self.redis.pipeline() as pipe:
            pipe.hset(self.key("job", job_id), mapping={"index": index, "total": total, "done": 0, "accepted": 0,
                                                      "failed": len(rejected), "created": now, "updated": now})
            if rejected:
                pipe.rpush(self.key("job", job_id, "errors"), *[json.dumps(e) for e in rejected[:MAX_JOB_ERRORS]])
            for key in self._job_keys(job_id)[:2]:
                pipe.expire(key, PENDING_TTL_S)
            pipe.execute()

    def record_chunks(self, job_id: str, chunks: dict[str, list]) -> None:
        """Keep every task's arguments until it is counted (written before any is sent)."""
        now = time.time()
        with self.redis.pipeline() as pipe:
            pipe.hset(self.key("job", job_id, "chunks"), mapping={k: json.dumps(v) for k, v in chunks.items()})
            pipe.hset(self.key("job", job_id, "sent"), mapping=dict.fromkeys(chunks, now))
            for key in self._job_keys(job_id)[4:]:
                pipe.expire(key, PENDING_TTL_S)
            pipe.execute()

    def uncounted(self, job_id: str) -> tuple[dict[str, str], dict[str, float]]:
        """(task key -> arguments as JSON, task key -> when last sent or started) of the job's uncounted tasks."""
        with self.redis.pipeline() as pipe:
            pipe.hgetall(self.key("job", job_id, "chunks"))
            pipe.hgetall(self.key("job", job_id, "sent"))
            chunks, sent = pipe.execute()
        return ({k.decode(): v.decode() for k, v in chunks.items()},
                {k.decode(): float(v) for k, v in sent.items()})

    def mark_sent(self, job_id: str, task_key: str) -> None:
        self.redis.hset(self.key("job", job_id, "sent"), task_key, time.time())

    def accept(self, job_id: str, accepted: int = 0, rejected: int = 0) -> None:
        """Every chunk is queued: the job becomes visible, with its full TTL (and the ingest counters count it)."""
        now = time.time()
        ttl = self.settings.job_ttl_s
        with self.redis.pipeline() as pipe:
            if accepted:
                pipe.incrby(self.key("documents_accepted"), accepted)
            if rejected:
                pipe.incrby(self.key("documents_failed"), rejected)
            pipe.hset(self.key("job", job_id), "accepted", 1)
            for key in self._job_keys(job_id):
                pipe.expire(key, ttl)
            pipe.zadd(self.key("jobs"), {job_id: now})
            pipe.zremrangebyscore(self.key("jobs"), 0, now - ttl)
            pipe.execute()

    def discard(self, job_id: str) -> None:
        self.redis.delete(*self._job_keys(job_id))

    def read(self, job_id: str) -> tuple[dict[str, str], list[dict[str, Any]]] | None:
        """The job's fields and errors, or None when it is unknown, expired or not accepted."""
        data = {k.decode(): v.decode() for k, v in self.redis.hgetall(self.key("job", job_id)).items()}
        if not data or data.get("accepted", "1") != "1":
            return None
        errors = [json.loads(e) for e in self.redis.lrange(self.key("job", job_id, "errors"), 0, MAX_JOB_ERRORS - 1)]
        return data, errors

    # -- the worker's side -----------------------------------------------------------------------------------------
    def started(self, job_id: str, task_key: str, retries: int) -> int:
        """Count one start of this task (at this retry); returns how many there were, this one included."""
        key = self.key("job", job_id, "deliveries")
        with self.redis.pipeline() as pipe:
            pipe.hincrby(key, f"{task_key}:{retries}", 1)
            pipe.expire(key, self.settings.job_ttl_s)
            # a sign of life for the reconciler (which reads only the tasks still in ``chunks``, so an entry left by
            # a redelivery of a counted task is never acted on; it expires with the job)
            pipe.hset(self.key("job", job_id, "sent"), task_key, time.time())
            count = pipe.execute()[0]
        return int(count)

    def complete(self, job_id: str, task_key: str, done: int, errors: list[dict[str, Any]]) -> bool:
        """Count a task once; False when it was counted before (a redelivery) or its job is unknown or expired."""
        keys = [self.key("job", job_id), self.key("job", job_id, "tasks"), self.key("job", job_id, "errors"),
                self.key("documents_indexed"), self.key("job", job_id, "chunks"), self.key("job", job_id, "sent")]
        args = [task_key, done, time.time(), MAX_JOB_ERRORS, *[json.dumps(e) for e in errors]]
        counted = self._complete(keys=keys, args=args) == 1
        if counted and errors:
            self.redis.incrby(self.key("documents_failed"), len(errors))
        return counted

    def count_retry(self) -> None:
        self.redis.incr(self.key("tasks_retried"))
