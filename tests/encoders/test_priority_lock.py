"""Queries never wait behind a document batch: the model lock is held per forward pass, queries first."""

import threading

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
