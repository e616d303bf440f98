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

from foveal.index.es_backend.client import _clients as _clients  # tests install a fake server's client here
from foveal.index.es_backend.client import client_for, drop_indexes, es_doc_id, es_server, es_url, index_names
from foveal.index.es_backend.docstore import ElasticsearchDocStore, decode_vectors
from foveal.index.es_backend.docstore import _stored as _stored  # unit-tested on its own
from foveal.index.es_backend.lexical import ElasticsearchLexicalIndex, lexical_actions, lexical_query
from foveal.index.es_backend.mappings import (
    ANALYZER,
    ENGLISH_STOPWORDS,
    analysis_settings,
    docs_body,
    lexical_body,
    vector_body,
    vector_index_options,
)
from foveal.index.es_backend.seqlog import encode_vectors, stored_source, tombstone_source
from foveal.index.es_backend.vectors import ElasticsearchVectorIndex, cosine_from_es, vector_actions

__all__ = [
    "ANALYZER",
    "ENGLISH_STOPWORDS",
    "ElasticsearchDocStore",
    "ElasticsearchLexicalIndex",
    "ElasticsearchVectorIndex",
    "analysis_settings",
    "client_for",
    "cosine_from_es",
    "decode_vectors",
    "docs_body",
    "drop_indexes",
    "encode_vectors",
    "es_doc_id",
    "es_server",
    "es_url",
    "index_names",
    "lexical_actions",
    "lexical_body",
    "lexical_query",
    "stored_source",
    "tombstone_source",
    "vector_actions",
    "vector_body",
    "vector_index_options",
]
