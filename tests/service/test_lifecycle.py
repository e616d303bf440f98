"""Creating an index is atomic: a refused creation leaves nothing on disk, and the service keeps serving.

Each refused ``POST /v1/indexes`` below used to leave a folder behind (with a ``config.json`` that no open could
read, or an empty one); ``GET /v1/indexes`` then failed for everyone, ``/readyz`` answered 503 and the next start
of the service exited. Now: 4xx with the ``{"error": ...}`` body, no entry under ``<home>/indexes``, and listing,
readiness and a fresh start all work.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from foveal.service.settings import ServiceSettings

REFUSED = [
    ({"vector": {"factory": "Garbage!!"}}, "factory"),
    ({"encoder": {"model": "/etc"}}, "encoder"),
    ({"encoder": {"model": "no-such-model"}}, "model"),
    ({"vector": {"backend": "nope"}}, "vector backend"),
    ({"lexical": {"backend": "nope"}}, "lexical backend"),
    ({"docstore": {"backend": "no.such.module:Store"}}, "docstore backend"),
    ({"encoder": {"max_seq_length": 4096}}, "max_seq_length"),
]


@pytest.fixture()
def client(engine):
    from foveal.api.app import create_app

    with TestClient(create_app(engine, settings=ServiceSettings())) as c:
        yield c


@pytest.mark.parametrize("config, fragment", REFUSED)
def test_a_refused_creation_leaves_nothing_behind(client, engine, home, config, fragment):
    assert client.post("/v1/indexes", json={"name": "kept"}).status_code == 201
    response = client.post("/v1/indexes", json={"name": "broken", "config": config})
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert fragment in error["message"] and error["type"]
    assert sorted(p.name for p in (home / "indexes").iterdir()) == ["kept"]
    assert client.get("/v1/indexes").status_code == 200
    assert client.get("/v1/indexes").json() == [{"name": "kept", "documents": 0}]
    assert client.get("/readyz").status_code == 200
    assert client.get("/v1/indexes/broken").status_code == 404
    # the name is still free, and the index made under it works
    assert client.post("/v1/indexes", json={"name": "broken"}).status_code == 201


def test_the_service_starts_after_refused_creations(engine, home):
    from foveal.api.app import create_app
    from foveal.engine import Engine

    with TestClient(create_app(engine, settings=ServiceSettings())) as c:
        for number, (config, _) in enumerate(REFUSED):
            assert c.post("/v1/indexes", json={"name": f"b{number}", "config": config}).status_code < 500
    fresh = Engine(home)
    try:
        with TestClient(create_app(fresh, settings=ServiceSettings())) as c:  # the start-up `foveal serve` runs
            assert c.get("/readyz").status_code == 200
            assert c.get("/v1/indexes").json() == []
    finally:
        fresh.close()


def test_cli_ingest_with_a_bad_config_leaves_nothing(home, tmp_path):
    config = tmp_path / "bad.json"
    config.write_text('{"vector": {"factory": "Garbage!!"}}')
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "a", "text": "hello"}\n')
    env = {**os.environ, "FOVEAL_HOME": str(home)}
    done = subprocess.run([sys.executable, "-m", "foveal.cli", "ingest", str(corpus), "--index", "broken",
                           "--config", str(config)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode != 0 and "factory" in (done.stdout + done.stderr)
    assert not (home / "indexes").exists() or list((home / "indexes").iterdir()) == []


def test_leftovers_of_a_crashed_creation_are_ignored_and_cleared(engine, home, monkeypatch):
    """A process killed half-way through a creation leaves only a ``.creating-*`` folder: never listed, never
    opened, removed by the next Engine once no process holds it."""
    from foveal.engine import Engine

    leftover = home / "indexes" / ".creating-0123abcd"
    leftover.mkdir(parents=True)
    (leftover / "config.json").write_text("{not json")
    (home / "indexes" / ".deleting-4567").mkdir()
    monkeypatch.setattr("foveal.engine.SWEEP_GRACE_S", -1.0)  # as if old: no process is still starting on them
    assert engine.list_indexes() == []
    fresh = Engine(home)
    try:
        assert fresh.list_indexes() == [] and list((home / "indexes").iterdir()) == []
    finally:
        fresh.close()


def test_a_creation_in_progress_is_not_swept(engine, home, monkeypatch):
    """While a creation runs in one process, another Engine starting on the same home leaves its folder alone."""
    from foveal.engine import Engine
    from foveal.index import collection as collection_module

    seen = []
    real_init = collection_module.Collection.__init__

    def init_then_start_another_engine(self, path, name, config, **kwargs):
        real_init(self, path, name, config, **kwargs)
        if path.name.startswith(".creating-"):
            other = Engine(home)
            seen.append(path.exists())
            other.close()

    monkeypatch.setattr(collection_module.Collection, "__init__", init_then_start_another_engine)
    monkeypatch.setattr("foveal.engine.SWEEP_GRACE_S", -1.0)  # old enough to sweep: only the lock protects it
    engine.create_index("busy")
    assert seen == [True] and engine.list_indexes() == ["busy"]


def test_two_creations_of_one_name_at_once_make_one_index(engine, home, monkeypatch):
    """Both pass the 'exists?' check and build; the first rename wins, the other is told the index exists and
    leaves nothing behind (before, both wrote into one folder and both reported success)."""
    import threading

    from foveal.engine import Engine
    from foveal.errors import IndexExistsError
    from foveal.index import collection as collection_module

    both_building = threading.Barrier(2, timeout=60)
    real_init = collection_module.Collection.__init__

    waited: set[str] = set()

    def init(self, path, name, config, **kwargs):  # each creator's first open (its build) waits until both are building
        me = threading.current_thread().name
        if me.startswith("creator") and me not in waited:
            waited.add(me)
            both_building.wait()
        real_init(self, path, name, config, **kwargs)

    monkeypatch.setattr(collection_module.Collection, "__init__", init)
    engines = [engine, Engine(home)]
    outcomes: list[object] = []

    def create(eng):
        try:
            outcomes.append(eng.create_index("same"))
        except IndexExistsError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=create, args=(e,), name=f"creator-{i}") for i, e in enumerate(engines)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engines[1].close()
    assert sorted(type(o).__name__ for o in outcomes) == ["Collection", "IndexExistsError"]
    assert [p.name for p in (home / "indexes").iterdir()] == ["same"]


def test_a_broken_folder_left_by_an_older_release_does_not_take_the_service_down(engine, home):
    """What a refused creation used to leave (a config.json no open can read): the service still starts, the
    listing answers 200 and names the broken index with its error, and the other indexes serve."""
    from foveal.api.app import create_app

    engine.create_index("good")
    broken = home / "indexes" / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"vector": {"factory": "Garbage!!"}}')
    (broken / "instance").write_text("0" * 32)
    with TestClient(create_app(engine, settings=ServiceSettings())) as c:
        listing = c.get("/v1/indexes")
        assert listing.status_code == 200, listing.text
        by_name = {entry["name"]: entry for entry in listing.json()}
        assert by_name["good"] == {"name": "good", "documents": 0}
        assert "factory" in by_name["broken"]["error"] and "documents" not in by_name["broken"]
        assert c.post("/v1/indexes/good/search", json={"query": "x", "pipeline": "bm25"}).status_code == 200
