"""Queries never wait behind a document batch: the model lock is held per forward pass, queries first."""

import threading
import time

from foveal.encoders import sentence_transformer as st
from foveal.encoders.sentence_transformer import PriorityLock


def _wait_until(predicate):
    for _ in range(10_000):
        if predicate():
            return
        time.sleep(0.001)
    raise AssertionError("condition never held")


def test_a_waiting_query_goes_before_waiting_documents():
    lock = PriorityLock()
    order = []
    lock._acquire(False)  # a document pass is running
    doc = threading.Thread(target=lambda: (lock._acquire(False), order.append("doc"), lock._release()))
    doc.start()
    _wait_until(lambda: doc.is_alive())
    query = threading.Thread(target=lambda: (lock._acquire(True), order.append("query"), lock._release()))
    query.start()
    _wait_until(lambda: lock._queries_waiting == 1)
    lock._release()
    doc.join(10)
    query.join(10)
    assert order == ["query", "doc"]


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
