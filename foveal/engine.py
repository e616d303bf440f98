"""The engine: named indexes under one home folder, each opened once per process.

Example::

    >>> engine = Engine("/tmp/foveal-home")                                     # doctest: +SKIP
    >>> engine.create_index("papers")                                            # doctest: +SKIP
    >>> engine.search("papers", SearchRequest(query="protein folding")).hits     # doctest: +SKIP
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable

from foveal.aliases import AliasTable
from foveal.config import IndexConfig, foveal_home
from foveal.errors import ConflictError, FovealError, IndexDamagedError, IndexExistsError, IndexLockedError, \
    IndexNotFoundError
from foveal.index.collection import STAGING_PREFIX, Collection, check_index_name, hold_folder
from foveal.pipeline.request import SearchRequest, SearchResponse
from foveal.pipeline.search import SearchPipeline

log = logging.getLogger("foveal.engine")


#: Name prefix of an index folder being removed (renamed first, so the index is gone at once for every process).
DELETING_PREFIX = ".deleting-"
#: A staging or deleting folder younger than this is never swept, even unlocked: its process may be just starting.
SWEEP_GRACE_S = 60.0


class Engine:
    def __init__(self, home: Path | str | None = None) -> None:
        self.home = Path(home) if home is not None else foveal_home()
        self.indexes_dir = self.home / "indexes"
        self.indexes_dir.mkdir(parents=True, exist_ok=True)
        sweep_leftovers(self.indexes_dir)
        self._open: dict[str, Collection] = {}
        self._pipelines: dict[str, SearchPipeline] = {}
        self._lock = threading.RLock()
        self.aliases = AliasTable(self.home)

    # -- aliases (foveal.aliases) ----------------------------------------------------------------------------------
    def resolve(self, name: str) -> str:
        """The index ``name`` stands for: the target of alias ``name``, else ``name`` itself. Every lookup by name
        (get, search, ingest) goes through this, so an alias works wherever an index name does."""
        target = self.aliases.get(name)
        return target if target is not None else name

    def list_aliases(self) -> dict[str, str]:
        return self.aliases.read()

    def set_alias(self, alias: str, index: str) -> str | None:
        """Point ``alias`` at ``index`` (create or move it, one atomic step); returns the index it pointed to."""
        check_index_name(alias)
        check_index_name(index)
        with self.aliases.locked():
            table = self.aliases.read()
            if index in table:
                raise ConflictError(f"{index!r} is an alias; an alias points to an index, not to another alias",
                                    index=index)
            if self.exists(alias):
                raise IndexExistsError(f"{alias!r} is an index; an alias cannot take an index's name", index=alias)
            if not self.exists(index):
                raise IndexNotFoundError(f"index {index!r} does not exist", index=index)
            self.get(index)  # opens (and checks) the index before any search is sent to it
            previous = table.get(alias)
            table[alias] = index
            self.aliases.write(table)
            return previous

    def remove_alias(self, alias: str) -> str:
        """Remove ``alias``; returns the index it pointed to."""
        with self.aliases.locked():
            table = self.aliases.read()
            if alias not in table:
                raise IndexNotFoundError(f"alias {alias!r} does not exist", alias=alias)
            index = table.pop(alias)
            self.aliases.write(table)
            return index

    def path_of(self, name: str) -> Path:
        return self.indexes_dir / check_index_name(name)

    def exists(self, name: str) -> bool:
        return (self.path_of(name) / "config.json").exists()

    def list_indexes(self) -> list[str]:
        """Names of the indexes there are; folders of creations or deletions under way (``.creating-*``,
        ``.deleting-*``) are never indexes, whatever they hold."""
        return sorted(p.name for p in self.indexes_dir.iterdir()
                      if not p.name.startswith(".") and (p / "config.json").exists())

    def create_index(self, name: str, config: IndexConfig | dict[str, Any] | None = None) -> Collection:
        if isinstance(config, dict):
            config = IndexConfig.parse(config)
        if self.aliases.get(name) is not None:
            raise IndexExistsError(f"{name!r} is an alias (of {self.aliases.get(name)!r}); an index cannot take an "
                                   "alias's name", index=name)
        with self._lock:
            collection = Collection.create(self.path_of(name), name, config)
            collection.opened_identity = _identity(self.path_of(name))
            self._open[name] = collection
            return collection

    def get(self, name: str) -> Collection:
        name = self.resolve(name)
        with self._lock:
            collection = self._open.get(name)
            if collection is None:
                path = self.path_of(name)
                if not (path / "config.json").exists():
                    raise IndexNotFoundError(f"index {name!r} does not exist", index=name)
                try:
                    collection = Collection.open(path, name)
                except FovealError:
                    raise
                except Exception as exc:  # whatever a backend raised: named, not a raw traceback
                    raise IndexDamagedError(
                        f"index {name!r} could not be opened ({type(exc).__name__}: {exc}); other indexes are not "
                        "affected", index=name,
                    ) from exc
                collection.opened_identity = _identity(path)
                self._open[name] = collection
            return collection

    def open_all(self, *, pipelines: bool = True) -> dict[str, FovealError]:
        """Open every index (and, with ``pipelines``, its search pipeline) now, as a server or worker does at
        start. An index that cannot be opened is logged and left out, so the others serve; returns
        ``{name: error}`` of those refused (asking for one later answers its error, or opens it if repaired)."""
        refused: dict[str, FovealError] = {}
        for name in self.list_indexes():
            try:
                self.pipeline(name) if pipelines else self.get(name)
            except FovealError as exc:
                log.error("%s (not served; the other indexes are)", exc.message)
                refused[name] = exc
            except Exception as exc:  # one index that cannot open must not keep the others from being served
                log.error("index %r cannot be opened (not served; the other indexes are): %s", name, exc, exc_info=exc)
                refused[name] = IndexDamagedError(f"index {name!r} cannot be opened: {exc}", index=name)
        return refused

    def load_encoders(self, skip: Iterable[str] = (), queries: bool = False) -> None:
        """Load the model of every open index now (a server or worker at start), so no request or task pays for
        it; an index whose model cannot be loaded is logged and left to fail on first use. ``queries`` (a server):
        also the forward pass queries run on (the ONNX export of ``encoder.query_backend``, in ``query_quantize``'s
        precision)."""
        for name in self.list_indexes():
            if name in skip:
                continue
            try:
                encoder = self.get(name).encoder
                if queries and hasattr(getattr(encoder, "loaded", None), "query_forward"):
                    encoder.loaded.query_forward()
            except Exception as exc:
                log.error("index %r: its model cannot be loaded: %s", name, exc, exc_info=exc)

    def get_current(self, name: str) -> Collection:
        """Like :meth:`get`, but reopens the index when its folder was deleted (and maybe recreated) by another
        process since this one opened it, so a long-lived worker never writes into deleted files."""
        name = self.resolve(name)
        with self._lock:
            collection = self._open.get(name)
            if collection is not None:
                identity = _identity(self.path_of(name))
                if identity is None or identity != getattr(collection, "opened_identity", identity):
                    self._open.pop(name, None)
                    self._pipelines.pop(name, None)
                    collection.store.close()
                    collection.release_encoder()
            return self.get(name)

    def open_or_create(self, name: str, config: IndexConfig | None = None) -> Collection:
        name = self.resolve(name)
        with self._lock:
            if self.exists(name):
                collection = self.get(name)
                if config is not None:
                    config.check_compatible(collection.config, name)
                return collection
            return self.create_index(name, config)

    def pipeline(self, name: str) -> SearchPipeline:
        name = self.resolve(name)
        with self._lock:
            pipeline = self._pipelines.get(name)
            if pipeline is None:
                pipeline = self._pipelines[name] = SearchPipeline(self.get(name))
            return pipeline

    def search(self, name: str, request: SearchRequest) -> SearchResponse:
        return self.pipeline(name).search(request)

    def batch_stats(self) -> dict[str, tuple[int, int]]:
        """Per index with a search pipeline in this process: (micro-batches run, searches they held), counted since
        the pipeline was made (an index reopened starts again from 0)."""
        with self._lock:
            pipelines = dict(self._pipelines)
        return {name: pipeline.batch_stats for name, pipeline in pipelines.items()}

    def delete_index(self, name: str) -> None:
        with self._lock, self.aliases.locked():  # no alias can be pointed at it while it goes
            target = self.aliases.get(name)
            if target is not None:
                raise ConflictError(f"{name!r} is an alias (of {target!r}), not an index; remove the alias with "
                                    f"'foveal alias remove {name}' or DELETE /v1/aliases/{name}", alias=name)
            path = self.path_of(name)
            if not (path / "config.json").exists():
                raise IndexNotFoundError(f"index {name!r} does not exist", index=name)
            pointing = self.aliases.pointing_to(name)
            if pointing:
                raise ConflictError(f"index {name!r} is the target of alias(es) {', '.join(pointing)}; move or remove "
                                    "them first", index=name, aliases=pointing)
            collection = self._open.pop(name, None)
            self._pipelines.pop(name, None)
            if collection is not None:
                collection.store.close()
                collection.release_encoder()  # its model is freed unless another open index uses it
            # under the index's write lock: a writer that checked the index's instance id under it (a queued batch,
            # see Collection.upsert(expect_instance=)) finishes its commit first, and any writer after sees it gone.
            # Gone for every process at once (one rename), then removed at leisure; a crash mid-way leaves only a
            # ``.deleting-*`` folder that no listing shows and the next Engine removes
            doomed = self.indexes_dir / f"{DELETING_PREFIX}{uuid.uuid4().hex}"
            with _write_locked(path, name):
                _drop_server_indexes(path, name)
                os.rename(path, doomed)
            try:
                hold = hold_folder(doomed)
            except OSError:
                return  # another process's sweep took it first: the index is gone either way
            try:
                shutil.rmtree(doomed, ignore_errors=True)
            finally:
                os.close(hold)

    def close(self) -> None:
        with self._lock:
            for collection in self._open.values():
                collection.close()
            self._open.clear()
            self._pipelines.clear()


def sweep_leftovers(indexes_dir: Path) -> None:
    """Remove the staging folders of creations and the folders of deletions that a dead process left behind.

    A live process holds a lock on such a folder while it works on it (see
    :func:`foveal.index.collection.hold_folder`), so one that is locked, or younger than :data:`SWEEP_GRACE_S`,
    is left alone. Removal renames first, so two processes sweeping at once never fight over one folder."""
    for entry in indexes_dir.iterdir():
        if not entry.name.startswith((STAGING_PREFIX, DELETING_PREFIX)):
            continue
        try:
            status = entry.stat()
            # ctime too: a rename (an index just renamed for deletion) changes it, not the folder's mtime
            if time.time() - max(status.st_mtime, status.st_ctime) < SWEEP_GRACE_S:
                continue
            handle = os.open(entry, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held by a live process (or no flock here: then leave it, to be safe)
                continue
            doomed = indexes_dir / f"{DELETING_PREFIX}{uuid.uuid4().hex}"
            try:
                os.rename(entry, doomed)
            except OSError:
                continue
            shutil.rmtree(doomed, ignore_errors=True)
        finally:
            os.close(handle)


@contextmanager
def _write_locked(path: Path, name: str):
    """Hold ``<index>/write.lock`` (the flock every writer holds for one batch), waiting as a writer does."""
    with open(path / "write.lock", "a+") as handle:
        deadline = time.monotonic() + 120
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise IndexLockedError(f"index {name!r} is being written by another process; try again")
                time.sleep(0.05)
        yield  # the lock goes with the file's last descriptor, after the folder is removed


def _drop_server_indexes(path: Path, name: str) -> None:
    """Delete what an index keeps on a server (its Elasticsearch indexes), read from its stored config."""
    from foveal.registry import SERVER_BACKENDS

    config = IndexConfig.parse(json.loads((path / "config.json").read_text()))
    if {config.vector.backend, config.lexical.backend, config.docstore.backend} & SERVER_BACKENDS:
        from foveal.index.es_backend import drop_indexes

        drop_indexes(name, config.elasticsearch)


def _identity(path: Path) -> str | None:
    """What tells this creation of an index folder from a later one under the same name: the random id written at
    creation, or for indexes made before that file existed, the inode of config.json. None when it is gone."""
    try:
        return (path / "instance").read_text()
    except FileNotFoundError:
        pass
    except OSError:
        return None
    try:
        return f"inode:{(path / 'config.json').stat().st_ino}"
    except OSError:
        return None
