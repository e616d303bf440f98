"""Snapshots of an index: a consistent copy of its document store, with a manifest of checksums, and an atomic restore.

Where: ``FOVEAL_SNAPSHOT_DIR`` (default ``$FOVEAL_HOME/snapshots``), set by the operator only. REST callers name a
snapshot (validated like an index name); no path ever comes from a request. One folder per snapshot::

    <snapshots>/<snapshot>/
        docs.sqlite     the document store (documents, passage vectors, events, change log) at ONE change-log position
        config.json     the index's resolved config
        manifest.json   index, config, instance, position, documents, created, foveal version, sha256 per file

Consistency while writes continue
---------------------------------
The document store is the commit point (see :mod:`foveal.index.collection`); the derived indexes (FAISS, tantivy)
are functions of it. A snapshot therefore copies **only the store**, with SQLite's online backup API in one step
(``pages=-1``): the copy is taken inside one read transaction, so it holds exactly the transactions committed up
to one change-log position, whatever writers do meanwhile (WAL mode: the backup never blocks them, nor they it).
The position written in the manifest is read from the copy itself, so it cannot disagree with what was copied.
Events (:mod:`foveal.events`) live in the same store and travel with it; their vector file (``events.npz``)
is derived and rebuilt like the others. Derived index files are not copied: copying them while a writer advances them could pair a tantivy folder with a
``lexical.json`` of another moment. On restore they are rebuilt from the restored store by the ordinary open path
(no ``lexical.json`` / ``vectors.npz`` = position 0 = rebuild), so every store of the restored index agrees with
the store by construction. The price is the rebuild time on restore (no encoding: vectors are in the store).

Atomicity
---------
* Create: written into ``<snapshots>/.creating-<random>`` (locked while this process works on it), the manifest
  last, then renamed into place. A folder without a manifest is never listed; dead staging folders are swept.
* Restore: every checksum is verified first (a mismatch refuses the restore; the current index is untouched);
  the index is built in ``<indexes>/.creating-<random>`` and opened once there (derived indexes rebuilt, store
  integrity checked); then, under the current index's write lock, the two folders are **exchanged** with one
  ``renameat2(RENAME_EXCHANGE)``: at every instant the index's name holds either the previous index or the
  complete restored one, never a mix and never nothing. A process killed before the exchange leaves the previous
  index serving and a staging folder the next :class:`~foveal.engine.Engine` sweeps; killed after it, the restored
  index serves and the staging name holds the previous index, swept the same way. Where the exchange is not
  available (not Linux), the index is renamed aside and the new one renamed in: the gap between the two renames
  is then the only window in which the name is empty.
* The restored index gets a **new instance id**. Ingest tasks queued for the index before the restore carry the
  old id and are fenced (refused, "nothing was written", like after a delete): a restore rolls the index back to
  the snapshot, and writes accepted against the replaced state are not replayed over it. Resubmit them if wanted.
  Other processes holding the index open see the new instance and reopen it (``Engine.get_current``).

Elasticsearch-backed indexes keep their data on the server: they are refused unless the operator configured an
Elasticsearch snapshot repository (``FOVEAL_ES_SNAPSHOT_REPO``); even then this version refuses them with a clear
message (server-side snapshots are not implemented: use the Elasticsearch snapshot API on that repository).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import os
import shutil
import sqlite3
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from foveal import __version__
from foveal.config import IndexConfig
from foveal.errors import ConflictError, FovealError, InvalidInputError, NotFoundError
from foveal.index.collection import STAGING_PREFIX, Collection, _NAME, hold_folder
from foveal.fsutil import fsync_dir
from foveal.registry import SERVER_BACKENDS

MANIFEST = "manifest.json"
FORMAT = 1
#: Test hook only: ``staged`` or ``swapped``; the restore writes ``restore_<stage> <pid>`` to the file named by
#: ``FOVEAL_TEST_HOOKS`` at that point and then sleeps ``FOVEAL_DEBUG_RESTORE_SLEEP_S`` (so a test can SIGKILL it
#: inside the swap window). Never set in production.
DEBUG_STOP_ENV = "FOVEAL_DEBUG_RESTORE_STOP_AT"
DEBUG_SLEEP_ENV = "FOVEAL_DEBUG_RESTORE_SLEEP_S"


class SnapshotNotFoundError(NotFoundError):
    pass


class SnapshotExistsError(ConflictError):
    pass


class SnapshotCorruptError(ConflictError):
    """A snapshot whose files do not match its manifest: refused, nothing is changed."""

    status_code = 422


class SnapshotUnsupportedError(ConflictError):
    pass


def check_snapshot_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInputError(
            f"invalid snapshot name {name!r}: use 1-64 lower-case letters, digits, '-' or '_', starting with a "
            "letter or digit"
        )
    return name


def snapshot_root(home: Path, override: Path | str | None = None) -> Path:
    """The operator's snapshot folder: ``override`` (CLI ``--dir``), else ``FOVEAL_SNAPSHOT_DIR``, else
    ``<home>/snapshots``."""
    chosen = override or os.environ.get("FOVEAL_SNAPSHOT_DIR") or Path(home) / "snapshots"
    return Path(chosen)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_local(config: IndexConfig, name: str) -> None:
    if {config.vector.backend, config.lexical.backend, config.docstore.backend} & SERVER_BACKENDS:
        if os.environ.get("FOVEAL_ES_SNAPSHOT_REPO"):
            raise SnapshotUnsupportedError(
                f"index {name!r} keeps its data on Elasticsearch: snapshot it with the Elasticsearch snapshot API "
                f"into repository {os.environ['FOVEAL_ES_SNAPSHOT_REPO']!r} (FOVEAL_ES_SNAPSHOT_REPO); foveal does "
                "not drive server-side snapshots in this version", index=name)
        raise SnapshotUnsupportedError(
            f"index {name!r} keeps its data on Elasticsearch: snapshots of it need an Elasticsearch snapshot "
            "repository, and none is configured (FOVEAL_ES_SNAPSHOT_REPO)", index=name)
    if config.docstore.backend != "sqlite":
        raise SnapshotUnsupportedError(
            f"index {name!r} uses document store backend {config.docstore.backend!r}; snapshots copy the SQLite "
            "store only", index=name)


class Snapshots:
    """Snapshots of the indexes of one :class:`~foveal.engine.Engine`, kept in ``root``."""

    def __init__(self, engine, root: Path | str | None = None) -> None:
        self.engine = engine
        self.root = snapshot_root(engine.home, root)

    # -- listing -------------------------------------------------------------------------------------------------
    def _folder(self, name: str) -> Path:
        return self.root / check_snapshot_name(name)

    def manifest(self, name: str) -> dict[str, Any]:
        folder = self._folder(name)  # validates the name (InvalidInputError is a ValueError: outside the try)
        try:
            return json.loads((folder / MANIFEST).read_text())
        except (FileNotFoundError, NotADirectoryError):
            raise SnapshotNotFoundError(f"snapshot {name!r} does not exist", snapshot=name) from None
        except ValueError:
            raise SnapshotCorruptError(f"snapshot {name!r} has an unreadable manifest", snapshot=name) from None

    def list(self, index: str | None = None) -> list[dict[str, Any]]:
        """Complete snapshots (those with a manifest), oldest first; staging folders of dead processes are
        swept."""
        if not self.root.exists():
            return []
        from foveal.engine import sweep_leftovers

        sweep_leftovers(self.root)
        found = []
        for entry in self.root.iterdir():
            if entry.name.startswith(".") or not _NAME.match(entry.name):
                continue
            try:
                manifest = json.loads((entry / MANIFEST).read_text())
            except (OSError, ValueError):
                continue  # incomplete or foreign: never listed
            if index is None or manifest.get("index") == index:
                found.append(_summary(manifest))
        return sorted(found, key=lambda m: (m["created"], m["name"]))

    # -- create --------------------------------------------------------------------------------------------------
    def create(self, index: str, name: str | None = None) -> dict[str, Any]:
        collection = self.engine.get(index)
        _check_local(collection.config, index)
        if name is None:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dt%H%M%S%fz")
            name = f"{index[:64 - len(stamp) - 1]}-{stamp}"
        check_snapshot_name(name)
        final = self.root / name
        if final.exists():
            raise SnapshotExistsError(f"snapshot {name!r} already exists", snapshot=name)
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        staging.mkdir()
        hold = hold_folder(staging)
        try:
            store_copy = staging / "docs.sqlite"
            source = sqlite3.connect(f"file:{collection.path / 'docs.sqlite'}?mode=ro", uri=True)
            target = sqlite3.connect(store_copy)
            try:
                source.backup(target, pages=-1)  # one step: one read transaction, one change-log position
            finally:
                source.close()
            try:
                target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
                position = int(target.execute("SELECT COALESCE(MAX(seq), 0) FROM oplog").fetchone()[0])
                documents = int(target.execute("SELECT COUNT(*) FROM documents").fetchone()[0])
                events = int(target.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'events'").fetchone()[0]
                             and target.execute("SELECT COUNT(*) FROM events").fetchone()[0])
            finally:
                target.close()
            config = collection.config.model_dump(mode="json")
            (staging / "config.json").write_text(json.dumps(config, indent=2))
            files = {}
            for file in ("docs.sqlite", "config.json"):
                with open(staging / file, "rb") as handle:
                    os.fsync(handle.fileno())
                files[file] = {"sha256": _sha256(staging / file), "bytes": (staging / file).stat().st_size}
            manifest = {
                "format": FORMAT,
                "name": name,
                "index": index,
                "instance": collection.instance,
                "position": position,
                "documents": documents,
                "events": events,
                "created": datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z"),
                "foveal_version": __version__,
                "config": config,
                "files": files,
            }
            with open(staging / MANIFEST, "w") as handle:  # last: a folder without it is incomplete
                json.dump(manifest, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            fsync_dir(staging)
            try:
                os.rename(staging, final)
            except OSError:
                raise SnapshotExistsError(f"snapshot {name!r} already exists", snapshot=name) from None
            fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            os.close(hold)
        return _summary(manifest)

    # -- verify, restore, delete ---------------------------------------------------------------------------------
    def verify(self, name: str) -> dict[str, Any]:
        """Check every file against the manifest; raise :class:`SnapshotCorruptError` naming the first bad one."""
        manifest = self.manifest(name)
        folder = self._folder(name)
        files = manifest.get("files")
        if manifest.get("format") != FORMAT or not isinstance(files, dict) or set(files) != {"docs.sqlite",
                                                                                           "config.json"}:
            raise SnapshotCorruptError(f"snapshot {name!r}: its manifest is not one this version reads",
                                       snapshot=name)
        for file, entry in files.items():
            path = folder / file
            if not path.is_file():
                raise SnapshotCorruptError(f"snapshot {name!r} is damaged: {file} is missing; nothing was restored",
                                           snapshot=name, file=file)
            if _sha256(path) != entry.get("sha256"):
                raise SnapshotCorruptError(
                    f"snapshot {name!r} is damaged: {file} does not match its sha256 in the manifest; nothing was "
                    "restored", snapshot=name, file=file)
        return manifest

    def restore(self, name: str, index: str | None = None) -> dict[str, Any]:
        """Restore snapshot ``name`` as ``index`` (default: the index it was taken of), atomically."""
        from foveal.engine import DELETING_PREFIX, _write_locked

        manifest = self.verify(name)
        index = index or manifest["index"]
        self.engine.path_of(index)  # validates the name
        config = IndexConfig.parse(json.loads((self._folder(name) / "config.json").read_text()))
        _check_local(config, index)
        target = self.engine.path_of(index)
        staging = self.engine.indexes_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        staging.mkdir()
        hold = hold_folder(staging)
        try:
            shutil.copyfile(self._folder(name) / "docs.sqlite", staging / "docs.sqlite")
            if _sha256(staging / "docs.sqlite") != manifest["files"]["docs.sqlite"]["sha256"]:
                raise SnapshotCorruptError(f"snapshot {name!r}: the copied store does not match its checksum",
                                           snapshot=name)
            (staging / "config.json").write_text(json.dumps(config.model_dump(mode="json"), indent=2))
            (staging / "instance").write_text(uuid.uuid4().hex)  # a new identity: fences tasks queued before
            try:
                Collection(staging, index, config).close()  # integrity check; derived indexes rebuilt from the store
            except FovealError as exc:
                raise SnapshotCorruptError(f"snapshot {name!r} cannot be restored: {exc.message}",
                                           snapshot=name) from None
            fsync_dir(staging)
            _debug_stop("staged")
            with self.engine._lock:
                self._drop_cached(index)
                if (target / "config.json").exists():
                    with _write_locked(target, index):
                        _exchange(staging, target)  # staging now holds the previous index
                        fsync_dir(self.engine.indexes_dir)
                        _debug_stop("swapped")
                    doomed = self.engine.indexes_dir / f"{DELETING_PREFIX}{uuid.uuid4().hex}"
                    os.rename(staging, doomed)
                    shutil.rmtree(doomed, ignore_errors=True)
                else:
                    try:
                        os.rename(staging, target)  # replaces nothing or an empty folder
                    except OSError:
                        raise ConflictError(f"index {index!r} cannot be restored: {target} is in the way and holds "
                                            "no index; remove it by hand", index=index) from None
                    fsync_dir(self.engine.indexes_dir)
                self._drop_cached(index)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            os.close(hold)
        collection = self.engine.get(index)
        return {"snapshot": name, "index": index, "position": manifest["position"],
                "documents": collection.store.count(), "instance": collection.instance}

    def _drop_cached(self, index: str) -> None:
        engine = self.engine
        collection = engine._open.pop(index, None)
        engine._pipelines.pop(index, None)
        if collection is not None:
            collection.store.close()
            collection.release_encoder()

    def delete(self, name: str) -> None:
        from foveal.engine import DELETING_PREFIX

        folder = self._folder(name)
        if not (folder / MANIFEST).exists() and not folder.is_dir():
            raise SnapshotNotFoundError(f"snapshot {name!r} does not exist", snapshot=name)
        doomed = self.root / f"{DELETING_PREFIX}{uuid.uuid4().hex}"
        try:
            os.rename(folder, doomed)  # gone at once; removed at leisure (a dead process's leftover is swept)
        except FileNotFoundError:
            raise SnapshotNotFoundError(f"snapshot {name!r} does not exist", snapshot=name) from None
        shutil.rmtree(doomed, ignore_errors=True)


def _summary(manifest: dict[str, Any]) -> dict[str, Any]:
    return {key: manifest.get(key) for key in ("name", "index", "position", "documents", "events", "created",
                                                 "foveal_version", "instance")}


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> None:
    """Swap two folders in one step (Linux ``renameat2(RENAME_EXCHANGE)``); elsewhere, two renames."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
        errno = ctypes.get_errno()
        if errno not in (22, 38, 95):  # EINVAL / ENOSYS / EOPNOTSUPP: fall back below
            raise OSError(errno, os.strerror(errno), str(a))
    aside = a.parent / f"{a.name}.old"
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)


def _debug_stop(stage: str) -> None:
    if os.environ.get(DEBUG_STOP_ENV) != stage:
        return
    hooks = os.environ.get("FOVEAL_TEST_HOOKS")
    if hooks:
        with open(hooks, "a") as handle:
            handle.write(f"restore_{stage} {os.getpid()}\n")
    time.sleep(float(os.environ.get(DEBUG_SLEEP_ENV, "3600")))
