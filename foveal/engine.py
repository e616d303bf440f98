"""The engine: named indexes under one home folder, each opened once per process.

Example::

    >>> engine = Engine("/tmp/foveal-home")                                     # doctest: +SKIP
    >>> engine.create_index("papers")                                            # doctest: +SKIP
    >>> engine.search("papers", SearchRequest(query="protein folding")).hits     # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

from foveal.config import IndexConfig, foveal_home
from foveal.errors import IndexNotFoundError
from foveal.index.collection import Collection, check_index_name
from foveal.pipeline.request import SearchRequest, SearchResponse
from foveal.pipeline.search import SearchPipeline


class Engine:
    def __init__(self, home: Path | str | None = None) -> None:
        self.home = Path(home) if home is not None else foveal_home()
        self.indexes_dir = self.home / "indexes"
        self.indexes_dir.mkdir(parents=True, exist_ok=True)
        self._open: dict[str, Collection] = {}
        self._pipelines: dict[str, SearchPipeline] = {}
        self._lock = threading.RLock()

    def path_of(self, name: str) -> Path:
        return self.indexes_dir / check_index_name(name)

    def exists(self, name: str) -> bool:
        return (self.path_of(name) / "config.json").exists()

    def list_indexes(self) -> list[str]:
        return sorted(p.name for p in self.indexes_dir.iterdir() if (p / "config.json").exists())

    def create_index(self, name: str, config: IndexConfig | dict[str, Any] | None = None) -> Collection:
        if isinstance(config, dict):
            config = IndexConfig.parse(config)
        with self._lock:
            collection = Collection.create(self.path_of(name), name, config)
            collection.opened_identity = _identity(self.path_of(name))
            self._open[name] = collection
            return collection

    def get(self, name: str) -> Collection:
        with self._lock:
            collection = self._open.get(name)
            if collection is None:
                path = self.path_of(name)
                if not (path / "config.json").exists():
                    raise IndexNotFoundError(f"index {name!r} does not exist", index=name)
                collection = self._open[name] = Collection.open(path, name)
                collection.opened_identity = _identity(path)
            return collection

    def get_current(self, name: str) -> Collection:
        """Like :meth:`get`, but reopens the index when its folder was deleted (and maybe recreated) by another
        process since this one opened it, so a long-lived worker never writes into deleted files."""
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
        with self._lock:
            if self.exists(name):
                collection = self.get(name)
                if config is not None:
                    config.check_compatible(collection.config, name)
                return collection
            return self.create_index(name, config)

    def pipeline(self, name: str) -> SearchPipeline:
        with self._lock:
            pipeline = self._pipelines.get(name)
            if pipeline is None:
                pipeline = self._pipelines[name] = SearchPipeline(self.get(name))
            return pipeline

    def search(self, name: str, request: SearchRequest) -> SearchResponse:
        return self.pipeline(name).search(request)

    def delete_index(self, name: str) -> None:
        with self._lock:
            path = self.path_of(name)
            if not (path / "config.json").exists():
                raise IndexNotFoundError(f"index {name!r} does not exist", index=name)
            collection = self._open.pop(name, None)
            self._pipelines.pop(name, None)
            if collection is not None:
                collection.store.close()
                collection.release_encoder()  # its model is freed unless another open index uses it
            _drop_server_indexes(path, name)
            shutil.rmtree(path)

    def close(self) -> None:
        with self._lock:
            for collection in self._open.values():
                collection.close()
            self._open.clear()
            self._pipelines.clear()


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
