"""What a worker does with one queued task: validate, upsert, report per-document errors. Shared by both queues.

Idempotent: :meth:`foveal.index.collection.Collection.upsert` commits a batch in one SQLite transaction and skips a
document whose content hash is already stored, so a redelivered batch changes nothing in any store; the job's
counters are guarded by the task's key (counted once, see :mod:`foveal.service.jobs`).

The model is loaded lazily, in the process that runs the task (a Celery prefork child, never its parent), so the
pool is safe for CUDA.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import Any

from foveal.documents import Document, parse_document
from foveal.errors import DocumentError, IndexLockedError, InvalidInputError, NotFoundError

#: Errors worth retrying (the batch is fine, the moment was not).
RETRYABLE = (IndexLockedError, sqlite3.OperationalError, OSError)

_engine = None
_engine_lock = threading.Lock()


def worker_engine():
    """This process's Engine, created on first use (after any fork)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            from foveal.engine import Engine

            _engine = Engine()
        return _engine


def _doc_id(raw: Any) -> str | None:
    return str(raw.get("_id")) if isinstance(raw, dict) and raw.get("_id") is not None else None


def index_batch(engine, index: str, raw_documents: list[Any]) -> tuple[int, list[dict[str, Any]]]:
    """Upsert one task's documents; returns (documents indexed, [{id, reason}] of those refused)."""
    try:
        collection = engine.get_current(index)
    except NotFoundError as exc:
        return 0, [{"id": _doc_id(raw), "reason": exc.message} for raw in raw_documents]
    documents: list[Document] = []
    errors: list[dict[str, Any]] = []
    for raw in raw_documents:
        try:
            documents.append(parse_document(raw, dimension=collection.dimension))
        except DocumentError as exc:
            errors.append({"id": _doc_id(raw), "reason": exc.reason})
    delay = float(os.environ.get("FOVEAL_DEBUG_INGEST_SLEEP_S", "0") or 0)
    if delay > 0:  # test hook (see foveal.service.settings): makes a batch slow enough to be killed mid-way
        for _ in documents:
            time.sleep(delay)
    if not documents:
        return 0, errors
    try:
        collection.upsert(documents)
        return len(documents), errors
    except InvalidInputError:
        pass  # one document spoils the batch (e.g. a vector of the wrong dimension): find it, keep the rest
    done = 0
    for doc in documents:
        try:
            collection.upsert([doc])
            done += 1
        except InvalidInputError as exc:
            errors.append({"id": doc.id, "reason": exc.message})
    return done, errors
