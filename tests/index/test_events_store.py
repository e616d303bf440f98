"""The event store (:mod:`foveal.events`): the document store is its commit point, the event vectors replay from the
shared change log, a SIGKILLed event writer loses nothing it acknowledged, snapshots carry events, retention.

Events are encoded by a stand-in encoder (a vector from a hash of the text), so no model loads, in this process or
in the killed children.
"""

from __future__ import annotations

import json
import os
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from foveal.documents import parse_document
from foveal.errors import InvalidInputError
from foveal.events import Event, parse_event
from foveal.errors import DocumentError
from tests.killharness import kill_at_hook

ROOT = Path(__file__).resolve().parents[2]
DIM = 384


class HashEncoder:
    """One unit vector per text, from a hash of it (deterministic across processes)."""

    name = "hash"
    dimension = DIM
    max_seq_length = 256

    def encode_queries(self, texts, with_tokens=False):
        from foveal.encoders.base import EncodedQueries

        rows = []
        for text in texts:
            v = np.random.default_rng(zlib.crc32(text.encode())).standard_normal(DIM).astype(np.float32)
            rows.append(v / np.linalg.norm(v))
        return EncodedQueries(np.stack(rows) if rows else np.zeros((0, DIM), np.float32), [0] * len(rows))

    def encode_documents(self, texts):  # pragma: no cover - documents carry vectors here
        raise AssertionError("no document is encoded in these tests")


def _event(i: int, day: int = 1) -> Event:
    return parse_event({"_id": f"e{i}", "title": f"Event {i}", "text": f"uniq{i}", "timestamp": f"2024-05-{day:02d}"})


def _open(engine, name="ev"):
    collection = engine.get(name) if engine.exists(name) else engine.create_index(name)
    collection._encoder = HashEncoder()
    return collection


def _event_ids_in_index(collection) -> set[str]:
    collection.refresh()
    part = collection.event_part
    stored = collection.store.get_events(part.keys.tolist())
    return {stored[k].id for k in part.keys.tolist() if k in stored}


def _consistent(collection) -> set[str]:
    """The event vectors hold exactly the store's events, each with its own vector; returns their ids."""
    in_store = {e.id for e in collection.store.list_events(0, 100_000)}
    assert _event_ids_in_index(collection) == in_store
    assert len(collection.event_part) == len(in_store)
    for key, vector in zip(collection.event_part.keys.tolist(), collection.event_part.vectors):
        event = collection.store.get_events([key])[key]
        want = HashEncoder().encode_queries([Event(event.id, event.title, event.text, None, 0).full_text]).vectors[0]
        assert np.allclose(vector, want)
    return in_store


def test_add_replace_delete_and_documents_are_untouched(engine):
    c = _open(engine)
    c.upsert([parse_document({"_id": "e1", "text": "a document named like an event",
                              "vector": np.ones(DIM, np.float32).tolist()})])
    assert c.add_events([_event(1), _event(2)])["added"] == ["e1", "e2"]
    assert c.add_events([_event(1)])["unchanged"] == ["e1"]
    assert c.add_events([_event(1, day=3)])["updated"] == ["e1"]
    assert c.delete_events(["e2", "nope"]) == {"deleted": ["e2"], "missing": ["nope"]}
    assert _consistent(c) == {"e1"}
    stats = c.stats()
    assert stats["documents"] == stats["vectors"] == stats["lexical_documents"] == 1 and stats["events"] == 1
    assert c.get("e1").text == "a document named like an event"  # same id, other kind: no collision


def test_event_vectors_replay_from_the_log_after_a_crash_between_the_commits(engine):
    """What a writer that died after its store commit leaves (events in the store and log, not in events.npz) is
    replayed by the next open; a missing or damaged events.npz is rebuilt from the store."""
    c = _open(engine)
    c.add_events([_event(1)])
    from foveal.index.sqlite_store import PreparedEvent

    e = _event(2)
    vector = HashEncoder().encode_queries([e.full_text]).vectors[0]
    c.store.write_events([PreparedEvent(e.id, e.title, e.text, None, e.timestamp, e.content_hash, vector)])
    engine.close()
    from foveal.engine import Engine

    again = Engine(engine.home)
    c2 = _open(again)
    assert _consistent(c2) == {"e1", "e2"}
    again.close()
    (c2.path / "events.npz").write_bytes(b"PK\x03\x04 truncated")
    third = Engine(engine.home)
    assert _consistent(_open(third)) == {"e1", "e2"}
    third.close()


_CHILD = r"""
import json, sys, zlib
sys.path.insert(0, sys.argv[2])
from tests.index.test_events_store import HashEncoder, _event
from foveal.index.collection import Collection
collection = Collection.open(sys.argv[1], "ev")
collection._encoder = HashEncoder()
ack = open(sys.argv[3], "a")
for batch in range(100, 400, 4):
    events = [_event(i) for i in range(batch, batch + 4)]
    collection.add_events(events)
    ack.write(json.dumps([e.id for e in events]) + "\n"); ack.flush()
"""


@pytest.mark.parametrize("moment", ["store_committed", "derived_committed"])
def test_sigkill_of_an_event_writer_loses_nothing_acknowledged(engine, tmp_path, moment):
    """A real process adding events, SIGKILLed right after its third store commit (paused there, before the event
    vectors hold it) or after its third derived commit: every batch it acknowledged, and the batch the store
    committed, are in the store and the event index once the index is opened again; nothing half-written."""
    c = _open(engine)
    c.add_events([_event(1)])
    hooks, ack = tmp_path / "hooks.log", tmp_path / "ack.jsonl"
    env = dict(os.environ, FOVEAL_TEST_HOOKS=str(hooks), FOVEAL_TEST_HOOK_PAUSE_S="0.05",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if moment == "store_committed":
        env["FOVEAL_TEST_HOOK_PAUSE_S"] = "120"
    kill_at_hook([sys.executable, "-c", _CHILD, str(c.path), str(ROOT), str(ack)], env, hooks, event=moment,
                 count=3 if moment == "derived_committed" else 1, cwd=ROOT)
    acknowledged = {i for line in ack.read_text().splitlines() for i in json.loads(line)} if ack.exists() else set()
    engine.close()
    from foveal.engine import Engine

    again = Engine(engine.home)
    reopened = _open(again)
    present = _consistent(reopened)
    assert acknowledged <= present and "e1" in present
    assert len(present - acknowledged - {"e1"}) <= 4  # at most the one batch committed but not yet acknowledged
    reopened.add_events([_event(999)])  # and it takes writes again
    assert "e999" in _consistent(reopened)
    again.close()


def test_snapshot_and_restore_carry_events(engine, tmp_path):
    from foveal.snapshots import Snapshots

    c = _open(engine)
    c.add_events([_event(1), _event(2)])
    snapshots = Snapshots(engine, tmp_path / "snaps")
    made = snapshots.create("ev", "s1")
    assert made["events"] == 2
    c.delete_events(["e1"])
    c.add_events([_event(3)])
    snapshots.restore("s1", "ev")
    assert _consistent(_open(engine)) == {"e1", "e2"}


def test_retention_drops_old_events_in_the_same_write(engine):
    from foveal.config import IndexConfig

    c = engine.create_index("kept", IndexConfig(events={"retention_days": 10}))
    c._encoder = HashEncoder()
    now = _event(0, day=20).timestamp
    c.add_events([_event(1, day=15), _event(2, day=18)], now=now)
    result = c.add_events([_event(3, day=1), _event(4, day=19)], now=now + 6 * 86_400)
    assert result["expired"] == ["e3", "e1"] and result["added"] == ["e4"]
    assert _consistent(c) == {"e2", "e4"}


def test_bad_events_are_refused_with_a_reason():
    with pytest.raises(DocumentError, match="not ISO 8601"):
        parse_event({"_id": "x", "title": "t", "timestamp": "last tuesday"})
    with pytest.raises(DocumentError, match="missing 'timestamp'"):
        parse_event({"_id": "x", "title": "t"})
    with pytest.raises(DocumentError, match="no title and no text"):
        parse_event({"_id": "x", "timestamp": "2024-01-01"})
    with pytest.raises(DocumentError, match="unknown field"):
        parse_event({"_id": "x", "title": "t", "timestamp": "2024-01-01", "vector": [1]})


def test_an_index_without_an_event_store_says_so(engine):
    c = _open(engine)
    c.event_part = None
    with pytest.raises(InvalidInputError, match="holds no events"):
        c.add_events([_event(1)])
