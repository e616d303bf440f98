"""The document store on SQLite (WAL mode), and the change log every other store replays.

The store is the commit point of a write: a batch of upserts and deletes lands in one SQLite transaction that also
appends one row per document to ``oplog`` (a monotonically increasing ``seq``). The derived indexes (vectors,
lexical) persist the last ``seq`` they hold and are brought past it from this log, as the recovery design in
:mod:`foveal.index.collection` says. Replay is idempotent (remove the document, then add its current state), so a
crash at any point between the stores heals, and a process that did not write still sees what others committed.

Passage vectors are kept here too (float32 blobs), so the FAISS index can always be rebuilt from this file and
rerank stages can read a document's vectors.

Vector sets: a document may carry named sets of vectors beside its passages (``kind`` ``"sentences"``: Paraformer's
sentence vectors; X-Pool's frames), one row per ``(doc_key, kind)`` in ``vector_sets``: an ``(n, d)`` float16 matrix
and, optionally, the character spans (in ``title + "\n" + text``) each row stands for. They are written in the
same transaction as their document, replaced with it (an upsert drops every set the document had and writes the
ones it carries now), deleted with it, and copied by snapshots with the rest of the file. No derived index reads
them, so recovery has nothing to replay: store and sets agree after any crash because one transaction holds both.

Events (:mod:`foveal.events`) live in the same file, table ``events`` (one vector each), and share the change log:
an event's row in ``oplog`` carries ``doc_key = -event_key`` (events never collide with documents, whose keys are
positive), so one position orders every write and the event vector index replays like any derived index.

Durability: ``synchronous=FULL`` (the queue's setting too), so a commit that returned survives a power loss, not
only a process crash: with ``NORMAL`` a WAL-mode commit is not fsynced and the last transactions can vanish while
the queue, already fsynced, records the batch as done.

The log is streamed (:meth:`SqliteDocStore.changes_since` reads it in chunks) and pruned
(:meth:`SqliteDocStore.prune_log`) below the lowest position every derived index persisted; ``meta`` records the
prune point, so a reader asking for changes that are gone gets :class:`~foveal.index.base.LogPrunedError` rather
than a silent gap.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from foveal.documents import Document
from foveal.index.base import MAX_PASSAGES, Change, LogPrunedError, StoredDocument, passage_id
from foveal.index.field_columns import FieldColumns

__all__ = ["Change", "PreparedDocument", "SqliteDocStore", "VectorSet"]  # Change lives in base; imported from here by older code

#: Log rows read per query when streaming the change log.
LOG_CHUNK = 5000
_PRUNED = "log_pruned_below"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_key      INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    title        TEXT NOT NULL,
    text         TEXT NOT NULL,
    metadata     TEXT NOT NULL,
    timestamp    REAL,
    content_hash TEXT NOT NULL,
    passages     TEXT NOT NULL,
    n_tokens     INTEGER NOT NULL DEFAULT 0,
    seq          INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS vectors (
    passage_id INTEGER PRIMARY KEY,
    doc_key    INTEGER NOT NULL,
    vector     BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS vectors_doc ON vectors(doc_key);
CREATE INDEX IF NOT EXISTS documents_timestamp ON documents(timestamp);
CREATE TABLE IF NOT EXISTS oplog (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_key INTEGER NOT NULL,
    id      TEXT NOT NULL,
    op      TEXT NOT NULL CHECK (op IN ('upsert', 'delete'))
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vector_sets (
    doc_key INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    rows    INTEGER NOT NULL,
    dim     INTEGER NOT NULL,
    data    BLOB NOT NULL,
    spans   TEXT,
    PRIMARY KEY (doc_key, kind)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    event_key    INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    title        TEXT NOT NULL,
    text         TEXT NOT NULL,
    source       TEXT,
    timestamp    REAL NOT NULL,
    content_hash TEXT NOT NULL,
    vector       BLOB NOT NULL,
    seq          INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_timestamp ON events(timestamp);
"""

#: Rows one vector set may hold (a sentence cap per document is far below it: ``sentence_vectors.max_sentences``).
MAX_SET_ROWS = 4096
_KIND = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@dataclass(slots=True)
class VectorSet:
    """One named set of a document's vectors: ``(n, d)`` (stored as float16) and, optionally, the character span in
    the document's full text that each row stands for."""

    vectors: np.ndarray
    spans: list[tuple[int, int]] | None = None

    def __post_init__(self) -> None:
        self.vectors = np.asarray(self.vectors)
        if self.vectors.ndim != 2:
            raise ValueError(f"a vector set is a matrix; got shape {self.vectors.shape}")
        if len(self.vectors) > MAX_SET_ROWS:
            raise ValueError(f"a vector set holds at most {MAX_SET_ROWS} rows; got {len(self.vectors)}")
        if self.spans is not None and len(self.spans) != len(self.vectors):
            raise ValueError(f"{len(self.spans)} spans for {len(self.vectors)} vectors")


#: Top-level metadata fields, one row per (document, key), written in the same transaction as the document: what
#: filters look up through indexes instead of parsing every document's JSON. ``kind``: b(ool), n(umber), t(ext),
#: o(ther: null, list, object; only ``exists`` sees those). ``value`` keeps the value as SQLite stores it (no
#: column affinity: 1 stays an integer, "1" text); ``num`` is the number, or for text that parses as ISO 8601 its
#: epoch seconds (what ranges compare).
_FIELDS_SCHEMA = """
CREATE TABLE IF NOT EXISTS doc_fields (
    doc_key INTEGER NOT NULL,
    key     TEXT NOT NULL,
    kind    TEXT NOT NULL,
    value,
    num     REAL
);
CREATE INDEX IF NOT EXISTS doc_fields_value ON doc_fields(key, kind, value);
CREATE INDEX IF NOT EXISTS doc_fields_num ON doc_fields(key, kind, num);
CREATE INDEX IF NOT EXISTS doc_fields_doc ON doc_fields(doc_key);
"""
_FIELDS_READY = "doc_fields_ready"


@dataclass(slots=True)
class PreparedDocument:
    """A document ready to store: its passages' character spans, one vector per passage, and its vector sets
    (kind -> :class:`VectorSet`; written in the same transaction)."""

    document: Document
    passages: list[tuple[int, int]]
    vectors: np.ndarray
    n_tokens: int = 0
    vector_sets: dict[str, VectorSet] = field(default_factory=dict)


class SqliteDocStore:
    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._local = threading.local()
        self._columns = FieldColumns(self.path)
        #: One connection for the reads of every search (documents, feedback vectors, the log head), taken in
        #: turn: each statement is a short read transaction, and SQLite's file locking serialises those across a
        #: process's connections anyway, at a cost. 32 threads fetching 10 documents each managed 994 fetches/s
        #: on a connection per thread and 6,655/s on this one (one thread alone: 5,983/s).
        self._read_conn: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        with self._connect() as conn:
            conn.executescript(_SCHEMA)
        self._ensure_fields()

    def _ensure_fields(self) -> None:
        """Create the field index; a store written before it existed gets it filled from its documents, once, in
        one transaction (re-checked under the write lock, so two processes opening at once fill it once)."""
        conn = self._connect()
        if self.get_meta(_FIELDS_READY) == "1":
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            if self.get_meta(_FIELDS_READY) != "1":
                for statement in _FIELDS_SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("DELETE FROM doc_fields")
                for rows in _keyset_pages(conn, "SELECT doc_key, metadata FROM documents WHERE doc_key > ? "
                                                "ORDER BY doc_key LIMIT ?", -1, 5000):
                    conn.executemany("INSERT INTO doc_fields (doc_key, key, kind, value, num) VALUES (?, ?, ?, ?, ?)",
                                     [f for key, meta in rows for f in _field_rows(key, json.loads(meta))])
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, '1')", (_FIELDS_READY,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=60000")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        self._columns.close()
        with self._read_lock:
            if self._read_conn is not None:
                self._read_conn.close()
                self._read_conn = None
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The shared read connection, held for one statement's rows (see ``_read_conn``). Autocommit: every
        statement reads the last commit, as the per-thread connections do."""
        with self._read_lock:
            if self._read_conn is None:
                conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA busy_timeout=60000")
                self._read_conn = conn
            yield self._read_conn

    # -- reads ---------------------------------------------------------------------------------------------------
    def hashes(self, ids: Sequence[str]) -> dict[str, tuple[int, str]]:
        """id -> (doc_key, content_hash) for the ids that exist."""
        out: dict[str, tuple[int, str]] = {}
        conn = self._connect()
        for chunk in _chunks(list(ids), 500):
            marks = ",".join("?" * len(chunk))
            for doc_id, key, digest in conn.execute(
                f"SELECT id, doc_key, content_hash FROM documents WHERE id IN ({marks})", chunk
            ):
                out[doc_id] = (key, digest)
        return out

    def get_documents(self, doc_keys: Iterable[int]) -> dict[int, StoredDocument]:
        keys = list(dict.fromkeys(int(k) for k in doc_keys))
        out: dict[int, StoredDocument] = {}
        for chunk in _chunks(keys, 500):
            marks = ",".join("?" * len(chunk))
            with self._reading() as conn:
                rows = conn.execute(
                    "SELECT doc_key, id, title, text, metadata, timestamp, content_hash, passages, n_tokens "
                    f"FROM documents WHERE doc_key IN ({marks})",
                    chunk,
                ).fetchall()
            for row in rows:
                out[row[0]] = _stored(row)
        return out

    def get_by_id(self, doc_id: str) -> StoredDocument | None:
        row = (
            self._connect()
            .execute(
                "SELECT doc_key, id, title, text, metadata, timestamp, content_hash, passages, n_tokens "
                "FROM documents WHERE id = ?",
                (doc_id,),
            )
            .fetchone()
        )
        return _stored(row) if row else None

    def vectors_of(self, doc_keys: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        """(passage ids, vectors) of these documents, ordered by passage id."""
        keys = list(dict.fromkeys(int(k) for k in doc_keys))
        ids: list[int] = []
        blobs: list[bytes] = []
        for chunk in _chunks(keys, 500):
            marks = ",".join("?" * len(chunk))
            with self._reading() as conn:
                rows = conn.execute(
                    f"SELECT passage_id, vector FROM vectors WHERE doc_key IN ({marks}) ORDER BY passage_id", chunk
                ).fetchall()
            for pid, blob in rows:
                ids.append(pid)
                blobs.append(blob)
        return _unpack(ids, blobs)

    def vector_sets(self, doc_keys: Iterable[int], kind: str, *, with_spans: bool = False) -> dict:
        """``{doc_key: (n, d) float16 matrix}`` of the documents that have a set of ``kind`` (others are left out);
        with ``with_spans``, ``{doc_key: VectorSet}`` (vectors and their spans)."""
        keys = list(dict.fromkeys(int(k) for k in doc_keys))
        out: dict = {}
        conn = self._connect()
        for chunk in _chunks(keys, 500):
            marks = ",".join("?" * len(chunk))
            for key, rows, dim, data, spans in conn.execute(
                f"SELECT doc_key, rows, dim, data, spans FROM vector_sets WHERE kind = ? AND doc_key IN ({marks})",
                [kind, *chunk],
            ):
                matrix = np.frombuffer(data, dtype=np.float16).reshape(rows, dim)
                if with_spans:
                    out[key] = VectorSet(matrix, [tuple(s) for s in json.loads(spans)] if spans else None)
                else:
                    out[key] = matrix
        return out

    def vector_set_kinds(self, doc_key: int) -> list[str]:
        """The kinds of vector set one document carries."""
        return [k for (k,) in self._connect().execute(
            "SELECT kind FROM vector_sets WHERE doc_key = ? ORDER BY kind", (int(doc_key),))]

    def vector_set_stats(self, kind: str) -> dict[str, int]:
        """``{"documents", "rows", "bytes"}`` of the sets of ``kind`` (bytes: the float16 data only)."""
        docs, rows, size = self._connect().execute(
            "SELECT COUNT(*), COALESCE(SUM(rows), 0), COALESCE(SUM(LENGTH(data)), 0) FROM vector_sets WHERE kind = ?",
            (kind,),
        ).fetchone()
        return {"documents": int(docs), "rows": int(rows), "bytes": int(size)}

    def iter_documents(self, batch: int = 1000) -> Iterator[list[StoredDocument]]:
        """Every document, ``batch`` at a time in doc_key order (what a derived index is rebuilt from)."""
        for rows in _keyset_pages(
            self._connect(),
            "SELECT doc_key, id, title, text, metadata, timestamp, content_hash, passages, n_tokens "
            "FROM documents WHERE doc_key > ? ORDER BY doc_key LIMIT ?", -1, batch,
        ):
            yield [_stored(row) for row in rows]

    def list_documents(self, after: int = -1, limit: int = 100,
                       keys: set[int] | None = None) -> list[StoredDocument]:
        """Up to ``limit`` documents with doc_key above ``after``, in doc_key order (a stable scroll: documents
        written meanwhile get higher keys and come later); with ``keys``, only those."""
        conn = self._connect()
        columns = "doc_key, id, title, text, metadata, timestamp, content_hash, passages, n_tokens"
        if keys is None:
            rows = conn.execute(f"SELECT {columns} FROM documents WHERE doc_key > ? ORDER BY doc_key LIMIT ?",
                                (after, limit)).fetchall()
            return [_stored(row) for row in rows]
        wanted = sorted(k for k in keys if k > after)[:limit]
        found = self.get_documents(wanted)
        return [found[k] for k in wanted if k in found]

    def iter_vectors(self, batch: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for rows in _keyset_pages(
            self._connect(), "SELECT passage_id, vector FROM vectors WHERE passage_id > ? ORDER BY passage_id LIMIT ?",
            -1, batch,
        ):
            yield _unpack([r[0] for r in rows], [r[1] for r in rows])

    def filter_keys(self, ids=None, metadata=None, time_bounds=None) -> set[int]:
        """doc_keys of the documents matching every condition (see :meth:`filter_key_array`), as a set."""
        return set(self.filter_key_array(ids, metadata, time_bounds).tolist())

    def filter_key_array(self, ids=None, metadata=None, time_bounds=None) -> np.ndarray:
        """Sorted doc_keys (int64) of the documents matching every condition: id list, ``{gte, gt, lte, lt}``
        epoch-second bounds on ``timestamp``, and per metadata key a value or list (typed equality: a bool matches
        only bools, a number only numbers, text only text; a list is any of its values), ``{"range": {op: x},
        "dates": bool}`` (numbers, or ISO 8601 text read as instants) or ``{"exists": bool}``.

        Answered from this process's in-memory columns of the filter fields (:mod:`foveal.index.field_columns`:
        a binary search per condition, reloaded after any commit); id lists and huge integers from SQL
        (:meth:`filter_key_array_sql`)."""
        if FieldColumns.covers(ids, metadata):
            return self._columns.keys(metadata, time_bounds)
        return self.filter_key_array_sql(ids, metadata, time_bounds)

    def filter_key_array_sql(self, ids=None, metadata=None, time_bounds=None) -> np.ndarray:
        """:meth:`filter_key_array` as one SQL statement: every condition is an index lookup (``doc_fields``,
        ``documents_timestamp``, the primary key) and the keys come back as one JSON array, not row by row."""
        where: list[str] = []
        params: list = []
        # Value lists travel as one JSON array each (``IN (SELECT value FROM json_each(?))``), not as one SQL term
        # per value: a filter with 1,000 values (the documented maximum) made an expression tree SQLite refused.
        if ids is not None:
            if not ids:
                return np.zeros(0, np.int64)
            where.append("id IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(list(ids)))
        kinds = (("b", lambda v: isinstance(v, bool), int),
                 ("n", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), None),
                 ("t", lambda v: isinstance(v, str), None))
        ops = {"gte": ">=", "gt": ">", "lte": "<=", "lt": "<"}
        for key, wanted in (metadata or {}).items():
            if isinstance(wanted, dict) and "exists" in wanted:
                where.append(("" if wanted["exists"] else "NOT ")
                             + "doc_key IN (SELECT doc_key FROM doc_fields WHERE key = ?)")
                params.append(key)
                continue
            if isinstance(wanted, dict) and "range" in wanted:
                bounds = wanted["range"]
                terms = " AND ".join(f"num {ops[op]} ?" for op in bounds)
                where.append(f"doc_key IN (SELECT doc_key FROM doc_fields WHERE key = ? AND kind = ? AND {terms})")
                params.extend([key, "t" if wanted.get("dates") else "n", *bounds.values()])
                continue
            values = wanted if isinstance(wanted, list) else [wanted]
            clauses = []
            for kind, belongs, convert in kinds:
                group = [convert(v) if convert else v for v in values if belongs(v)]
                if group:
                    clauses.append("SELECT doc_key FROM doc_fields WHERE key = ? AND kind = ? AND value IN "
                                   "(SELECT value FROM json_each(?))")
                    params.extend([key, kind, json.dumps(group)])
            if not clauses:
                return np.zeros(0, np.int64)
            where.append("doc_key IN (" + " UNION ALL ".join(clauses) + ")")
        for name, bound in (time_bounds or {}).items():
            where.append(f"timestamp IS NOT NULL AND timestamp {ops[name]} ?")
            params.append(bound)
        sql = ("SELECT json_group_array(doc_key) FROM (SELECT doc_key FROM documents"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY doc_key)")
        text = self._connect().execute(sql, params).fetchone()[0]
        if not text or text == "[]":
            return np.zeros(0, np.int64)
        return np.fromstring(text[1:-1], dtype=np.int64, sep=",")

    def passage_ids_of(self, doc_keys: Iterable[int]) -> np.ndarray:
        keys = list(dict.fromkeys(int(k) for k in doc_keys))
        out: list[int] = []
        conn = self._connect()
        for chunk in _chunks(keys, 500):
            marks = ",".join("?" * len(chunk))
            out.extend(r[0] for r in conn.execute(f"SELECT passage_id FROM vectors WHERE doc_key IN ({marks})", chunk))
        return np.asarray(out, dtype=np.int64)

    def count(self) -> int:
        return int(self._connect().execute("SELECT COUNT(*) FROM documents").fetchone()[0])

    def passage_count(self) -> int:
        return int(self._connect().execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def max_seq(self) -> int:
        with self._reading() as conn:
            row = conn.execute("SELECT MAX(seq) FROM oplog").fetchone()
        return int(row[0] or 0)

    def changes_since(self, seq: int, chunk: int = LOG_CHUNK) -> Iterator[Change]:
        """The log after ``seq``, oldest first, read ``chunk`` rows at a time (never the whole tail in memory).

        The prune point is read after each chunk: pruning deletes rows and raises the point in one transaction and
        the point only rises, so if it is still at or below the position a chunk started from, that chunk missed
        nothing; otherwise :class:`LogPrunedError` is raised."""
        conn = self._connect()
        last = int(seq)
        while True:
            rows = conn.execute(
                "SELECT seq, doc_key, id, op FROM oplog WHERE seq > ? ORDER BY seq LIMIT ?", (last, chunk)
            ).fetchall()
            pruned = self.log_start()
            if pruned > last + 1:
                raise LogPrunedError(f"the change log starts at {pruned}; changes after {last} are gone")
            if not rows:
                return
            for row in rows:
                yield Change(*row)
            last = rows[-1][0]

    def log_start(self) -> int:
        """The lowest seq the log still holds every change from (1 until the first prune)."""
        return int(self.get_meta(_PRUNED) or 1)

    def log_size(self) -> int:
        return int(self._connect().execute("SELECT COUNT(*) FROM oplog").fetchone()[0])

    def prune_log(self, below: int) -> int:
        """Delete log rows with ``seq < below`` (the head row always stays: ``below`` is at most the head, and
        ``max_seq`` reads it). Returns how many rows went."""
        below = min(int(below), self.max_seq())
        if below <= self.log_start():
            return 0
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            gone = conn.execute("DELETE FROM oplog WHERE seq < ?", (below,)).rowcount
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (_PRUNED, str(below)))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return int(gone)

    def check(self) -> list[str]:
        """SQLite's ``PRAGMA quick_check`` (page structure, record formats; not index contents): [] when sound."""
        try:
            rows = [r[0] for r in self._connect().execute("PRAGMA quick_check")]
        except sqlite3.DatabaseError as exc:
            return [str(exc)]
        return [] if rows == ["ok"] else rows

    def drop(self) -> None:
        """The file goes with the index folder."""

    # -- writes --------------------------------------------------------------------------------------------------
    def write(self, upserts: Sequence[PreparedDocument], deletes: Sequence[str] = ()) -> dict[str, int]:
        """Apply a batch in one transaction; returns ``{doc_id: doc_key}`` of what was written or deleted."""
        conn = self._connect()
        written: dict[str, int] = {}
        conn.execute("BEGIN IMMEDIATE")
        try:
            for prepared in upserts:
                doc = prepared.document
                if len(prepared.passages) > MAX_PASSAGES:
                    raise ValueError(f"document {doc.id!r} has more than {MAX_PASSAGES} passages")
                row = conn.execute("SELECT doc_key FROM documents WHERE id = ?", (doc.id,)).fetchone()
                cursor = conn.execute(
                    "INSERT INTO oplog (doc_key, id, op) VALUES (?, ?, 'upsert')", (row[0] if row else -1, doc.id)
                )
                seq = cursor.lastrowid
                values = (
                    doc.title,
                    doc.text,
                    json.dumps(doc.metadata, ensure_ascii=False),
                    doc.timestamp,
                    doc.content_hash,
                    json.dumps(prepared.passages),
                    prepared.n_tokens,
                    seq,
                )
                if row:
                    key = row[0]
                    conn.execute(
                        "UPDATE documents SET title=?, text=?, metadata=?, timestamp=?, content_hash=?, passages=?, "
                        "n_tokens=?, seq=? WHERE doc_key=?",
                        (*values, key),
                    )
                    conn.execute("DELETE FROM vectors WHERE doc_key = ?", (key,))
                    conn.execute("DELETE FROM vector_sets WHERE doc_key = ?", (key,))
                    conn.execute("DELETE FROM doc_fields WHERE doc_key = ?", (key,))
                else:
                    key = conn.execute(
                        "INSERT INTO documents (id, title, text, metadata, timestamp, content_hash, passages, "
                        "n_tokens, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (doc.id, *values),
                    ).lastrowid
                    conn.execute("UPDATE oplog SET doc_key = ? WHERE seq = ?", (key, seq))
                conn.executemany("INSERT INTO doc_fields (doc_key, key, kind, value, num) VALUES (?, ?, ?, ?, ?)",
                                 _field_rows(key, doc.metadata))
                vectors = np.ascontiguousarray(prepared.vectors, dtype=np.float32)
                conn.executemany(
                    "INSERT INTO vectors (passage_id, doc_key, vector) VALUES (?, ?, ?)",
                    [(passage_id(key, i), key, vectors[i].tobytes()) for i in range(len(vectors))],
                )
                for kind, vset in prepared.vector_sets.items():
                    _insert_set(conn, key, kind, vset)
                written[doc.id] = key
            for doc_id in deletes:
                row = conn.execute("SELECT doc_key FROM documents WHERE id = ?", (doc_id,)).fetchone()
                if not row:
                    continue
                key = row[0]
                conn.execute("DELETE FROM documents WHERE doc_key = ?", (key,))
                conn.execute("DELETE FROM vectors WHERE doc_key = ?", (key,))
                conn.execute("DELETE FROM vector_sets WHERE doc_key = ?", (key,))
                conn.execute("DELETE FROM doc_fields WHERE doc_key = ?", (key,))
                conn.execute("INSERT INTO oplog (doc_key, id, op) VALUES (?, ?, 'delete')", (key, doc_id))
                written[doc_id] = key
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return written

    # -- events (foveal.events) ---------------------------------------------------------------------------------
    def write_events(self, upserts: Sequence["PreparedEvent"], deletes: Sequence[str] = (),
                     expire_before: float | None = None) -> dict[str, list[str]]:
        """Add or replace events and delete events by id, in one transaction with their change-log rows (``doc_key
        = -event_key``); with ``expire_before``, events dated before it are deleted in the same transaction.
        Returns ``{"deleted": [...], "expired": [...]}`` (ids)."""
        conn = self._connect()
        deleted: list[str] = []
        expired: list[str] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for event in upserts:
                row = conn.execute("SELECT event_key FROM events WHERE id = ?", (event.id,)).fetchone()
                seq = conn.execute("INSERT INTO oplog (doc_key, id, op) VALUES (?, ?, 'upsert')",
                                   (-row[0] if row else 0, event.id)).lastrowid
                blob = np.ascontiguousarray(event.vector, dtype=np.float32).tobytes()
                values = (event.title, event.text, event.source, event.timestamp, event.content_hash, blob, seq)
                if row:
                    conn.execute("UPDATE events SET title=?, text=?, source=?, timestamp=?, content_hash=?, vector=?, "
                                 "seq=? WHERE event_key=?", (*values, row[0]))
                else:
                    key = conn.execute("INSERT INTO events (id, title, text, source, timestamp, content_hash, vector, "
                                       "seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (event.id, *values)).lastrowid
                    conn.execute("UPDATE oplog SET doc_key = ? WHERE seq = ?", (-key, seq))
            doomed = [(i, False) for i in deletes]
            if expire_before is not None:
                doomed += [(r[0], True) for r in conn.execute(
                    "SELECT id FROM events WHERE timestamp < ? ORDER BY event_key", (expire_before,))]
            for event_id, by_age in doomed:
                row = conn.execute("SELECT event_key FROM events WHERE id = ?", (event_id,)).fetchone()
                if not row:
                    continue
                conn.execute("DELETE FROM events WHERE event_key = ?", (row[0],))
                conn.execute("INSERT INTO oplog (doc_key, id, op) VALUES (?, ?, 'delete')", (-row[0], event_id))
                (expired if by_age else deleted).append(event_id)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return {"deleted": deleted, "expired": expired}

    def event_hashes(self, ids: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        conn = self._connect()
        for chunk in _chunks(list(ids), 500):
            marks = ",".join("?" * len(chunk))
            out.update(conn.execute(f"SELECT id, content_hash FROM events WHERE id IN ({marks})", chunk).fetchall())
        return out

    def get_event(self, event_id: str) -> "StoredEvent | None":
        row = self._connect().execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE id = ?", (event_id,)).fetchone()
        return _event(row) if row else None

    def get_events(self, event_keys: Iterable[int]) -> dict[int, "StoredEvent"]:
        keys = list(dict.fromkeys(int(k) for k in event_keys))
        out: dict[int, StoredEvent] = {}
        conn = self._connect()
        for chunk in _chunks(keys, 500):
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE event_key IN ({marks})", chunk):
                out[row[0]] = _event(row)
        return out

    def list_events(self, after: int = 0, limit: int = 100) -> list["StoredEvent"]:
        """Events in ``event_key`` order after ``after`` (keyset paging: pass the last key seen)."""
        rows = self._connect().execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE event_key > ? "
                                       "ORDER BY event_key LIMIT ?", (int(after), int(limit))).fetchall()
        return [_event(r) for r in rows]

    def event_vectors(self, event_keys: Iterable[int] | None = None, batch: int = 10_000
                      ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(event keys, timestamps, vectors) of these events (all of them when ``None``), ``batch`` at a time."""
        conn = self._connect()
        if event_keys is None:
            pages = _keyset_pages(conn, "SELECT event_key, timestamp, vector FROM events WHERE event_key > ? "
                                        "ORDER BY event_key LIMIT ?", -1, batch)
        else:
            keys = list(dict.fromkeys(int(k) for k in event_keys))
            pages = (conn.execute("SELECT event_key, timestamp, vector FROM events WHERE event_key IN "
                                  f"({','.join('?' * len(chunk))}) ORDER BY event_key", chunk).fetchall()
                     for chunk in _chunks(keys, 500))
        for rows in pages:
            if rows:
                keys_, stamps, vectors = zip(*rows)
                yield (np.asarray(keys_, np.int64), np.asarray(stamps, np.float64),
                       np.frombuffer(b"".join(vectors), dtype=np.float32).reshape(len(rows), -1))

    def event_count(self) -> int:
        return int(self._connect().execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def get_meta(self, key: str) -> str | None:
        row = self._connect().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._connect().execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def _insert_set(conn: sqlite3.Connection, key: int, kind: str, vset: VectorSet) -> None:
    if not _KIND.match(kind):
        raise ValueError(f"vector set kind {kind!r}: use 1-32 lower-case letters, digits or '_', starting with a letter")
    matrix = np.ascontiguousarray(vset.vectors, dtype=np.float16)
    spans = json.dumps([[int(a), int(b)] for a, b in vset.spans]) if vset.spans is not None else None
    conn.execute(
        "INSERT INTO vector_sets (doc_key, kind, rows, dim, data, spans) VALUES (?, ?, ?, ?, ?, ?)",
        (key, kind, int(matrix.shape[0]), int(matrix.shape[1]), matrix.tobytes(), spans),
    )


@dataclass(slots=True)
class PreparedEvent:
    """An event ready to store: parsed, timestamped (epoch seconds), with its one unit vector."""

    id: str
    title: str
    text: str
    source: str | None
    timestamp: float
    content_hash: str
    vector: np.ndarray


@dataclass(slots=True)
class StoredEvent:
    event_key: int
    id: str
    title: str
    text: str
    source: str | None
    timestamp: float
    content_hash: str


_EVENT_COLUMNS = "event_key, id, title, text, source, timestamp, content_hash"


def _event(row) -> StoredEvent:
    return StoredEvent(*row)


def _field_rows(doc_key: int, metadata: dict) -> list[tuple]:
    """The ``doc_fields`` rows of one document's top-level metadata."""
    from foveal.documents import parse_timestamp

    rows = []
    for key, value in (metadata or {}).items():
        if isinstance(value, bool):
            rows.append((doc_key, key, "b", int(value), float(value)))
        elif isinstance(value, (int, float)):
            number = value if -2**63 <= value < 2**63 or isinstance(value, float) else None
            rows.append((doc_key, key, "n", number if number is not None else float(value), float(value)))
        elif isinstance(value, str):
            try:
                instant = parse_timestamp(value) if value[:1].isdigit() else None
            except (ValueError, OverflowError):
                instant = None
            rows.append((doc_key, key, "t", value, instant))
        else:
            rows.append((doc_key, key, "o", None, None))
    return rows


def _stored(row) -> StoredDocument:
    return StoredDocument(
        doc_key=row[0],
        id=row[1],
        title=row[2],
        text=row[3],
        metadata=json.loads(row[4]),
        timestamp=row[5],
        content_hash=row[6],
        passages=[tuple(p) for p in json.loads(row[7])],
        n_tokens=row[8],
    )


def _unpack(ids: list[int], blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    if not ids:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    vectors = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(ids), -1)
    return np.asarray(ids, dtype=np.int64), vectors


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _keyset_pages(conn: sqlite3.Connection, sql: str, after: int, batch: int) -> Iterator[list[tuple]]:
    """Rows of ``sql`` (``... WHERE key > ? ORDER BY key LIMIT ?``, the key first in each row) ``batch`` at a time,
    each page starting after the last key of the one before (keyset paging: no OFFSET rescans)."""
    while True:
        rows = conn.execute(sql, (after, batch)).fetchall()
        if not rows:
            return
        yield rows
        after = rows[-1][0]
