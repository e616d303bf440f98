"""The derived indexes of a collection, each behind :class:`~foveal.index.base.DerivedIndex`.

:class:`VectorPart` wraps any :class:`~foveal.index.base.VectorIndex` (FAISS, a private copy in memory whose file is
a snapshot; Elasticsearch, shared on the server, whose file only records the position it holds); :class:`LexicalPart`
wraps any :class:`~foveal.index.base.LexicalIndex` (tantivy, Elasticsearch: both shared), its position in
``lexical.json``. :class:`~foveal.index.collection.Collection` drives both the same way (see its docstring for the
design); a later derived index (sentence vectors, event vectors) is one more class with these methods.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from foveal.index.base import Change, DerivedIndexDamaged, DocStore, LexicalDocument, LexicalIndex, VectorIndex

#: Documents handled per step of a replay or rebuild (bounds the memory of a catch-up over a long log).
APPLY_CHUNK = 2000


def _chunks(changes: Iterable[Change], size: int = APPLY_CHUNK) -> Iterator[list[Change]]:
    chunk: list[Change] = []
    for change in changes:
        chunk.append(change)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def write_json_durably(path: Path, value: dict) -> None:
    """Temporary file, fsync, rename, fsync the folder: after this returns, a power loss keeps ``value``."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        handle.write(json.dumps(value))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def saved_header(path: Path) -> dict:
    """The header of a saved vector file: FAISS writes an ``.npz`` (a zip), a server index a JSON document."""
    with open(path, "rb") as handle:
        magic = handle.read(2)
    if magic == b"PK":
        import numpy as np

        with np.load(path) as data:
            return json.loads(bytes(data["header"]).decode())
    return json.loads(Path(path).read_text())


class VectorPart:
    """Passage vectors as a derived index. ``make()`` builds an empty index, ``load(path)`` opens a saved one."""

    name = "vectors"

    def __init__(self, file: Path, make: Callable[[], VectorIndex],
                 load: Callable[[Path], tuple[VectorIndex, dict]]) -> None:
        self.file = Path(file)
        self._make = make
        self._load = load
        self.index: VectorIndex = make()
        self.shared = bool(self.index.shared)
        self.held = 0
        #: the private copy holds changes its snapshot file does not (saved at intervals; the log covers them)
        self.dirty = False

    def open(self) -> None:
        self.held = 0
        self.dirty = False
        if not self.file.exists():
            return  # never saved: held 0, so the first catch-up rebuilds from the store
        try:
            self.index, header = self._load(self.file)
            self.held = int(header.get("seq", 0))
        except Exception as exc:  # a truncated zip, a checksum mismatch, a stale factory: never served
            raise DerivedIndexDamaged(f"{self.file.name} cannot be used ({type(exc).__name__}: {exc})") from exc

    def position(self) -> int:
        try:
            return int(saved_header(self.file).get("seq", 0))
        except Exception:  # missing, or damaged (a truncated zip is BadZipFile): nothing to promise
            return 0

    def apply(self, store: DocStore, changes: Iterable[Change]) -> None:
        for chunk in _chunks(changes):
            keys = sorted({c.doc_key for c in chunk if c.doc_key > 0})  # events (doc_key < 0) are EventPart's
            if not keys:
                continue
            self.index.remove_documents(keys)
            ids, vectors = store.vectors_of(keys)
            self.index.add(ids, vectors)
        self.dirty = True

    def rebuild(self, store: DocStore) -> None:
        if self.shared:
            self.persist(0)  # a writer killed mid-rebuild leaves position 0: the next one rebuilds again
        self.index.drop()
        self.index = self._make()
        for ids, vectors in store.iter_vectors():
            self.index.add(ids, vectors)
        self.dirty = True

    def persist(self, position: int) -> None:
        self.index.save(self.file, seq=position)
        self.dirty = False

    def follow(self) -> None:
        """A shared (server) index: nothing to load, the server serves the writer's state; the position is what
        the writer recorded. A private copy follows by replaying into its own memory (done by the collection)."""
        if self.shared:
            self.held = self.position()

    def check(self, store: DocStore) -> str | None:
        have, want = len(self.index), store.passage_count()
        return None if have == want else f"holds {have} passage vectors, the document store {want}"

    def drop(self) -> None:
        self.index.drop()


class LexicalPart:
    """The BM25 index as a derived index; its position in ``seq_file`` (``lexical.json``), written after each
    commit. ``discard()`` deletes files an index left that cannot even be opened (a damaged tantivy folder)."""

    name = "lexical"

    def __init__(self, seq_file: Path, make: Callable[[], LexicalIndex], discard: Callable[[], None]) -> None:
        self.seq_file = Path(seq_file)
        self._make = make
        self._discard = discard
        self.index: LexicalIndex | None = None
        self.shared = True
        self.held = 0

    def open(self) -> None:
        self.held = self.position()
        try:
            self.index = self._make()  # tantivy reads every segment's footer and probes its files here
            len(self.index)
        except DerivedIndexDamaged:
            raise
        except Exception as exc:  # tantivy refuses damaged files with ValueError ("Data corrupted", "IoError")
            self.index = None
            raise DerivedIndexDamaged(f"cannot be opened ({type(exc).__name__}: {exc})") from exc
        self.shared = bool(self.index.shared)

    def position(self) -> int:
        try:
            return int(json.loads(self.seq_file.read_text())["seq"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def apply(self, store: DocStore, changes: Iterable[Change]) -> None:
        index = self.index
        for chunk in _chunks(changes):
            touched = {c.id: c.doc_key for c in chunk if c.doc_key > 0}  # events (doc_key < 0) are EventPart's
            if not touched:
                continue
            current = store.get_documents(touched.values())
            index.remove([i for i, k in touched.items() if k not in current])
            index.upsert([_lexical(d) for d in current.values()])
        index.commit()

    def rebuild(self, store: DocStore) -> None:
        self.persist(0)  # a writer killed mid-rebuild leaves position 0, not a claim over a half-built index
        if self.index is not None:
            self.index.drop()
        self._discard()
        self.index = self._make()
        for documents in store.iter_documents():
            self.index.upsert([_lexical(d) for d in documents])
        self.index.commit()

    def persist(self, position: int) -> None:
        write_json_durably(self.seq_file, {"seq": position})

    def follow(self) -> None:
        position = self.position()  # read before the reload: what the reload shows holds at least this much
        try:
            self.index.refresh()
        except ValueError:  # tantivy: the folder is being rebuilt by a writer; keep the last view, retry later
            return
        self.held = position

    def check(self, store: DocStore) -> str | None:
        have, want = len(self.index), store.count()
        return None if have == want else f"holds {have} documents, the document store {want}"

    def drop(self) -> None:
        if self.index is not None:
            self.index.drop()


class EventPart:
    """The event vectors (:mod:`foveal.events`) as a derived index: a private copy in memory (event keys, timestamps,
    unit vectors: events are few, so search is one matrix product), snapshotted to ``events.npz`` with the position
    it holds and a checksum. It replays the change-log rows with ``doc_key < 0`` (``-event_key``) and ignores the
    documents' rows, as the other parts ignore the events'."""

    name = "events"
    shared = False

    def __init__(self, file: Path, dimension: int) -> None:
        self.file = Path(file)
        self.dimension = dimension
        self.held = 0
        self.dirty = False
        self._clear()

    def _clear(self) -> None:
        self.keys = np.zeros(0, np.int64)
        self.timestamps = np.zeros(0, np.float64)
        self.vectors = np.zeros((0, self.dimension), np.float32)

    def __len__(self) -> int:
        return len(self.keys)

    def open(self) -> None:
        self.held = 0
        self.dirty = False
        self._clear()
        if not self.file.exists():
            return
        try:
            with np.load(self.file) as data:
                header = json.loads(bytes(data["header"]).decode())
                keys, stamps, vectors = data["keys"], data["timestamps"], data["vectors"]
            if header.get("sha256") != _digest(keys, stamps, vectors) or vectors.shape[1:] != (self.dimension,):
                raise ValueError("checksum or dimension mismatch")
        except Exception as exc:  # truncated zip, bad checksum: rebuilt from the store
            raise DerivedIndexDamaged(f"{self.file.name} cannot be used ({type(exc).__name__}: {exc})") from exc
        self.keys, self.timestamps, self.vectors = keys.astype(np.int64), stamps.astype(np.float64), vectors
        self.held = int(header.get("seq", 0))

    def position(self) -> int:
        try:
            with np.load(self.file) as data:
                return int(json.loads(bytes(data["header"]).decode()).get("seq", 0))
        except Exception:
            return 0

    def _remove(self, keys) -> None:
        keep = ~np.isin(self.keys, np.asarray(list(keys), np.int64))
        self.keys, self.timestamps, self.vectors = self.keys[keep], self.timestamps[keep], self.vectors[keep]

    def _add(self, store, keys) -> None:
        for got_keys, stamps, vectors in store.event_vectors(keys):
            self.keys = np.concatenate([self.keys, got_keys])
            self.timestamps = np.concatenate([self.timestamps, stamps])
            self.vectors = np.concatenate([self.vectors, vectors.reshape(-1, self.dimension)])

    def apply(self, store, changes: Iterable[Change]) -> None:
        if not hasattr(store, "event_vectors"):
            return
        for chunk in _chunks(changes):
            keys = sorted({-c.doc_key for c in chunk if c.doc_key < 0})
            if keys:
                self._remove(keys)
                self._add(store, keys)
                self.dirty = True

    def rebuild(self, store) -> None:
        self._clear()
        if hasattr(store, "event_vectors"):
            self._add(store, None)
        self.dirty = True

    def persist(self, position: int) -> None:
        """Write the snapshot atomically (temporary file, fsync, rename, fsync the folder)."""
        header = {"seq": int(position), "sha256": _digest(self.keys, self.timestamps, self.vectors)}
        tmp = self.file.with_name(self.file.name + ".tmp")
        with open(tmp, "wb") as handle:
            np.savez(handle, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), keys=self.keys,
                     timestamps=self.timestamps, vectors=self.vectors)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.file)
        fd = os.open(self.file.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.dirty = False

    def follow(self) -> None:
        """Private: the collection replays the log into this copy."""

    def check(self, store) -> str | None:
        want = store.event_count() if hasattr(store, "event_count") else 0
        return None if len(self) == want else f"holds {len(self)} event vectors, the document store {want}"

    def drop(self) -> None:
        pass


def _digest(*arrays) -> str:
    import hashlib

    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _lexical(doc) -> LexicalDocument:
    return LexicalDocument(doc.doc_key, doc.id, doc.title, doc.text, doc.metadata)
