"""Elasticsearch behind foveal's three storage seams: BM25 lexical index, dense_vector kNN index, document store.

Each backend is chosen on its own (``lexical.backend``, ``vector.backend``, ``docstore.backend`` =
``elasticsearch``) and shares the ``elasticsearch`` config section (url, index prefix, shards/replicas, kNN
candidates, timeout). A foveal index ``NAME`` owns the Elasticsearch indexes ``<prefix>NAME-lexical``,
``-vectors``, ``-docs`` and ``-meta``. Every write goes through the official client's bulk helper with
``refresh="wait_for"`` (or an explicit refresh at the end of a batch), so what foveal acknowledges is searchable.

**Lexical** (BM25, k1 1.2, b 0.75 as in tantivy). The analyzer reproduces foveal's tantivy analyzer
(:func:`foveal.index.tantivy_index.build_analyzer`): tantivy's ``simple`` tokenizer splits on every character that is
not alphanumeric (Rust ``char::is_alphanumeric``: Unicode Alphabetic or Number), so ES gets a ``pattern`` tokenizer on
``[^\\p{IsAlphabetic}\\p{N}]+``; then tokens of 40 bytes or more dropped (ES ``length`` max 39, counted in UTF-16
units: the same for ASCII), lower case, Lucene's English stop list (the 33 words tantivy uses, listed below) and
the Snowball English (Porter2) stemmer that rust-stemmers implements. Queries are analysed locally with the tantivy
analyzer and sent as a disjunction of ``term`` queries over title and text with the configured boosts, the query
tantivy runs. Known differences: tokens of 20-39 non-ASCII characters (ES keeps what tantivy's byte limit drops),
``İ`` lower-cased to ``i`` (Java) instead of ``i̇`` (Rust), Lucene's BM25 omits tantivy's constant ``(k1 + 1)``
factor (scores differ by 2.2x, rankings do not), and with more than one shard searches use
``dfs_query_then_fetch`` so term statistics stay global.

**Vectors**: ``dense_vector`` (dims = the encoder's, ``cosine`` similarity, equal to inner product on foveal's unit
vectors) with ``hnsw`` index options (``vector.factory`` ``HNSW<M>``; ``Flat`` maps to ES's exact ``flat``
option). Document ids are the passage ids FAISS uses (``doc_key << 14 | ordinal``). ES reports ``(1 + cos) / 2``;
searches return the cosine itself so fusion sees the same scale as with FAISS.

**Document store and change log.** Elasticsearch has no multi-document transactions, so the SQLite design (one
transaction appending to an ``oplog`` table) cannot be copied. Instead every change is one atomic Elasticsearch
document: the ``-docs`` index holds one document per foveal id carrying its fields, its passage vectors (base64
float32, not indexed) and the ``seq`` of its latest change; a delete leaves a tombstone (``deleted: true``, new
``seq``). ``changes_since(seq)`` is a range query on ``seq``: it returns the *latest* change of each document rather
than every change, which is all that replay needs (replay removes a document, then adds its current state).
``seq`` and ``doc_key`` come from counters in the ``-meta`` index, advanced with optimistic concurrency
(``if_seq_no``): a writer first reserves the range it will use, then bulk-writes the documents (``wait_for``),
then publishes the new head. Readers trust only the published head, so they never see half a batch; a writer that
died mid-batch leaves documents above the head, and the next writer starts above the reservation and publishes
past them, so they reach the other stores then. Differences from SQLite: a batch is not all-or-nothing (each
document is), and a document deleted then re-added gets its old ``doc_key`` back (the tombstone keeps it), so a
replay that only sees the re-add still removes the old vectors.

The vector and lexical indexes live on the server, shared by every process: readers do not replay the log into
them (``shared = True``); the writer does, under the collection's write lock, as for tantivy.

Example (needs a server at ``$FOVEAL_ES_URL``)::

    >>> from foveal.engine import Engine                                                      # doctest: +SKIP
    >>> es = {"backend": "elasticsearch"}                                                     # doctest: +SKIP
    >>> Engine().create_index("papers", {"vector": {**es, "factory": "HNSW16"}, "lexical": es,
    ...                                  "docstore": es})                                     # doctest: +SKIP
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from foveal.config import ElasticsearchConfig, LexicalConfig
from foveal.errors import BackendUnavailableError, ConfigError, IndexLockedError
from foveal.index.base import MAX_PASSAGES, PASSAGE_BITS, LexicalDocument, StoredDocument, passage_id

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
#: The most hits one kNN or term search asks for (ES's index.max_result_window default).
MAX_RESULTS = 10_000
_MAX_ES_ID_BYTES = 512
_COUNTERS = "counters"


# -- pure parts: names, ids, settings, mappings, actions (unit-tested without a server) -------------------------------
def es_url(config: ElasticsearchConfig) -> str:
    url = config.url or os.environ.get("FOVEAL_ES_URL")
    if not url:
        raise ConfigError("an elasticsearch backend needs elasticsearch.url or the FOVEAL_ES_URL environment variable")
    return url


def index_names(prefix: str, name: str) -> dict[str, str]:
    """The Elasticsearch indexes of foveal index ``name``."""
    return {kind: f"{prefix}{name}-{kind}" for kind in ("lexical", "vectors", "docs", "meta")}


def es_doc_id(doc_id: str) -> str:
    """The ``_id`` of a foveal document: itself, or a hash when it is longer than ES's 512-byte limit."""
    if len(doc_id.encode("utf-8")) <= _MAX_ES_ID_BYTES and not doc_id.startswith("sha256:"):
        return doc_id
    return "sha256:" + hashlib.sha256(doc_id.encode("utf-8")).hexdigest()


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


def lexical_actions(index: str, documents: Sequence[LexicalDocument]) -> Iterator[dict[str, Any]]:
    for doc in documents:
        yield {
            "_op_type": "index",
            "_index": index,
            "_id": es_doc_id(doc.id),
            "_source": {"doc_key": doc.doc_key, "id": doc.id, "title": doc.title, "text": doc.text},
        }


def lexical_query(terms: Sequence[str], config: LexicalConfig) -> dict[str, Any] | None:
    """The query tantivy runs (a disjunction of term queries over title and text, with boosts), for ES."""
    clauses = []
    for field, boost in (("title", config.title_boost), ("text", config.text_boost)):
        if boost <= 0:
            continue
        clauses.extend({"term": {field: {"value": term, "boost": boost}}} for term in dict.fromkeys(terms))
    return {"bool": {"should": clauses, "minimum_should_match": 1}} if clauses else None


TERMS_CHUNK = 10_000  # values per terms clause, well under index.max_terms_count (65,536)


def allowed_filter(field: str, values: Iterable[int]) -> dict[str, Any]:
    """A filter clause matching ``field`` (``"_id"`` uses an ids query) against any of ``values``.

    Large sets are split into terms clauses of :data:`TERMS_CHUNK` values OR-ed in one bool, so no single clause
    passes ES's max_terms_count; an empty set matches nothing."""
    keys = sorted({int(v) for v in values})

    def clause(chunk: list[int]) -> dict[str, Any]:
        if field == "_id":
            return {"ids": {"values": [str(v) for v in chunk]}}
        return {"terms": {field: chunk}}

    chunks = [keys[i : i + TERMS_CHUNK] for i in range(0, len(keys), TERMS_CHUNK)] or [[]]
    if len(chunks) == 1:
        return clause(chunks[0])
    return {"bool": {"should": [clause(c) for c in chunks], "minimum_should_match": 1}}


def metadata_matches(metadata: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """SQLite's typed equality: a bool matches only bools, a number only (non-bool) numbers, a string only
    strings; a list means any of its values."""
    for key, spec in wanted.items():
        if key not in metadata:
            return False
        have = metadata[key]
        ok = False
        for value in spec if isinstance(spec, list) else [spec]:
            if isinstance(value, bool):
                ok = isinstance(have, bool) and have == value
            elif isinstance(value, (int, float)):
                ok = isinstance(have, (int, float)) and not isinstance(have, bool) and have == value
            else:
                ok = isinstance(have, str) and have == value
            if ok:
                break
        if not ok:
            return False
    return True


def vector_actions(index: str, ids: np.ndarray, vectors: np.ndarray) -> Iterator[dict[str, Any]]:
    for pid, vector in zip(np.asarray(ids, dtype=np.int64).tolist(), np.asarray(vectors, dtype=np.float32)):
        yield {
            "_op_type": "index",
            "_index": index,
            "_id": str(pid),
            "_source": {"doc_key": pid >> PASSAGE_BITS, "vector": vector.tolist()},
        }


def cosine_from_es(score: float) -> float:
    """ES reports cosine similarity as ``(1 + cos) / 2``; foveal's scores are the inner product (= cos)."""
    return 2.0 * float(score) - 1.0


def encode_vectors(vectors: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(vectors, dtype="<f4").tobytes()).decode("ascii")


def decode_vectors(data: str, dimension: int) -> np.ndarray:
    raw = np.frombuffer(base64.b64decode(data), dtype="<f4").astype(np.float32)
    return raw.reshape(-1, dimension) if dimension else raw.reshape(0, 0)


def stored_source(prepared, doc_key: int, seq: int) -> dict[str, Any]:
    """The ``-docs`` source of one prepared document (see :class:`foveal.index.sqlite_store.PreparedDocument`)."""
    doc = prepared.document
    vectors = np.ascontiguousarray(prepared.vectors, dtype=np.float32)
    return {
        "id": doc.id,
        "doc_key": doc_key,
        "seq": seq,
        "deleted": False,
        "title": doc.title,
        "text": doc.text,
        "metadata": doc.metadata,
        "timestamp": doc.timestamp,
        "content_hash": doc.content_hash,
        "passages": [list(p) for p in prepared.passages],
        "n_tokens": prepared.n_tokens,
        "n_passages": int(len(vectors)),
        "dimension": int(vectors.shape[1]) if vectors.ndim == 2 else 0,
        "vectors": encode_vectors(vectors),
    }


def tombstone_source(doc_id: str, doc_key: int, seq: int) -> dict[str, Any]:
    return {"id": doc_id, "doc_key": doc_key, "seq": seq, "deleted": True}


def _stored(source: dict[str, Any]) -> StoredDocument:
    return StoredDocument(
        doc_key=int(source["doc_key"]),
        id=source["id"],
        title=source.get("title", ""),
        text=source.get("text", ""),
        metadata=source.get("metadata") or {},
        timestamp=source.get("timestamp"),
        content_hash=source.get("content_hash", ""),
        passages=[tuple(p) for p in source.get("passages", [])],
        n_tokens=int(source.get("n_tokens", 0)),
    )


# -- the client -----------------------------------------------------------------------------------------------------
_clients: dict[tuple[str, float], Any] = {}
_clients_lock = threading.Lock()


def client_for(config: ElasticsearchConfig):
    """One client per (url, timeout) per process (the client pools its connections and is thread-safe)."""
    from elasticsearch import Elasticsearch

    key = (es_url(config), config.request_timeout)
    with _clients_lock:
        if key not in _clients:
            _clients[key] = Elasticsearch(key[0], request_timeout=key[1], retry_on_timeout=True, max_retries=3)
        return _clients[key]


def _call(what: str, fn, *args, **kwargs):
    """Run a client call, turning transport and API failures into :class:`BackendUnavailableError`."""
    from elasticsearch import ApiError, TransportError

    try:
        return fn(*args, **kwargs)
    except (ApiError, TransportError) as exc:
        raise BackendUnavailableError(f"elasticsearch: {what} failed: {exc}") from exc


def _ensure_index(client, name: str, body: dict[str, Any]) -> None:
    from elasticsearch import ApiError, BadRequestError, TransportError

    if _call("index check", client.indices.exists, index=name):
        return
    try:
        client.indices.create(index=name, settings=body["settings"], mappings=body["mappings"])
    except BadRequestError as exc:  # created by another process in the meantime, or refused
        if "resource_already_exists_exception" not in str(exc):
            raise BackendUnavailableError(f"elasticsearch: creating index {name!r} failed: {exc}") from exc
    except (ApiError, TransportError) as exc:
        raise BackendUnavailableError(f"elasticsearch: creating index {name!r} failed: {exc}") from exc


def _bulk(client, actions: Iterable[dict[str, Any]], what: str, refresh: str | bool = "wait_for") -> int:
    from elasticsearch import helpers

    try:
        done, _ = helpers.bulk(client, actions, refresh=refresh, chunk_size=500, max_retries=3)
    except helpers.BulkIndexError as exc:
        first = exc.errors[0] if exc.errors else {}
        raise BackendUnavailableError(f"elasticsearch: {what}: {len(exc.errors)} action(s) failed, first: {first}")
    except Exception as exc:  # transport errors
        from elasticsearch import ApiError, TransportError

        if isinstance(exc, (ApiError, TransportError)):
            raise BackendUnavailableError(f"elasticsearch: {what} failed: {exc}") from exc
        raise
    return done


def drop_indexes(name: str, es: ElasticsearchConfig) -> None:
    """Delete every Elasticsearch index of foveal index ``name`` (used when the foveal index is deleted)."""
    client = client_for(es)
    for index in index_names(es.index_prefix, name).values():
        _call("delete index", client.indices.delete, index=index, ignore_unavailable=True)


def _name_from_path(path: Path | str | None, fallback: str = "default") -> str:
    """The foveal index name from a path inside its folder (``<home>/indexes/<name>/<file>``)."""
    if path is None:
        return fallback
    return Path(path).parent.name or fallback


# -- lexical --------------------------------------------------------------------------------------------------------
class ElasticsearchLexicalIndex:
    """BM25 on Elasticsearch behind :class:`~foveal.index.base.LexicalIndex`."""

    shared = True

    def __init__(self, path: Path | None, config: LexicalConfig | None = None, *,
                 es: ElasticsearchConfig | None = None, name: str | None = None) -> None:
        from foveal.index.tantivy_index import build_analyzer

        self.config = config or LexicalConfig()
        self.es = es or ElasticsearchConfig()
        self.analyzer = build_analyzer(self.config)  # queries are analysed here, as tantivy does
        self.index = index_names(self.es.index_prefix, name or _name_from_path(path))["lexical"]
        self.client = client_for(self.es)
        _ensure_index(self.client, self.index, lexical_body(self.config, self.es))
        self._pending = False

    def upsert(self, documents: Sequence[LexicalDocument]) -> None:
        if documents:
            _bulk(self.client, lexical_actions(self.index, documents), "lexical upsert", refresh=False)
            self._pending = True

    def remove(self, doc_ids: Iterable[str]) -> None:
        actions = [{"_op_type": "delete", "_index": self.index, "_id": es_doc_id(i)} for i in doc_ids]
        if actions:
            from elasticsearch import helpers

            try:
                helpers.bulk(self.client, actions, refresh=False, raise_on_error=False)
            except Exception as exc:  # transport
                raise BackendUnavailableError(f"elasticsearch: lexical remove failed: {exc}") from exc
            self._pending = True

    def commit(self) -> None:
        if self._pending:
            _call("refresh", self.client.indices.refresh, index=self.index)
            self._pending = False

    def refresh(self) -> None:
        """Nothing to reload: the server serves the latest refreshed state to every process."""

    def analyze(self, text: str) -> list[str]:
        return list(self.analyzer.analyze(text))

    def search(self, query: str, k: int, allowed: Iterable[int] | None = None) -> list[tuple[int, float]]:
        """Top ``k`` doc_keys by BM25; ``allowed`` (doc_keys) is a terms filter inside the query, so up to ``k``
        allowed matches come back (not a post-filter)."""
        body = lexical_query(self.analyze(query), self.config)
        if body is None or k <= 0:
            return []
        if allowed is not None:
            allowed = list(allowed)
            if not allowed:
                return []
            body = {"bool": {"must": [body], "filter": [allowed_filter("doc_key", allowed)]}}
        extra = {"search_type": "dfs_query_then_fetch"} if self.es.shards > 1 else {}
        response = _call(
            "lexical search", self.client.search, index=self.index, query=body, size=min(k, MAX_RESULTS),
            source=False, docvalue_fields=["doc_key"], **extra,
        )
        return [(int(h["fields"]["doc_key"][0]), float(h["_score"])) for h in response["hits"]["hits"]]

    def __len__(self) -> int:
        return int(_call("count", self.client.count, index=self.index)["count"])

    def drop(self) -> None:
        _call("delete index", self.client.indices.delete, index=self.index, ignore_unavailable=True)


# -- vectors --------------------------------------------------------------------------------------------------------
class ElasticsearchVectorIndex:
    """Passage vectors in a dense_vector field behind :class:`~foveal.index.base.VectorIndex`."""

    shared = True

    def __init__(self, dimension: int, factory: str = "HNSW16", *, es: ElasticsearchConfig | None = None,
                 name: str = "default", **_: Any) -> None:
        self.dimension = dimension
        self.factory = factory
        self.es = es or ElasticsearchConfig()
        self.index = index_names(self.es.index_prefix, name)["vectors"]
        self.client = client_for(self.es)
        _ensure_index(self.client, self.index, vector_body(dimension, factory, self.es))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.dimension):
            raise ValueError(f"expected vectors of shape ({len(ids)}, {self.dimension}), got {vectors.shape}")
        _bulk(self.client, vector_actions(self.index, ids, vectors), "vector add")

    def remove_documents(self, doc_keys: Iterable[int]) -> None:
        keys = sorted({int(k) for k in doc_keys})
        for start in range(0, len(keys), 10_000):
            _call(
                "vector remove", self.client.delete_by_query, index=self.index,
                query={"terms": {"doc_key": keys[start : start + 10_000]}}, refresh=True, conflicts="proceed",
            )

    def search(self, vectors: np.ndarray, k: int,
               allowed: Iterable[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Nearest passages; ``allowed`` (passage ids) becomes the kNN ``filter`` (an ids query), which ES applies
        during the graph search, so ``k`` hits come back when ``k`` allowed passages exist.

        ``num_candidates`` is at least ``k`` and, for an allow-list of up to :data:`MAX_RESULTS` passages, at least
        its size: Lucene scores a filter that matches no more documents than it is asked to collect exactly (brute
        force over the allowed vectors), so a selective filter gets the true top ``k`` instead of whatever a graph
        walk through mostly forbidden vectors reaches. Broader filters are searched in the graph, which Lucene
        widens (and falls back to exact) until ``k`` allowed vectors are collected."""
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dimension)
        scores = np.zeros((len(vectors), k), np.float32)
        ids = np.full((len(vectors), k), -1, np.int64)
        asked = min(k, MAX_RESULTS)
        knn_filter = None
        if allowed is not None:
            allowed = np.asarray(list(allowed) if not isinstance(allowed, np.ndarray) else allowed, np.int64)
            if len(allowed) == 0 or asked <= 0:
                return scores, ids
            knn_filter = allowed_filter("_id", allowed.tolist())
        if asked <= 0:
            return scores, ids
        candidates = max(asked, self.es.num_candidates)
        if allowed is not None and len(allowed) <= MAX_RESULTS:
            candidates = max(candidates, len(allowed))
        for row, vector in enumerate(vectors):
            knn = {
                "field": "vector",
                "query_vector": vector.tolist(),
                "k": asked,
                "num_candidates": min(candidates, MAX_RESULTS),
            }
            if knn_filter is not None:
                knn["filter"] = knn_filter
            response = _call("kNN search", self.client.search, index=self.index, knn=knn, size=asked, source=False)
            for col, hit in enumerate(response["hits"]["hits"]):
                ids[row, col] = int(hit["_id"])
                scores[row, col] = cosine_from_es(hit["_score"])
        return scores, ids

    def __len__(self) -> int:
        return int(_call("count", self.client.count, index=self.index)["count"])

    def save(self, path: Path, **extra: int) -> None:
        """The vectors live on the server; the file records which index and what log position it holds."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        header = {"backend": "elasticsearch", "index": self.index, "factory": self.factory,
                  "dimension": self.dimension, **extra}
        tmp.write_text(json.dumps(header))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, dimension: int, factory: str, **kwargs: Any) -> tuple["ElasticsearchVectorIndex", dict]:
        header = json.loads(Path(path).read_text())
        index = cls(dimension, factory, **kwargs)
        if header.get("index") != index.index or header.get("dimension") != dimension:
            raise ConfigError(f"saved vector state is for {header.get('index')}/{header.get('dimension')}, "
                              f"config asks for {index.index}/{dimension}")
        return index, header

    def drop(self) -> None:
        _call("delete index", self.client.indices.delete, index=self.index, ignore_unavailable=True)


# -- document store -------------------------------------------------------------------------------------------------
class ElasticsearchDocStore:
    """The document store (and change log) on Elasticsearch; same methods as
    :class:`~foveal.index.sqlite_store.SqliteDocStore`. See the module docstring for the log's design."""

    def __init__(self, path: Path | str | None = None, *, es: ElasticsearchConfig | None = None,
                 name: str | None = None) -> None:
        self.es = es or ElasticsearchConfig()
        names = index_names(self.es.index_prefix, name or _name_from_path(path))
        self.docs, self.meta = names["docs"], names["meta"]
        self.client = client_for(self.es)
        _ensure_index(self.client, self.docs, docs_body(self.es))
        _ensure_index(self.client, self.meta, meta_body(self.es))

    def close(self) -> None:
        """The client is shared by the process; nothing to close per store."""

    # -- counters -------------------------------------------------------------------------------------------------
    def _counters(self) -> tuple[dict[str, int], dict[str, int]]:
        """(counters, concurrency token) from a realtime GET."""
        from elasticsearch import NotFoundError

        try:
            response = self.client.get(index=self.meta, id=_COUNTERS)
        except NotFoundError:
            return {"seq": 0, "reserved_seq": 0, "next_doc_key": 1}, {}
        except Exception as exc:
            raise BackendUnavailableError(f"elasticsearch: reading counters failed: {exc}") from exc
        token = {"if_seq_no": response["_seq_no"], "if_primary_term": response["_primary_term"]}
        return dict(response["_source"]), token

    def _put_counters(self, counters: dict[str, int], token: dict[str, int]) -> dict[str, int]:
        from elasticsearch import ConflictError as EsConflict

        try:
            kwargs = token if token else {"op_type": "create"}
            response = self.client.index(index=self.meta, id=_COUNTERS, document=counters, refresh=True, **kwargs)
        except EsConflict as exc:
            raise IndexLockedError("another process wrote this Elasticsearch document store at the same time") from exc
        except Exception as exc:
            raise BackendUnavailableError(f"elasticsearch: writing counters failed: {exc}") from exc
        return {"if_seq_no": response["_seq_no"], "if_primary_term": response["_primary_term"]}

    # -- reads ----------------------------------------------------------------------------------------------------
    def _mget(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        out = []
        for start in range(0, len(ids), 500):
            chunk = [es_doc_id(i) for i in ids[start : start + 500]]
            response = _call("mget", self.client.mget, index=self.docs, ids=chunk)
            out.extend(d["_source"] for d in response["docs"] if d.get("found"))
        return out

    def _live(self, query: dict[str, Any]) -> dict[str, Any]:
        return {"bool": {"filter": [query], "must_not": [{"term": {"deleted": True}}]}}

    def _scan(self, query: dict[str, Any], source: Any = True, sort: Any = None) -> Iterator[dict[str, Any]]:
        """Every matching document, paged with search_after on ``seq`` or ``doc_key`` (both unique per live doc)."""
        field = sort or "doc_key"
        after = None
        while True:
            kwargs = {"search_after": after} if after is not None else {}
            response = _call(
                "search", self.client.search, index=self.docs, query=query, size=1000, sort=[{field: "asc"}, {"id": "asc"}],
                source=source, **kwargs,
            )
            hits = response["hits"]["hits"]
            if not hits:
                return
            for hit in hits:
                yield hit["_source"]
            after = hits[-1]["sort"]

    def hashes(self, ids: Sequence[str]) -> dict[str, tuple[int, str]]:
        return {
            s["id"]: (int(s["doc_key"]), s["content_hash"])
            for s in self._mget(list(dict.fromkeys(ids)))
            if not s.get("deleted")
        }

    def get_documents(self, doc_keys: Iterable[int]) -> dict[int, StoredDocument]:
        keys = list(dict.fromkeys(int(k) for k in doc_keys))
        out: dict[int, StoredDocument] = {}
        for start in range(0, len(keys), 1000):
            query = self._live({"terms": {"doc_key": keys[start : start + 1000]}})
            for source in self._scan(query, source={"excludes": ["vectors"]}):
                out[int(source["doc_key"])] = _stored(source)
        return out

    def get_by_id(self, doc_id: str) -> StoredDocument | None:
        found = [s for s in self._mget([doc_id]) if not s.get("deleted") and s["id"] == doc_id]
        return _stored(found[0]) if found else None

    def filter_keys(self, ids=None, metadata=None, time_bounds=None) -> set[int]:
        """doc_keys of the live documents matching every condition, as :meth:`SqliteDocStore.filter_keys`.

        ``ids`` and the ``timestamp`` bounds are ES filters (``id`` is a keyword, ``timestamp`` a double). Metadata
        is stored unindexed (``enabled: false``): a ``flattened`` field would index every value as a keyword, losing
        the bool/number/string distinction SQLite's filter keeps, and a dynamic mapping would let one document's
        value types break another's writes. So metadata equality is checked here, on the ``metadata`` source of
        the documents the ES filters already narrowed down."""
        clauses: list[dict[str, Any]] = []
        if ids is not None:
            ids = list(ids)
            if not ids:
                return set()
            clauses.append({"terms": {"id": ids}} if len(ids) <= TERMS_CHUNK else {"bool": {
                "should": [{"terms": {"id": ids[i : i + TERMS_CHUNK]}} for i in range(0, len(ids), TERMS_CHUNK)],
                "minimum_should_match": 1}})
        if time_bounds:
            unknown = set(time_bounds) - {"gte", "gt", "lte", "lt"}
            if unknown:
                raise ValueError(f"unknown timestamp bounds: {sorted(unknown)}")
            clauses.append({"range": {"timestamp": {op: float(v) for op, v in time_bounds.items()}}})
        query = self._live({"bool": {"filter": clauses}} if clauses else {"match_all": {}})
        source: Any = ["doc_key", "metadata"] if metadata else ["doc_key"]
        return {
            int(s["doc_key"])
            for s in self._scan(query, source=source)
            if not metadata or metadata_matches(s.get("metadata") or {}, metadata)
        }

    def passage_ids_of(self, doc_keys: Iterable[int]) -> np.ndarray:
        """Passage ids of the live documents ``doc_keys`` (from each document's ``n_passages``)."""
        keys = list(dict.fromkeys(int(k) for k in doc_keys))
        out: list[int] = []
        for start in range(0, len(keys), 1000):
            query = self._live({"terms": {"doc_key": keys[start : start + 1000]}})
            for s in self._scan(query, source=["doc_key", "n_passages"]):
                out.extend(passage_id(int(s["doc_key"]), i) for i in range(int(s.get("n_passages", 0))))
        return np.asarray(out, dtype=np.int64)

    def _vectors_from(self, sources: Iterable[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        ids: list[int] = []
        blocks: list[np.ndarray] = []
        for source in sources:
            vectors = decode_vectors(source["vectors"], int(source["dimension"]))
            ids.extend(passage_id(int(source["doc_key"]), i) for i in range(len(vectors)))
            blocks.append(vectors)
        if not ids:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        order = np.argsort(ids, kind="stable")
        return np.asarray(ids, np.int64)[order], np.concatenate(blocks)[order]

    def vectors_of(self, doc_keys: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        keys = list(dict.fromkeys(int(k) for k in doc_keys))
        sources = []
        for start in range(0, len(keys), 1000):
            query = self._live({"terms": {"doc_key": keys[start : start + 1000]}})
            sources.extend(self._scan(query, source=["doc_key", "vectors", "dimension"]))
        return self._vectors_from(sources)

    def iter_vectors(self, batch: int = 1000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        sources = []
        for source in self._scan(self._live({"match_all": {}}), source=["doc_key", "vectors", "dimension", "id"]):
            sources.append(source)
            if len(sources) >= batch:
                yield self._vectors_from(sources)
                sources = []
        if sources:
            yield self._vectors_from(sources)

    def iter_documents(self, batch: int = 1000) -> Iterator[list[StoredDocument]]:
        """Every live document, ``batch`` at a time (what a derived index is rebuilt from)."""
        chunk: list[StoredDocument] = []
        for source in self._scan(self._live({"match_all": {}}), source={"excludes": ["vectors"]}):
            chunk.append(_stored(source))
            if len(chunk) >= batch:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def prune_log(self, below: int) -> int:
        """Nothing to prune: the log is each document's latest change (tombstones included), not a history."""
        return 0

    def check(self) -> list[str]:
        """Elasticsearch checks its own shards; a store it cannot serve fails with BackendUnavailableError."""
        return []

    def count(self) -> int:
        return int(_call("count", self.client.count, index=self.docs, query=self._live({"match_all": {}}))["count"])

    def passage_count(self) -> int:
        response = _call(
            "passage count", self.client.search, index=self.docs, size=0, query=self._live({"match_all": {}}),
            aggs={"passages": {"sum": {"field": "n_passages"}}},
        )
        return int(response["aggregations"]["passages"]["value"] or 0)

    def max_seq(self) -> int:
        """The published head: every change at or below it is written and searchable."""
        return int(self._counters()[0]["seq"])

    def changes_since(self, seq: int):
        from foveal.index.sqlite_store import Change

        head = self.max_seq()
        query = {"range": {"seq": {"gt": seq, "lte": head}}}
        return [
            Change(int(s["seq"]), int(s["doc_key"]), s["id"], "delete" if s.get("deleted") else "upsert")
            for s in self._scan(query, source=["seq", "doc_key", "id", "deleted"], sort="seq")
        ]

    # -- writes ---------------------------------------------------------------------------------------------------
    def write(self, upserts: Sequence, deletes: Sequence[str] = ()) -> dict[str, int]:
        """Reserve seqs and keys, bulk-write every document (each atomic, ``wait_for``), publish the new head.

        Callers serialise writers (the collection's write lock); a concurrent writer elsewhere is detected through
        the counters' optimistic concurrency and refused with :class:`~foveal.errors.IndexLockedError`.
        """
        for prepared in upserts:
            if len(prepared.passages) > MAX_PASSAGES:
                raise ValueError(f"document {prepared.document.id!r} has more than {MAX_PASSAGES} passages")
        known = {s["id"]: s for s in self._mget(list(dict.fromkeys([p.document.id for p in upserts] + list(deletes))))}
        deletes = [d for d in dict.fromkeys(deletes) if d in known and not known[d].get("deleted")]
        n_new = sum(1 for p in upserts if p.document.id not in known)
        n_changes = len(upserts) + len(deletes)
        if n_changes == 0:
            return {}
        counters, token = self._counters()
        start = max(int(counters["seq"]), int(counters.get("reserved_seq", 0)))
        next_key = int(counters["next_doc_key"])
        reserved = {**counters, "reserved_seq": start + n_changes, "next_doc_key": next_key + n_new}
        token = self._put_counters(reserved, token)
        written: dict[str, int] = {}
        actions = []
        seq = start
        for prepared in upserts:
            seq += 1
            doc_id = prepared.document.id
            if doc_id in known:
                key = int(known[doc_id]["doc_key"])  # a tombstone keeps its key for the id
            else:
                key, next_key = next_key, next_key + 1
            actions.append({"_op_type": "index", "_index": self.docs, "_id": es_doc_id(doc_id),
                            "_source": stored_source(prepared, key, seq)})
            written[doc_id] = key
        for doc_id in deletes:
            seq += 1
            key = int(known[doc_id]["doc_key"])
            actions.append({"_op_type": "index", "_index": self.docs, "_id": es_doc_id(doc_id),
                            "_source": tombstone_source(doc_id, key, seq)})
            written[doc_id] = key
        _bulk(self.client, actions, "document store write")
        self._put_counters({**reserved, "seq": start + n_changes}, token)
        return written

    def get_meta(self, key: str) -> str | None:
        from elasticsearch import NotFoundError

        try:
            return self.client.get(index=self.meta, id=f"meta:{key}")["_source"]["value"]
        except NotFoundError:
            return None

    def set_meta(self, key: str, value: str) -> None:
        _call("set meta", self.client.index, index=self.meta, id=f"meta:{key}", document={"value": value},
              refresh="wait_for")

    def drop(self) -> None:
        for index in (self.docs, self.meta):
            _call("delete index", self.client.indices.delete, index=index, ignore_unavailable=True)
