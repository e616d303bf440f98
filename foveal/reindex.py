"""``foveal reindex SOURCE --into TARGET --config cfg.json``: build a new index from an existing one's document store.

Elasticsearch's ``_reindex`` for foveal: the documents (id, title, text, metadata, timestamp) are read from the
source's document store in ``doc_key`` order, never from the original files, and upserted into the target in
batches, which re-encodes them with the target's encoder (a fine-tuned model, another segmentation) and re-analyses
them for BM25. Point an alias at the target when it is done (``foveal alias set NAME TARGET``) and searches move to
it without downtime.

Resumable. Progress is ``$FOVEAL_HOME/reindex/<target>.json`` (source name and instance, target instance, the last
source ``doc_key`` whose batch committed), written by rename after each committed batch. After an interruption
(even SIGKILL) the same command continues after that key; a batch that committed but whose progress was not written
yet is upserted again, which changes nothing (same content hash). A target that exists without such a record (or
from another source, or re-created since) is refused, so a reindex never writes into an unrelated index.

A document that was ingested with only a ``vector`` (no title, no text) keeps that vector when the target has the
same dimension and is otherwise reported as skipped; every document with text is re-encoded (a precomputed vector
belonged to the source's model). Writes to the source while a reindex runs are not followed: documents with a
``doc_key`` above the last one read are picked up by a re-run (new documents get new, higher keys), but updates and
deletes of documents already copied are not; reindex a quiet source, or re-run and compare counts.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

from foveal.config import IndexConfig
from foveal.documents import Document
from foveal.errors import ConflictError
from foveal.fsutil import fsync_dir


def progress_path(engine, target: str) -> Path:
    return engine.home / "reindex" / f"{target}.json"


def _write_progress(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as handle:
        json.dump(record, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def reindex(
    engine, source: str, target: str, config: IndexConfig | None = None, *, batch_size: int = 64,
    pause_s: float = 0.0, log: Callable[[str], None] = lambda message: None, source_engine=None,
) -> dict:
    """Copy ``source`` (an index or alias) into index ``target`` (created with ``config``, default: the source's
    config), resuming a previous run; returns a summary. ``source_engine``: read the source from another home
    (the bench reads the lead's base indexes; default: ``engine``)."""
    started = time.perf_counter()
    src = (source_engine or engine).get(source)
    src.refresh()
    source_name, source_instance = src.name, src.instance
    record_path = progress_path(engine, target)
    try:
        record = json.loads(record_path.read_text())
    except FileNotFoundError:
        record = None
    if record is not None and (record.get("source") != source_name or record.get("source_instance") != source_instance):
        raise ConflictError(f"a reindex into {target!r} from {record.get('source')!r} was started before; finish it "
                            f"or drop {target!r} and remove {record_path}", index=target)
    if engine.exists(target):
        if record is None:
            raise ConflictError(f"index {target!r} exists and was not made by a reindex of {source_name!r}; choose "
                                "a new target (then point an alias at it)", index=target)
        dst = engine.get(target)
        if record.get("target_instance") not in (None, dst.instance):
            raise ConflictError(f"index {target!r} was re-created since its reindex started; drop it and remove "
                                f"{record_path} to start over", index=target)
        if config is not None:
            config.check_compatible(dst.config, target)
        resumed = record["after"] >= 0
    else:
        if config is None:
            config = src.config.model_copy(deep=True)
        record = {"source": source_name, "source_instance": source_instance, "target_instance": None,
                  "after": -1, "done": False}
        _write_progress(record_path, record)  # first: a crash after the creation finds the record
        dst = engine.create_index(target, config)
        resumed = False
    if record.get("target_instance") is None:
        record["target_instance"] = dst.instance
        _write_progress(record_path, record)
    after = int(record["after"])
    copied = skipped = 0
    skipped_ids: list[str] = []
    log(f"reindex {source_name} -> {target}: {src.store.count()} documents"
        + (f", resuming after doc_key {after}" if resumed else ""))
    for page in src.store.iter_documents(batch=batch_size):
        page = [d for d in page if d.doc_key > after]
        if not page:
            continue
        documents = []
        vector_only = [d for d in page if not d.title and not d.text]
        carried = {}
        if vector_only:
            keys, vectors = src.store.vectors_of(d.doc_key for d in vector_only)
            from foveal.index.base import doc_key_of

            for pid, vector in zip(keys.tolist(), vectors):
                carried[doc_key_of(int(pid))] = vector
        for d in page:
            if not d.title and not d.text:
                vector = carried.get(d.doc_key)
                if vector is None or dst.dimension is None or len(vector) != dst.dimension:
                    skipped += 1
                    skipped_ids.append(d.id)
                    continue
                documents.append(Document(d.id, d.title, d.text, dict(d.metadata), d.timestamp,
                                          tuple(float(x) for x in vector)))
            else:
                documents.append(Document(d.id, d.title, d.text, dict(d.metadata), d.timestamp))
        if documents:
            dst.upsert(documents)
        copied += len(documents)
        after = page[-1].doc_key
        record["after"] = after
        _write_progress(record_path, record)
        log(f"  {copied} copied (doc_key {after})")
        if pause_s:
            time.sleep(pause_s)
    dst.flush()
    record["done"] = True
    record["after"] = after
    _write_progress(record_path, record)
    return {"source": source_name, "target": target, "copied_this_run": copied, "resumed": resumed,
            "skipped": skipped, "skipped_ids": skipped_ids[:100], "source_documents": src.store.count(),
            "target_documents": dst.store.count(), "seconds": round(time.perf_counter() - started, 2)}
