"""The one place that decides which backend runs behind each seam (and CPU or GPU).

Backends are named in the config (``vector.backend``, ``lexical.backend``, ``docstore.backend``); a dotted path
``package.module:Class`` is accepted as an escape hatch for backends that live outside foveal.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from foveal.config import DocStoreConfig, EncoderConfig, LexicalConfig, VectorConfig
from foveal.errors import ConfigError

VECTOR_BACKENDS = {"faiss": "foveal.index.faiss_index:FaissVectorIndex"}
LEXICAL_BACKENDS = {"tantivy": "foveal.index.tantivy_index:TantivyLexicalIndex"}
DOCSTORE_BACKENDS = {"sqlite": "foveal.index.sqlite_store:SqliteDocStore"}
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
    return _resolve("encoder", "sentence-transformers", ENCODERS)(config)


def make_vector_index(dimension: int, config: VectorConfig):
    cls = _resolve("vector", config.backend, VECTOR_BACKENDS)
    return cls(dimension, config.factory, gpu=config.gpu, nprobe=config.nprobe, ef_search=config.ef_search)


def load_vector_index(path: Path, dimension: int, config: VectorConfig):
    cls = _resolve("vector", config.backend, VECTOR_BACKENDS)
    return cls.load(path, dimension, config.factory, gpu=config.gpu, nprobe=config.nprobe, ef_search=config.ef_search)


def make_lexical_index(path: Path, config: LexicalConfig):
    return _resolve("lexical", config.backend, LEXICAL_BACKENDS)(path, config)


def make_docstore(path: Path, config: DocStoreConfig):
    return _resolve("docstore", config.backend, DOCSTORE_BACKENDS)(path)
