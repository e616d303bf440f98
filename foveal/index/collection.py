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
    ConflictError,
    FovealError,
    IndexExistsError,
    IndexLockedError,
    IndexNotFoundError,
    InvalidInputError,
)
from foveal.index.base import LexicalDocument, StoredDocument
from foveal.index.sqlite_store import PreparedDocument
from foveal.registry import (
    SERVER_BACKENDS,
    check_backends,
    load_vector_index,
    make_docstore,
    make_encoder,
    make_lexical_index,
    make_vector_index,
)

_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
#: Save the FAISS file at most this often during a long ingest (the log covers what is not saved yet).
SAVE_INTERVAL_S = 60.0
#: Name prefix of the folder an index is built in before it is renamed into place (see :meth:`Collection.create`).
STAGING_PREFIX = ".creating-"


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
        #: the random id this creation of the index was given (``<path>/instance``); a task carries it from
        #: submission so a write meant for a deleted index never lands in one re-created under the same name
        self.instance = _read_instance(self.path) or ""
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
        """Create the index at ``path``, atomically: either it is there, complete, or nothing is on disk.

        Everything that can be checked without writing is checked first (backends resolve, the encoder's model
        loads, the vector factory builds); then the index is built in a staging folder beside ``path``
        (``.creating-<random>``, locked by this process while it works) and renamed into place only once complete.
        A process that dies half-way leaves only the staging folder, which no listing shows and the next
        :class:`~foveal.engine.Engine` removes. A refused creation therefore never leaves a folder that breaks the
        listing of indexes, the readiness check or the next start of the service.
        """
        check_index_name(name)
        path = Path(path)
        if (path / "config.json").exists():
            raise IndexExistsError(f"index {name!r} already exists")
        config = config or IndexConfig()
        resolved = config.model_copy(deep=True)
        encoder = _check_buildable(resolved)
        resolved.encoder.max_seq_length = encoder.max_seq_length
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.parent / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        staging.mkdir()  # the mode the umask gives, as the index folder always had
        hold = hold_folder(staging)
        try:
            # a fresh identity per creation: a process holding an index open can tell that it was deleted and
            # created again under the same name (inode numbers are reused at once, and file times are coarse)
            (staging / "instance").write_text(uuid.uuid4().hex)
            (staging / "config.json").write_text(json.dumps(resolved.model_dump(mode="json"), indent=2))
            cls(staging, name, resolved).close()  # every store is made and opens
            _publish(staging, path, name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            os.close(hold)
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

    def upsert(self, documents: Sequence[Document], *, expect_instance: str | None = None) -> WriteResult:
        """Add or replace documents by id; documents whose content hash is unchanged are skipped.

        With ``expect_instance`` the write happens only if the index on disk is still that creation (checked under
        the write lock, just before the store commit); otherwise :class:`IndexNotFoundError` and nothing written."""
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
            if expect_instance is not None:
                self._check_instance(expect_instance)  # "unchanged" must not be reported for a deleted index
            return result
        prepared = self.prepare(changed)
        result.passages = sum(len(p.passages) for p in prepared)
        result.tokens = sum(p.n_tokens for p in prepared)
        self._commit(prepared, [], expect_instance=expect_instance)
        return result

    def delete(self, doc_ids: Iterable[str], *, expect_instance: str | None = None) -> WriteResult:
        result = WriteResult()
        ids = list(dict.fromkeys(doc_ids))
        existing = self.store.hashes(ids)
        result.deleted = [i for i in ids if i in existing]
        result.missing = [i for i in ids if i not in existing]
        if result.deleted:
            self._commit([], result.deleted, expect_instance=expect_instance)
        elif expect_instance is not None:
            self._check_instance(expect_instance)
        return result

    def _check_instance(self, expected: str) -> None:
        """Raise unless ``<path>/instance`` still holds ``expected`` (the index was not deleted, or re-created)."""
        if _read_instance(self.path) != expected:
            raise IndexNotFoundError(
                f"index {self.name!r} was deleted (or deleted and created again) after this write was submitted; "
                "nothing was written", index=self.name)

    def _commit(self, prepared: list[PreparedDocument], deletes: list[str], *,
                expect_instance: str | None = None) -> None:
        with self._file_lock(), self._state_lock:
            if expect_instance is not None:
                # before anything under the lock touches the folder: a catch-up of this (old) collection would
                # write its positions into a re-created index's files
                self._check_instance(expect_instance)
            self._catch_up(persist=True)
            if expect_instance is not None:
                self._check_instance(expect_instance)  # and again just before the store commit
            self.store.write(prepared, deletes)
            self._catch_up(persist=True)
            if self._vectors_dirty and time.monotonic() - self._last_save > SAVE_INTERVAL_S:
                self._save_vectors()

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


def _read_instance(path: Path) -> str | None:
    """The index's instance id, or None when the file is gone (the index was deleted) or unreadable."""
    try:
        return (Path(path) / "instance").read_text()
    except OSError:
        return None


def _lexical(doc: StoredDocument) -> LexicalDocument:
    return LexicalDocument(doc.doc_key, doc.id, doc.title, doc.text)


def _check_buildable(config: IndexConfig):
    """Everything :meth:`Collection.create` can check before it writes anything; returns the loaded encoder.

    Whatever the model loader raises (a folder that is no model, a damaged checkpoint) becomes a
    :class:`ConfigError` that names ``encoder.model``, so the caller gets a 4xx, not a 500."""
    check_backends(config.vector, config.lexical, config.docstore)
    try:
        encoder = make_encoder(config.encoder)
    except FovealError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"encoder.model {config.encoder.model!r} could not be loaded: {type(exc).__name__}: {exc}") from None
    if config.vector.backend not in SERVER_BACKENDS:  # local vector indexes are built in memory: nothing written
        make_vector_index(encoder.dimension, config.vector)
    return encoder


def hold_folder(path: Path) -> int:
    """Lock ``path`` (a folder) for as long as the returned descriptor stays open: it tells a folder some live
    process is still building or removing from one a dead process left behind."""
    handle = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
    except OSError:
        pass  # a file system without flock on folders (NFS): the sweep's grace period still protects it
    return handle


def _publish(staging: Path, path: Path, name: str) -> None:
    """Rename the complete staging folder to the index's own name; refuse when something already holds it."""
    try:
        os.rename(staging, path)  # replaces an empty folder; refuses one with anything in it
    except FileNotFoundError:
        raise ConflictError(f"index {name!r} was not created: another process removed its staging folder "
                            f"{staging.name} while it was being built; try again") from None
    except OSError as exc:
        if (path / "config.json").exists():
            raise IndexExistsError(f"index {name!r} already exists") from None
        raise IndexExistsError(
            f"index {name!r} cannot be created: {path} is in the way ({exc.strerror}); it holds no index "
            "(no config.json): remove it by hand"
        ) from None
