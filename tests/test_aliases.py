"""Index aliases (foveal.aliases) and ``foveal reindex`` (foveal.reindex): resolution everywhere a name is used, atomic
swaps under concurrent searches, restart and crash safety, deletion refused, keys checked on the resolved index, and a
reindex that resumes after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from foveal.documents import parse_document
from foveal.errors import ConflictError, IndexExistsError, IndexNotFoundError
from foveal.pipeline.request import SearchRequest
from tests.conftest import TINY_CORPUS

ADMIN = "sk-test-admin-0123456789"
A_ADMIN = "sk-test-a-admin-0123456789"  # admin, index a only
A_READ = "sk-test-a-read-0123456789"  # read, index a only
KEYS = "; ".join([f"ops admin {ADMIN}", f"a-admin admin {A_ADMIN} a", f"a-reader read {A_READ} a"])


def _fill(engine, name, docs=TINY_CORPUS):
    collection = engine.create_index(name)
    collection.upsert([parse_document(d) for d in docs])
    collection.flush()
    return collection


def _bm25(query="moon"):
    return SearchRequest(query=query, pipeline="bm25", k=3)


def test_alias_resolves_for_search_get_and_ingest_and_survives_restart(engine, home):
    from foveal.engine import Engine

    _fill(engine, "a")
    _fill(engine, "b", TINY_CORPUS[:2])
    assert engine.set_alias("live", "a") is None
    assert engine.search("live", _bm25()).index == "a"
    assert engine.get("live").get("tides") is not None
    engine.get("live").upsert([parse_document({"_id": "new", "text": "moon landing"})])
    assert engine.get("a").get("new") is not None and engine.get("b").get("new") is None
    assert engine.set_alias("live", "b") == "a"  # a swap says where it pointed
    assert engine.search("live", _bm25("yeast")).index == "b"
    assert json.loads((home / "aliases.json").read_text()) == {"live": "b"}
    again = Engine(home)  # a restart (another process) reads the same table
    try:
        assert again.list_aliases() == {"live": "b"} and again.search("live", _bm25("yeast")).index == "b"
    finally:
        again.close()
    assert engine.remove_alias("live") == "b" and engine.list_aliases() == {}
    with pytest.raises(IndexNotFoundError):
        engine.search("live", _bm25())


def test_alias_names_and_deletion_rules(engine):
    _fill(engine, "a")
    _fill(engine, "b", TINY_CORPUS[:1])
    engine.set_alias("live", "a")
    with pytest.raises(IndexExistsError, match="is an index"):
        engine.set_alias("b", "a")
    with pytest.raises(IndexExistsError, match="is an alias"):
        engine.create_index("live")
    with pytest.raises(IndexNotFoundError):
        engine.set_alias("other", "missing")
    with pytest.raises(ConflictError, match="is an alias"):
        engine.set_alias("other", "live")  # no alias of an alias
    with pytest.raises(ConflictError, match="target of alias"):
        engine.delete_index("a")
    with pytest.raises(ConflictError, match="is an alias"):
        engine.delete_index("live")
    assert engine.exists("a")
    engine.set_alias("live", "b")
    engine.delete_index("a")  # no alias points to it any more
    assert not engine.exists("a") and engine.list_aliases() == {"live": "b"}


def test_crash_before_the_rename_leaves_the_old_table(engine, home):
    _fill(engine, "a")
    engine.set_alias("live", "a")
    # a writer killed after writing its temporary file, before the rename: readers never see it
    (home / ".aliases.json.tmp-999-1").write_text('{"live": "gone"')
    assert engine.list_aliases() == {"live": "a"} and engine.search("live", _bm25()).index == "a"


def test_swap_under_concurrent_searches_never_errors(engine):
    _fill(engine, "a")
    _fill(engine, "b")
    engine.set_alias("live", "a")
    seen, errors = [], []
    stop = threading.Event()

    def searcher():
        while not stop.is_set():
            try:
                seen.append(engine.search("live", _bm25()).index)
            except Exception as exc:  # noqa: BLE001 - what the test looks for
                errors.append(repr(exc))

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(40):
        engine.set_alias("live", "b" if i % 2 == 0 else "a")
    stop.set()
    for t in threads:
        t.join()
    assert errors == [] and set(seen) <= {"a", "b"} and seen


def test_rest_aliases_and_index_limited_keys(engine, monkeypatch):
    from foveal.api.app import create_app
    from foveal.service.settings import ServiceSettings

    _fill(engine, "a")
    _fill(engine, "b", TINY_CORPUS[:2])
    monkeypatch.setenv("FOVEAL_API_KEYS", KEYS)
    with TestClient(create_app(engine, settings=ServiceSettings.from_env())) as client:
        admin, a_admin, a_read = ({"Authorization": f"Bearer {k}"} for k in (ADMIN, A_ADMIN, A_READ))
        assert client.put("/v1/aliases/live", json={"index": "a"}, headers=a_read).status_code == 403  # admin scope
        made = client.put("/v1/aliases/live", json={"index": "a"}, headers=a_admin)
        assert made.status_code == 200 and made.json() == {"alias": "live", "index": "a", "previous": None}
        hit = client.post("/v1/indexes/live/search", json={"query": "moon", "pipeline": "bm25"}, headers=a_read)
        assert hit.status_code == 200 and hit.json()["index"] == "a"
        assert client.get("/v1/indexes/live/documents/tides", headers=a_read).status_code == 200
        # a key limited to a may not point an alias at b, nor reach b through an alias the operator made
        assert client.put("/v1/aliases/sneaky", json={"index": "b"}, headers=a_admin).status_code == 403
        assert client.put("/v1/aliases/live", json={"index": "b"}, headers=admin).status_code == 200
        for response in (
            client.post("/v1/indexes/live/search", json={"query": "yeast", "pipeline": "bm25"}, headers=a_read),
            client.get("/v1/indexes/live/documents/bread", headers=a_read),
            client.post("/v1/indexes/live/documents", json={"documents": [{"_id": "x", "text": "y"}]}, headers=a_admin),
            client.delete("/v1/aliases/live", headers=a_admin),
        ):
            assert response.status_code == 403, response.text
        assert client.get("/v1/aliases", headers=a_read).json() == {}
        assert client.get("/v1/aliases", headers=admin).json() == {"live": "b"}
        # ingest through the alias lands in (and is reported as) the index
        job = client.post("/v1/indexes/live/documents", json={"documents": [{"_id": "x", "text": "moon"}]},
                          headers=admin)
        assert job.status_code == 202 and job.json()["index"] == "b"
        refused = client.delete("/v1/indexes/b", headers=admin)
        assert refused.status_code == 409 and "target of alias" in refused.json()["error"]["message"]
        assert client.put("/v1/aliases/a", json={"index": "b"}, headers=admin).status_code == 409
        assert client.delete("/v1/aliases/live", headers=admin).json() == {"alias": "live", "index": "b",
                                                                          "previous": None}
        assert client.delete("/v1/aliases/live", headers=admin).status_code == 404


# -- reindex ----------------------------------------------------------------------------------------------------
def _documents(collection):
    return {d.id: (d.title, d.text, d.metadata, d.timestamp)
            for page in collection.store.iter_documents() for d in page}


def _vectors(collection):
    out = {}
    for page in collection.store.iter_documents():
        for d in page:
            _, vectors = collection.store.vectors_of([d.doc_key])
            out[d.id] = vectors
    return out


def test_reindex_copies_from_the_store_and_refuses_unrelated_targets(engine, tmp_path):
    from foveal.reindex import reindex

    src = _fill(engine, "src")
    src.upsert([parse_document({"_id": "vec", "vector": [1.0] + [0.0] * (src.dimension - 1)})])
    summary = reindex(engine, "src", "dst", batch_size=2)
    dst = engine.get("dst")
    assert _documents(dst) == _documents(src) and summary["target_documents"] == len(TINY_CORPUS) + 1
    assert summary["skipped"] == 0 and np.allclose(_vectors(dst)["vec"], _vectors(src)["vec"])
    assert reindex(engine, "src", "dst")["copied_this_run"] == 0  # done: a re-run has nothing to copy
    _fill(engine, "other", TINY_CORPUS[:1])
    with pytest.raises(ConflictError, match="not made by a reindex"):
        reindex(engine, "src", "other")


def test_reindex_resumes_after_sigkill(engine, home, tiny):
    """Kill ``foveal reindex`` midway (SIGKILL), run it again: the target is complete and equal to an uninterrupted
    reindex."""
    from foveal.reindex import progress_path, reindex

    cfg = home / "cfg.json"
    cfg.write_text(json.dumps({"encoder": {"passage_overlap": 8}}))  # another segmentation: a real re-encode
    command = [sys.executable, "-m", "foveal.cli", "reindex", "tiny", "--into", "tiny2", "--config", str(cfg),
               "--batch-size", "1", "--pause", "1"]
    env = {**os.environ, "FOVEAL_HOME": str(home)}
    record = progress_path(engine, "tiny2")
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if record.exists() and json.loads(record.read_text())["after"] >= 1:
            break
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not json.loads(record.read_text())["done"]
    finished = subprocess.run(command[:-2], env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    summary = json.loads(finished.stdout)
    assert summary["resumed"] and 0 < summary["copied_this_run"] < len(TINY_CORPUS)
    engine.close()
    clean = reindex(engine, "tiny", "clean", engine.get("tiny2").config)
    assert clean["target_documents"] == len(TINY_CORPUS)
    resumed, fresh = engine.get("tiny2"), engine.get("clean")
    assert _documents(resumed) == _documents(tiny) == _documents(fresh)
    assert resumed.store.passage_count() == fresh.store.passage_count() == len(resumed.vectors)
    for doc_id, vectors in _vectors(fresh).items():
        np.testing.assert_allclose(_vectors(resumed)[doc_id], vectors, atol=1e-5)
    hits = engine.search("tiny2", SearchRequest(query="moon tides", k=1)).hits
    assert hits[0].id == "tides"


def test_alias_cli(engine, home, tiny):
    from typer.testing import CliRunner

    from foveal.cli import app

    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1", "FOVEAL_HOME": str(home)})
    made = runner.invoke(app, ["alias", "set", "live", "tiny"])
    assert made.exit_code == 0 and json.loads(made.stdout) == {"alias": "live", "index": "tiny", "previous": None}
    assert json.loads(runner.invoke(app, ["alias", "list"]).stdout) == {"live": "tiny"}
    found = runner.invoke(app, ["search", "moon tides", "--index", "live", "--pipeline", "bm25", "--json"])
    assert found.exit_code == 0 and "tides" in found.stdout
    refused = runner.invoke(app, ["drop", "tiny"])
    assert refused.exit_code == 2 and "target of alias" in refused.output
    bad = runner.invoke(app, ["alias", "set", "other", "missing"])
    assert bad.exit_code == 2 and "does not exist" in bad.output
    assert json.loads(runner.invoke(app, ["alias", "remove", "live"]).stdout) == {"alias": "live", "index": "tiny"}
