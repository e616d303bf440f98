"""BM25 over title and text on an embedded tantivy index, behind :class:`~foveal.index.base.LexicalIndex`.

Both fields are analyzed the same way: simple tokenizer, lower case, long tokens dropped, English stop words, and
the Snowball English stemmer (each by config). A query is analyzed with the same analyzer and becomes a
disjunction of term queries over both fields with their boosts, so it can never be a syntax error: what a user
types is text, not query language.

Example::

    >>> index = TantivyLexicalIndex(None)
    >>> index.upsert([LexicalDocument(1, "d1", "Tides", "The moon pulls the oceans")]); index.commit()
    >>> index.search("ocean tide", 5)[0][0]
    1
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import tantivy

from foveal.config import LexicalConfig
from foveal.errors import ConfigError
from foveal.index.base import LexicalDocument, sorted_unique

_ANALYZER = "foveal_text"
#: Allow-lists up to this many documents restrict the search inside tantivy (a term-set query on ``doc_key``);
#: larger ones (whose term set costs tens of ms to build: 46 ms for 5,000 keys here) filter the unrestricted
#: ranking through a bitmap instead, fetching deep enough for the allowed share and deeper until ``k`` are found.
TERM_SET_MAX = 512


def build_analyzer(config: LexicalConfig) -> tantivy.TextAnalyzer:
    builder = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
    builder = builder.filter(tantivy.Filter.remove_long(40)).filter(tantivy.Filter.lowercase())
    try:
        if config.stopwords:
            builder = builder.filter(tantivy.Filter.stopword(config.language))
        if config.stemming:
            builder = builder.filter(tantivy.Filter.stemmer(config.language))
    except ValueError as exc:
        raise ConfigError(f"lexical.language {config.language!r}: {exc}") from None
    return builder.build()


class TantivyLexicalIndex:
    """``path=None`` keeps the index in memory (tests)."""

    #: The folder is seen by every process: readers reload it, the writer (under the collection's lock) adds.
    shared = True

    def __init__(self, path: Path | None, config: LexicalConfig | None = None, *, writable: bool = True) -> None:
        self.config = config or LexicalConfig()
        self.analyzer = build_analyzer(self.config)
        schema = tantivy.SchemaBuilder()
        schema.add_unsigned_field("doc_key", stored=True, indexed=True, fast=True)
        schema.add_text_field("id", stored=False, tokenizer_name="raw", index_option="basic")
        schema.add_text_field("title", stored=False, tokenizer_name=_ANALYZER, index_option="freq")
        schema.add_text_field("text", stored=False, tokenizer_name=_ANALYZER, index_option="freq")
        self.schema = schema.build()
        self.path = Path(path) if path is not None else None
        if path is not None:
            Path(path).mkdir(parents=True, exist_ok=True)
            self.index = tantivy.Index(self.schema, path=str(path), reuse=True)
        else:
            self.index = tantivy.Index(self.schema)
        self.index.register_tokenizer(_ANALYZER, self.analyzer)
        self._writable = writable
        self._writer = None
        self._lock = threading.Lock()
        if path is not None:
            self.probe()  # damaged files fail here (ValueError), where the collection rebuilds the index

    def _get_writer(self):
        if not self._writable:
            raise RuntimeError("this lexical index was opened read-only")
        if self._writer is None:
            self._writer = self.index.writer(heap_size=64_000_000, num_threads=1)
        return self._writer

    def upsert(self, documents: Sequence[LexicalDocument]) -> None:
        with self._lock:
            writer = self._get_writer()
            for doc in documents:
                writer.delete_documents_by_term("id", doc.id)
                document = tantivy.Document()
                document.add_unsigned("doc_key", doc.doc_key)
                document.add_text("id", doc.id)
                document.add_text("title", doc.title)
                document.add_text("text", doc.text)
                writer.add_document(document)

    def remove(self, doc_ids: Iterable[str]) -> None:
        with self._lock:
            writer = self._get_writer()
            for doc_id in doc_ids:
                writer.delete_documents_by_term("id", doc_id)

    def commit(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.commit()
                self._writer.wait_merging_threads()
                self._writer = None
            self.index.reload()

    def refresh(self) -> None:
        self.index.reload()

    def drop(self) -> None:
        """Delete the folder (a rebuild starts from an empty one)."""
        with self._lock:
            self._writer = None
            if self.path is not None:
                shutil.rmtree(self.path, ignore_errors=True)

    def probe(self) -> None:
        """Read every segment's term dictionary and postings once (a search over a term of every field), so that
        damaged files fail here, at open, rather than on a user's query."""
        searcher = self.index.searcher()
        for field in ("title", "text"):
            searcher.search(tantivy.Query.term_query(self.schema, field, "foveal", index_option="freq"), limit=1)
        for _score, address in searcher.search(tantivy.Query.all_query(), limit=1).hits:
            searcher.doc(address)

    def analyze(self, text: str) -> list[str]:
        return list(self.analyzer.analyze(text))

    def build_query(self, text: str, term_weights: Mapping[str, float] | None = None):
        """The query for ``text``; with ``term_weights`` (analysed term -> weight, e.g. an RM3 expansion) the
        weighted terms instead, each term query boosted by its weight."""
        if term_weights is not None:
            terms = [t for t, w in term_weights.items() if w > 0]
        else:
            terms = list(dict.fromkeys(self.analyze(text)))
        if not terms:
            return None, []
        clauses = []
        for field, boost in (("title", self.config.title_boost), ("text", self.config.text_boost)):
            if boost <= 0:
                continue
            for term in terms:
                query = tantivy.Query.term_query(self.schema, field, term, index_option="freq")
                weight = boost * (term_weights[term] if term_weights is not None else 1.0)
                if weight != 1.0:
                    query = tantivy.Query.boost_query(query, weight)
                clauses.append((tantivy.Occur.Should, query))
        if not clauses:
            return None, terms
        return tantivy.Query.boolean_query(clauses), terms

    def search_weighted(
        self, term_weights: Mapping[str, float], k: int, allowed: Iterable[int] | None = None
    ) -> list[tuple[int, float]]:
        """BM25 of a weighted bag of analysed terms (a query rewrite such as RM3's), best first."""
        return self.search("", k, allowed, term_weights=term_weights)

    def search(self, query: str, k: int, allowed: Iterable[int] | None = None,
               term_weights: Mapping[str, float] | None = None) -> list[tuple[int, float]]:
        """``allowed`` (doc_keys) restricts the match set: inside tantivy for short lists (a term-set query on
        ``doc_key``), through a bitmap over the ranking for long ones (:data:`TERM_SET_MAX`); the same hits in the
        same order either way. ``term_weights``: a weighted bag of analysed terms instead of ``query``."""
        compiled, _ = self.build_query(query, term_weights)
        if compiled is None or k <= 0:
            return []
        searcher = self.index.searcher()
        if allowed is not None:
            keys = sorted_unique(allowed)
            if not keys.size:
                return []
            if keys.size > TERM_SET_MAX:
                return self._post_filtered(searcher, compiled, k, keys)
            # boosted to 0: the restriction must not add to the score (it added 1.0 to every filtered BM25 score)
            restrict = tantivy.Query.boost_query(
                tantivy.Query.term_set_query(self.schema, "doc_key", keys.tolist()), 0.0)
            compiled = tantivy.Query.boolean_query([(tantivy.Occur.Must, compiled), (tantivy.Occur.Must, restrict)])
        return self._hits(searcher, compiled, k)

    @staticmethod
    def _hits(searcher, compiled, limit: int) -> list[tuple[int, float]]:
        hits = searcher.search(compiled, limit=limit).hits
        if not hits:
            return []
        # doc_key is a fast field: one columnar read for the page, not a stored-document load per hit
        keys = searcher.fast_field_values("doc_key", [address for _, address in hits])
        return [(int(key) if key is not None else int(searcher.doc(address)["doc_key"][0]), float(score))
                for (score, address), key in zip(hits, keys)]

    def _post_filtered(self, searcher, compiled, k: int, keys: np.ndarray) -> list[tuple[int, float]]:
        top = int(keys[-1])
        bitmap = np.zeros(top + 1, dtype=bool)
        bitmap[keys] = True
        share = min(1.0, keys.size / max(1, int(searcher.num_docs)))
        limit = max(k, int(k / share * 1.5) + 16)
        while True:
            found = self._hits(searcher, compiled, limit)
            kept = [(key, score) for key, score in found if key <= top and bitmap[key]]
            if len(kept) >= k or len(found) < limit:
                return kept[:k]
            limit *= 4

    def __len__(self) -> int:
        return int(self.index.searcher().num_docs)
