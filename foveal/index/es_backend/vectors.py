"""Passage vectors on Elasticsearch: :class:`ElasticsearchVectorIndex`, a ``dense_vector`` field searched with kNN
(the allow-list as the kNN filter), its bulk actions, and the mapping of ES's ``(1 + cos) / 2`` score back to the
cosine FAISS reports. Like the lexical index it lives on the server and is ``shared`` by every process."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from foveal.config import ElasticsearchConfig
from foveal.errors import ConfigError
from foveal.index.base import PASSAGE_BITS
from foveal.index.es_backend.client import (
    MAX_RESULTS,
    _bulk,
    _call,
    _ensure_index,
    allowed_filter,
    client_for,
    index_names,
)
from foveal.index.es_backend.mappings import vector_body


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
