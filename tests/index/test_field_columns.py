"""The in-memory filter columns answer exactly what the store's SQL answers, and follow every commit.

``SqliteDocStore.filter_key_array`` answers from :mod:`foveal.index.field_columns`; ``filter_key_array_sql`` is
the statement it replaced. Random documents (numbers, bools, text, dates, nulls, lists, missing keys) and random
filters are answered both ways, after writes through this store, through a second store on the same file (another
connection, as a worker process is), after deletes, and after the change log is pruned past the columns.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from foveal.documents import parse_document
from foveal.index.field_columns import FieldColumns
from foveal.index.sqlite_store import PreparedDocument, SqliteDocStore

VALUES = [0, 1, 2, 3, 1.0, 2.5, -1, True, False, "x", "y", "1", "", "2024-03-01", "2024-06-01T12:00:00Z",
          "2023-12-31", None, ["x"], {"a": 1}]


def _doc(doc_id: str, metadata: dict, timestamp=None) -> PreparedDocument:
    parsed = parse_document({"_id": doc_id, "text": doc_id, "metadata": metadata, "timestamp": timestamp})
    return PreparedDocument(parsed, [(0, len(parsed.full_text))], np.ones((1, 4), np.float32) / 2, n_tokens=1)


def _random_doc(rng: random.Random, doc_id: str) -> PreparedDocument:
    metadata = {key: rng.choice(VALUES) for key in ("k1", "k2", "k3") if rng.random() < 0.8}
    timestamp = rng.choice([None, 100, 150, 200, 250.5, 300])
    return _doc(doc_id, metadata, timestamp)


def _random_filter(rng: random.Random) -> tuple[dict | None, dict | None]:
    metadata = {}
    for key in rng.sample(["k1", "k2", "k3", "k4"], rng.randint(0, 2)):
        shape = rng.random()
        if shape < 0.35:
            metadata[key] = rng.choice([v for v in VALUES if isinstance(v, (int, float, str, bool))])
        elif shape < 0.55:
            metadata[key] = rng.sample([0, 1, 1.0, True, False, "x", "1", 2.5, "2024-03-01"], rng.randint(1, 4))
        elif shape < 0.8:
            dates = rng.random() < 0.4
            pool = [1_704_067_200, 1_709_251_200, 1_717_243_200] if dates else [-1, 0, 1, 2, 2.5, 3]
            ops = rng.sample(["gte", "gt", "lte", "lt"], rng.randint(1, 2))
            metadata[key] = {"range": {op: rng.choice(pool) for op in ops}, "dates": dates}
        else:
            metadata[key] = {"exists": rng.random() < 0.5}
    bounds = None
    if rng.random() < 0.4:
        ops = rng.sample(["gte", "gt", "lte", "lt"], rng.randint(1, 2))
        bounds = {op: rng.choice([100, 150, 200, 250.5, 301]) for op in ops}
    return metadata or None, bounds


def _agree(store: SqliteDocStore, rng: random.Random, rounds: int = 60) -> int:
    """Random filters answered both ways; returns how many matched something (so the check is not vacuous)."""
    non_empty = 0
    for _ in range(rounds):
        metadata, bounds = _random_filter(rng)
        fast = store.filter_key_array(None, metadata, bounds)
        slow = store.filter_key_array_sql(None, metadata, bounds)
        assert fast.dtype == np.int64 and fast.tolist() == slow.tolist(), (metadata, bounds)
        non_empty += bool(slow.size)
    return non_empty


def test_columns_answer_what_sql_answers_through_writes_from_two_connections(tmp_path):
    rng = random.Random(11)
    store = SqliteDocStore(tmp_path / "docs.sqlite")
    other = SqliteDocStore(tmp_path / "docs.sqlite")  # another connection on the same file: a worker's
    try:
        store.write([_random_doc(rng, f"d{i}") for i in range(300)])
        assert _agree(store, rng) > 20
        for round_ in range(6):
            writer = store if round_ % 2 else other
            ids = rng.sample(range(400), 40)  # replaces some, adds some
            writer.write([_random_doc(rng, f"d{i}") for i in ids], deletes=[f"d{i}" for i in rng.sample(range(400), 15)])
            assert _agree(store, rng, 40) > 10
    finally:
        other.close()
        store.close()


def test_a_change_made_by_another_connection_is_seen_by_the_next_filter(tmp_path):
    store = SqliteDocStore(tmp_path / "docs.sqlite")
    other = SqliteDocStore(tmp_path / "docs.sqlite")
    try:
        keys = store.write([_doc("a", {"color": "red"}), _doc("b", {"color": "blue"})])
        assert store.filter_key_array(None, {"color": "red"}, None).tolist() == [keys["a"]]
        other.write([_doc("a", {"color": "blue"}), _doc("c", {"color": "red"}, 50)], deletes=["b"])
        c = other.get_by_id("c").doc_key
        assert store.filter_key_array(None, {"color": "red"}, None).tolist() == [c]
        assert store.filter_key_array(None, {"color": "blue"}, None).tolist() == [keys["a"]]
        assert store.filter_key_array(None, None, {"gte": 50}).tolist() == [c]
        assert store.filter_key_array(None, {"color": {"exists": False}}, None).tolist() == []
    finally:
        other.close()
        store.close()


def test_many_changes_or_a_pruned_log_reload_in_full(tmp_path, monkeypatch):
    rng = random.Random(5)
    store = SqliteDocStore(tmp_path / "docs.sqlite")
    try:
        store.write([_random_doc(rng, f"d{i}") for i in range(100)])
        assert _agree(store, rng, 20) > 3
        monkeypatch.setattr(FieldColumns, "patch_min", 10)  # more than 10 changes: a full reload
        store.write([_random_doc(rng, f"d{i}") for i in range(50)])
        assert _agree(store, rng, 20) > 3
        store.write([_random_doc(rng, f"d{i}") for i in range(5)])  # few: patched in
        store.prune_log(store.max_seq())  # the log no longer reaches back to the columns' position
        store.write([_random_doc(rng, f"d{i}") for i in range(3)])
        assert _agree(store, rng, 20) > 3
    finally:
        store.close()


@pytest.mark.parametrize("wanted", [2**53, -(2**60), [1, 2**62], 1e300])
def test_huge_integers_go_to_sql(tmp_path, wanted):
    store = SqliteDocStore(tmp_path / "docs.sqlite")
    try:
        keys = store.write([_doc("a", {"n": 2**62}), _doc("b", {"n": 2**62 + 1}), _doc("c", {"n": 2**53})])
        assert not FieldColumns.covers(None, {"n": wanted})
        expected = store.filter_key_array_sql(None, {"n": wanted}, None).tolist()
        assert store.filter_key_array(None, {"n": wanted}, None).tolist() == expected
        assert store.filter_key_array(None, {"n": 2**62 + 1}, None).tolist() == [keys["b"]]
    finally:
        store.close()
