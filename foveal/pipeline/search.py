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

import time
from typing import Sequence

import numpy as np

from foveal.config import FusionConfig, Pipeline
from foveal.encoders.base import QueryStage, QueryTokens
from foveal.index.base import doc_key_of, passage_ordinal
from foveal.index.collection import Collection
from foveal.pipeline.fusion import collect_sources, fuse
from foveal.pipeline.request import Hit, PassageInfo, SearchRequest, SearchResponse
from foveal.documents import format_timestamp, vector_problem
from foveal.rerank.base import Candidate, Reranker

#: Passages fetched per wanted document in MaxP's first round (documents have ~2 passages on average); later
#: rounds fetch 4x more until enough distinct documents are found.
PASSAGES_PER_DOCUMENT = 4


class SearchPipeline:
    def __init__(
        self,
        collection: Collection,
        query_stages: Sequence[QueryStage] = (),
        rerankers: Sequence[Reranker] | None = None,
    ) -> None:
        self.collection = collection
        self.query_stages = list(query_stages)
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

    # -- public --------------------------------------------------------------------------------------------------
    def search(self, request: SearchRequest) -> SearchResponse:
        return self.search_many([request])[0]

    def search_many(self, requests: Sequence[SearchRequest]) -> list[SearchResponse]:
        """Search several requests; their queries are encoded in one batch."""
        self.collection.refresh()
        for request in requests:
            self._check_request(request)
        started = time.perf_counter()
        # a request that brings its query vector is not encoded
        dense_rows = [i for i, r in enumerate(requests) if r.pipeline != Pipeline.bm25 and r.vector is None]
        encoded = None
        if dense_rows:
            texts = [requests[i].query for i in dense_rows]
            if self._stages_want_tokens():  # only then: encoders that know nothing of tokens keep working
                encoded = self.collection.encoder.encode_queries(texts, with_tokens=True)
            else:
                encoded = self.collection.encoder.encode_queries(texts)
        encode_ms = (time.perf_counter() - started) * 1000 / max(1, len(requests))
        responses = []
        row_of = {i: n for n, i in enumerate(dense_rows)}
        for i, request in enumerate(requests):
            t0 = time.perf_counter()
            vector = truncated = tokens = None
            if request.vector is not None and request.pipeline != Pipeline.bm25:
                vector = np.asarray(request.vector, dtype=np.float32)
                vector = vector / np.linalg.norm(vector)
            elif i in row_of:
                vector = encoded.vectors[row_of[i]]
                truncated = encoded.truncated_tokens[row_of[i]]
                tokens = encoded.tokens(row_of[i])
            response = self._search_one(request, vector, truncated, tokens)
            response.took_ms = round(encode_ms + (time.perf_counter() - t0) * 1000, 3)
            responses.append(response)
        return responses

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
        if request.stages and request.stages.get("xpool") and not any(r.name == "xpool" for r in self.rerankers):
            raise InvalidInputError(f"stage 'xpool' is not available on index {self.collection.name!r}: its config "
                                    "names no xpool.model (train one with 'foveal train xpool')")
        if request.stages and request.stages.get("paraformer") and not any(
                r.name == "paraformer" for r in self.rerankers):
            raise InvalidInputError(f"stage 'paraformer' is not available on index {self.collection.name!r}: its "
                                    "config names no paraformer.model (train one with 'foveal train paraformer')")

    # -- stages --------------------------------------------------------------------------------------------------
    def _stages_want_tokens(self) -> bool:
        return any(getattr(stage, "needs_tokens", False) for stage in self.query_stages)

    def _search_one(
        self, request: SearchRequest, vector: np.ndarray | None, truncated: int | None,
        tokens: QueryTokens | None = None,
    ) -> SearchResponse:
        fusion: FusionConfig = request.fusion or self.collection.config.fusion
        window = max(fusion.window, request.k + request.offset)  # how deep each list is fetched
        query_info: dict = {}
        if truncated:
            query_info["truncated_tokens"] = truncated
        lists: dict[str, list[tuple[int, float]]] = {}
        best_passage: dict[int, int] = {}
        allowed = None
        if request.filter is not None:
            f = request.filter
            allowed = self.collection.store.filter_keys(
                f.ids, f.metadata, f.timestamp.bounds() if f.timestamp is not None else None
            )
        if request.pipeline in (Pipeline.bm25, Pipeline.hybrid):
            lists["bm25"] = self._lexical(request.query, window, allowed)
        plain_vector = vector  # the encoder's own, for rerankers that attend with it
        if request.pipeline in (Pipeline.dense, Pipeline.hybrid):
            if request.vector is not None:
                query_info["vector"] = "given"  # the caller's own space: query stages work in the encoder's
            for stage in self.query_stages if request.vector is None else ():
                if getattr(stage, "needs_tokens", False):
                    vector, stage_evidence = stage.apply(request, vector, tokens)
                else:
                    vector, stage_evidence = stage.apply(request, vector)
                query_info.setdefault("stages", {})[stage.name] = stage_evidence
            lists["dense"], best_passage = self._dense(vector, window, allowed)

        if request.pipeline == Pipeline.hybrid:
            ranked = fuse(lists, fusion)[:window]
        else:
            ranked = next(iter(lists.values()))[:window]
        sources = collect_sources(lists)
        candidates = []
        for key, score in ranked:
            evidence: dict = dict(sources.get(key, {}))
            if "dense" in evidence and key in best_passage:
                evidence["dense"]["passage"] = best_passage[key]
            if request.pipeline == Pipeline.hybrid:
                evidence["fused"] = {"method": fusion.method.value, "score": float(score)}
            candidates.append(Candidate(key, float(score), evidence, best_passage.get(key)))
        candidates = self._rerank(request, candidates, fusion.window, plain_vector)

        page = candidates[request.offset : request.offset + request.k]
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
                query_vector: np.ndarray | None = None) -> list[Candidate]:
        """Rerankers see the first ``head`` candidates only (a fixed number, not ``k + offset``), so what they
        compute, min-max of first-stage scores included, does not change with the page asked for. The tail keeps
        first-stage order below the reranked head, its scores shifted down to stay monotone. A reranker with
        ``needs_query_vector`` also gets the query vector (see :mod:`foveal.rerank.base`)."""
        if not self.rerankers:
            return candidates
        top, tail = candidates[:head], candidates[head:]
        for reranker in self.rerankers:
            if getattr(reranker, "needs_query_vector", False):
                top = reranker.rerank(request, top, self.collection, query_vector=query_vector)
            else:
                top = reranker.rerank(request, top, self.collection)
        if top and tail and tail[0].score >= top[-1].score:
            shift = tail[0].score - top[-1].score + 1e-6
            for c in tail:
                c.evidence.setdefault("rerank_tail", {"first_stage_score": c.score})
                c.score -= shift
        return list(top) + tail

    def _lexical(self, query: str, depth: int, allowed: set[int] | None) -> list[tuple[int, float]]:
        """The first ``depth`` BM25 hits in (score, doc_key) order: fetched one past the cut, and further while
        the scores there tie, so which of several equal-scored documents make the cut never depends on the
        index's internal order or on ``depth``."""
        limit = depth + 1
        while True:
            found = self.collection.lexical.search(query, limit, allowed=allowed)
            if len(found) < limit or found[depth - 1][1] > found[-1][1]:
                break
            limit *= 4
        found.sort(key=lambda kv: (-kv[1], kv[0]))
        return found[:depth]

    def _dense(
        self, vector: np.ndarray, depth: int, allowed: set[int] | None = None
    ) -> tuple[list[tuple[int, float]], dict[int, int]]:
        """The first ``depth`` documents by their best passage (MaxP), in (score, doc_key) order.

        Passages are fetched best first, ``depth * PASSAGES_PER_DOCUMENT`` at first and 4x more each round, until
        ``depth`` distinct documents are found with the last one scoring strictly above the last passage fetched
        (so no unfetched passage can beat or tie it), or until the index has no more to give. Long documents
        with many passages therefore cannot crowd the others out."""
        pids = None if allowed is None else self.collection.store.passage_ids_of(allowed)
        available = len(self.collection.vectors) if pids is None else int(len(pids))
        if available == 0:
            return [], {}
        limit = min(depth * PASSAGES_PER_DOCUMENT, available)
        while True:
            scores, ids = self.collection.vectors.search(vector[None, :], limit, allowed=pids)
            best: dict[int, float] = {}
            passage: dict[int, int] = {}
            valid = 0
            last = None
            for score, pid in zip(scores[0].tolist(), ids[0].tolist()):
                if pid < 0:
                    continue
                valid += 1
                last = score
                key = doc_key_of(pid)
                if key not in best or score > best[key]:  # results come best first: the first seen is MaxP
                    best[key] = score
                    passage[key] = passage_ordinal(pid)
            ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
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


def _best_lexical_passage(full: str, passages, query_terms: set[str], analyze) -> int:
    if len(passages) <= 1 or not query_terms:
        return 0
    counts = [len(query_terms & set(analyze(full[a:b]))) for a, b in passages]
    return int(np.argmax(counts))
