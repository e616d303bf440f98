"""The recovery design of :mod:`foveal.index.collection`: crashes between the stores, damaged files, old folders.

Documents carry precomputed vectors (no encoding); every document has a unique token, so BM25 finding it proves it
reached the lexical index, and a dense search on its own vector proves it reached the vector index.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest

from foveal.config import IndexConfig
from foveal.documents import parse_document
from foveal.errors import IndexDamagedError, IndexNotFoundError
from foveal.index.collection import Collection
from tests.index.test_contract import es_for  # noqa: F401  (fixture)
from tests.killharness import kill_at_hook

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "index-45b262d"
DIM = 384


def _doc(i: int, text: str = "") -> dict:
    vector = np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
    return {"_id": f"d{i}", "title": f"Document {i}", "text": f"uniq{i}tok {text}".strip(), "vector": vector.tolist()}


def _docs(*numbers: int):
    return [parse_document(_doc(i)) for i in numbers]


def _missing(collection: Collection, numbers) -> dict[str, list[str]]:
    """Documents not found where they should be: {"store": [...], "bm25": [...], "dense": [...]}."""
    collection.refresh()
    out: dict[str, list[str]] = {"store": [], "bm25": [], "dense": []}
    for i in numbers:
        stored = collection.get(f"d{i}")
        if stored is None:
            out["store"].append(f"d{i}")
            continue
        if stored.doc_key not in [k for k, _ in collection.lexical.search(f"uniq{i}tok", 5)]:
            out["bm25"].append(f"d{i}")
        ids, vectors = collection.store.vectors_of([stored.doc_key])
        if ids[0] not in collection.vectors.search(vectors[:1], 3)[1][0]:
            out["dense"].append(f"d{i}")
    return {k: v for k, v in out.items() if v}


def _crash_after_store_commit(collection: Collection, numbers) -> None:
    """What a writer that died between its store commit and the derived indexes' commit leaves: the batch in the
    store (and its log), nothing in FAISS or tantivy."""
    collection.store.write(collection.prepare(_docs(*numbers)))


def test_collection_drives_its_stores_through_the_protocols(engine):
    from foveal.index.base import DerivedIndex, DocStore

    collection = engine.create_index("seams")
    assert isinstance(collection.store, DocStore)
    assert [p.name for p in collection.derived] == ["vectors", "lexical", "events"]
    assert all(isinstance(part, DerivedIndex) for part in collection.derived)


# -- finding 1 -------------------------------------------------------------------------------------------------------
def test_a_reader_that_refreshed_then_writes_replays_what_a_dead_writer_left(engine):
    """Old code: B's refresh moved its lexical position to the head without replaying; B's write then recorded that
    position, and d5, d6 were never in BM25 (not after a reopen either)."""
    a = engine.create_index("crash")
    a.upsert(_docs(*range(5)))
    b = Collection.open(a.path, "crash")  # another process on the same folder
    _crash_after_store_commit(a, [5, 6])
    b.refresh()  # a search in process B
    b.upsert(_docs(7))
    assert _missing(b, range(8)) == {}
    b.close()
    a.store.close()
    reopened = Collection.open(a.path, "crash")
    assert _missing(reopened, range(8)) == {}
    stats = reopened.stats()
    assert stats["documents"] == stats["lexical_documents"] == stats["vectors"] == 8
    reopened.close()


def test_es_shared_vectors_replay_what_a_dead_writer_left(engine, es_for):  # noqa: F811
    """The same shape on the Elasticsearch (shared) vector and lexical indexes, on the in-memory fake server."""
    backends = {"backend": "elasticsearch"}
    config = IndexConfig.parse({"vector": {**backends, "factory": "HNSW16"}, "lexical": backends,
                                "elasticsearch": es_for("elasticsearch-fake").model_dump()})
    a = engine.create_index("shared", config)
    a.upsert(_docs(*range(3)))
    b = Collection.open(a.path, "shared")
    _crash_after_store_commit(a, [3, 4])
    b.refresh()
    b.upsert(_docs(5))
    assert _missing(b, range(6)) == {}
    b.close()
    a.close()


def test_a_reader_heals_a_shared_index_left_behind_when_no_writer_comes(engine):
    a = engine.create_index("heal")
    a.upsert(_docs(0, 1))
    b = Collection.open(a.path, "heal")
    _crash_after_store_commit(a, [2])
    assert _missing(b, range(3)) == {}  # b's refresh took the free write lock and caught tantivy up
    b.close()


def test_rerunning_an_ingest_whose_documents_are_stored_repairs_bm25(engine):
    """Finding 1's "re-running skips them as unchanged": a re-run that writes nothing still catches tantivy up."""
    a = engine.create_index("rerun")
    a.upsert(_docs(0, 1))
    _crash_after_store_commit(a, [2, 3])
    result = a.upsert(_docs(2, 3))
    assert sorted(result.unchanged) == ["d2", "d3"]
    assert [k for k, _ in a.lexical.search("uniq3tok", 3)] == [a.get("d3").doc_key]


def test_readers_follow_without_moving_a_persisted_position(engine):
    import fcntl
    import json

    a = engine.create_index("follow")
    a.upsert(_docs(0, 1))
    b = Collection.open(a.path, "follow")
    _crash_after_store_commit(a, [2])
    recorded = json.loads((a.path / "lexical.json").read_text())["seq"]
    with open(a.path / "write.lock", "a+") as other_writer:  # another process holds the write lock
        fcntl.flock(other_writer, fcntl.LOCK_EX)
        b.refresh()
        assert json.loads((a.path / "lexical.json").read_text())["seq"] == recorded
        assert b.stats()["positions"]["lexical"] == recorded < b.store.max_seq()
        assert _missing(b, [2]) == {"bm25": ["d2"]}  # not in tantivy until a writer applies it
        fcntl.flock(other_writer, fcntl.LOCK_UN)
    assert _missing(b, range(3)) == {}  # lock free: b caught tantivy up as a writer would
    assert json.loads((a.path / "lexical.json").read_text())["seq"] == b.store.max_seq()
    b.close()


_CHILD = """
import sys
from foveal.documents import parse_document
from foveal.index.collection import Collection
from tests.index.test_recovery import _docs
collection = Collection.open(sys.argv[1], "killed")
collection.upsert(_docs(10, 11, 12))
"""


def test_sigkill_between_store_commit_and_derived_commit(engine, tmp_path):
    """A real process, SIGKILLed while paused by the test hook right after its store commit."""
    a = engine.create_index("killed")
    a.upsert(_docs(*range(3)))
    hooks = tmp_path / "hooks.log"
    env = dict(os.environ, FOVEAL_TEST_HOOKS=str(hooks), FOVEAL_TEST_HOOK_PAUSE_S="120",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = kill_at_hook([sys.executable, "-c", _CHILD, str(a.path)], env, hooks, cwd=ROOT)
    event, seq, pid = hooks.read_text().split()
    assert event == "store_committed" and int(pid) == child.pid and int(seq) == a.store.max_seq()
    a.refresh()
    a.upsert(_docs(13))
    assert _missing(a, [0, 1, 2, 10, 11, 12, 13]) == {}


# -- contracts: fencing and the kill-test hook -------------------------------------------------------------------
def test_writes_fenced_by_instance(engine):
    collection = engine.create_index("fenced")
    assert collection.instance == (collection.path / "instance").read_text()
    collection.upsert(_docs(0), expect_instance=collection.instance)
    with pytest.raises(IndexNotFoundError, match="'fenced' was deleted"):
        collection.upsert(_docs(1), expect_instance="another-creation")
    with pytest.raises(IndexNotFoundError, match="was deleted"):
        collection.delete(["d0"], expect_instance="another-creation")
    assert collection.get("d1") is None and collection.get("d0") is not None
    collection.delete(["d0"], expect_instance=collection.instance)
    assert collection.get("d0") is None


def test_test_hook_records_both_commit_points(engine, tmp_path, monkeypatch):
    hooks = tmp_path / "hooks.log"
    monkeypatch.setenv("FOVEAL_TEST_HOOKS", str(hooks))
    collection = engine.create_index("hooked")
    collection.upsert(_docs(0, 1))
    collection.delete(["d0"])
    lines = [line.split() for line in hooks.read_text().splitlines()]
    assert [line[0] for line in lines] == ["store_committed", "derived_committed"] * 2
    assert [int(line[1]) for line in lines] == [2, 2, 3, 3]
    assert {int(line[2]) for line in lines} == {os.getpid()}


# -- durability ------------------------------------------------------------------------------------------------------
def test_document_store_commits_with_synchronous_full(engine):
    collection = engine.create_index("durable")
    assert collection.store._connect().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


# -- finding 6: damage ------------------------------------------------------------------------------------------------
def _two_indexes(engine):
    good = engine.create_index("good")
    good.upsert(_docs(0, 1))
    bad = engine.create_index("bad")
    bad.upsert(_docs(0, 1, 2))
    bad.flush()
    return good, bad


def test_truncated_wal_is_detected_and_refused_while_other_indexes_serve(engine, home):
    from foveal.engine import Engine

    good, bad = _two_indexes(engine)
    bad.close()  # checkpoint: d0-d2 are in docs.sqlite itself
    bad = Collection.open(bad.path, "bad")
    bad.upsert(_docs(3, 4))
    bad.upsert(_docs(5))  # these two commits are only in docs.sqlite-wal (the connection is still open)
    copy = home / "snapshot"
    shutil.copytree(home / "indexes", copy)  # the folder as a power cut leaves it ...
    wal = copy / "bad" / "docs.sqlite-wal"
    assert wal.stat().st_size > 0
    with open(wal, "r+b") as handle:  # ... with the WAL cut short
        handle.truncate(wal.stat().st_size // 3)
    bad.close()
    shutil.rmtree(home / "indexes")
    shutil.move(copy, home / "indexes")
    other = Engine(home)
    with pytest.raises(IndexDamagedError, match="index 'bad'.*docs.sqlite-wal") as info:
        other.get("bad")  # the code at 45b262d opened it "ready": documents 3, vectors 6, lexical 6
    assert info.value.status_code == 503
    assert set(other.open_all()) == {"bad"}
    for name in ("lexical.json", "vectors.npz"):  # what the message says to do to serve what the store holds
        (home / "indexes" / "bad" / name).unlink()
    healed = other.get("bad")
    stats = healed.stats()
    assert stats["documents"] == stats["vectors"] == stats["lexical_documents"] == healed.store.count()
    assert _missing(other.get("good"), [0, 1]) == {}
    other.close()


def test_store_that_fails_its_integrity_check_is_refused_by_name(engine):
    _, bad = _two_indexes(engine)
    bad.close()
    engine._open.pop("bad")
    (bad.path / "docs.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(IndexDamagedError, match="index 'bad'"):
        engine.get("bad")


def _open_fresh(collection: Collection) -> Collection:
    collection.close()
    return Collection.open(collection.path, collection.name)


def test_truncated_vector_file_is_rebuilt_from_the_store(engine, caplog):
    _, bad = _two_indexes(engine)
    bad.close()
    vectors = bad.path / "vectors.npz"
    data = vectors.read_bytes()
    vectors.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="foveal.index"):
        reopened = Collection.open(bad.path, "bad")
    assert "rebuilding the vectors index" in caplog.text and "'bad'" in caplog.text
    assert _missing(reopened, [0, 1, 2]) == {}
    reopened.close()
    again = Collection.open(bad.path, "bad")  # the rebuilt file was saved with a checksum
    assert len(again.vectors) == 3
    again.close()


def test_vector_file_failing_its_checksum_is_rebuilt(engine, caplog, monkeypatch):
    _, bad = _two_indexes(engine)
    bad.close()
    import foveal.index.faiss_index as faiss_index

    real = faiss_index._digest
    monkeypatch.setattr(faiss_index, "_digest", lambda arrays: "0" * 64)  # the saved checksum no longer matches
    with caplog.at_level(logging.WARNING, logger="foveal.index"):
        reopened = Collection.open(bad.path, "bad")
    monkeypatch.setattr(faiss_index, "_digest", real)
    assert "checksum mismatch" in caplog.text
    assert _missing(reopened, [0, 1, 2]) == {}
    reopened.close()


def test_damaged_tantivy_file_is_rebuilt_from_the_store(engine, caplog):
    _, bad = _two_indexes(engine)
    bad.close()
    segment = max((p for p in (bad.path / "lexical").iterdir() if p.suffix == ".term"), key=lambda p: p.stat().st_size)
    segment.write_bytes(segment.read_bytes()[:10])
    with caplog.at_level(logging.WARNING, logger="foveal.index"):
        reopened = Collection.open(bad.path, "bad")
    assert "rebuilding the lexical index" in caplog.text
    assert _missing(reopened, [0, 1, 2]) == {}
    reopened.close()


def test_deleted_lexical_folder_is_rebuilt_not_served_empty(engine):
    _, bad = _two_indexes(engine)
    bad.close()
    shutil.rmtree(bad.path / "lexical")
    reopened = Collection.open(bad.path, "bad")
    assert _missing(reopened, [0, 1, 2]) == {}
    assert len(reopened.lexical) == 3
    reopened.close()


def test_server_starts_and_serves_other_indexes_beside_a_damaged_one(engine, home):
    from fastapi.testclient import TestClient

    from foveal.api.app import create_app
    from foveal.engine import Engine

    _, bad = _two_indexes(engine)
    engine.close()
    (bad.path / "docs.sqlite").write_bytes(b"garbage" * 1000)
    with TestClient(create_app(Engine(home))) as client:
        hits = client.post("/v1/indexes/good/search", json={"query": "uniq1tok", "pipeline": "bm25", "k": 3})
        assert hits.status_code == 200 and hits.json()["hits"][0]["id"] == "d1"
        refused = client.post("/v1/indexes/bad/search", json={"query": "uniq1tok", "pipeline": "bm25"})
        assert refused.status_code == 503 and "index 'bad'" in refused.json()["error"]["message"]
        # the server stays ready (the good index serves); the refused one is named in the checks
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.json()
        assert ready.json()["checks"]["index:good"] == "ok"
        assert ready.json()["checks"]["index:bad"].startswith("refused: index 'bad'")


# -- bounded growth: the change log ---------------------------------------------------------------------------------
def test_change_log_stays_bounded_across_ingest_and_delete(engine, monkeypatch):
    import foveal.index.collection as collection_module

    monkeypatch.setattr(collection_module, "LOG_RETAIN", 0, raising=False)
    writer = engine.create_index("churn")
    reader = Collection.open(writer.path, "churn")  # a private FAISS copy that falls behind the pruned log
    sizes = []
    for cycle in range(6):
        writer.upsert(_docs(*range(20)))
        writer.delete([f"d{i}" for i in range(0, 20, 2)])
        writer.flush()
        sizes.append(sqlite3.connect(writer.path / "docs.sqlite").execute("SELECT COUNT(*) FROM oplog").fetchone()[0])
        if cycle == 4:
            assert _missing(reader, range(1, 20, 2)) == {}
            assert len(reader.vectors) == 10
    assert writer.store.max_seq() > 100
    assert max(sizes) <= 31, sizes  # one batch of upserts and deletes, not the whole history
    reader.close()
    writer.close()


def test_changes_since_streams_in_chunks(engine):
    collection = engine.create_index("stream")
    collection.upsert(_docs(*range(7)))
    changes = collection.store.changes_since(0, chunk=2)
    assert not isinstance(changes, list)
    assert [c.id for c in changes] == [f"d{i}" for i in range(7)]


# -- existing folders ------------------------------------------------------------------------------------------------
def test_folder_written_by_45b262d_opens_and_heals(home, engine):
    """tests/fixtures/index-45b262d was written by the code at commit 45b262d (tests/fixtures/make_index_45b262d.py),
    finding 1 included: its tantivy index lacks d7 and d8 although lexical.json claims them."""
    shutil.copytree(FIXTURE, home / "indexes" / "legacy")
    collection = engine.get("legacy")
    numbers = [0, 1, 2, 3, 4, 5, 7, 8, 9]
    legacy = {n: f"doc{n}" for n in numbers}
    collection.refresh()
    for n, doc_id in legacy.items():
        stored = collection.get(doc_id)
        assert stored is not None, doc_id
        assert stored.doc_key in [k for k, _ in collection.lexical.search(f"token{n}unique", 3)], doc_id
        ids, vectors = collection.store.vectors_of([stored.doc_key])
        assert ids[0] in collection.vectors.search(vectors[:1], 3)[1][0], doc_id
    assert collection.get("doc6") is None
    stats = collection.stats()
    assert stats["documents"] == stats["lexical_documents"] == stats["vectors"] == 9
    collection.upsert([parse_document(dict(_doc(20), _id="doc20"))])  # and it takes writes
    assert collection.get("doc20") is not None
