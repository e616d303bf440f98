"""A collection: one named index on disk, its stores kept in step by one recovery design.

Folder layout::

    <home>/indexes/<name>/
        config.json      the IndexConfig it was built with (resolved), checked on every open
        instance         a random id written at creation (tells a recreated index from the one held open)
        docs.sqlite      documents, passage vectors and the change log: the commit point
        lexical/         tantivy BM25 index;  lexical.json records the change-log position it holds
        vectors.npz      FAISS snapshot with the position it holds (for Elasticsearch: only the position)
        events.npz       event vectors (foveal.events) with the position they hold; events themselves are in
                         docs.sqlite and share its change log (rows with doc_key = -event_key)
        write.lock       held (flock) by whichever process is writing, for the length of one batch

Recovery design
---------------
* **The document store is the commit point.** A batch is accepted when its one store transaction commits (with
  ``synchronous=FULL``: it survives a power loss); every document it touches gets a row in the change log, whose
  ``seq`` is the position.
* **Each derived index persists the position it holds** (:class:`~foveal.index.base.DerivedIndex`): tantivy in
  ``lexical.json``, written after its commit; FAISS in the header of its snapshot, saved atomically with the data;
  Elasticsearch vectors in ``vectors.npz``. A position is a promise: every change up to it is durably in that index.
* **Only a writer under the write lock advances a persisted position**, after that index durably applied the
  changes. The writer replays each shared index (tantivy, Elasticsearch) from the position it re-reads from that
  index's own record under the lock, never from what a reader in this process believed; a private copy (FAISS in
  memory) replays from what that copy really holds.
* **Readers follow without moving anything**: they reload shared indexes (``held`` = the recorded position, read
  before the reload) and replay the log into their private FAISS copy. A reader that sees a shared index behind
  the store (a writer died between its store commit and its tantivy commit) heals it when the write lock is free.
* **After a crash the next writer or open replays from each index's persisted position**, which is never ahead of
  what the index holds, so nothing committed is skipped; replay is idempotent (remove the document, add its
  current state), so changes applied twice do no harm. A write that changes nothing (a re-run whose documents are
  all stored) catches up too.
* **A derived index that is missing, truncated, fails its checksum, or disagrees with the store's counts after
  catch-up is rebuilt from the store**, for that index alone, with a warning in the log.
* **The store itself is checked at open**: SQLite ``PRAGMA quick_check``, and its head position against the
  positions the derived indexes recorded outside the WAL. A head below a recorded position means committed
  transactions were lost (a deleted or truncated ``docs.sqlite-wal``); the index is then refused with
  :class:`~foveal.errors.IndexDamagedError`, naming it and saying how to rebuild, while other indexes keep serving.
* **The change log is pruned** below the lowest position every derived index persisted, and read in chunks; a
  private copy that fell behind the pruned log reloads its snapshot (which is never below the prune point).

Writes go: encode (no lock held) -> lock -> catch up -> one store transaction -> apply to every derived index ->
persist positions -> prune the log -> unlock. Any process may write (the lock serialises them); any process reads.
"""

from __future__ import annotations

import fcntl
import gc
import json
import logging
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
    IndexDamagedError,
    IndexExistsError,
    IndexLockedError,
    IndexNotFoundError,
    InvalidInputError,
)
from foveal.index.base import DerivedIndex, DerivedIndexDamaged, DocStore, LogPrunedError, StoredDocument
from foveal.index.derived import EventPart, LexicalPart, VectorPart
from foveal.index.sqlite_store import PreparedDocument, VectorSet
from foveal.registry import (
    SERVER_BACKENDS,
    check_backends,
    load_vector_index,
    make_docstore,
    make_encoder,
    make_lexical_index,
    make_vector_index,
)

log = logging.getLogger("foveal.index")

_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
#: Save the FAISS file at most this often during a long ingest (the log covers what is not saved yet).
SAVE_INTERVAL_S = 60.0
#: Name prefix of the folder an index is built in before it is renamed into place (see :meth:`Collection.create`).
STAGING_PREFIX = ".creating-"
#: Change-log rows kept below the lowest persisted position (a short history for debugging; the rest is pruned).
LOG_RETAIN = 1000
#: Env var naming a file the kill test reads: ``store_committed <seq> <pid>`` / ``derived_committed <seq> <pid>``.
TEST_HOOKS_ENV = "FOVEAL_TEST_HOOKS"


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

    def __init__(self, path: Path, name: str, config: IndexConfig, *, encoder=None) -> None:
        self.path = Path(path)
        self.name = name
        self.config = config
        self._encoder = encoder
        self._encoder_lock = threading.Lock()
        # recorded at creation, so that opening, BM25 search and vector-carrying writes never load the model;
        # folders written before the dimension was recorded load it here once
        self.dimension = config.encoder.dimension or self.encoder.dimension
        server = {"es": config.elasticsearch, "name": name}  # used by server backends (Elasticsearch) only
        try:
            self.store: DocStore = make_docstore(self.path / "docs.sqlite", config.docstore, **server)
        except FovealError:
            raise
        except Exception as exc:  # sqlite3.DatabaseError: "file is not a database", "malformed"
            raise self._refused(f"its document store cannot be opened ({type(exc).__name__}: {exc})") from exc
        self._state_lock = threading.RLock()
        self._write_lock = threading.Lock()
        self._last_save = time.monotonic()
        self.instance = self._read_instance() or ""
        self._vector_part = VectorPart(
            self._vector_file(),
            make=lambda: make_vector_index(self.dimension, config.vector, es=config.elasticsearch, name=name),
            load=lambda file: load_vector_index(file, self.dimension, config.vector, es=config.elasticsearch,
                                                name=name),
        )
        lexical_dir = self.path / "lexical"
        self._lexical_part = LexicalPart(
            self.path / "lexical.json",
            make=lambda: make_lexical_index(lexical_dir, config.lexical, **server),
            discard=lambda: shutil.rmtree(lexical_dir, ignore_errors=True),
        )
        #: every derived index, driven the same way (vector sets and event vectors of later stages join here)
        self.derived: list[DerivedIndex] = [self._vector_part, self._lexical_part]
        #: the event vectors (foveal.events), for stores that hold events (SQLite); None otherwise
        self.event_part: EventPart | None = None
        if hasattr(self.store, "write_events"):
            self.event_part = EventPart(self.path / "events.npz", self.dimension)
            self.derived.append(self.event_part)
        try:
            self._open_checked()
        except BaseException:
            self.store.close()
            raise

    @property
    def vectors(self):
        """The vector index (replaced, not mutated, when it is rebuilt or reloaded)."""
        return self._vector_part.index

    @property
    def lexical(self):
        return self._lexical_part.index

    def _refused(self, reason: str) -> IndexDamagedError:
        return IndexDamagedError(
            f"index {self.name!r} cannot be trusted: {reason}. Other indexes are not affected. To get it back, "
            "restore docs.sqlite and docs.sqlite-wal from a backup, or move the index folder "
            f"{str(self.path)!r} aside, create the index again and re-ingest its documents.",
            index=self.name,
        )

    def _open_checked(self) -> None:
        """Check the store, open every derived index (rebuilding what is damaged), catch up, verify counts."""
        problems = self.store.check()
        if problems:
            raise self._refused(f"its document store failed its integrity check ({'; '.join(problems[:3])})")
        with self._file_lock():
            if not self.instance:  # folders made before the instance file existed get one (fencing needs it)
                self.instance = uuid.uuid4().hex
                (self.path / "instance").write_text(self.instance)
            head = self.store.max_seq()
            recorded = {d.name: d.position() for d in self.derived}
            ahead = {n: p for n, p in recorded.items() if p > head}
            if ahead:
                detail = ", ".join(f"the {n} index recorded position {p}" for n, p in ahead.items())
                raise self._refused(
                    f"its document store ends at change {head} but {detail}: committed writes are missing from "
                    "docs.sqlite (a deleted or truncated docs.sqlite-wal?). To serve only what the store still "
                    "holds, delete lexical.json and vectors.npz in the index folder (both are then rebuilt from the "
                    "store) and re-ingest what was lost"
                )
            for part in self.derived:
                try:
                    part.open()
                except DerivedIndexDamaged as exc:
                    self._rebuild(part, f"it is damaged: {exc}")
            self._catch_up_writer(save=False)
            for part in self.derived:
                problem = part.check(self.store)
                if problem is not None:
                    self._rebuild(part, f"after catching up it {problem}")
            self._save_due(force=self._vector_part.dirty and self._vector_part.position() == 0)

    def _rebuild(self, part: DerivedIndex, why: str) -> None:
        """Under the write lock: rebuild one derived index from the store and persist its position."""
        log.warning("index %r: rebuilding the %s index from the document store: %s", self.name, part.name, why)
        head = self.store.max_seq()
        part.rebuild(self.store)
        part.held = head
        if part.shared:
            part.persist(head)
        else:
            self._persist_private(part)

    def _read_instance(self) -> str | None:
        try:
            return (self.path / "instance").read_text()
        except FileNotFoundError:
            return None

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
        if config.encoder.dimension not in (None, encoder.dimension):
            raise ConfigError(
                f"encoder.dimension is {config.encoder.dimension} but model {config.encoder.model!r} makes "
                f"{encoder.dimension}-dimensional vectors"
            )
        resolved.encoder.max_seq_length = encoder.max_seq_length
        resolved.encoder.dimension = encoder.dimension
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.parent / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        staging.mkdir()  # the mode the umask gives, as the index folder always had
        hold = hold_folder(staging)
        try:
            # a fresh identity per creation: a process holding an index open can tell that it was deleted and
            # created again under the same name (inode numbers are reused at once, and file times are coarse)
            (staging / "instance").write_text(uuid.uuid4().hex)
            (staging / "config.json").write_text(json.dumps(resolved.model_dump(mode="json"), indent=2))
            cls(staging, name, resolved, encoder=encoder).close()  # every store is made and opens
            _publish(staging, path, name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            os.close(hold)
        return cls(path, name, resolved, encoder=encoder)

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
            # the folder's own record (or none, for folders from before it was recorded: the model is asked)
            asked.encoder.dimension = stored.encoder.dimension
            asked.check_compatible(stored, name)
            stored = asked
        return cls(path, name, stored)

    def close(self) -> None:
        if self._vector_part.dirty and self.path.exists():
            try:
                with self._file_lock():  # the lock before the state lock, as every writer takes them
                    self._catch_up_writer(save=True, force_save=True)
            except (IndexLockedError, IndexNotFoundError):
                pass  # another writer holds it (it saves), or the index is gone; the log covers the rest
        with self._state_lock:
            self.store.close()
        self.release_encoder()

    # -- the encoder, built on first use -------------------------------------------------------------------------
    @property
    def encoder(self):
        """The index's encoder, loaded on first use: only dense search and writes of documents without a
        ``vector`` need it (and torch). Collections whose encoder configs share a model share one loaded copy
        (:func:`foveal.encoders.sentence_transformer.get_encoder`)."""
        encoder = self._encoder
        if encoder is None:
            with self._encoder_lock:
                if self._encoder is None:
                    encoder = make_encoder(self.config.encoder)
                    stored = self.config.encoder.dimension
                    if stored is not None and stored != encoder.dimension:
                        raise ConfigError(
                            f"index {self.name!r} holds {stored}-dimensional vectors but its model "
                            f"{self.config.encoder.model!r} now makes {encoder.dimension}-dimensional ones"
                        )
                    self._encoder = encoder
                encoder = self._encoder
        return encoder

    def release_encoder(self) -> None:
        """Drop this collection's hold on its model; the model is freed when no open collection uses it (a later
        use loads it again). Called on close and when the index is deleted."""
        with self._encoder_lock:
            held, self._encoder = self._encoder, None
        if held is not None:
            del held
            gc.collect()  # transformers' modules hold reference cycles: free the weights now, not at some later gc

    def __enter__(self) -> "Collection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- positions and catch-up ----------------------------------------------------------------------------------
    def _vector_file(self) -> Path:
        return self.path / "vectors.npz"

    @contextmanager
    def _file_lock(self, *, wait: bool = True):
        """Serialise writers across processes (and threads of this one). ``wait=False``: raise
        :class:`IndexLockedError` at once when another writer holds it."""
        if not self._write_lock.acquire(blocking=wait):
            raise IndexLockedError(f"index {self.name!r} is being written by another thread")
        try:
            try:
                handle = open(self.path / "write.lock", "a+")
            except FileNotFoundError:
                raise IndexNotFoundError(f"index {self.name!r} was deleted", index=self.name) from None
            with handle:
                deadline = time.monotonic() + (120 if wait else 0)
                while True:
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise IndexLockedError(f"index {self.name!r} is being written by another process")
                        time.sleep(0.05)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            self._write_lock.release()

    def _replay(self, part: DerivedIndex, start: int) -> None:
        """Apply the log after ``start`` to ``part``. A private copy the pruned log no longer covers reloads its
        snapshot (never below the prune point) and replays from there; a shared index would be rebuilt."""
        if start == 0 and not part.shared:
            # a private copy that holds nothing: building it from the store's rows is the same result, faster.
            # A shared index replays instead (a new index's first batch), so its folder is never swapped under
            # readers; one the pruned log cannot cover is rebuilt below.
            part.rebuild(self.store)
            return
        try:
            part.apply(self.store, self.store.changes_since(start))
        except LogPrunedError:
            if part.shared:
                part.rebuild(self.store)
                return
            try:
                part.open()
                part.apply(self.store, self.store.changes_since(part.held))
            except (DerivedIndexDamaged, LogPrunedError):
                part.rebuild(self.store)

    def _catch_up_writer(self, *, save: bool, force_save: bool = False) -> None:
        """Under the write lock: bring every derived index to the store's head and persist what changed.

        A shared index replays from the position its own record holds, re-read here: a reader in this process may
        have followed to a ``held`` the record never reached, and replaying from that would skip documents."""
        with self._state_lock:
            head = self.store.max_seq()
            for part in self.derived:
                start = part.position() if part.shared else part.held
                if start < head:
                    self._replay(part, start)
                    if part.shared:
                        part.persist(head)
                part.held = head
            if save:
                self._save_due(force=force_save)
            self._prune_log()

    def _persist_private(self, part: DerivedIndex) -> None:
        part.persist(part.held)
        self._last_save = time.monotonic()

    def _save_due(self, force: bool = False) -> None:
        """Save the private snapshots (FAISS, events) when dirty and due (or ``force``): the log covers the rest."""
        due = force or time.monotonic() - self._last_save > SAVE_INTERVAL_S
        vectors, events = self._vector_part, self.event_part
        if not vectors.shared and vectors.dirty and due:
            self._persist_private(vectors)
        # events are few: their snapshot is cheap, saved at every event write; when due also after document writes
        # (they move the position it holds), so the change log can be pruned past them
        if events is not None and (events.dirty or (due and events.position() < events.held)):
            events.persist(events.held)

    def _prune_log(self) -> None:
        """Drop log rows below the lowest position every derived index has persisted (re-read from their files)."""
        below = min(part.position() for part in self.derived) - LOG_RETAIN
        if below > 1:
            self.store.prune_log(below)

    def refresh(self) -> None:
        """Catch up with what other processes committed (cheap when nothing changed). Never moves a persisted
        position; heals a shared index left behind by a dead writer when the write lock is free."""
        head = self.store.max_seq()
        if all(part.held >= head for part in self.derived):
            return
        with self._state_lock:
            for part in self.derived:
                if part.held >= head:
                    continue
                if part.shared:
                    part.follow()
                else:
                    self._replay(part, part.held)
                    part.held = head
        if any(part.shared and part.held < head for part in self.derived):
            try:
                with self._file_lock(wait=False):
                    self._catch_up_writer(save=False)
            except (IndexLockedError, IndexNotFoundError):
                pass  # a writer is at it (it will persist), or the index went away

    # -- writes --------------------------------------------------------------------------------------------------
    def prepare(self, documents: Sequence[Document]) -> list[PreparedDocument]:
        """Segment and encode (no lock held: this is where the time goes). With ``sentence_vectors`` on, each
        encoded document also gets its sentence vectors (vector set ``"sentences"``), committed with it."""
        to_encode = [d for d in documents if d.vector is None]
        texts = [d.full_text for d in to_encode]
        sentences = self.config.sentence_vectors
        if not to_encode:
            encoded_list = []
        elif sentences.enabled:
            encoded_list = encode_with_sentences(self.encoder, texts, sentences.mode, sentences.max_sentences)
        else:
            encoded_list = self.encoder.encode_documents(texts)
        encoded = iter(encoded_list)
        prepared = []
        for doc in documents:
            if doc.vector is None:
                enc = next(encoded)
                spans = [(p.char_start, p.char_end) for p in enc.passages]
                sets = {}
                if enc.sentence_vectors is not None:
                    sets[SENTENCES] = VectorSet(enc.sentence_vectors, enc.sentence_spans)
                prepared.append(PreparedDocument(doc, spans, enc.vectors, enc.n_tokens, sets))
            else:
                vector = np.asarray(doc.vector, dtype=np.float32)
                if vector.shape != (self.dimension,):
                    raise InvalidInputError(
                        f"document {doc.id!r}: 'vector' has dimension {vector.size}; this index has {self.dimension}"
                    )
                vector = vector / np.linalg.norm(vector)
                prepared.append(PreparedDocument(doc, [(0, len(doc.full_text))], vector[None, :], 0))
        for item in prepared:
            if item.document.vectors is not None:
                self._attach_frames(item)
        return prepared

    def _attach_frames(self, item: PreparedDocument) -> None:
        """A vector item's frames go to the store as its ``frames`` vector set, in the document's transaction."""
        from foveal.documents import FRAMES_KIND
        from foveal.index.sqlite_store import VectorSet

        frames = item.document.vectors
        if frames.ndim != 2 or frames.shape[1] != self.dimension:
            raise InvalidInputError(f"document {item.document.id!r}: its 'vectors' have dimension {frames.shape[-1]}; "
                                    f"this index has {self.dimension}")
        if not hasattr(self.store, "vector_sets"):
            raise InvalidInputError(f"document {item.document.id!r}: the {self.config.docstore.backend!r} document "
                                    "store keeps no vector sets; vector items ('vectors') need docstore 'sqlite'")
        item.vector_sets[FRAMES_KIND] = VectorSet(frames)

    def document_rules(self) -> dict:
        """What :func:`foveal.documents.parse_document` checks for this index: the vector dimension, and whether
        every document must bring its vectors (no text encoder)."""
        from foveal.config import NO_ENCODER

        return {"dimension": self.dimension, "vectors_only": self.config.encoder.model == NO_ENCODER}

    def upsert(self, documents: Sequence[Document], *, expect_instance: str | None = None) -> WriteResult:
        """Add or replace documents by id; documents whose content hash is unchanged are skipped.
        ``expect_instance``: write only into that creation of the index (see :meth:`_check_instance`)."""
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
            self._catch_up_if_behind(expect_instance)
            return result
        prepared = self.prepare(changed)
        result.passages = sum(len(p.passages) for p in prepared)
        result.tokens = sum(p.n_tokens for p in prepared)
        self._commit(prepared, [], expect_instance)
        return result

    def delete(self, doc_ids: Iterable[str], *, expect_instance: str | None = None) -> WriteResult:
        result = WriteResult()
        ids = list(dict.fromkeys(doc_ids))
        existing = self.store.hashes(ids)
        result.deleted = [i for i in ids if i in existing]
        result.missing = [i for i in ids if i not in existing]
        if result.deleted:
            self._commit([], result.deleted, expect_instance)
        else:
            self._catch_up_if_behind(expect_instance)
        return result

    def _catch_up_if_behind(self, expect_instance: str | None) -> None:
        """A write that changed nothing (a re-run whose documents are all stored) still brings a shared index
        that a dead writer left behind up to the store, so re-running an ingest repairs what it skips."""
        behind = any(part.shared and part.position() < self.store.max_seq() for part in self.derived)
        if behind or expect_instance is not None:
            with self._file_lock():
                self._check_instance(expect_instance)
                if behind:
                    self._catch_up_writer(save=False)

    def _check_instance(self, expect_instance: str | None) -> None:
        """Fencing: a task carries the instance id of the index it was submitted to; if the index was deleted
        (and maybe created again under the name) since, nothing is written."""
        if expect_instance is None:
            return
        current = self._read_instance() if self.path.exists() else None
        if current != expect_instance:
            raise IndexNotFoundError(
                f"index {self.name!r} was deleted (and perhaps created again) since this write was submitted; "
                "nothing was written", index=self.name,
            )

    def update_metadata(self, updates: Sequence[tuple[str, dict | None, float | None, bool]], *,
                        merge: bool = True) -> WriteResult:
        """Change documents' metadata (and timestamp) without encoding anything again.

        ``updates`` holds ``(id, metadata or None, timestamp or None, clear_timestamp)``; with ``merge`` the given
        keys are set on the stored metadata (a ``None`` value removes a key), otherwise the metadata is replaced.
        The stored passages and vectors are reused, read under the write lock in the same write as the change, so
        a concurrent upsert of new text is never overwritten with old vectors. Goes through the change log like
        any write, so every derived index follows. Ids not in the index are reported in ``missing``."""
        result = WriteResult()

        def build() -> list[PreparedDocument]:
            prepared = []
            for doc_id, metadata, timestamp, clear in updates:
                stored = self.store.get_by_id(doc_id)
                if stored is None:
                    result.missing.append(doc_id)
                    continue
                if metadata is None:
                    new_meta = dict(stored.metadata)
                elif merge:
                    new_meta = {**stored.metadata, **metadata}
                    new_meta = {k: v for k, v in new_meta.items() if v is not None}
                else:
                    new_meta = dict(metadata)
                new_time = None if clear else (timestamp if timestamp is not None else stored.timestamp)
                doc = Document(stored.id, stored.title, stored.text, new_meta, new_time)
                if doc.content_hash == stored.content_hash:
                    result.unchanged.append(doc_id)
                    continue
                _ids, vectors = self.store.vectors_of([stored.doc_key])
                # the write replaces the document's row and every vector set it had: carry them (sentence vectors,
                # a vector item's frames) over unchanged, or a metadata update would drop them
                kinds = getattr(self.store, "vector_set_kinds", lambda _key: [])(stored.doc_key)
                sets = {kind: self.store.vector_sets([stored.doc_key], kind, with_spans=True)[stored.doc_key]
                        for kind in kinds}
                prepared.append(PreparedDocument(doc, [tuple(p) for p in stored.passages], vectors, stored.n_tokens,
                                                 vector_sets=sets))
                result.updated.append(doc_id)
            return prepared

        self._commit([], [], build=build)
        return result

    def delete_where(self, ids=None, metadata=None, time_bounds=None) -> WriteResult:
        """Delete every document matching a filter (the same conditions as a search filter)."""
        keys = self.store.filter_keys(ids, metadata, time_bounds)
        doc_ids = [d.id for d in self.store.get_documents(keys).values()]
        return self.delete(doc_ids) if doc_ids else WriteResult()

    def _commit(self, prepared: list[PreparedDocument], deletes: list[str],
                expect_instance: str | None = None, build=None) -> None:
        with self._file_lock(), self._state_lock:
            self._check_instance(expect_instance)
            self._catch_up_writer(save=False)
            self._check_instance(expect_instance)  # re-read just before the store commit
            if build is not None:  # what to write depends on the store as it is under the lock
                prepared = build()
                if not prepared and not deletes:
                    return
            self.store.write(prepared, deletes)
            hooks = os.environ.get(TEST_HOOKS_ENV)
            if hooks:
                _hook(hooks, "store_committed", self.store.max_seq())
                time.sleep(float(os.environ.get("FOVEAL_TEST_HOOK_PAUSE_S", "0")))
            self._catch_up_writer(save=True)
            if hooks:
                _hook(hooks, "derived_committed", self.store.max_seq())

    # -- events (foveal.events) ---------------------------------------------------------------------------------
    def _event_store(self):
        if self.event_part is None:
            raise InvalidInputError(f"index {self.name!r}: its document store backend "
                                    f"({self.config.docstore.backend}) holds no events; events need 'sqlite'")
        return self.store

    def add_events(self, events: Sequence, *, now: float | None = None) -> dict[str, list[str]]:
        """Add or replace :class:`~foveal.events.Event` s by id (one transaction; unchanged ones are skipped). With
        ``events.retention_days``, events older than that are not stored, and older stored ones are removed in the
        same transaction. Returns ids by outcome: added, updated, unchanged, expired."""
        store = self._event_store()
        from foveal.index.sqlite_store import PreparedEvent

        latest = {}
        for event in events:
            latest.pop(event.id, None)
            latest[event.id] = event
        retention = self.config.events.retention_days
        expire_before = None if retention is None else (now or time.time()) - retention * 86_400.0
        result: dict[str, list[str]] = {"added": [], "updated": [], "unchanged": [], "expired": []}
        known = store.event_hashes(list(latest))
        fresh = []
        for event in latest.values():
            if expire_before is not None and event.timestamp < expire_before:
                result["expired"].append(event.id)
            elif known.get(event.id) == event.content_hash:
                result["unchanged"].append(event.id)
            else:
                fresh.append(event)
                (result["updated"] if event.id in known else result["added"]).append(event.id)
        prepared = []
        if fresh:
            encoded = self.encoder.encode_queries([e.full_text for e in fresh]).vectors  # one window each
            prepared = [PreparedEvent(e.id, e.title, e.text, e.source, e.timestamp, e.content_hash, encoded[i])
                        for i, e in enumerate(fresh)]
        expired_ids = [i for i in result["expired"] if i in known]  # a stored one re-sent past its age goes too
        if prepared or expired_ids or expire_before is not None:
            done = self._commit_events(prepared, expired_ids, expire_before)
            result["expired"] = list(dict.fromkeys(result["expired"] + done["expired"]))
        return result

    def delete_events(self, ids: Iterable[str]) -> dict[str, list[str]]:
        store = self._event_store()
        ids = list(dict.fromkeys(ids))
        present = store.event_hashes(ids)
        deleted = [i for i in ids if i in present]
        if deleted:
            self._commit_events([], deleted, None)
        return {"deleted": deleted, "missing": [i for i in ids if i not in present]}

    def _commit_events(self, prepared: list, deletes: list[str], expire_before: float | None) -> dict:
        """Events take the documents' path: lock, catch up, one store transaction (the commit point), replay."""
        with self._file_lock(), self._state_lock:
            self._catch_up_writer(save=False)
            done = self.store.write_events(prepared, deletes, expire_before)
            hooks = os.environ.get(TEST_HOOKS_ENV)
            if hooks:
                _hook(hooks, "store_committed", self.store.max_seq())
                time.sleep(float(os.environ.get("FOVEAL_TEST_HOOK_PAUSE_S", "0")))
            self._catch_up_writer(save=True)
            if hooks:
                _hook(hooks, "derived_committed", self.store.max_seq())
        return done

    def flush(self) -> None:
        """Make the vector snapshot current (the end of an ingest job)."""
        with self._file_lock(), self._state_lock:
            self._catch_up_writer(save=True, force_save=True)

    # -- reads ---------------------------------------------------------------------------------------------------
    def get(self, doc_id: str) -> StoredDocument | None:
        return self.store.get_by_id(doc_id)

    def stats(self) -> dict:
        out = self._stats()
        if self.config.sentence_vectors.enabled and hasattr(self.store, "vector_set_stats"):
            sets = self.store.vector_set_stats(SENTENCES)
            sets["bytes_per_document"] = round(sets["bytes"] / max(1, sets["documents"]), 1)
            out["vector_sets"] = {SENTENCES: sets}
        return out

    def _stats(self) -> dict:
        return {
            "name": self.name,
            "documents": self.store.count(),
            "passages": self.store.passage_count(),
            "vectors": len(self.vectors),
            "lexical_documents": len(self.lexical),
            "seq": self.store.max_seq(),
            "positions": {part.name: part.held for part in self.derived},
            "events": self.store.event_count() if self.event_part is not None else 0,
            "dimension": self.dimension,
            "config": self.config.model_dump(mode="json"),
        }

    def destroy(self) -> None:
        self.close()
        for part in self.derived:  # server backends delete their server-side indexes
            part.drop()
        self.store.drop()
        shutil.rmtree(self.path, ignore_errors=True)


#: The vector-set kind holding a document's sentence vectors (``sentence_vectors`` config; Paraformer reads it).
SENTENCES = "sentences"


def encode_with_sentences(encoder, texts: Sequence[str], mode: str, max_sentences: int):
    """``encoder.encode_documents(texts)`` with each document's first ``max_sentences`` sentence vectors set
    (``sentence_vectors`` / ``sentence_spans``): ``pooled`` from the passage pass's token states (one forward
    pass, :meth:`~foveal.encoders.sentence_transformer.SentenceTransformerEncoder.encode_documents_with_sentences`),
    ``faithful`` by encoding each sentence on its own (the Paraformer paper's way; also the fallback for an
    encoder that gives no token states)."""
    from foveal.encoders.segment import sentence_spans

    if mode == "pooled" and hasattr(encoder, "encode_documents_with_sentences"):
        return encoder.encode_documents_with_sentences(texts, max_sentences)
    encoded = encoder.encode_documents(texts)
    spans = [sentence_spans(text)[:max_sentences] for text in texts]
    flat = [text[a:b] for text, group in zip(texts, spans) for a, b in group]
    vectors = encoder.encode_queries(flat).vectors if flat else np.zeros((0, encoder.dimension), np.float32)
    cursor = 0
    for enc, group in zip(encoded, spans):
        enc.sentence_vectors = np.asarray(vectors[cursor : cursor + len(group)], dtype=np.float32).reshape(
            len(group), encoder.dimension)
        enc.sentence_spans = list(group)
        cursor += len(group)
    return encoded


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


def _hook(path: str, event: str, seq: int) -> None:
    """The kill test's hook (``FOVEAL_TEST_HOOKS``): one line per event, appended, flushed, closed."""
    with open(path, "a") as handle:
        handle.write(f"{event} {seq} {os.getpid()}\n")
        handle.flush()
