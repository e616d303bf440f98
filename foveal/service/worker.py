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
from foveal.errors import (
    BackendUnavailableError,
    DocumentError,
    IndexLockedError,
    IndexNotFoundError,
    InvalidInputError,
    NotFoundError,
)

#: Errors worth retrying (the batch is fine, the moment was not): the index's write lock, SQLite busy, I/O, and a
#: server backend (Elasticsearch) that cannot be reached. Anything else fails the task's documents at once.
RETRYABLE = (IndexLockedError, sqlite3.OperationalError, OSError, BackendUnavailableError)

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


def all_failed(raw_documents: list[Any], reason: str) -> list[dict[str, Any]]:
    """The job errors of a task none of whose documents could be indexed."""
    return [{"id": _doc_id(raw), "reason": reason} for raw in raw_documents]


def index_deleted_reason(index: str) -> str:
    return (f"index deleted: index {index!r} was deleted (or deleted and created again) after this batch was "
            "submitted; nothing was written")


def index_batch(engine, index: str, raw_documents: list[Any],
                instance: str | None = None) -> tuple[int, list[dict[str, Any]]]:
    """Upsert one task's documents; returns (documents indexed, [{id, reason}] of those refused).

    ``instance`` is the index's instance id when the batch was submitted: a task for an index that was deleted
    since (and maybe created again under its name) reports every document failed instead of writing into the
    new index; the id is checked again under the write lock, just before the store commit."""
    try:
        collection = engine.get_current(index)
    except NotFoundError as exc:
        return 0, all_failed(raw_documents, index_deleted_reason(index) if instance else exc.message)
    if instance is not None and collection.instance != instance:
        return 0, all_failed(raw_documents, index_deleted_reason(index))
    documents: list[Document] = []
    errors: list[dict[str, Any]] = []
    for raw in raw_documents:
        try:
            documents.append(parse_document(raw, **collection.document_rules()))
        except DocumentError as exc:
            errors.append({"id": _doc_id(raw), "reason": exc.reason})
    delay = float(os.environ.get("FOVEAL_DEBUG_INGEST_SLEEP_S", "0") or 0)
    if delay > 0:  # test hook (see foveal.service.settings): makes a batch slow enough to be killed mid-way
        for _ in documents:
            time.sleep(delay)
    if not documents:
        return 0, errors
    try:
        collection.upsert(documents, expect_instance=instance)
        return len(documents), errors
    except IndexNotFoundError:
        return 0, errors + [{"id": doc.id, "reason": index_deleted_reason(index)} for doc in documents]
    except InvalidInputError:
        pass  # one document spoils the batch (e.g. a vector of the wrong dimension): find it, keep the rest
    done = 0
    for n, doc in enumerate(documents):
        try:
            collection.upsert([doc], expect_instance=instance)
            done += 1
        except IndexNotFoundError:
            return done, errors + [{"id": d.id, "reason": index_deleted_reason(index)} for d in documents[n:]]
        except InvalidInputError as exc:
            errors.append({"id": doc.id, "reason": exc.message})
    return done, errors
