"""In-memory columns of the document store's filter fields, so that a filter costs what it selects.

A metadata or timestamp filter used to be one SQL statement over ``doc_fields``: every matching row was a B-tree
lookup and a row of Python, about 3 µs a document (150 ms for a filter matching 50,000 of 100,000 documents), more
than the search it restricted. Qdrant keeps a payload index in memory for the same reason. Here each store keeps,
per process and per metadata key a filter has named, the key's rows as sorted NumPy arrays (by number, by text,
by document), and the documents' timestamps; a condition is a binary search and a slice, the conditions of one
filter meet in a bitmap over doc_keys, and the allow-list comes back as sorted unique int64 keys, the same as the
SQL answer (a test compares the two on random data).

Freshness: the columns belong to one state of the database. Before each use this connection's ``PRAGMA
data_version`` is read; any commit by another connection (this process's writers, a worker process) changes it,
and the columns are reloaded from the new state. The version is read before the rows, so a commit that lands
during a load makes the next use reload rather than be missed. A reload costs about one SQL filter of the same
key; between commits, filters cost what they select.

Not covered (the store answers them in SQL): id lists (at most 1,000 ids, an index lookup each) and an equality
on an integer whose magnitude reaches 2**53 (a float column cannot tell it from its neighbours).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

#: Equality on integers at least this large in magnitude goes to SQL (floats lose integers from 2**53 on).
EXACT_FLOAT_INT = 2**53
_OPS = ("gte", "gt", "lte", "lt")
#: the store's meta key of its change log's prune point (``SqliteDocStore.log_start``)
_PRUNED = "log_pruned_below"


@dataclass(slots=True)
class _Sorted:
    """Rows of one kind ordered by a value: ``values`` ascending, ``keys`` the doc_key of each row."""

    values: np.ndarray
    keys: np.ndarray

    @classmethod
    def of(cls, pairs: list[tuple], dtype) -> "_Sorted":
        """From (value, doc_key) pairs, in any order."""
        values = np.asarray([p[0] for p in pairs], dtype=dtype)
        keys = np.asarray([p[1] for p in pairs], dtype=np.int64)
        order = np.argsort(values, kind="stable")
        return cls(values[order], keys[order])

    def replaced(self, dropped: np.ndarray, pairs: list[tuple], dtype) -> "_Sorted":
        """Without the rows of the ``dropped`` doc_keys, with ``pairs`` merged in at their places (no re-sort)."""
        kept = ~np.isin(self.keys, dropped)
        values, keys = self.values[kept], self.keys[kept]
        if not pairs:
            return _Sorted(values, keys)
        new = _Sorted.of(pairs, dtype)
        at = np.searchsorted(values, new.values, side="right")
        return _Sorted(np.insert(values, at, new.values), np.insert(keys, at, new.keys))

    def equal(self, wanted) -> np.ndarray:
        lo = np.searchsorted(self.values, wanted, side="left")
        hi = np.searchsorted(self.values, wanted, side="right")
        return self.keys[lo:hi]

    def within(self, bounds: dict) -> np.ndarray:
        lo, hi = 0, len(self.values)
        for op, x in bounds.items():
            if op == "gte":
                lo = max(lo, int(np.searchsorted(self.values, x, side="left")))
            elif op == "gt":
                lo = max(lo, int(np.searchsorted(self.values, x, side="right")))
            elif op == "lte":
                hi = min(hi, int(np.searchsorted(self.values, x, side="right")))
            elif op == "lt":
                hi = min(hi, int(np.searchsorted(self.values, x, side="left")))
        return self.keys[lo:hi] if lo < hi else self.keys[:0]


@dataclass(slots=True)
class _KeyColumn:
    """One metadata key's ``doc_fields`` rows: every document that has it, and per kind its values in order."""

    present: np.ndarray  # doc_keys that have the key (any kind)
    numbers: _Sorted  # kind n and b by ``num`` (b as 0/1, kept apart by ``bools``)
    bools: _Sorted
    texts: _Sorted  # kind t by ``value``
    dates: _Sorted  # kind t with an ISO 8601 instant, by ``num``


@dataclass(slots=True)
class _Documents:
    keys: np.ndarray  # every live doc_key
    times: _Sorted  # documents with a timestamp, by timestamp
    top: int  # the largest doc_key (the bitmap's size)


class FieldColumns:
    """The columns of one SQLite store in this process (see the module docstring). Thread-safe."""

    #: Metadata keys kept at once (the least recently filtered is dropped first).
    max_keys = 32
    #: Changes since the last use up to ``max(patch_min, patch_fraction * documents)`` are patched in (their rows
    #: re-read by doc_key); more are a full reload.
    patch_min = 1024
    patch_fraction = 0.1

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._version: int | None = None
        self._seq: int | None = None  # the change-log position the columns hold
        self._documents: _Documents | None = None
        self._keys: OrderedDict[str, _KeyColumn] = OrderedDict()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._version, self._seq, self._documents = None, None, None
            self._keys.clear()

    @staticmethod
    def covers(ids, metadata: dict | None) -> bool:
        """Whether :meth:`keys` answers this filter (else the store's SQL does)."""
        if ids is not None:
            return False
        for wanted in (metadata or {}).values():
            if isinstance(wanted, dict):
                continue
            for v in wanted if isinstance(wanted, list) else [wanted]:
                # a number a float64 column cannot hold exactly goes to SQL
                if isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) >= EXACT_FLOAT_INT:
                    return False
        return True

    def keys(self, metadata: dict | None, time_bounds: dict | None) -> np.ndarray:
        """Sorted unique doc_keys (int64) of the live documents matching every condition, as
        :meth:`SqliteDocStore.filter_key_array` defines them."""
        with self._lock:
            self._refresh()
            documents = self._documents
            assert documents is not None
            parts = [self._metadata_keys(key, wanted, documents) for key, wanted in (metadata or {}).items()]
            if time_bounds:
                parts.append(documents.times.within({op: time_bounds[op] for op in _OPS if op in time_bounds}))
        if not parts:
            return documents.keys.copy()
        if any(p.size == 0 for p in parts):
            return np.zeros(0, np.int64)
        if len(parts) == 1 and parts[0] is documents.keys:
            return parts[0].copy()
        # the conditions meet in a bitmap over doc_keys: O(matches + largest key), and the answer comes out sorted
        # (a column loaded after the documents may hold a newer key: the bitmap reaches every part's largest)
        top = max(documents.top, *(int(p.max()) for p in parts))
        count = np.zeros(top + 1, dtype=np.uint8 if len(parts) < 255 else np.uint16)
        for p in parts:
            count[p] += 1  # a document repeated inside one part counts once (buffered fancy-index add)
        return np.flatnonzero(count == len(parts)).astype(np.int64)

    # -- internals -----------------------------------------------------------------------------------------------
    def _metadata_keys(self, key: str, wanted, documents: _Documents) -> np.ndarray:
        column = self._column(key)
        if isinstance(wanted, dict) and "exists" in wanted:
            if wanted["exists"]:
                return column.present
            return np.setdiff1d(documents.keys, column.present, assume_unique=True)
        if isinstance(wanted, dict) and "range" in wanted:
            rows = column.dates if wanted.get("dates") else column.numbers
            return rows.within(wanted["range"])
        found = []  # (no dict.fromkeys to drop repeats: it takes True, 1 and 1.0 for one value)
        for v in wanted if isinstance(wanted, list) else [wanted]:
            if isinstance(v, bool):
                found.append(column.bools.equal(float(v)))
            elif isinstance(v, (int, float)):
                found.append(column.numbers.equal(float(v)))
            elif isinstance(v, str):
                found.append(column.texts.equal(v))
        if not found:
            return np.zeros(0, np.int64)
        return found[0] if len(found) == 1 else np.concatenate(found)  # repeats count once in :meth:`keys`

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            # read-only use: its data_version moves with every commit of any other connection, in any process
            self._conn = sqlite3.connect(self._path, timeout=60.0, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA busy_timeout=60000")
        return self._conn

    def _refresh(self) -> None:
        conn = self._connect()
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._version and self._documents is not None:
            return
        # read before the rows: a commit after this point moves it again and the next use looks again
        self._version = None
        conn.execute("BEGIN")  # one snapshot: the change log's head and the rows it describes agree
        try:
            head = int(conn.execute("SELECT MAX(seq) FROM oplog").fetchone()[0] or 0)
            changed = self._changed_since(conn, head)
            if changed is None:
                self._keys.clear()
                self._documents = self._load_documents(conn)
            elif changed.size:
                self._patch(conn, changed)
            self._seq = head
        finally:
            conn.execute("COMMIT")
        self._version = version

    def _changed_since(self, conn: sqlite3.Connection, head: int) -> np.ndarray | None:
        """The doc_keys written since the columns' change-log position, or None for a full load (nothing loaded,
        the log pruned past that position, or too many changes to patch)."""
        if self._documents is None or self._seq is None:
            return None
        if head == self._seq:
            return np.zeros(0, np.int64)
        pruned = conn.execute("SELECT value FROM meta WHERE key = ?", (_PRUNED,)).fetchone()
        if pruned is not None and int(pruned[0]) > self._seq + 1:
            return None
        if head - self._seq > max(self.patch_min, self.patch_fraction * len(self._documents.keys)):
            return None
        rows = conn.execute("SELECT doc_key FROM oplog WHERE seq > ? AND doc_key >= 0", (self._seq,)).fetchall()
        return np.unique(np.asarray([r[0] for r in rows], dtype=np.int64))

    @staticmethod
    def _load_documents(conn: sqlite3.Connection) -> _Documents:
        keys, stamped, stamps = [], [], []
        for doc_key, timestamp in conn.execute("SELECT doc_key, timestamp FROM documents"):
            keys.append(doc_key)
            if timestamp is not None:
                stamped.append(doc_key)
                stamps.append(timestamp)
        all_keys = np.sort(np.asarray(keys, dtype=np.int64))
        return _Documents(all_keys, _Sorted.of(list(zip(stamps, stamped)), np.float64),
                          int(all_keys[-1]) if all_keys.size else 0)

    def _patch(self, conn: sqlite3.Connection, changed: np.ndarray) -> None:
        """Bring the loaded columns to the snapshot: drop every row of the changed documents, add their rows now."""
        marks = json.dumps(changed.tolist())
        documents = self._documents
        assert documents is not None
        rows = conn.execute("SELECT doc_key, timestamp FROM documents WHERE doc_key IN (SELECT value FROM "
                            "json_each(?))", (marks,)).fetchall()
        keys = _merge_keys(documents.keys, changed, [r[0] for r in rows])
        stamped = [(r[1], r[0]) for r in rows if r[1] is not None]
        self._documents = _Documents(keys, documents.times.replaced(changed, stamped, np.float64),
                                     max(documents.top, int(keys[-1]) if keys.size else 0))
        for key, column in self._keys.items():
            rows = conn.execute("SELECT doc_key, kind, value, num FROM doc_fields WHERE key = ? AND doc_key IN "
                                "(SELECT value FROM json_each(?))", (key, marks)).fetchall()
            fresh = _rows_by_kind(rows)
            self._keys[key] = _KeyColumn(
                _merge_keys(column.present, changed, [r[0] for r in rows]),
                column.numbers.replaced(changed, fresh["n"], np.float64),
                column.bools.replaced(changed, fresh["b"], np.float64),
                column.texts.replaced(changed, fresh["t"], object),
                column.dates.replaced(changed, fresh["d"], np.float64))

    def _column(self, key: str) -> _KeyColumn:
        column = self._keys.get(key)
        if column is not None:
            self._keys.move_to_end(key)
            return column
        rows = self._connect().execute("SELECT doc_key, kind, value, num FROM doc_fields WHERE key = ?",
                                       (key,)).fetchall()
        by_kind = _rows_by_kind(rows)
        column = _KeyColumn(np.sort(np.asarray([r[0] for r in rows], dtype=np.int64)),
                            _Sorted.of(by_kind["n"], np.float64), _Sorted.of(by_kind["b"], np.float64),
                            _Sorted.of(by_kind["t"], object), _Sorted.of(by_kind["d"], np.float64))
        self._keys[key] = column
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
        return column


def _rows_by_kind(rows) -> dict[str, list[tuple]]:
    """``doc_fields`` rows as (value, doc_key) pairs per column: n(umber) and b(ool) by ``num``, t(ext) by
    ``value``, d(ates: text with an instant) by ``num``."""
    out: dict[str, list[tuple]] = {"n": [], "b": [], "t": [], "d": []}
    for doc_key, kind, value, num in rows:
        if kind in ("n", "b"):
            out[kind].append((num, doc_key))
        elif kind == "t":
            out["t"].append((value, doc_key))
            if num is not None:
                out["d"].append((num, doc_key))
    return out


def _merge_keys(keys: np.ndarray, dropped: np.ndarray, added: list[int]) -> np.ndarray:
    """Sorted unique ``keys`` without ``dropped`` and with ``added`` (a subset of ``dropped``)."""
    kept = keys[~np.isin(keys, dropped)]
    new = np.sort(np.asarray(added, dtype=np.int64))
    return np.insert(kept, np.searchsorted(kept, new), new)
