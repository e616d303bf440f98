"""Queries never wait behind a document batch: the model lock is held per forward pass, queries first."""

import threading

import numpy as np
import pytest

from foveal.encoders import sentence_transformer as st
from foveal.encoders.sentence_transformer import PriorityLock


def test_a_query_pass_never_waits_for_a_document_pass():
    lock = PriorityLock()
    lock._acquire(False)  # a document pass is running (and stays running)
    done = threading.Event()
    query = threading.Thread(target=lambda: (lock._acquire(True), lock._release(True), done.set()))
    query.start()
    query.join(30)
    assert done.is_set()
    lock._release(False)


def test_queries_concurrent_with_a_document_batch_get_the_same_vectors(encoder):
    """A query encoded while document passes run beside it on the same weights gets the vector it gets alone."""
    alone = encoder.encode_queries(["what pulls the tides"]).vectors
    texts = [f"document number {i} about tides, volcanoes and the moon " * 20 for i in range(24)]
    ingest = threading.Thread(target=encoder.encode_documents, args=(texts,))
    ingest.start()
    during = [encoder.encode_queries(["what pulls the tides"]).vectors for _ in range(5)]
    ingest.join(120)
    for vectors in during:
        assert abs(vectors - alone).max() < 1e-5


def test_a_document_batch_is_encoded_in_small_passes(encoder, monkeypatch):
    """A batch of 20 passages runs as passes of at most DOCUMENT_PASS_ROWS rows, each taking the lock anew (so a
    query can go between them); the vectors are those of one big pass."""
    texts = [f"document number {i} about tides and the moon" for i in range(20)]
    whole = encoder.encode_documents(texts)
    monkeypatch.setattr(st, "DOCUMENT_PASS_ROWS", 4)
    before = dict(encoder._lock.passes)
    small = encoder.encode_documents(texts)
    assert encoder._lock.passes["document"] - before["document"] == 5
    for a, b in zip(whole, small):
        assert abs(a.vectors - b.vectors).max() < 1e-5


def test_length_passes_is_the_cheapest_cut():
    """The query pass planner against brute force: every way to cut sorted widths into consecutive passes of at
    most ``most`` rows, cost = rows x widest + pass_cost per pass."""
    import itertools
    import random

    def cost(widths, passes, pass_cost):
        return sum((b - a) * widths[a] + pass_cost for a, b in passes)

    rng = random.Random(4)
    for _ in range(200):
        n = rng.randint(1, 9)
        widths = sorted((rng.randint(3, 90) for _ in range(n)), reverse=True)
        most, pass_cost = rng.randint(1, 6), rng.choice([0, 8, 64, 500])
        passes = st.length_passes(widths, most, pass_cost)
        assert passes[0][0] == 0 and passes[-1][1] == n
        assert all(a < b <= a + most and b == c for (a, b), (c, _) in zip(passes, passes[1:] + [(n, n)]))
        best = min(
            cost(widths, cut, pass_cost)
            for k in range(n)
            for inner in itertools.combinations(range(1, n), k)
            for cut in [list(zip((0, *inner), (*inner, n)))]
            if all(b - a <= most for a, b in cut)
        )
        assert cost(widths, passes, pass_cost) == best


def test_queries_of_spread_lengths_run_in_several_passes_with_the_same_vectors(fp32_encoder, monkeypatch):
    """fp32 query passes (``query_quantize: none``; int8 and mixed passes hold one query each, below).
    Without query lanes (``FOVEAL_QUERY_LANES=1``), a micro-batch of short and long queries is cut by length
    (one pass padded every short query to the longest: SciFact's 32-query batches computed about twice their
    tokens); each query's vector is what it gets alone."""
    encoder = fp32_encoder
    encoder.encode_queries(["load the export"])
    monkeypatch.setattr(encoder.loaded.query_onnx, "lanes", 1)
    queries = [f"tides {i}" for i in range(16)] + [f"why the moon pulls the ocean tides {i} " * 8 for i in range(16)]
    alone = [encoder.encode_queries([q]).vectors[0] for q in queries]
    before = encoder._lock.passes["query"]
    together = encoder.encode_queries(queries).vectors
    assert encoder._lock.passes["query"] - before == 2
    assert abs(together - alone).max() < 1e-5


def test_a_micro_batch_of_queries_runs_in_small_passes_side_by_side_on_the_lanes(fp32_encoder, monkeypatch):
    """fp32 query passes (``query_quantize: none``). With query lanes (the default on a machine of more than one CPU), a micro-batch runs as passes of two queries
    on the single-threaded lane session, up to ``lanes`` at once, under one hold of the query lock; a lone query
    runs on the main session. Each query's vector is what it gets alone, to float rounding."""
    encoder = fp32_encoder
    encoder.encode_queries(["load the export"])
    forward = encoder.loaded.query_onnx
    if forward._lane_session is None:  # a one-CPU machine: open the lane session the default would have there
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        monkeypatch.setattr(forward, "_lane_session", onnxruntime.InferenceSession(
            str(forward.path), options, providers=["CPUExecutionProvider"]))
        monkeypatch.setattr(forward, "lanes", 2)
    queries = [f"tides {i}" for i in range(5)] + [f"why the moon pulls the ocean tides {i} " * 8 for i in range(5)]
    runs = []
    real = forward.run_lanes
    forward.run_lanes = lambda passes: runs.append([ids.shape for ids, _ in passes]) or real(passes)
    try:
        alone = np.stack([encoder.encode_queries([q]).vectors[0] for q in queries])
        assert runs == []  # a lone query: the main session
        before = encoder._lock.passes["query"]
        together = encoder.encode_queries(queries).vectors
    finally:
        del forward.run_lanes
    assert len(runs) == 1 and [rows for rows, _ in runs[0]] == [2] * 5  # longest first, two a pass
    assert encoder._lock.passes["query"] - before == 5
    assert abs(together - alone).max() < 1e-5


@pytest.mark.parametrize("config", [{"query_quantize": "int8"}, {"query_quantize": "mixed"},
                                    {"backend": "onnx", "quantize": "int8"}])
def test_int8_queries_run_one_per_pass_and_get_the_vector_they_get_alone(config):
    """int8 scales activations per pass, over every row and its padding: batched, a query's vector would depend on
    its neighbours. On an int8 export (query_quantize int8, or an int8 onnx backend) each query runs alone, so a
    micro-batch gives every query exactly the vector it gets alone, whoever else is searching."""
    from foveal.config import EncoderConfig

    encoder = st.get_encoder(EncoderConfig(**config))
    queries = [f"tides {i}" for i in range(6)] + [f"why the moon pulls the ocean tides {i} " * 8 for i in range(6)]
    alone = np.stack([encoder.encode_queries([q]).vectors[0] for q in queries])
    before = encoder._lock.passes["query"]
    together = encoder.encode_queries(queries[::-1]).vectors[::-1]
    assert encoder._lock.passes["query"] - before == len(queries)
    np.testing.assert_array_equal(together, alone)
