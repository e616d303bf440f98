"""A collection: one named index on disk, its three stores kept in step.

Folder layout::

    <home>/indexes/<name>/
        config.json      the IndexConfig it was built with (resolved), checked on every open
        instance         a random id written at creation (tells a recreated index from the one held open)
        docs.sqlite      documents, passage vectors and the change log (the commit point)
        lexical/         tantivy BM25 index;  lexical.json records the change-log seq it holds
        vectors.npz      FAISS index, saved atomically with the change-log seq it holds
        write.lock       held (flock) by whichever process is writing, for the length of one batch

Writes go: encode (no lock held) -> lock -> catch up from the log -> one SQLite transaction -> apply to FAISS and
tantivy -> commit tantivy -> unlock. Any process may write (the lock serialises them); any process reads, and
catches up from the log before each search. See :mod:`foveal.index.sqlite_store` for why this heals crashes.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from foveal.config import IndexConfig
from foveal.documents import Document
from foveal.errors import (
    ConfigError,
    IndexExistsError,
    IndexLockedError,
    IndexNotFoundError,
    InvalidInputError,
)
from foveal.index.base import LexicalDocument, StoredDocument
from foveal.index.sqlite_store import PreparedDocument
from foveal.registry import load_vector_index, make_docstore, make_encoder, make_lexical_index, make_vector_index

_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
#: Save the FAISS file at most this often during a long ingest (the log covers what is not saved yet).
SAVE_INTERVAL_S = 60.0


def check_index_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInputError(
            f"invalid index name {name!r}: use 1-64 lower-case letters, digits, '-' or '_', starting with a letter "
            "or digit"
        )
    return name


@dataclass(slots=True)
class WriteResult:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    passages: int = 0
    tokens: int = 0

    def merge(self, other: "WriteResult") -> None:
        for name in ("added", "updated", "unchanged", "deleted", "missing"):
            getattr(self, name).extend(getattr(other, name))
        self.passages += other.passages
        self.tokens += other.tokens


class Collection:
    """Open with :meth:`create` or :meth:`open`; close with :meth:`close` (or use as a context manager)."""

    def __init__(self, path: Path, name: str, config: IndexConfig) -> None:
        self.path = Path(path)
        self.name = name
        self.config = config
        self.encoder = make_encoder(config.encoder)
        self.dimension = self.encoder.dimension
        server = {"es": config.elasticsearch, "name": name}  # used by server backends (Elasticsearch) only
        self.store = make_docstore(self.path / "docs.sqlite", config.docstore, **server)
        self.lexical = make_lexical_index(self.path / "lexical", config.lexical, **server)
        self._state_lock = threading.RLock()
        self._write_lock = threading.Lock()
        self._last_save = time.monotonic()
        self._vectors_dirty = False
        self._load_vectors()
        self._lexical_seq = self._read_lexical_seq()
        with self._file_lock():
            self._catch_up(persist=True)

    # -- opening -------------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, name: str, config: IndexConfig | None = None) -> "Collection":
        check_index_name(name)
        path = Path(path)
        if (path / "config.json").exists():
            raise IndexExistsError(f"index {name!r} already exists")
        config = config or IndexConfig()
        path.mkdir(parents=True, exist_ok=True)
        resolved = config.model_copy(deep=True)
        encoder = make_encoder(config.encoder)
        resolved.encoder.max_seq_length = encoder.max_seq_length
        # a fresh identity per creation: a process holding an index open can tell that it was deleted and created
        # again under the same name (inode numbers are reused at once, and file times are coarse)
        (path / "instance").write_text(uuid.uuid4().hex)
        tmp = path / "config.json.tmp"
        tmp.write_text(json.dumps(resolved.model_dump(mode="json"), indent=2))
        os.replace(tmp, path / "config.json")
        return cls(path, name, resolved)

    @classmethod
    def open(cls, path: Path, name: str, config: IndexConfig | None = None) -> "Collection":
        path = Path(path)
        config_file = path / "config.json"
        if not config_file.exists():
            raise IndexNotFoundError(f"index {name!r} does not exist")
        stored = IndexConfig.parse(json.loads(config_file.read_text()))
        if config is not None:
            asked = config.model_copy(deep=True)
            if asked.encoder.max_seq_length is None:
                asked.encoder.max_seq_length = stored.encoder.max_seq_length
            asked.check_compatible(stored, name)
            stored = asked
        return cls(path, name, stored)

    def close(self) -> None:
        with self._state_lock:
            if self._vectors_dirty:
                with self._file_lock():
                    self._catch_up(persist=False)
                    self._save_vectors()
            self.store.close()

    def __enter__(self) -> "Collection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the vector index and its log position -------------------------------------------------------------------
    def _vector_file(self) -> Path:
        return self.path / "vectors.npz"

    def _load_vectors(self) -> None:
        cfg = self.config.vector
        self.vectors = None
        self._vector_seq = 0
        if self._vector_file().exists():
            try:
                self.vectors, header = load_vector_index(
                    self._vector_file(), self.dimension, cfg, es=self.config.elasticsearch, name=self.name
                )
                self._vector_seq = int(header.get("seq", 0))
            except (OSError, ValueError, KeyError, RuntimeError, ConfigError):
                self.vectors = None  # unreadable: rebuilt from the document store below
        if self.vectors is None:
            self.vectors = make_vector_index(self.dimension, cfg, es=self.config.elasticsearch, name=self.name)
            self._vector_seq = 0
            self._vectors_dirty = self.store.max_seq() > 0

    def _save_vectors(self) -> None:
        self.vectors.save(self._vector_file(), seq=self._vector_seq)
        self._vectors_dirty = False
        self._last_save = time.monotonic()

    def _read_lexical_seq(self) -> int:
        try:
            return int(json.loads((self.path / "lexical.json").read_text())["seq"])
        except (OSError, ValueError, KeyError):
            return 0

    def _write_lexical_seq(self, seq: int) -> None:
        tmp = self.path / "lexical.json.tmp"
        tmp.write_text(json.dumps({"seq": seq}))
        os.replace(tmp, self.path / "lexical.json")

    @contextmanager
    def _file_lock(self):
        """Serialise writers across processes (and threads of this one)."""
        with self._write_lock:
            with open(self.path / "write.lock", "a+") as handle:
                deadline = time.monotonic() + 120
                while True:
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise IndexLockedError(f"index {self.name!r} is being written by another process")
                        time.sleep(0.05)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)

    def _catch_up(self, *, persist: bool) -> None:
        """Replay the change log into FAISS and tantivy past what each holds (idempotent)."""
        with self._state_lock:
            head = self.store.max_seq()
            if self._vector_seq < head and not persist and getattr(self.vectors, "shared", False):
                # a server-side index (Elasticsearch) is shared: the writer replays into it under the write lock,
                # readers only follow (as readers of tantivy do)
                self._vector_seq = head
            if self._vector_seq < head:
                changes = self.store.changes_since(self._vector_seq)
                keys = sorted({c.doc_key for c in changes})
                if self._vector_seq == 0 and len(self.vectors) == 0:
                    keys = []  # full rebuild below, from every stored vector
                    for ids, vectors in self.store.iter_vectors():
                        self.vectors.add(ids, vectors)
                else:
                    self.vectors.remove_documents(keys)
                    ids, vectors = self.store.vectors_of(keys)
                    self.vectors.add(ids, vectors)
                self._vector_seq = head
                self._vectors_dirty = True
            if self._lexical_seq < head:
                changes = self.store.changes_since(self._lexical_seq)
                if persist:
                    touched = {c.id: c.doc_key for c in changes}
                    current = self.store.get_documents(touched.values())
                    self.lexical.remove([i for i, k in touched.items() if k not in current])
                    self.lexical.upsert([_lexical(d) for d in current.values()])
                    self.lexical.commit()
                    self._write_lexical_seq(head)
                else:
                    self.lexical.refresh()
                self._lexical_seq = head

    def refresh(self) -> None:
        """Catch up with what other processes committed (cheap when nothing changed)."""
        if self.store.max_seq() > min(self._vector_seq, self._lexical_seq):
            with self._state_lock:
                if self._lexical_seq < self.store.max_seq():
                    self._lexical_seq = self._read_lexical_seq()
                    self.lexical.refresh()
                self._catch_up(persist=False)

    # -- writes --------------------------------------------------------------------------------------------------
    def prepare(self, documents: Sequence[Document]) -> list[PreparedDocument]:
        """Segment and encode (no lock held: this is where the time goes)."""
        to_encode = [d for d in documents if d.vector is None]
        encoded = iter(self.encoder.encode_documents([d.full_text for d in to_encode])) if to_encode else iter(())
        prepared = []
        for doc in documents:
            if doc.vector is None:
                enc = next(encoded)
                spans = [(p.char_start, p.char_end) for p in enc.passages]
                prepared.append(PreparedDocument(doc, spans, enc.vectors, enc.n_tokens))
            else:
                vector = np.asarray(doc.vector, dtype=np.float32)
                if vector.shape != (self.dimension,):
                    raise InvalidInputError(
                        f"document {doc.id!r}: 'vector' has dimension {vector.size}; this index has {self.dimension}"
                    )
                vector = vector / np.linalg.norm(vector)
                prepared.append(PreparedDocument(doc, [(0, len(doc.full_text))], vector[None, :], 0))
        return prepared

    def upsert(self, documents: Sequence[Document]) -> WriteResult:
        """Add or replace documents by id; documents whose content hash is unchanged are skipped."""
        result = WriteResult()
        latest: dict[str, Document] = {}
        for doc in documents:  # the last version of an id in a batch wins
            latest.pop(doc.id, None)
            latest[doc.id] = doc
        existing = self.store.hashes(list(latest))
        changed = []
        for doc in latest.values():
            known = existing.get(doc.id)
            if known and known[1] == doc.content_hash:
                result.unchanged.append(doc.id)
            else:
                changed.append(doc)
                (result.updated if known else result.added).append(doc.id)
        if not changed:
            return result
        prepared = self.prepare(changed)
        result.passages = sum(len(p.passages) for p in prepared)
        result.tokens = sum(p.n_tokens for p in prepared)
        self._commit(prepared, [])
        return result

    def delete(self, doc_ids: Iterable[str]) -> WriteResult:
        result = WriteResult()
        ids = list(dict.fromkeys(doc_ids))
        existing = self.store.hashes(ids)
        result.deleted = [i for i in ids if i in existing]
        result.missing = [i for i in ids if i not in existing]
        if result.deleted:
            self._commit([], result.deleted)
        return result

    def _commit(self, prepared: list[PreparedDocument], deletes: list[str]) -> None:
        with self._file_lock(), self._state_lock:
            self._catch_up(persist=True)
            self.store.write(prepared, deletes)
            _test_hook("store_committed", self.store.max_seq())
            self._catch_up(persist=True)
            if self._vectors_dirty and time.monotonic() - self._last_save > SAVE_INTERVAL_S:
                self._save_vectors()
            _test_hook("derived_committed", self.store.max_seq())

    def flush(self) -> None:
        """Make the vector file current (the end of an ingest job)."""
        with self._file_lock(), self._state_lock:
            self._catch_up(persist=True)
            if self._vectors_dirty:
                self._save_vectors()

    # -- reads ---------------------------------------------------------------------------------------------------
    def get(self, doc_id: str) -> StoredDocument | None:
        return self.store.get_by_id(doc_id)

    def stats(self) -> dict:
        return {
            "name": self.name,
            "documents": self.store.count(),
            "passages": self.store.passage_count(),
            "vectors": len(self.vectors),
            "lexical_documents": len(self.lexical),
            "seq": self.store.max_seq(),
            "dimension": self.dimension,
            "config": self.config.model_dump(mode="json"),
        }

    def destroy(self) -> None:
        self.close()
        for part in (self.vectors, self.lexical, self.store):
            drop = getattr(part, "drop", None)  # server backends delete their server-side indexes
            if drop is not None:
                drop()
        shutil.rmtree(self.path, ignore_errors=True)


def _test_hook(event: str, seq: int) -> None:
    """Kill-test hook (tests/killharness.py): when ``FOVEAL_TEST_HOOKS`` names a file, append ``<event> <seq> <pid>``
    so a test can SIGKILL this process at a known point of a write; after ``store_committed`` sleep
    ``FOVEAL_TEST_HOOK_PAUSE_S`` so the kill can land between the store commit and the derived indexes' commit.
    Unset in production: one environment lookup per batch."""
    hooks = os.environ.get("FOVEAL_TEST_HOOKS")
    if not hooks:
        return
    with open(hooks, "a") as handle:
        handle.write(f"{event} {seq} {os.getpid()}\n")
        handle.flush()
    if event == "store_committed":
        time.sleep(float(os.environ.get("FOVEAL_TEST_HOOK_PAUSE_S", "0")))


def _lexical(doc: StoredDocument) -> LexicalDocument:
    return LexicalDocument(doc.doc_key, doc.id, doc.title, doc.text)
