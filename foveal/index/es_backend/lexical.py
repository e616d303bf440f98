"""BM25 on Elasticsearch: the bulk actions and the query (tantivy's disjunction of boosted term queries over title
and text, built from terms analysed locally by foveal's tantivy analyzer) and :class:`ElasticsearchLexicalIndex`.
The index's analyzer and mappings are in :mod:`.mappings`; why they match tantivy is in the package docstring."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from foveal.config import ElasticsearchConfig, LexicalConfig
from foveal.index.base import LexicalDocument
from foveal.index.es_backend.client import (
    MAX_RESULTS,
    _bulk,
    _call,
    _ensure_index,
    _name_from_path,
    allowed_filter,
    client_for,
    es_doc_id,
    index_names,
    unavailable,
)
from foveal.index.es_backend.mappings import lexical_body


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
                raise unavailable(self.client, "lexical remove", exc) from exc
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
