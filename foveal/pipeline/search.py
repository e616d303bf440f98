"""The search pipeline: encode -> retrieve (BM25 ‖ dense) -> fuse -> aggregate passages -> rerank -> hits.

Dense retrieval works on passages; a document's dense score is its best passage's (MaxP), and the hit names that
passage.

Paging: a request for ``k`` hits at ``offset`` fetches every list ``depth = max(fusion.window, k + offset)`` deep
(MaxP keeps fetching passages until ``depth`` distinct documents are found or the index is exhausted) and orders
each by (score, doc_key), fetching past the cut while the scores there tie, so each list is a total order that
does not depend on how deep it was fetched. Fusion scores only each list's first ``fusion.window`` entries (see
:mod:`foveal.pipeline.fusion`), and rerankers see the first ``fusion.window`` candidates, so concatenated pages of
``k`` equal one request for the total: no duplicate, no gap. This is exact for exact retrieval (BM25, Flat); an
approximate index (HNSW, IVF) searched deeper may find better neighbours than a shallow search did.

A BM25 hit names the passage holding the most query terms. Stages are plain objects behind the seams in
:mod:`foveal.encoders.base` (query stages) and :mod:`foveal.rerank.base` (rerankers), so research stages plug in
without this module knowing which run.

Example::

    >>> searcher = SearchPipeline(collection)                          # doctest: +SKIP
    >>> searcher.search(SearchRequest(query="tides", k=3)).hits[0].id  # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from foveal.config import FusionConfig, FusionMethod, Pipeline
from foveal.encoders.base import QueryStage, QueryTokens
from foveal.index.base import MAX_PASSAGES, PASSAGE_BITS, sorted_unique
from foveal.index.collection import Collection
from foveal.pipeline.batcher import MicroBatcher
from foveal.pipeline.feedback import rm3, rocchio, weights_summary
from foveal.pipeline.fusion import collect_sources, completion_keys, fuse_explained, regularize
from foveal.pipeline.timing import StageTimes, record
from foveal.pipeline.request import Hit, PassageInfo, SearchRequest, SearchResponse
from foveal.documents import format_timestamp, vector_problem
from foveal.events import document_cutoff
from foveal.freshness import apply_freshness
from foveal.rerank.base import Candidate, Reranker

#: Passages fetched per wanted document in MaxP's first round (documents have ~2 passages on average); later
#: rounds fetch 4x more until enough distinct documents are found.
PASSAGES_PER_DOCUMENT = 4


def _env_number(name: str, default: float, low: float, high: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        from foveal.errors import ConfigError

        raise ConfigError(f"{name}={raw!r}: give a number from {low:g} to {high:g}")
    return value


#: Query micro-batching (see :class:`~foveal.pipeline.batcher.MicroBatcher`): at most this many concurrent
#: searches share one encoder pass and one FAISS call per filter group (``FOVEAL_QUERY_BATCH``, 1 = off) ...
MAX_QUERY_BATCH = int(_env_number("FOVEAL_QUERY_BATCH", 32, 1, 1024))
#: ... and a batch waits at most this long for more to arrive, only while other searches are in flight
#: (``FOVEAL_QUERY_BATCH_WAIT_MS``; a lone search never waits).
QUERY_BATCH_WAIT_MS = _env_number("FOVEAL_QUERY_BATCH_WAIT_MS", 3.0, 0.0, 100.0)
#: How far past the cut a BM25 list is fetched first. One past it would do when no score ties there; when one
#: does, the list is fetched again, 4x deeper, until the tie ends: on the 100k-document bench index that was a
#: third of SciFact's queries at the cut of 100, and the second fetch cost more than the first, while the tie
#: runs were short. ``bench/perf.py micro`` measures both (docs/performance.md).
LEXICAL_SLACK = 16
#: A search alone in the pipeline runs BM25 in a second thread beside its encoding (``FOVEAL_BM25_BESIDE``, 0 = off).
BM25_BESIDE = _env_number("FOVEAL_BM25_BESIDE", 1, 0, 1) >= 1


@dataclass(slots=True)
class _Prepared:
    """One request after the batched part of a search (encode, query stages, allow-list, the first dense round)."""

    times: StageTimes = field(default_factory=StageTimes)
    vector: np.ndarray | None = None
    plain_vector: np.ndarray | None = None  # the encoder's own (before query stages), for rerankers that attend
    truncated: int | None = None
    tokens: QueryTokens | None = None
    query_info: dict = field(default_factory=dict)
    allowed: np.ndarray | None = None  # sorted unique doc_keys of a filtered search
    within: dict | None = None  # the filter's metadata conditions, which every allowed document meets
    cutoff: float | None = None  # the request's ``now`` (epoch seconds) when it hides later documents
    dense_filter: object = None  # what the vector index takes as ``allowed`` (a DocFilter or passage ids)
    available: int = 0  # vectors the dense search may return
    first: tuple | None = None  # (limit, scores row, ids row) of the first MaxP round, searched with the batch
    dense: tuple | None = None  # (documents, best passages) of the first dense search, when the batch made it
    rocchio: tuple | None = None  # (moved vector, evidence, first round of its search or None), made with the batch
    lexical: Future | None = None  # the BM25 list, searched beside the encoder when the search was alone
    error: BaseException | None = None
    batch_started: float = 0.0  # perf_counter when the batch this request was in began


@dataclass
class _Submitted:
    """One search as it joins a micro-batch: the request, its BM25 list when it runs beside the encoder, and when
    it was submitted (its ``queue_wait`` runs from here to the batch's start)."""

    request: SearchRequest
    lexical: Future | None
    submitted: float


class SearchPipeline:
    def __init__(
        self,
        collection: Collection,
        query_stages: Sequence[QueryStage] | None = None,
        rerankers: Sequence[Reranker] | None = None,
    ) -> None:
        self.collection = collection
        if query_stages is None:  # the index's own: LexSemBridge when its config names modulation weights
            query_stages = []
            lexsem = getattr(getattr(collection, "config", None), "lexsem", None)
            if lexsem is not None and lexsem.modulation:  # only then import it (torch): BM25-only runs stay light
                from foveal.encoders.lexsem import default_query_stages

                query_stages = default_query_stages(collection)
        self.query_stages = list(query_stages)
        if not any(getattr(stage, "name", None) == "events" for stage in self.query_stages):
            from foveal.events import EventStage  # off unless events.enabled or stages.events (a no-op then)

            self.query_stages.append(EventStage(collection))
        if rerankers is None:  # the index's own: the Pyramid-ERNIE stage when trained weights are found
            from foveal.rerank.stage import default_rerankers

            rerankers = default_rerankers(collection.config.rerank)
            if collection.config.paraformer.model is not None:  # runs per paraformer.enabled / stages.paraformer
                from foveal.rerank.paraformer import ParaformerStage

                rerankers = list(rerankers) + [ParaformerStage(collection.config.paraformer,
                                                               collection.config.sentence_vectors)]
            xpool = collection.config.xpool
            if xpool.model is not None:  # X-Pool: where a checkpoint is named (run per xpool.enabled / request)
                from foveal.rerank.xpool import XPoolReranker

                rerankers = list(rerankers) + [XPoolReranker(config=xpool)]
        self.rerankers = list(rerankers)
        self._batcher: MicroBatcher[_Submitted, SearchResponse | Exception] = MicroBatcher(
            self._run_batch, max_batch=max(1, MAX_QUERY_BATCH), max_wait_s=max(0.0, QUERY_BATCH_WAIT_MS) / 1000)
        self._beside: ThreadPoolExecutor | None = None  # made by the first search that runs BM25 beside the encoder
        self._beside_lock = threading.Lock()

    # -- public --------------------------------------------------------------------------------------------------
    @property
    def batch_stats(self) -> tuple[int, int]:
        """(micro-batches run, searches they held): their ratio is the mean batch size (``/metrics``)."""
        return self._batcher.batches, self._batcher.items

    def search(self, request: SearchRequest) -> SearchResponse:
        """One search. Concurrent calls on one pipeline (the server's threads) are micro-batched: their queries
        share one encoder pass and their first dense round one FAISS call per filter group (see
        :class:`~foveal.pipeline.batcher.MicroBatcher`), and the batch's leader finishes every search of its batch
        (:meth:`_run_batch`); results are the same as searching alone."""
        started = time.perf_counter()
        self._check_request(request)
        with self._batcher.active():
            self.collection.refresh()
            lexical = self._lexical_beside(request)
            try:
                result = self._batcher.submit(_Submitted(request, lexical, time.perf_counter()))
            except BaseException:
                if lexical is not None:
                    lexical.cancel()
                raise
        if isinstance(result, BaseException):  # this search's own error, raised in its own thread
            raise result
        result.took_ms = round((time.perf_counter() - started) * 1000, 3)
        return result

    def _run_batch(self, items: list["_Submitted"]) -> list["SearchResponse | Exception"]:
        """The micro-batch's work, all of it in the leader's thread: the batched part (:meth:`_prepare`, which
        hands the encoder on once the queries are encoded), then the rest of each search in turn (rerank stages
        included). Every follower sleeps until the batch is done. Before, each follower woke to finish its own
        search, and a batch of sixteen put sixteen threads at once on the interpreter lock (docs/performance.md;
        handing each follower its answer as soon as it was ready measured slower too). A search that fails gets its
        error as its result; the others go on."""
        prepared = self._prepare([item.request for item in items])
        out: list[SearchResponse | Exception] = []
        for item, one in zip(items, prepared):
            one.lexical = item.lexical
            one.times.seconds = {"queue_wait": max(0.0, one.batch_started - item.submitted), **one.times.seconds}
            try:
                out.append(self._finish(item.request, one))
            except Exception as exc:  # noqa: BLE001 - raised in the request's own thread by search()
                out.append(exc)
        return out

    def _lexical_beside(self, request: SearchRequest) -> Future | None:
        """A search alone in the pipeline runs its BM25 retrieval in a second thread while its query is encoded and
        its vectors searched (the encoder releases the GIL), as Elasticsearch runs a hybrid query's retrievers side
        by side: a lone search's latency drops by the BM25 time. Under load each core is busy with other searches
        already, and a second thread would only add its handoffs: then BM25 runs in line, as before. A filtered
        search resolves its filter in that thread too (the batch resolves it again for the dense side: the
        in-memory columns make that a fraction of a millisecond). Not with a ``now`` cutoff, whose allow-list the
        batch makes."""
        if (not BM25_BESIDE or request.pipeline not in (Pipeline.bm25, Pipeline.hybrid) or not self._batcher.alone()
                or document_cutoff(request, self.collection.config.events) is not None):
            return None
        with self._beside_lock:
            if self._beside is None:
                self._beside = ThreadPoolExecutor(1, thread_name_prefix="foveal-bm25")
        return self._beside.submit(self._lexical_filtered, request)

    def _lexical_filtered(self, request: SearchRequest) -> list[tuple[int, float]]:
        """:meth:`_lexical` for a request on its own: its filter resolved here."""
        f = request.filter
        allowed = self._allowed(f) if f is not None else None
        within = f.metadata_conditions() if f is not None else None
        return self._lexical(request.query, self._window(request), allowed, within=within)

    def search_many(self, requests: Sequence[SearchRequest]) -> list[SearchResponse]:
        """Search several requests; their queries are encoded in one batch."""
        self.collection.refresh()
        for request in requests:
            self._check_request(request)
        started = time.perf_counter()
        prepared = self._prepare(list(requests))
        shared_ms = (time.perf_counter() - started) * 1000 / max(1, len(requests))
        responses = []
        for request, one in zip(requests, prepared):
            t0 = time.perf_counter()
            response = self._finish(request, one)
            response.took_ms = round(shared_ms + (time.perf_counter() - t0) * 1000, 3)
            responses.append(response)
        return responses

    # -- the batched part ----------------------------------------------------------------------------------------
    def _prepare(self, requests: list[SearchRequest]) -> list[_Prepared]:
        """Encode the queries in one pass, apply query stages, build each allow-list once, and run the first MaxP
        round of every dense search as one FAISS call per (filter, depth) group. A request that fails here gets
        its error in its own slot; the others go on."""
        batch_started = time.perf_counter()
        out = [_Prepared(batch_started=batch_started) for _ in requests]
        for request, one in zip(requests, out):  # a request that brings its query vector is not encoded
            if request.vector is not None and request.pipeline != Pipeline.bm25:
                vector = np.asarray(request.vector, dtype=np.float32)
                one.vector = vector / np.linalg.norm(vector)
        dense_rows = [i for i, r in enumerate(requests) if r.pipeline != Pipeline.bm25 and r.vector is None]
        if dense_rows:
            texts = [requests[i].query for i in dense_rows]
            t0 = time.perf_counter()
            try:
                if self._stages_want_tokens([requests[i] for i in dense_rows]):  # only then: encoders that know nothing of tokens keep working
                    encoded = self.collection.encoder.encode_queries(texts, with_tokens=True)
                else:
                    encoded = self.collection.encoder.encode_queries(texts)
            except Exception as exc:  # noqa: BLE001 - every request of the batch gets it
                for one in out:
                    one.error = exc
                return out
            encode_s = time.perf_counter() - t0
            self._batcher.handoff()  # the encoder is free: the next micro-batch may encode while this one searches
            for n, i in enumerate(dense_rows):
                one = out[i]
                one.times.add("query_encode", encode_s)
                one.vector = encoded.vectors[n]
                one.truncated = encoded.truncated_tokens[n]
                one.tokens = encoded.tokens(n)
        groups: dict[tuple, list[int]] = {}
        for i, (request, one) in enumerate(zip(requests, out)):
            try:
                self._prepare_one(request, one)
            except Exception as exc:  # noqa: BLE001 - raised in the request's own thread by _finish
                one.error = exc
                continue
            if one.vector is not None and one.available:
                limit = min(self._window(request) * PASSAGES_PER_DOCUMENT, one.available)
                # Requests share one FAISS call only when their allow-lists are the same: same filter and same
                # ``now`` cutoff (each once got the first request's allow-list).
                key = (request.filter.model_dump_json() if request.filter is not None else None, one.cutoff, limit)
                groups.setdefault(key, []).append(i)
        for i, first in self._search_groups(groups, out, lambda one: one.vector, "retrieve_dense").items():
            out[i].first = first
        self._prepare_rocchio(requests, out, groups)
        return out

    def _search_groups(self, groups: dict, out: list[_Prepared], vector_of, stage: str) -> dict[int, tuple]:
        """One FAISS call per group (key ``(filter, cutoff, depth)`` -> request slots) over ``vector_of`` each
        slot: ``{slot: (depth, scores row, ids row)}``; the call's time goes to ``stage`` of every slot in it, and
        a failed call's error to each of its slots."""
        found: dict[int, tuple] = {}
        for (_, _, limit), rows in groups.items():
            t0 = time.perf_counter()
            matrix = np.stack([vector_of(out[i]) for i in rows]).astype(np.float32, copy=False)
            try:
                scores, ids = self.collection.vectors.search(matrix, limit, allowed=out[rows[0]].dense_filter)
            except Exception as exc:  # noqa: BLE001
                for i in rows:
                    out[i].error = exc
                continue
            took = time.perf_counter() - t0
            for n, i in enumerate(rows):
                found[i] = (limit, scores[n], ids[n])
                out[i].times.add(stage, took)
        return found

    def _prepare_rocchio(self, requests: list[SearchRequest], out: list[_Prepared], groups: dict) -> None:
        """The Rocchio pass of every hybrid request of the batch that has it: each request's dense documents and
        moved vector, then the moved vectors' first MaxP round as one FAISS call per group of the first round
        (the same allow-list and depth). Alone, each request's second search was one FAISS call of its own."""
        moved_groups: dict[tuple, list[int]] = {}
        for key, rows in groups.items():
            for i in rows:
                request, one = requests[i], out[i]
                fusion: FusionConfig = request.fusion or self.collection.config.fusion
                if one.error is not None or one.first is None or request.pipeline != Pipeline.hybrid \
                        or not fusion.rocchio.enabled:
                    continue
                try:
                    t0 = time.perf_counter()
                    one.dense = self._dense(one.vector, self._window(request), one.allowed,
                                            dense_filter=one.dense_filter, available=one.available, first=one.first)
                    t1 = time.perf_counter()
                    moved, evidence = self._rocchio(one.vector, one.dense[0], one.dense[1], fusion.rocchio)
                    one.times.add("retrieve_dense", t1 - t0)
                    one.times.add("rocchio", time.perf_counter() - t1)
                except Exception as exc:  # noqa: BLE001 - raised in the request's own thread by _finish
                    one.error = exc
                    continue
                t2 = time.perf_counter()
                rescored = self._rescored(moved, one.vector, one.first, fusion.rocchio, evidence)
                one.times.add("rocchio", time.perf_counter() - t2)
                one.rocchio = (moved, evidence, rescored)
                if moved is not one.vector and rescored is None:
                    moved_groups.setdefault(key, []).append(i)
        for i, first in self._search_groups(moved_groups, out, lambda one: one.rocchio[0], "rocchio").items():
            moved, evidence, _ = out[i].rocchio
            out[i].rocchio = (moved, evidence, first)

    def _prepare_one(self, request: SearchRequest, one: _Prepared) -> None:
        if one.truncated:
            one.query_info["truncated_tokens"] = one.truncated
        if request.filter is not None:
            with one.times.stage("filter"):
                one.allowed = self._allowed(request.filter)
            one.within = request.filter.metadata_conditions()
        cutoff = document_cutoff(request, self.collection.config.events)
        if cutoff is not None:  # nothing dated after ``now`` is retrieved (undated documents are kept)
            one.cutoff = cutoff
            with one.times.stage("filter"):
                store = self.collection.store
                query = getattr(store, "filter_key_array", None) or store.filter_keys
                later = _as_keys(query(None, None, {"gt": cutoff}))
                if later.size:
                    base = one.allowed if one.allowed is not None else _as_keys(query(None, None, None))
                    one.allowed = np.setdiff1d(base, later, assume_unique=True)
            one.query_info["cutoff"] = {"now": format_timestamp(cutoff), "documents_hidden": int(later.size)}
        if request.pipeline not in (Pipeline.dense, Pipeline.hybrid):
            one.vector = None
            return
        vector = one.plain_vector = one.vector
        if request.vector is not None:
            one.query_info["vector"] = "given"  # the caller's own space: query stages work in the encoder's
        for stage in self.query_stages if request.vector is None else ():
            if not _stage_runs(stage, request):
                if not getattr(stage, "configured", True) and not (request.stages and stage.name in request.stages):
                    continue  # a stage this index does not use, and the request did not name: nothing to say
                one.query_info.setdefault("stages", {})[stage.name] = {
                    "applied": False,
                    "why": "off for this request" if request.stages and stage.name in request.stages
                    else "off in the index config (switch it on per request with stages)"}
                continue
            with one.times.stage(f"query_stage_{stage.name}"):
                if getattr(stage, "needs_tokens", False):
                    vector, stage_evidence = stage.apply(request, vector, one.tokens)
                else:
                    vector, stage_evidence = stage.apply(request, vector)
            if stage_evidence is not None:  # None: the stage did not run for this request
                one.query_info.setdefault("stages", {})[stage.name] = stage_evidence
        if request.stages and request.stages.get("lexsem") and "lexsem" not in one.query_info.get("stages", {}):
            one.query_info.setdefault("stages", {})["lexsem"] = {
                "applied": False, "why": "this index names no lexsem.modulation weights"}
        one.vector = vector
        with one.times.stage("filter"):
            one.dense_filter, one.available = self._dense_filter(one.allowed)

    def _allowed(self, f) -> np.ndarray:
        """The filter's allow-list, built once: sorted unique doc_keys (``not`` removes what its filter matches)."""
        store = self.collection.store
        query = getattr(store, "filter_key_array", None) or store.filter_keys

        def keys(one) -> np.ndarray:
            return _as_keys(query(one.ids, one.metadata_conditions(),
                                  one.timestamp.bounds() if one.timestamp is not None else None))

        allowed = keys(f)
        if f.not_ is not None:
            allowed = np.setdiff1d(allowed, keys(f.not_), assume_unique=True)
        return allowed

    def _dense_filter(self, allowed: np.ndarray | None):
        """(what the vector index takes as ``allowed``, how many vectors that allows)."""
        vectors = self.collection.vectors
        if allowed is None:
            return None, len(vectors)
        allowed = _as_keys(allowed)
        if hasattr(vectors, "doc_filter"):  # FAISS: a bitmap over its positions, no store round trip
            resolved = vectors.doc_filter(allowed)
            return resolved, resolved.count
        pids = self.collection.store.passage_ids_of(allowed.tolist())
        return pids, int(len(pids))

    def _window(self, request: SearchRequest) -> int:
        fusion: FusionConfig = request.fusion or self.collection.config.fusion
        return max(fusion.window, request.k + request.offset)

    # -- stages --------------------------------------------------------------------------------------------------
    def _check_request(self, request: SearchRequest) -> None:
        """Refuse (422) what this index cannot answer: a query vector of another dimension, a dense search without
        a vector on an index without a text encoder, a stage switched on that the index does not have."""
        from foveal.config import NO_ENCODER
        from foveal.errors import InvalidInputError

        config = self.collection.config
        if request.vector is not None:
            vector = np.asarray(request.vector, dtype=np.float64)
            if len(vector) != self.collection.dimension:
                raise InvalidInputError(f"vector has dimension {len(vector)}; index {self.collection.name!r} holds "
                                        f"{self.collection.dimension}-dimensional vectors")
            problem = vector_problem(vector)
            if problem is not None:
                raise InvalidInputError(problem.replace("'vector'", "vector"))
        elif config.encoder.model == NO_ENCODER and request.pipeline != Pipeline.bm25:
            raise InvalidInputError(f"index {self.collection.name!r} has no text encoder (encoder.model 'none'): give "
                                    "the query as 'vector' (e.g. from the text tower of the model that made the "
                                    "items' vectors), or search with pipeline 'bm25'")
        present = {getattr(reranker, "name", None) for reranker in self.rerankers}
        for name in TRAINED_RERANK_STAGES:
            if request.stages and request.stages.get(name) and name not in present:
                raise InvalidInputError(f"stage {name!r} is not available on index {self.collection.name!r}: its "
                                        f"config names no {name}.model (train one with 'foveal train {name}')")

    def _stages_want_tokens(self, requests: Sequence[SearchRequest] = ()) -> bool:
        """Whether a stage that needs the query tokens runs for any of ``requests``."""
        return any(getattr(stage, "needs_tokens", False) and _stage_runs(stage, request)
                   for stage in self.query_stages for request in requests)

    def _finish(self, request: SearchRequest, prepared: _Prepared) -> SearchResponse:
        if prepared.error is not None:
            raise prepared.error
        response = self._search_one(request, prepared)
        record(prepared.times)
        response._timings = prepared.times.as_ms()
        if request.explain:
            response.query_info["timings_ms"] = dict(response.timings)
        return response

    def _search_one(self, request: SearchRequest, prepared: "_Prepared | np.ndarray | None",
                    truncated: int | None = None, tokens: QueryTokens | None = None) -> SearchResponse:
        """The rest of a search after :meth:`_prepare`. Older callers pass ``(request, vector, truncated,
        tokens)``: the per-request preparation then runs here."""
        if not isinstance(prepared, _Prepared):
            one = _Prepared(vector=prepared, truncated=truncated, tokens=tokens)
            self._prepare_one(request, one)
            prepared = one
        times = prepared.times
        allowed = prepared.allowed
        vector = prepared.vector
        fusion: FusionConfig = request.fusion or self.collection.config.fusion
        window = max(fusion.window, request.k + request.offset)  # how deep each list is fetched
        query_info: dict = prepared.query_info
        lists: dict[str, list[tuple[int, float]]] = {}
        best_passage: dict[int, int] = {}
        bm25_weights = None  # the RM3-rewritten query, when RM3 ran
        dense_vector = vector  # the vector that ranked the dense list (Rocchio's, when it moved)
        if request.pipeline in (Pipeline.bm25, Pipeline.hybrid):
            with times.stage("retrieve_bm25"):  # (searched beside the encoder: the wait for it)
                if prepared.lexical is not None:
                    lists["bm25"] = prepared.lexical.result()
                else:
                    lists["bm25"] = self._lexical(request.query, window, allowed, within=prepared.within)
            if fusion.rm3.enabled and request.pipeline == Pipeline.hybrid:
                with times.stage("rm3"):
                    lists["bm25"], evidence, bm25_weights = self._rm3(
                        request.query, lists["bm25"], window, allowed, fusion.rm3, within=prepared.within)
                query_info.setdefault("stages", {})["rm3"] = evidence
        if request.pipeline in (Pipeline.dense, Pipeline.hybrid):
            if prepared.dense is not None:  # searched with the batch
                lists["dense"], best_passage = prepared.dense
            else:
                with times.stage("retrieve_dense"):
                    lists["dense"], best_passage = self._dense(
                        vector, window, allowed, dense_filter=prepared.dense_filter, available=prepared.available,
                        first=prepared.first)
            if fusion.rocchio.enabled and request.pipeline == Pipeline.hybrid:
                with times.stage("rocchio"):
                    if prepared.rocchio is not None:  # moved (and its first round searched) with the batch
                        moved, evidence, moved_first = prepared.rocchio
                    else:
                        moved, evidence = self._rocchio(vector, lists["dense"], best_passage, fusion.rocchio)
                        moved_first = self._rescored(moved, vector, prepared.first, fusion.rocchio, evidence)
                    if moved is not vector:
                        lists["dense"], best_passage = self._dense(
                            moved, window, allowed, dense_filter=prepared.dense_filter, available=prepared.available,
                            first=moved_first)
                        dense_vector = moved
                query_info.setdefault("stages", {})["rocchio"] = evidence

        if request.pipeline == Pipeline.hybrid:
            completed = None
            # the dense vector's best passage of every scored document: the dense list's, and those completion and
            # regularization find for the others (the hits keep showing the dense list's, or a lexical choice)
            scored_passage = dict(best_passage)
            if fusion.complete and fusion.method != FusionMethod.rrf:
                with times.stage("complete"):
                    completed, evidence = self._complete(request.query, lists, fusion.window, dense_vector,
                                                         bm25_weights, scored_passage)
                query_info.setdefault("stages", {})["completion"] = evidence
            fuse_started = time.perf_counter()
            fused, fusion_info = fuse_explained(lists, fusion, completed)
            times.add("fuse", time.perf_counter() - fuse_started)
            if fusion.regularize.enabled and fusion.method != FusionMethod.rrf:
                with times.stage("regularize"):
                    fused, evidence = self._regularize(fused, fusion.regularize, scored_passage, dense_vector)
                query_info.setdefault("stages", {})["regularize"] = evidence
            ranked = fused[:window]
            if fusion_info:  # adaptive: this query's weights and the signals they came from
                query_info["adaptive_fusion"] = fusion_info
        else:
            ranked = next(iter(lists.values()))[:window]
        fuse_started = time.perf_counter()
        sources = collect_sources(lists)
        candidates = []
        for key, score in ranked:
            evidence: dict = dict(sources.get(key, {}))
            if "dense" in evidence and key in best_passage:
                evidence["dense"]["passage"] = best_passage[key]
            if request.pipeline == Pipeline.hybrid:
                evidence["fused"] = {"method": fusion.method.value, "score": float(score)}
            candidates.append(Candidate(key, float(score), evidence, best_passage.get(key)))
        times.add("fuse", time.perf_counter() - fuse_started)
        candidates = self._rerank(request, candidates, fusion.window, times, prepared.plain_vector)
        with times.stage("freshness"):
            candidates = apply_freshness(request, candidates, self.collection, fusion.window)

        page = candidates[request.offset : request.offset + request.k]
        with times.stage("fetch"):
            hits = self._hits(request, page)
        if request.explain:
            query_info["bm25_terms"] = self.collection.lexical.analyze(request.query)
            query_info["fusion"] = fusion.model_dump(mode="json")
            query_info["window"] = window
            query_info["candidates"] = len(candidates)
            if allowed is not None:
                query_info["filter_matches"] = len(allowed)
        return SearchResponse(
            index=self.collection.name,
            query=request.query,
            pipeline=request.pipeline,
            k=request.k,
            offset=request.offset,
            took_ms=0.0,
            hits=hits,
            query_info=query_info,
        )

    def _rerank(self, request: SearchRequest, candidates: list[Candidate], head: int,
                times: StageTimes | None = None, query_vector: np.ndarray | None = None) -> list[Candidate]:
        """Rerankers see the first ``head`` candidates only (a fixed number, not ``k + offset``), so what they
        compute, min-max of first-stage scores included, does not change with the page asked for. The tail keeps
        first-stage order below the reranked head, its scores shifted down to stay monotone."""
        if not self.rerankers:
            return candidates
        top, tail = candidates[:head], candidates[head:]
        for reranker in self.rerankers:
            started = time.perf_counter()
            if getattr(reranker, "needs_query_vector", False):
                top = reranker.rerank(request, top, self.collection, query_vector=query_vector)
            else:
                top = reranker.rerank(request, top, self.collection)
            if times is not None:
                times.add(f"rerank_{getattr(reranker, 'name', type(reranker).__name__)}", time.perf_counter() - started)
        if top and tail and tail[0].score >= top[-1].score:
            shift = tail[0].score - top[-1].score + 1e-6
            for c in tail:
                c.evidence.setdefault("rerank_tail", {"first_stage_score": c.score})
                c.score -= shift
        return list(top) + tail

    def _rm3(self, query: str, first: list[tuple[int, float]], depth: int, allowed: set[int] | None, cfg,
             within: dict | None = None):
        """RM3 (foveal.pipeline.feedback.rm3) over the first pass's top documents, then BM25 of the expanded query
        in the same (score, doc_key) order. Backends without weighted search keep the first pass."""
        lexical = self.collection.lexical
        top = first[: cfg.fb_docs]
        documents = self.collection.store.get_documents(k for k, _ in top)
        feedback = [(lexical.analyze(documents[k].full_text), s) for k, s in top if k in documents]
        weights = rm3(lexical.analyze(query), feedback, cfg.fb_terms, cfg.original_weight)
        evidence = {"feedback_docs": len(feedback), "terms": weights_summary(weights)}
        if not feedback or not hasattr(lexical, "search_weighted"):
            return first, {**evidence, "applied": False}, None
        found = self._lexical(query, depth, allowed, weights, within=within) if weights else []
        return found, {**evidence, "applied": True}, weights

    def _complete(self, query: str, lists: dict, window: int, dense_vector: np.ndarray | None,
                  term_weights: dict[str, float] | None, best_passage: dict[int, int]) -> tuple[dict, dict]:
        """Score completion (``fusion.complete``): BM25 of the query (RM3's rewrite when it ran) restricted to the
        documents only the dense window holds (0 for one no query term matches), and the dense vector's best
        passage cosine for the documents only the BM25 window holds (their best passages join ``best_passage``,
        the caller's copy).
        Returns ({list: {doc_key: score}}, evidence)."""
        lacking = completion_keys(lists, window)
        completed: dict[str, dict[int, float]] = {}
        want = lacking.get("bm25")
        if want:
            lexical = self.collection.lexical
            if term_weights is not None and not term_weights:
                scores = {}
            elif hasattr(lexical, "scores_of"):
                scores = lexical.scores_of(query, want, term_weights)
            elif term_weights is not None:
                scores = dict(lexical.search_weighted(term_weights, len(want), allowed=want))
            else:
                scores = dict(lexical.search(query, len(want), allowed=want))
            completed["bm25"] = {key: float(scores.get(key, 0.0)) for key in want}
        want = lacking.get("dense")
        if want and dense_vector is not None:
            scores, best = self._best_passages(want, dense_vector)
            completed["dense"] = scores
            best_passage.update(best)
        return completed, {name: len(completed.get(name, ())) for name in lacking}

    def _best_passages(self, doc_keys: Sequence[int], vector: np.ndarray) -> tuple[dict[int, float], dict[int, int]]:
        """MaxP of ``vector`` over these documents' passages: ({doc_key: best cosine}, {doc_key: its ordinal}),
        scored with the vectors the index holds (as its searches score them), else the stored ones."""
        pids, stored = self._passage_vectors(self.collection.store.passage_ids_of(doc_keys))
        if not pids.size:
            return {}, {}
        sims = np.asarray(stored, dtype=np.float32) @ np.asarray(vector, dtype=np.float32)
        docs = pids >> PASSAGE_BITS
        order = np.lexsort((pids, -sims, docs))  # per document: best cosine first, then the lower ordinal
        first = order[np.r_[True, docs[order][1:] != docs[order][:-1]]]
        scores = {int(docs[i]): float(sims[i]) for i in first}
        ordinals = {int(docs[i]): int(pids[i] & (MAX_PASSAGES - 1)) for i in first}
        return scores, ordinals

    def _passage_vectors(self, pids) -> tuple[np.ndarray, np.ndarray]:
        """(the passage ids found, their vectors, float32): as the index holds them (as its searches score them)
        when it holds them all, else as the store keeps them; an id neither has is left out."""
        pids = np.asarray(pids, dtype=np.int64)
        vectors_of = getattr(self.collection.vectors, "vectors", None)
        if vectors_of is not None and pids.size:
            stored, held = vectors_of(pids)
            if held.all():
                return pids, np.asarray(stored, dtype=np.float32)
        found_pids, found = self.collection.store.vectors_of(sorted({int(p) >> PASSAGE_BITS for p in pids.tolist()}))
        row = {int(p): i for i, p in enumerate(np.asarray(found_pids).tolist())}
        keep = [i for i, p in enumerate(pids.tolist()) if p in row]
        vectors = np.asarray(found, dtype=np.float32)[[row[int(pids[i])] for i in keep]] if keep else np.zeros((0, 1), np.float32)
        return pids[keep], vectors

    def _regularize(self, fused: list[tuple[int, float]], cfg, best_passage: dict[int, int],
                    dense_vector: np.ndarray | None) -> tuple[list[tuple[int, float]], dict]:
        """Score regularization (``fusion.regularize``, :func:`foveal.pipeline.fusion.regularize`) of the fused
        head, each document represented by its best passage for the dense vector."""
        head = [key for key, _ in fused[: cfg.depth]]
        missing = [key for key in head if key not in best_passage]
        if missing and dense_vector is not None:
            best_passage.update(self._best_passages(missing, dense_vector)[1])
        pids, stored = self._passage_vectors([(key << PASSAGE_BITS) | best_passage[key] for key in head
                                              if key in best_passage])
        keys = (pids >> PASSAGE_BITS).tolist()
        if len(stored):
            stored = stored / np.maximum(np.linalg.norm(stored, axis=1, keepdims=True), 1e-12)
        out, reordered = regularize(fused, dict(zip(keys, stored)), cfg.weight, cfg.depth, cfg.neighbours)
        return out, {"depth": cfg.depth, "weight": cfg.weight, "neighbours": cfg.neighbours, "vectors": len(keys),
                     "reordered": reordered}

    def _rocchio(self, vector: np.ndarray, dense: list[tuple[int, float]], best_passage: dict[int, int], cfg):
        """Rocchio (foveal.pipeline.feedback.rocchio) over the best passages of the first dense documents."""
        from foveal.index.base import passage_id

        keys = [k for k, _ in dense[: cfg.fb_docs]]
        rows = None
        if keys and cfg.beta > 0:
            pids, vectors = self.collection.store.vectors_of(keys)
            wanted = {passage_id(k, best_passage[k]) for k in keys if k in best_passage}
            chosen = [i for i, p in enumerate(np.asarray(pids).tolist()) if p in wanted]
            rows = vectors[chosen] if chosen else None
        moved = rocchio(vector, rows, cfg.beta)
        return moved, {"feedback_docs": 0 if rows is None else int(len(rows)), "beta": cfg.beta,
                       "applied": moved is not vector}

    def _rescored(self, moved: np.ndarray, vector: np.ndarray, first: tuple | None, cfg,
                  evidence: dict) -> tuple | None:
        """The moved vector's first MaxP round without a second vector search (``rocchio.rescore``): the passages
        of the unmoved ``vector``'s first round, ``(limit, scores row, ids row)``, scored by ``moved`` with the
        vectors the index holds, best first. None (the moved vector is searched instead, if it moved) when Rocchio
        did not move the vector, rescoring is off, there is no first round, or the index cannot hand back vectors
        or no longer holds one of them. ``evidence`` says which it was (``rescored``: passages scored)."""
        if moved is vector or not cfg.rescore or first is None:
            return None
        limit, _, ids_row = first
        vectors_of = getattr(self.collection.vectors, "vectors", None)
        ids = np.asarray(ids_row, dtype=np.int64)
        ids = ids[ids >= 0]
        stored, held = vectors_of(ids) if vectors_of is not None else (None, None)
        if stored is None or not held.all():
            evidence["rescored"] = 0
            return None
        scores = stored @ np.asarray(moved, dtype=np.float32)
        order = np.argsort(-scores, kind="stable")
        scores_row = np.zeros(len(ids_row), np.float32)
        ids_out = np.full(len(ids_row), -1, np.int64)
        scores_row[: ids.size] = scores[order]
        ids_out[: ids.size] = ids[order]
        evidence["rescored"] = int(ids.size)
        return limit, scores_row, ids_out

    def _lexical(self, query: str, depth: int, allowed: set[int] | None,
                 term_weights: dict[str, float] | None = None, within: dict | None = None,
                 ) -> list[tuple[int, float]]:
        """The first ``depth`` BM25 hits in (score, doc_key) order: fetched :data:`LEXICAL_SLACK` past the cut,
        and further while the scores there tie, so which of several equal-scored documents make the cut never
        depends on the index's internal order or on ``depth``. ``term_weights``: a rewritten query (RM3) instead
        of ``query``. ``within``: the filter's metadata conditions, for a backend that restricts by them inside
        the index."""
        lexical = self.collection.lexical
        extra = {"within": within} if within and getattr(lexical, "indexes_metadata", False) else {}
        limit = depth + LEXICAL_SLACK
        while True:
            if term_weights is not None:
                found = lexical.search_weighted(term_weights, limit, allowed=allowed, **extra)
            else:
                found = lexical.search(query, limit, allowed=allowed, **extra)
            if len(found) < limit or found[depth - 1][1] > found[-1][1]:
                break
            limit *= 4
        found.sort(key=lambda kv: (-kv[1], kv[0]))
        return found[:depth]

    def _dense(
        self, vector: np.ndarray, depth: int, allowed: np.ndarray | None = None, *, dense_filter=None,
        available: int | None = None, first: tuple | None = None,
    ) -> tuple[list[tuple[int, float]], dict[int, int]]:
        """The first ``depth`` documents by their best passage (MaxP), in (score, doc_key) order.

        Passages are fetched best first, ``depth * PASSAGES_PER_DOCUMENT`` at first and 4x more each round, until
        ``depth`` distinct documents are found with the last one scoring strictly above the last passage fetched
        (so no unfetched passage can beat or tie it), or until the index has no more to give. Long documents
        with many passages therefore cannot crowd the others out. ``first``: the first round, already searched
        (with the rest of a micro-batch)."""
        if available is None:
            dense_filter, available = self._dense_filter(allowed)
        if available == 0:
            return [], {}
        limit = min(depth * PASSAGES_PER_DOCUMENT, available)
        while True:
            if first is not None and first[0] == limit:
                scores_row, ids_row = first[1], first[2]
            else:
                scores, ids = self.collection.vectors.search(vector[None, :], limit, allowed=dense_filter)
                scores_row, ids_row = scores[0], ids[0]
            ranked, passage, valid, last = _max_passage(scores_row, ids_row)
            exhausted = valid < limit or limit >= available
            if exhausted or (len(ranked) >= depth and ranked[depth - 1][1] > last):
                break
            limit = min(limit * 4, available)
        return ranked[:depth], passage

    def _hits(self, request: SearchRequest, page: Sequence[Candidate]) -> list[Hit]:
        documents = self.collection.store.get_documents(c.doc_key for c in page)
        query_terms = None
        hits = []
        for rank, candidate in enumerate(page, start=request.offset + 1):
            doc = documents.get(candidate.doc_key)
            if doc is None:  # deleted between retrieval and fetch
                continue
            ordinal = candidate.passage
            full = doc.full_text
            if ordinal is None or ordinal >= len(doc.passages):
                if query_terms is None:
                    query_terms = set(self.collection.lexical.analyze(request.query))
                ordinal = _best_lexical_passage(full, doc.passages, query_terms, self.collection.lexical.analyze)
            passage = None
            if doc.passages:
                start, end = doc.passages[ordinal]
                passage = PassageInfo(index=ordinal, start=start, end=end, text=full[start:end])
            evidence = candidate.evidence
            if request.explain:
                if query_terms is None:
                    query_terms = set(self.collection.lexical.analyze(request.query))
                evidence = {**evidence, "matched_terms": sorted(query_terms & set(self.collection.lexical.analyze(full)))}
            hits.append(
                Hit(
                    id=doc.id,
                    rank=rank,
                    score=candidate.score,
                    title=doc.title,
                    text=doc.text,
                    metadata=doc.metadata,
                    timestamp=format_timestamp(doc.timestamp),
                    passage=passage,
                    evidence=evidence,
                )
            )
        return hits


def _max_passage(scores_row: np.ndarray, ids_row: np.ndarray) -> tuple[list[tuple[int, float]], dict[int, int],
                                                                        int, float | None]:
    """One round of passage hits (ids ``-1`` where the index had none) as documents by their best passage (MaxP):
    ``(documents in (-score, doc_key) order, doc_key -> ordinal of its best passage, valid hits, last valid
    score)``. Of a document's passages that tie for its best score, the first in the row counts. In numpy: this
    runs over every passage of a search's first round (400 by default) for every search."""
    ids = np.asarray(ids_row, dtype=np.int64)
    scores = np.asarray(scores_row)
    valid_at = np.flatnonzero(ids >= 0)
    if valid_at.size == 0:
        return [], {}, 0, None
    ids = ids[valid_at]
    scores = scores[valid_at]
    keys = ids >> PASSAGE_BITS
    # per document: its best score, the first position among ties (lexsort: last key is the primary one)
    order = np.lexsort((np.arange(ids.size), -scores, keys))
    keys_sorted = keys[order]
    heads = order[np.concatenate(([True], keys_sorted[1:] != keys_sorted[:-1]))]
    best_keys, best_scores = keys[heads], scores[heads]
    ranking = np.lexsort((best_keys, -best_scores))
    ranked = list(zip(best_keys[ranking].tolist(), best_scores[ranking].tolist()))
    passage = dict(zip(best_keys.tolist(), (ids[heads] & (MAX_PASSAGES - 1)).tolist()))
    return ranked, passage, int(ids.size), float(scores[-1])


def _stage_runs(stage: QueryStage, request: SearchRequest) -> bool:
    """A query stage runs when the request's ``stages`` says so, else when the stage is enabled (its default)."""
    return request.stage_wanted(stage.name, bool(getattr(stage, "enabled", True)))


#: Rerank stages that exist on an index only when its config names a trained model (``<name>.model``): a request
#: that switches one on where it is absent gets a 422, not a silent no-op.
TRAINED_RERANK_STAGES = ("paraformer", "xpool")


def _as_keys(keys) -> np.ndarray:
    """An allow-list as sorted unique int64 doc_keys (what the stores hand back: an array, or a set)."""
    return sorted_unique(keys)


def _best_lexical_passage(full: str, passages, query_terms: set[str], analyze) -> int:
    if len(passages) <= 1 or not query_terms:
        return 0
    counts = [len(query_terms & set(analyze(full[a:b]))) for a, b in passages]
    return int(np.argmax(counts))
