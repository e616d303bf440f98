"""Exact inner-product scans of a Flat index through a matrix packed once.

FAISS's Flat search scores a batch of queries against every stored vector through its BLAS (``sgemm``), and BLAS
repacks the stored matrix into its kernel's layout on every call: for a micro-batch of a few queries that packing
is most of the work. onnxruntime's CPU GEMM packs a *constant* matrix once, when a session is made. A
:class:`PackedScan` holds the main index's vectors as such constants, in shards of :data:`SHARD_ROWS` rows, each
one small graph ``TopK(q @ shard.T)``: the same scores (float32 rounding aside; the sum runs in another
order) and the same top-k as ``IndexFlatIP.search``, not an approximation. Rows added after the scan was made (the
"tail") are scored from FAISS's own storage with numpy, so a search never waits for a rebuild.

Cost: memory. Each shard keeps its rows (the session's constant points at them) and the packed copy: about twice
the vectors' size beside FAISS's own copy. :class:`~foveal.index.faiss_index.FaissVectorIndex` makes one only for
Flat indexes on the CPU within ``FOVEAL_PACKED_SCAN_MAX_MB`` and from :attr:`FaissVectorIndex.packed_scan_min`
vectors up, in a background thread; until it is there, and whenever it is stale, FAISS answers.
"""

from __future__ import annotations

import numpy as np

#: Rows per shard: one onnxruntime session (and one packed constant) each. A full shard is never rebuilt when rows
#: are appended; only the last, partial one is.
SHARD_ROWS = 131_072


class _Shard:
    """Rows ``[start, start + len(rows))`` of the index as one packed constant, and the session that scores them."""

    def __init__(self, rows: np.ndarray, start: int) -> None:
        import onnxruntime
        from onnx import TensorProto, helper

        self.start = start
        self.rows = np.ascontiguousarray(rows, dtype=np.float32)  # the constant points here: kept alive with us
        self.stop = start + len(self.rows)
        dimension = self.rows.shape[1]
        graph = helper.make_graph(
            [helper.make_node("Gemm", ["q", "rows"], ["scores"], transB=1),
             helper.make_node("TopK", ["scores", "k"], ["values", "positions"], axis=1, largest=1, sorted=1)],
            "packed_scan",
            [helper.make_tensor_value_info("q", TensorProto.FLOAT, ["batch", dimension]),
             helper.make_tensor_value_info("k", TensorProto.INT64, [1])],
            [helper.make_tensor_value_info("values", TensorProto.FLOAT, ["batch", "top"]),
             helper.make_tensor_value_info("positions", TensorProto.INT64, ["batch", "top"])],
            # a one-row placeholder: the real constant comes from ``add_initializer`` (no copy into the model)
            [helper.make_tensor("rows", TensorProto.FLOAT, [1, dimension], np.zeros(dimension, np.float32))],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # searches run side by side, each in its own thread
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._constant = onnxruntime.OrtValue.ortvalue_from_numpy(self.rows)
        options.add_initializer("rows", self._constant)
        self._session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                                     providers=["CPUExecutionProvider"])

    def __len__(self) -> int:
        return self.stop - self.start

    def top(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best of this shard's rows per query: ``(scores, positions in the index)``."""
        scores, positions = self._session.run(None, {"q": vectors, "k": np.array([min(k, len(self))], np.int64)})
        return scores, positions + self.start


class PackedScan:
    """The shards of one state of a main index (``epoch``: bumped whenever positions are renumbered or the index
    replaced; appends keep it)."""

    def __init__(self, epoch: int, shards: list[_Shard]) -> None:
        self.epoch = epoch
        self.shards = shards
        self.covered = shards[-1].stop if shards else 0

    @staticmethod
    def reusable(old: "PackedScan | None", rows: int) -> list[_Shard]:
        """The shards of ``old`` (a scan of the same epoch) that a scan of ``rows`` rows keeps as they are: the
        full ones."""
        if old is None:
            return []
        return [s for s in old.shards if len(s) == SHARD_ROWS and s.stop <= rows]

    @classmethod
    def build(cls, epoch: int, rows: np.ndarray, *, start: int = 0, shards: list[_Shard] | None = None
              ) -> "PackedScan":
        """A scan of ``shards`` (covering rows ``[0, start)``) and of ``rows``, the stored vectors from position
        ``start`` on."""
        shards = list(shards or [])
        for begin in range(0, len(rows), SHARD_ROWS):
            shards.append(_Shard(rows[begin : begin + SHARD_ROWS], start + begin))
        return cls(epoch, shards)

    def search(self, vectors: np.ndarray, k: int, stored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best positions per query (``k`` at most the rows there are) over every row of ``stored``
        (the index's vectors now: rows past :attr:`covered` are scored from it directly)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        parts = [shard.top(vectors, k) for shard in self.shards]
        if len(stored) > self.covered:
            tail = vectors @ stored[self.covered :].T
            take = min(k, tail.shape[1])
            at = np.argpartition(-tail, take - 1, axis=1)[:, :take] if take < tail.shape[1] else \
                np.broadcast_to(np.arange(tail.shape[1]), tail.shape)
            parts.append((np.take_along_axis(tail, at, 1), at + self.covered))
        if len(parts) == 1 and len(self.shards) == 1:  # one shard's TopK: already best first
            return parts[0][0].astype(np.float32, copy=False), parts[0][1].astype(np.int64, copy=False)
        scores = np.concatenate([p[0] for p in parts], axis=1)
        positions = np.concatenate([p[1] for p in parts], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return (np.take_along_axis(scores, order, 1).astype(np.float32, copy=False),
                np.take_along_axis(positions, order, 1).astype(np.int64, copy=False))
