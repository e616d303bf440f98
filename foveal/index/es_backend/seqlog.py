"""The change log of the Elasticsearch document store: the ``-meta`` index's counters (``seq``, ``reserved_seq``,
``next_doc_key``) advanced with optimistic concurrency, :meth:`SeqLog.write` (reserve, bulk-write each document
with its ``seq``, publish the head), the ``-docs`` sources it writes (documents and tombstones) and the reads of the
log (:meth:`SeqLog.max_seq`, :meth:`SeqLog.changes_since`). :class:`SeqLog` is the part of
:class:`~foveal.index.es_backend.docstore.ElasticsearchDocStore` that uses the counters; it expects the store's
``client``, ``docs``, ``meta``, ``_mget`` and ``_scan``. The design is in the package docstring."""

from __future__ import annotations

import base64
from typing import Any, Sequence

import numpy as np

from foveal.errors import IndexLockedError
from foveal.index.base import MAX_PASSAGES
from foveal.index.es_backend.client import _bulk, _call, es_doc_id, unavailable

_COUNTERS = "counters"


def encode_vectors(vectors: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(vectors, dtype="<f4").tobytes()).decode("ascii")


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


class SeqLog:
    """The counters and the log of :class:`~foveal.index.es_backend.docstore.ElasticsearchDocStore`."""

    # -- counters -------------------------------------------------------------------------------------------------
    def _counters(self) -> tuple[dict[str, int], dict[str, int]]:
        """(counters, concurrency token) from a realtime GET."""
        from elasticsearch import NotFoundError

        try:
            response = self.client.get(index=self.meta, id=_COUNTERS)
        except NotFoundError:
            return {"seq": 0, "reserved_seq": 0, "next_doc_key": 1}, {}
        except Exception as exc:
            raise unavailable(self.client, "reading counters", exc) from exc
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
            raise unavailable(self.client, "writing counters", exc) from exc
        return {"if_seq_no": response["_seq_no"], "if_primary_term": response["_primary_term"]}

    # -- the log --------------------------------------------------------------------------------------------------
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

    def prune_log(self, below: int) -> int:
        """Nothing to prune: the log is each document's latest change (tombstones included), not a history."""
        return 0

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
