"""The document store on Elasticsearch: :class:`ElasticsearchDocStore` and its reads (one ES document per foveal
id in ``-docs``, tombstones hidden, paged scans, id / metadata / timestamp filters, passage vectors decoded from
base64 float32). Its change log and writes are :class:`~foveal.index.es_backend.seqlog.SeqLog`, which it extends;
the design of both is in the package docstring (:mod:`foveal.index.es_backend`)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from foveal.config import ElasticsearchConfig
from foveal.index.base import StoredDocument, passage_id
from foveal.index.es_backend.client import (
    TERMS_CHUNK,
    _call,
    _ensure_index,
    _name_from_path,
    client_for,
    es_doc_id,
    index_names,
)
from foveal.index.es_backend.mappings import docs_body, meta_body
from foveal.index.es_backend.seqlog import SeqLog


def metadata_matches(metadata: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """SQLite's typed equality: a bool matches only bools, a number only (non-bool) numbers, a string only
    strings; a list means any of its values."""
    for key, spec in wanted.items():
        if isinstance(spec, dict) and "exists" in spec:
            if (key in metadata) != bool(spec["exists"]):
                return False
            continue
        if key not in metadata:
            return False
        have = metadata[key]
        if isinstance(spec, dict) and "range" in spec:
            if not _in_range(have, spec):
                return False
            continue
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


def _in_range(have: Any, spec: dict) -> bool:
    """A metadata range as :meth:`SqliteDocStore.filter_key_array` reads it: numbers against non-bool numbers,
    dates against ISO 8601 text (as instants)."""
    from foveal.documents import parse_timestamp

    if spec.get("dates"):
        if not isinstance(have, str):
            return False
        try:
            value = parse_timestamp(have)
        except ValueError:
            return False
    elif isinstance(have, (int, float)) and not isinstance(have, bool):
        value = float(have)
    else:
        return False
    for op, bound in spec["range"].items():
        if not {"gte": value >= bound, "gt": value > bound, "lte": value <= bound, "lt": value < bound}[op]:
            return False
    return True


def decode_vectors(data: str, dimension: int) -> np.ndarray:
    raw = np.frombuffer(base64.b64decode(data), dtype="<f4").astype(np.float32)
    return raw.reshape(-1, dimension) if dimension else raw.reshape(0, 0)


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


# -- document store -------------------------------------------------------------------------------------------------
class ElasticsearchDocStore(SeqLog):
    """The document store (and change log) on Elasticsearch; same methods as
    :class:`~foveal.index.sqlite_store.SqliteDocStore`. See the package docstring for the log's design."""

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

    def drop(self) -> None:
        for index in (self.docs, self.meta):
            _call("delete index", self.client.indices.delete, index=index, ignore_unavailable=True)
