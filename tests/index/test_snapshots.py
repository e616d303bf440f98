"""Snapshots: one change-log position while writes continue, a checksum manifest, and an atomic restore.

Documents carry their own vectors, so nothing is encoded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest

from foveal.documents import parse_document
from foveal.engine import Engine
from foveal.snapshots import SnapshotCorruptError, SnapshotUnsupportedError, Snapshots


def _doc(doc_id: str, word: str = "walrus") -> dict:
    seed = zlib.crc32(doc_id.encode())
    vector = np.random.default_rng(seed).standard_normal(384).astype(np.float32).tolist()
    return {"_id": doc_id, "text": f"{word} record {doc_id}", "vector": vector}


def _ids(collection) -> set[str]:
    return {d.id for batch in collection.store.iter_documents() for d in batch}


def _consistent(collection) -> int:
    """Every store of the index agrees with the document store; returns the document count."""
    stats = collection.stats()
    n = stats["documents"]
    assert stats["vectors"] == stats["passages"] == n, stats  # one passage per vector-carrying document
    assert stats["lexical_documents"] == n, stats
    return n


def test_snapshot_while_writing_holds_one_position_and_restores_consistently(engine):
    collection = engine.create_index("live")
    collection.upsert([parse_document(_doc(f"d{i:05d}")) for i in range(5)])
    stop = threading.Event()
    written: list[str] = []

    def writer():
        i = 5
        while not stop.is_set() and i < 3000:
            doc_id = f"d{i:05d}"
            collection.upsert([parse_document(_doc(doc_id))])  # one document, one change-log position
            written.append(doc_id)
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(written) < 10:
            time.sleep(0.01)
        snaps = Snapshots(engine)
        made = snaps.create("live", "during")
        while collection.store.count() <= made["documents"] + 3:  # writes go on past the snapshot
            assert thread.is_alive()
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join()
    manifest = snaps.manifest("during")
    assert manifest["position"] == manifest["documents"]  # one upsert of one new document per position
    assert set(manifest["files"]) == {"docs.sqlite", "config.json"}
    assert made["index"] == "live" and manifest["instance"] == collection.instance
    # writes went on past the snapshot: the restore really rolls back
    assert collection.store.count() > manifest["documents"]

    result = snaps.restore("during")
    assert result["documents"] == manifest["documents"]
    restored = engine.get("live")
    assert restored is not collection and restored.instance != manifest["instance"]
    assert _consistent(restored) == manifest["position"]
    # exactly the documents written up to the position: all older ones present, none newer
    assert _ids(restored) == {f"d{i:05d}" for i in range(manifest["position"])}
    hits = engine.search("live", _request("walrus", 1000))
    assert len(hits.hits) == min(manifest["position"], 1000)


def _request(query: str, k: int):
    from foveal.pipeline.request import SearchRequest

    return SearchRequest(query=query, pipeline="bm25", k=k)


def test_restore_as_a_new_name_and_listing(engine):
    collection = engine.create_index("src")
    collection.upsert([parse_document(_doc(f"s{i}")) for i in range(4)])
    snaps = Snapshots(engine)
    snaps.create("src", "s1")
    assert [s["name"] for s in snaps.list()] == ["s1"]
    assert snaps.list("other") == []
    snaps.restore("s1", "copy")
    assert sorted(engine.list_indexes()) == ["copy", "src"]
    assert _ids(engine.get("copy")) == _ids(collection)
    with pytest.raises(Exception, match="already exists"):
        snaps.create("src", "s1")
    snaps.delete("s1")
    assert snaps.list() == []


def test_a_folder_without_manifest_is_not_a_snapshot(engine):
    engine.create_index("src").upsert([parse_document(_doc("a"))])
    snaps = Snapshots(engine)
    snaps.create("src", "ok")
    (snaps.root / "half").mkdir()
    (snaps.root / "half" / "docs.sqlite").write_bytes(b"x")
    assert [s["name"] for s in snaps.list()] == ["ok"]
    with pytest.raises(Exception, match="does not exist"):
        snaps.restore("half")


def test_corrupted_snapshot_is_refused_and_the_index_keeps_serving(engine):
    collection = engine.create_index("keep")
    collection.upsert([parse_document(_doc(f"k{i}")) for i in range(3)])
    snaps = Snapshots(engine)
    snaps.create("keep", "bad")
    collection.upsert([parse_document(_doc("k-after"))])
    store = snaps.root / "bad" / "docs.sqlite"
    data = bytearray(store.read_bytes())
    data[len(data) // 2] ^= 0xFF
    store.write_bytes(bytes(data))
    with pytest.raises(SnapshotCorruptError, match="sha256"):
        snaps.restore("bad")
    current = engine.get("keep")
    assert current is collection
    assert "k-after" in _ids(current) and _consistent(current) == 4
    assert not [p for p in engine.indexes_dir.iterdir() if p.name.startswith(".")]


def test_elasticsearch_index_is_refused(engine, monkeypatch):
    from foveal.config import IndexConfig
    from foveal.snapshots import _check_local

    config = IndexConfig.parse({"lexical": {"backend": "elasticsearch"}})
    monkeypatch.delenv("FOVEAL_ES_SNAPSHOT_REPO", raising=False)
    with pytest.raises(SnapshotUnsupportedError, match="FOVEAL_ES_SNAPSHOT_REPO") as caught:
        _check_local(config, "es")
    assert caught.value.status_code == 409
    monkeypatch.setenv("FOVEAL_ES_SNAPSHOT_REPO", "backups")
    with pytest.raises(SnapshotUnsupportedError, match="backups"):
        _check_local(config, "es")


@pytest.mark.parametrize("stage", ["staged", "swapped"])
def test_restore_killed_in_the_swap_window_leaves_one_whole_index(engine, home, tmp_path, stage):
    collection = engine.create_index("kill")
    collection.upsert([parse_document(_doc(f"old{i}", "old")) for i in range(3)])
    snaps = Snapshots(engine)
    snaps.create("kill", "snap")
    collection.upsert([parse_document(_doc(f"later{i}", "later")) for i in range(2)])
    collection.flush()
    before = _ids(collection)
    engine.close()

    hooks = tmp_path / "hooks"
    env = dict(os.environ, FOVEAL_HOME=str(home), FOVEAL_TEST_HOOKS=str(hooks),
               FOVEAL_DEBUG_RESTORE_STOP_AT=stage, FOVEAL_DEBUG_RESTORE_SLEEP_S="600")
    proc = subprocess.Popen([sys.executable, "-m", "foveal.cli", "snapshot", "restore", "snap"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        while f"restore_{stage}" not in (hooks.read_text() if hooks.exists() else ""):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    fresh = Engine(home)
    try:
        reopened = fresh.get("kill")
        ids = _ids(reopened)
        expected = before if stage == "staged" else {f"old{i}" for i in range(3)}
        assert ids == expected
        assert _consistent(reopened) == len(expected)
        hits = fresh.search("kill", _request("later", 10)).hits
        assert bool(hits) == (stage == "staged")
    finally:
        fresh.close()


def test_restore_of_a_store_whose_log_was_pruned_rebuilds_every_index(engine, monkeypatch):
    import foveal.index.collection as collection_module

    monkeypatch.setattr(collection_module, "LOG_RETAIN", 0)
    collection = engine.create_index("pruned")
    for i in range(6):
        collection.upsert([parse_document(_doc(f"p{i}"))])
    collection.flush()
    collection.upsert([parse_document(_doc("p6"))])
    assert collection.store.log_start() > 1  # the log no longer covers the first documents
    snaps = Snapshots(engine)
    snaps.create("pruned", "p")
    snaps.restore("p")
    restored = engine.get("pruned")
    assert _ids(restored) == {f"p{i}" for i in range(7)} and _consistent(restored) == 7


def test_cli_create_list_restore_delete_with_dir(engine, home, tmp_path):
    from typer.testing import CliRunner

    from foveal.cli import app

    engine.create_index("cli").upsert([parse_document(_doc("c0"))])
    engine.close()
    runner = CliRunner()
    where = str(tmp_path / "elsewhere")
    made = runner.invoke(app, ["snapshot", "create", "cli", "--name", "one", "--dir", where])
    assert made.exit_code == 0, made.output
    assert (tmp_path / "elsewhere" / "one" / "manifest.json").exists()
    listed = runner.invoke(app, ["snapshot", "list", "cli", "--dir", where])
    assert json.loads(listed.stdout.strip())["name"] == "one"
    restored = runner.invoke(app, ["snapshot", "restore", "one", "--as", "cli2", "--dir", where])
    assert restored.exit_code == 0 and json.loads(restored.stdout)["documents"] == 1, restored.output
    bad = runner.invoke(app, ["snapshot", "restore", "../one", "--dir", where])
    assert bad.exit_code == 2 and "invalid snapshot name" in bad.output
    assert runner.invoke(app, ["snapshot", "delete", "one", "--dir", where]).exit_code == 0
    assert runner.invoke(app, ["snapshot", "list", "--dir", where]).stdout.strip() == ""
