"""An in-memory stand-in for the few Elasticsearch REST endpoints foveal's backend calls, plugged in under the
official client at its transport (so the client's own request building, bulk helper and error mapping run).

It is *not* Elasticsearch: it lets the contract suite exercise the backend's code paths (bulk actions, counters
with ``if_seq_no``, ``search_after`` paging, tombstones, kNN parsing) on machines without a server. What it models:
near-real-time search (searches see the state of the last refresh; GET and mget are real-time), optimistic
concurrency, the analyzer from the index settings (pattern tokenizer, length, lowercase, stop, snowball via
tantivy's stemmer), Lucene's BM25 for ``term`` queries, and exact cosine kNN scored ``(1 + cos) / 2``
with its ``filter`` applied before the top k (as ES does; the fake has no approximation, so ES's HNSW recall is
not modelled). Filter queries: term, terms, ids, range, bool (filter/must/should/must_not); filter clauses score 0
as in ES. Limits: no max_terms_count / max_clause_count enforcement, no query parsing of other kinds. Anything
else answers 400, so a request outside that subset fails loudly instead of passing silently.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import math
import threading
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import numpy as np
import regex
import tantivy
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig, TransportApiResponse


class _Index:
    def __init__(self, body: dict[str, Any]) -> None:
        self.settings = body.get("settings", {})
        self.mappings = body.get("mappings", {})
        self.live: dict[str, dict[str, Any]] = {}  # _id -> {"_source", "_seq_no"}
        self.visible: dict[str, dict[str, Any]] = {}
        self.seq_no = 0
        self._analyzer = self._build_analyzer()

    def refresh(self) -> None:
        self.visible = copy.deepcopy(self.live)

    def _build_analyzer(self):
        analysis = self.settings.get("analysis")
        if not analysis:
            return None
        (name, analyzer), = analysis["analyzer"].items()
        tokenizer = analysis["tokenizer"][analyzer["tokenizer"]]
        assert tokenizer["type"] == "pattern"
        steps = []
        for filter_name in analyzer["filter"]:
            if filter_name == "lowercase":
                steps.append(("lowercase", None))
                continue
            spec = analysis["filter"][filter_name]
            if spec["type"] == "length":
                steps.append(("length", (spec.get("min", 0), spec["max"])))
            elif spec["type"] == "stop":
                assert isinstance(spec["stopwords"], list), "the fake knows explicit stop lists only"
                steps.append(("stop", set(spec["stopwords"])))
            elif spec["type"] == "snowball":
                stemmer = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.raw()).filter(
                    tantivy.Filter.stemmer(spec["language"].lower())).build()
                steps.append(("stem", stemmer))
            else:
                raise ValueError(f"fake: unknown filter {spec['type']}")
        pattern = tokenizer["pattern"]

        def analyze(text: str) -> list[str]:
            tokens = [t for t in regex.split(pattern, text) if t]
            for kind, arg in steps:
                if kind == "lowercase":
                    tokens = [t.lower() for t in tokens]
                elif kind == "length":
                    tokens = [t for t in tokens if arg[0] <= len(t) <= arg[1]]
                elif kind == "stop":
                    tokens = [t for t in tokens if t not in arg]
                else:
                    tokens = [arg.analyze(t)[0] for t in tokens]
            return tokens

        return analyze

    def field_type(self, field: str) -> str:
        return self.mappings.get("properties", {}).get(field, {}).get("type", "keyword")


class FakeElasticsearch:
    """Install with :meth:`install` on a client; every request of that client (and its ``options()`` copies,
    which share the transport) is answered here."""

    def __init__(self) -> None:
        self.indexes: dict[str, _Index] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.RLock()

    def install(self, client) -> None:
        client.transport.perform_request = self.perform_request

    # -- transport -------------------------------------------------------------------------------------------------
    def perform_request(self, method: str, target: str, *, body: Any = None, **_: Any) -> TransportApiResponse:
        split = urlsplit(target)
        path = [unquote(p) for p in split.path.strip("/").split("/") if p]
        params = dict(parse_qsl(split.query))
        self.requests.append((method, split.path))
        if isinstance(body, list):  # the bulk helper sends serialized lines
            body = [json.loads(line) if isinstance(line, (bytes, str)) else line for line in body]
        elif isinstance(body, (bytes, str)):
            text = body.decode() if isinstance(body, bytes) else body
            body = [json.loads(line) for line in text.splitlines() if line.strip()] if "_bulk" in path else json.loads(text)
        with self._lock:
            try:
                status, payload = self._route(method, path, params, body)
            except KeyError as exc:
                status, payload = 404, {"error": {"type": "index_not_found_exception", "reason": str(exc)}}
        meta = ApiResponseMeta(status=status, http_version="1.1",
                               headers=HttpHeaders({"x-elastic-product": "Elasticsearch"}), duration=0.0,
                               node=NodeConfig("http", "fake", 9200))
        return TransportApiResponse(meta, payload)

    def _route(self, method, path, params, body):
        if not path:
            return 200, {"version": {"number": "9.5.1"}}
        name, rest = path[0], path[1:]
        if name == "_bulk":
            return self._bulk(None, params, body)
        if not rest:
            if method == "HEAD":
                return (200 if name in self.indexes else 404), None
            if method == "PUT":
                if name in self.indexes:
                    return 400, {"error": {"type": "resource_already_exists_exception"}}
                self.indexes[name] = _Index(body or {})
                return 200, {"acknowledged": True}
            if method == "DELETE":
                for existing in [n for n in self.indexes if fnmatch.fnmatch(n, name)]:
                    del self.indexes[existing]
                return 200, {"acknowledged": True}
        index = self.indexes[name]
        op = rest[0]
        if op == "_bulk":
            return self._bulk(name, params, body)
        if op == "_refresh":
            index.refresh()
            return 200, {}
        if op == "_doc" and method == "GET":
            doc = index.live.get(rest[1])
            if doc is None:
                return 404, {"_index": name, "_id": rest[1], "found": False}
            return 200, {"_index": name, "_id": rest[1], "found": True, "_source": copy.deepcopy(doc["_source"]),
                         "_seq_no": doc["_seq_no"], "_primary_term": 1}
        if op in ("_doc", "_create") and method in ("PUT", "POST"):
            doc_id = rest[1]
            existing = index.live.get(doc_id)
            if params.get("op_type") == "create" or op == "_create":
                if existing is not None:
                    return 409, {"error": {"type": "version_conflict_engine_exception"}}
            if "if_seq_no" in params:
                if existing is None or existing["_seq_no"] != int(params["if_seq_no"]):
                    return 409, {"error": {"type": "version_conflict_engine_exception"}}
            seq_no = self._put(index, doc_id, body)
            self._maybe_refresh(index, params)
            return 200, {"_index": name, "_id": doc_id, "result": "updated" if existing else "created",
                         "_seq_no": seq_no, "_primary_term": 1}
        if op == "_mget":
            docs = []
            for doc_id in body["ids"]:
                doc = index.live.get(doc_id)
                docs.append({"_id": doc_id, "found": doc is not None,
                             **({"_source": copy.deepcopy(doc["_source"])} if doc else {})})
            return 200, {"docs": docs}
        if op == "_count":
            return 200, {"count": len(self._matching(index, (body or {}).get("query")))}
        if op == "_search":
            return 200, self._search(index, body or {})
        if op == "_delete_by_query":
            doomed = self._matching(index, body["query"])
            for doc_id in doomed:
                index.live.pop(doc_id, None)
            self._maybe_refresh(index, params)
            return 200, {"deleted": len(doomed)}
        return 400, {"error": {"type": "fake_unsupported", "reason": f"{method} /{'/'.join(path)}"}}

    # -- writes ----------------------------------------------------------------------------------------------------
    def _put(self, index: _Index, doc_id: str, source: dict[str, Any]) -> int:
        self._check_strict(index, source)
        index.seq_no += 1
        index.live[doc_id] = {"_source": copy.deepcopy(source), "_seq_no": index.seq_no}
        return index.seq_no

    def _check_strict(self, index: _Index, source: dict[str, Any]) -> None:
        if index.mappings.get("dynamic") == "strict":
            unknown = set(source) - set(index.mappings.get("properties", {}))
            if unknown:
                raise ValueError(f"strict mapping refuses {sorted(unknown)}")
        for field, spec in index.mappings.get("properties", {}).items():
            if spec.get("type") == "dense_vector" and field in source:
                if len(source[field]) != spec["dims"]:
                    raise ValueError("wrong dims")

    def _maybe_refresh(self, index: _Index, params: dict[str, str]) -> None:
        if params.get("refresh") in ("true", "wait_for", ""):
            index.refresh()

    def _bulk(self, default_index, params, lines):
        items, errors, touched = [], False, set()
        i = 0
        while i < len(lines):
            (action, meta), = lines[i].items()
            name = meta.get("_index", default_index)
            index = self.indexes[name]
            touched.add(name)
            if action == "delete":
                found = index.live.pop(meta["_id"], None)
                items.append({"delete": {"_id": meta["_id"], "status": 200 if found else 404,
                                         "result": "deleted" if found else "not_found"}})
                i += 1
                continue
            source = lines[i + 1]
            i += 2
            try:
                self._put(index, meta["_id"], source)
                items.append({action: {"_id": meta["_id"], "status": 201}})
            except ValueError as exc:
                errors = True
                items.append({action: {"_id": meta["_id"], "status": 400,
                                       "error": {"type": "document_parsing_exception", "reason": str(exc)}}})
        for name in touched:
            self._maybe_refresh(self.indexes[name], params)
        return 200, {"errors": errors, "items": items, "took": 0}

    # -- reads -----------------------------------------------------------------------------------------------------
    def _matching(self, index: _Index, query: dict[str, Any] | None) -> dict[str, float]:
        """_id -> score of the visible documents that match ``query``."""
        out = {}
        for doc_id, doc in index.visible.items():
            score = self._score(index, query or {"match_all": {}}, doc["_source"], doc_id)
            if score is not None:
                out[doc_id] = score
        return out

    def _score(self, index: _Index, query: dict[str, Any], source: dict[str, Any],
               doc_id: str | None = None) -> float | None:
        (kind, spec), = query.items()
        if kind == "match_all":
            return 1.0
        if kind == "ids":
            return 1.0 if doc_id in set(spec["values"]) else None
        if kind == "term":
            (field, value), = spec.items()
            boost = 1.0
            if isinstance(value, dict):
                value, boost = value["value"], value.get("boost", 1.0)
            if index.field_type(field) == "text":
                return self._bm25(index, field, value, source, boost)
            return 1.0 if source.get(field) == value else None
        if kind == "terms":
            (field, values), = spec.items()
            return 1.0 if source.get(field) in set(values) else None
        if kind == "range":
            (field, bounds), = spec.items()
            value = source.get(field)
            if value is None:
                return None
            checks = {"gt": value.__gt__, "gte": value.__ge__, "lt": value.__lt__, "lte": value.__le__}
            return 1.0 if all(checks[op](bound) for op, bound in bounds.items()) else None
        if kind == "bool":
            if any(self._score(index, q, source, doc_id) is None for q in spec.get("filter", [])):
                return None
            if any(self._score(index, q, source, doc_id) is not None for q in spec.get("must_not", [])):
                return None
            must = [self._score(index, q, source, doc_id) for q in spec.get("must", [])]
            if any(m is None for m in must):
                return None
            should = [s for s in (self._score(index, q, source, doc_id) for q in spec.get("should", []))
                      if s is not None]
            if len(should) < spec.get("minimum_should_match", 0 if not spec.get("should") else 1):
                return None
            return sum(must) + sum(should)
        raise ValueError(f"fake: unsupported query {kind}")

    def _bm25(self, index: _Index, field: str, term: str, source: dict[str, Any], boost: float) -> float | None:
        tokens = index._analyzer(source.get(field, ""))
        tf = tokens.count(term)
        if tf == 0:
            return None
        similarity = index.settings.get("similarity", {}).get("default", {})
        k1, b = similarity.get("k1", 1.2), similarity.get("b", 0.75)
        docs = [t for t in (index._analyzer(d["_source"].get(field, "")) for d in index.visible.values()) if t]
        n_docs = len(docs) or 1  # Lucene's docCount: documents with the field
        df = sum(1 for d in docs if term in d)
        avgdl = sum(len(d) for d in docs) / n_docs
        idf = math.log(1 + (n_docs - df + 0.5) / (df + 0.5))
        return boost * idf * tf / (tf + k1 * (1 - b + b * len(tokens) / avgdl))

    def _search(self, index: _Index, body: dict[str, Any]) -> dict[str, Any]:
        if "knn" in body:
            knn = body["knn"]
            query = np.asarray(knn["query_vector"], np.float64)
            scored = {}
            candidates = index.visible.items()
            if "filter" in knn:  # a pre-filter, as ES applies it during the search: k hits when k docs pass
                candidates = [(i, d) for i, d in candidates
                              if self._score(index, knn["filter"], d["_source"], i) is not None]
            for doc_id, doc in candidates:
                vector = np.asarray(doc["_source"][knn["field"]], np.float64)
                cos = float(vector @ query / (np.linalg.norm(vector) * np.linalg.norm(query)))
                scored[doc_id] = (1 + cos) / 2
            matched = dict(sorted(scored.items(), key=lambda kv: -kv[1])[: knn["k"]])
        else:
            matched = self._matching(index, body.get("query"))
        hits = [(doc_id, score, index.visible[doc_id]["_source"]) for doc_id, score in matched.items()]
        sort = body.get("sort")
        if sort:
            keys = [next(iter(s)) for s in sort]
            hits.sort(key=lambda h: tuple(h[2].get(k) for k in keys))
            if "search_after" in body:
                after = tuple(body["search_after"])
                hits = [h for h in hits if tuple(h[2].get(k) for k in keys) > after]
        else:
            hits.sort(key=lambda h: -h[1])
        size = body.get("size", 10)
        out_hits = []
        for doc_id, score, source in hits[:size]:
            hit: dict[str, Any] = {"_id": doc_id, "_score": None if sort else score}
            selected = _select_source(source, body.get("_source", True))
            if selected is not None:
                hit["_source"] = selected
            if body.get("docvalue_fields"):
                hit["fields"] = {f: [source[f]] for f in body["docvalue_fields"] if f in source}
            if sort:
                hit["sort"] = [source.get(k) for k in keys]
            out_hits.append(hit)
        response: dict[str, Any] = {"hits": {"total": {"value": len(hits), "relation": "eq"}, "hits": out_hits}}
        for name, agg in (body.get("aggs") or {}).items():
            (kind, spec), = agg.items()
            if kind != "sum":
                raise ValueError(f"fake: unsupported aggregation {kind}")
            response.setdefault("aggregations", {})[name] = {
                "value": float(sum(h[2].get(spec["field"], 0) for h in hits))}
        return response


def _select_source(source: dict[str, Any], spec: Any) -> dict[str, Any] | None:
    if spec is False:
        return None
    if spec is True:
        return copy.deepcopy(source)
    if isinstance(spec, list):
        return {k: copy.deepcopy(v) for k, v in source.items() if k in spec}
    if isinstance(spec, dict):
        excludes = set(spec.get("excludes", []))
        includes = spec.get("includes")
        return {k: copy.deepcopy(v) for k, v in source.items()
                if k not in excludes and (includes is None or k in includes)}
    raise ValueError(f"fake: unsupported _source {spec!r}")
