"""What foveal's Elasticsearch indexes look like: the analyzer that reproduces tantivy's (tokenizer, length, lower
case, stop words, stemmer), the BM25 similarity, and the settings and mappings of the ``-lexical``, ``-vectors``,
``-docs`` and ``-meta`` indexes. Pure functions of the config, unit-tested without a server; why each piece is as it
is is in the package docstring (:mod:`foveal.index.es_backend`)."""

from __future__ import annotations

import re
from typing import Any

from foveal.config import ElasticsearchConfig, LexicalConfig
from foveal.errors import ConfigError

#: tantivy's English stop words (Lucene's classic list, the same as ES ``_english_``), checked against tantivy in
#: tests/index/test_es_backend.py.
ENGLISH_STOPWORDS = (
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no", "not", "of",
    "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to", "was", "will", "with",
)  # fmt: skip
#: tantivy's ``Tokenizer.simple``: runs of Unicode alphanumerics (Rust ``char::is_alphanumeric``).
TOKEN_SPLIT_PATTERN = r"[^\p{IsAlphabetic}\p{N}]+"
#: tantivy's ``Filter.remove_long(40)`` keeps tokens shorter than 40 bytes.
MAX_TOKEN_LENGTH = 39
BM25_K1 = 1.2
BM25_B = 0.75
ANALYZER = "foveal_text"


def analysis_settings(config: LexicalConfig) -> dict[str, Any]:
    """The ES analysis section equivalent to :func:`foveal.index.tantivy_index.build_analyzer` for ``config``."""
    language = config.language.lower()
    filters: dict[str, Any] = {"foveal_length": {"type": "length", "min": 0, "max": MAX_TOKEN_LENGTH}}
    chain = ["foveal_length", "lowercase"]
    if config.stopwords:
        words: Any = list(ENGLISH_STOPWORDS) if language == "english" else f"_{language}_"
        filters["foveal_stop"] = {"type": "stop", "stopwords": words, "ignore_case": False}
        chain.append("foveal_stop")
    if config.stemming:
        filters["foveal_stem"] = {"type": "snowball", "language": language.capitalize()}
        chain.append("foveal_stem")
    return {
        "tokenizer": {"foveal_simple": {"type": "pattern", "pattern": TOKEN_SPLIT_PATTERN}},
        "filter": filters,
        "analyzer": {ANALYZER: {"type": "custom", "tokenizer": "foveal_simple", "filter": chain}},
    }


def _index_settings(es: ElasticsearchConfig, **extra: Any) -> dict[str, Any]:
    return {"number_of_shards": es.shards, "number_of_replicas": es.replicas, **extra}


def lexical_body(config: LexicalConfig, es: ElasticsearchConfig) -> dict[str, Any]:
    """Settings and mappings of the ``-lexical`` index."""
    settings = _index_settings(
        es,
        analysis=analysis_settings(config),
        similarity={"default": {"type": "BM25", "k1": BM25_K1, "b": BM25_B}},
    )
    mappings = {
        "dynamic": "strict",
        "properties": {
            "doc_key": {"type": "long"},
            "id": {"type": "keyword"},
            "title": {"type": "text", "analyzer": ANALYZER},
            "text": {"type": "text", "analyzer": ANALYZER},
        },
    }
    return {"settings": settings, "mappings": mappings}


def vector_index_options(factory: str, es: ElasticsearchConfig) -> dict[str, Any]:
    """``vector.factory`` as dense_vector index options: ``Flat`` (exact) or ``HNSW<M>``."""
    text = factory.replace(" ", "")
    if text.lower() == "flat":
        return {"type": "flat"}
    match = re.fullmatch(r"HNSW(\d*)(,Flat)?", text, flags=re.IGNORECASE)
    if not match:
        raise ConfigError(
            f"vector.factory {factory!r} is not supported by the elasticsearch backend; allowed: Flat or HNSW<M>"
        )
    m = int(match.group(1) or 16)
    if not 2 <= m <= 512:
        raise ConfigError(f"vector.factory {factory!r}: HNSW M must be between 2 and 512")
    return {"type": "hnsw", "m": m, "ef_construction": es.ef_construction}


def vector_body(dimension: int, factory: str, es: ElasticsearchConfig) -> dict[str, Any]:
    """Settings and mappings of the ``-vectors`` index (one ES document per passage)."""
    return {
        "settings": _index_settings(es),
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "doc_key": {"type": "long"},
                "vector": {
                    "type": "dense_vector",
                    "dims": dimension,
                    "index": True,
                    "similarity": "cosine",
                    "index_options": vector_index_options(factory, es),
                },
            },
        },
    }


def docs_body(es: ElasticsearchConfig) -> dict[str, Any]:
    """Settings and mappings of the ``-docs`` index (the document store: one ES document per foveal id)."""
    not_indexed = {"type": "object", "enabled": False}
    return {
        "settings": _index_settings(es),
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "id": {"type": "keyword"},
                "doc_key": {"type": "long"},
                "seq": {"type": "long"},
                "deleted": {"type": "boolean"},
                "title": {"type": "text", "index": False},
                "text": {"type": "text", "index": False},
                "metadata": not_indexed,
                "timestamp": {"type": "double"},
                "content_hash": {"type": "keyword"},
                "passages": not_indexed,
                "n_tokens": {"type": "integer"},
                "n_passages": {"type": "integer"},
                "dimension": {"type": "integer"},
                "vectors": {"type": "binary"},
            },
        },
    }


def meta_body(es: ElasticsearchConfig) -> dict[str, Any]:
    return {"settings": _index_settings(es), "mappings": {"dynamic": False, "properties": {}}}
