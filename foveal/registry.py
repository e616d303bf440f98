"""The one place that decides which backend runs behind each seam (and CPU or GPU).

Backends are named in the config (``vector.backend``, ``lexical.backend``, ``docstore.backend``); a dotted path
``package.module:Class`` is accepted as an escape hatch for backends that live outside foveal.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from foveal.config import DocStoreConfig, ElasticsearchConfig, EncoderConfig, LexicalConfig, VectorConfig
from foveal.errors import ConfigError

VECTOR_BACKENDS = {
    "faiss": "foveal.index.faiss_index:FaissVectorIndex",
    "elasticsearch": "foveal.index.es_backend:ElasticsearchVectorIndex",
}
LEXICAL_BACKENDS = {
    "tantivy": "foveal.index.tantivy_index:TantivyLexicalIndex",
    "elasticsearch": "foveal.index.es_backend:ElasticsearchLexicalIndex",
}
DOCSTORE_BACKENDS = {
    "sqlite": "foveal.index.sqlite_store:SqliteDocStore",
    "elasticsearch": "foveal.index.es_backend:ElasticsearchDocStore",
}
#: Backends that live on an Elasticsearch server: they also get the ``elasticsearch`` config section and the
#: foveal index name (keyword arguments ``es`` and ``name``).
SERVER_BACKENDS = {"elasticsearch"}
ENCODERS = {"sentence-transformers": "foveal.encoders.sentence_transformer:get_encoder"}


def _resolve(kind: str, name: str, table: dict[str, str]) -> Any:
    target = table.get(name, name if ":" in name else None)
    if target is None:
        raise ConfigError(f"unknown {kind} backend {name!r}; allowed: {', '.join(sorted(table))} or 'module:Class'")
    module_name, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{kind} backend {name!r} could not be loaded: {exc}") from exc


def make_encoder(config: EncoderConfig):
    """An encoder for ``config``, on the process's one loaded copy of its model (loaded now if none is live). This
    is the only place torch and the model get imported, so callers that never encode never pay for them. Model
    ``none`` is an index of vector items: no model at all (:mod:`foveal.encoders.vector_items`)."""
    from foveal.config import NO_ENCODER

    if config.model == NO_ENCODER:
        from foveal.encoders.vector_items import VectorItemsEncoder

        return VectorItemsEncoder(config)
    return _resolve("encoder", "sentence-transformers", ENCODERS)(config)


def preload_models() -> bool:
    """Whether long-lived processes (``foveal serve``, Celery pool children) load each index's model when they
    start, so that the first dense search or the first task does not pay for it (a task inside its time limit):
    ``$FOVEAL_PRELOAD_MODELS``, default ``1``; ``0`` leaves every model to its first use, as the CLI always does."""
    return os.environ.get("FOVEAL_PRELOAD_MODELS", "1").strip().lower() not in ("0", "false", "no", "off")


def _server_kwargs(backend: str, es: ElasticsearchConfig | None, name: str | None) -> dict[str, Any]:
    if backend not in SERVER_BACKENDS:
        return {}
    return {"es": es or ElasticsearchConfig(), "name": name or "default"}


def make_vector_index(dimension: int, config: VectorConfig, *, es: ElasticsearchConfig | None = None,
                      name: str | None = None):
    cls = _resolve("vector", config.backend, VECTOR_BACKENDS)
    return cls(dimension, config.factory, gpu=config.gpu, nprobe=config.nprobe, ef_search=config.ef_search,
               **_server_kwargs(config.backend, es, name))


def load_vector_index(path: Path, dimension: int, config: VectorConfig, *, es: ElasticsearchConfig | None = None,
                      name: str | None = None):
    cls = _resolve("vector", config.backend, VECTOR_BACKENDS)
    return cls.load(path, dimension, config.factory, gpu=config.gpu, nprobe=config.nprobe, ef_search=config.ef_search,
                    **_server_kwargs(config.backend, es, name))


def make_lexical_index(path: Path, config: LexicalConfig, *, es: ElasticsearchConfig | None = None,
                       name: str | None = None):
    return _resolve("lexical", config.backend, LEXICAL_BACKENDS)(path, config, **_server_kwargs(config.backend, es, name))


def make_docstore(path: Path, config: DocStoreConfig, *, es: ElasticsearchConfig | None = None,
                  name: str | None = None):
    return _resolve("docstore", config.backend, DOCSTORE_BACKENDS)(path, **_server_kwargs(config.backend, es, name))


def check_backends(vector: VectorConfig, lexical: LexicalConfig, docstore: DocStoreConfig) -> None:
    """Raise :class:`ConfigError` unless every backend named resolves to a class that can be imported: checked
    before an index is created, so that a misspelt backend never leaves files behind."""
    _resolve("vector", vector.backend, VECTOR_BACKENDS)
    _resolve("lexical", lexical.backend, LEXICAL_BACKENDS)
    _resolve("docstore", docstore.backend, DOCSTORE_BACKENDS)
