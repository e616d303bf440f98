"""Vector items end to end on the synthetic video fixture (samples/video): an index without a text encoder, frames
over REST and JSONL, the mean in the first stage, the frames in the store, a query vector, and X-Pool reranking with
its attention on each hit. Bad frames get a 422 naming the item and the frame, and nothing accepted before is lost."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from foveal.service.settings import ServiceSettings
from tests.conftest import SAMPLES
from tests.service.helpers import wait_done

VIDEO = SAMPLES / "video"
ITEMS = [json.loads(line) for line in (VIDEO / "items.jsonl").read_text().splitlines()]
DOG = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
NIGHT = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]


@pytest.fixture()
def video_engine(home, tmp_path, monkeypatch):
    """An engine whose models folder holds an X-Pool checkpoint trained on the fixture's pairs (a few seconds)."""
    from foveal.engine import Engine
    from foveal.models_dir import register_model
    from foveal.rerank.xpool import XPoolTrainOptions, read_pairs, train_xpool

    monkeypatch.setenv("FOVEAL_MODELS_DIR", str(tmp_path / "models"))
    texts, items = read_pairs(VIDEO / "pairs.jsonl")
    model, _ = train_xpool(texts, items, XPoolTrainOptions(epochs=8, batch_size=6, learning_rate=3e-3, threads=1))
    register_model(model.save, "xpool-video")
    engine = Engine(home)
    yield engine
    engine.close()


@pytest.fixture()
def client(video_engine):
    from foveal.api.app import create_app

    with TestClient(create_app(video_engine, settings=ServiceSettings())) as c:
        yield c


def _create(client, name="videos", **xpool):
    config = {"encoder": {"model": "none", "dimension": 8}, "xpool": {"model": "xpool-video", **xpool}}
    response = client.post("/v1/indexes", json={"name": name, "config": config})
    assert response.status_code == 201, response.text


def test_rest_vector_items_end_to_end(client, video_engine):
    _create(client)
    job = wait_done(client, client.post("/v1/indexes/videos/documents", json={"documents": ITEMS}).json()["job_id"])
    assert (job["state"], job["done"], job["failed"]) == ("done", len(ITEMS), 0)
    stats = client.get("/v1/indexes/videos").json()
    assert stats["documents"] == stats["vectors"] == len(ITEMS)

    # the store keeps each item's frames (float16) and its vector is their normalised mean
    collection = video_engine.get("videos")
    key = collection.store.get_by_id("v-dog-beach").doc_key
    frames = collection.store.vector_sets([key], "frames")[key]
    expected = np.asarray(ITEMS[0]["vectors"], dtype=np.float32)
    assert frames.shape == expected.shape and np.allclose(frames, expected, atol=1e-3)
    _, stored = collection.store.vectors_of([key])
    mean = expected.mean(axis=0)
    assert np.allclose(stored[0], mean / np.linalg.norm(mean), atol=1e-6)

    # first stage only (xpool.enabled is false): the dense list searches the means
    plain = client.post("/v1/indexes/videos/search", json={"query": "a dog", "vector": DOG, "pipeline": "dense"}).json()
    assert plain["query_info"]["vector"] == "given"
    assert {h["id"] for h in plain["hits"][:2]} == {"v-dog-beach", "v-pets"}
    assert all("xpool" not in h["evidence"] for h in plain["hits"])

    # per request: X-Pool reranks, with its attention over each hit's frames
    body = {"query": "a dog", "vector": DOG, "pipeline": "dense", "stages": {"xpool": True}}
    found = client.post("/v1/indexes/videos/search", json=body).json()
    assert {h["id"] for h in found["hits"][:2]} == {"v-dog-beach", "v-pets"}
    top = found["hits"][0]["evidence"]["xpool"]
    n_frames = len(next(i for i in ITEMS if i["_id"] == found["hits"][0]["id"])["vectors"])
    assert top["frames"] == n_frames and len(top["attention"]) == n_frames
    assert abs(sum(a["weight"] for a in top["attention"]) - 1) < 1e-4
    scores = [h["score"] for h in found["hits"]]
    assert scores == sorted(scores, reverse=True)

    # hybrid: BM25 reads the captions, the vector the frames
    night = client.post("/v1/indexes/videos/search",
                        json={"query": "night traffic", "vector": NIGHT, "stages": {"xpool": True}}).json()
    assert night["hits"][0]["id"] == "v-city-night"
    captions = client.post("/v1/indexes/videos/search", json={"query": "concert", "pipeline": "bm25"}).json()
    assert captions["hits"][0]["id"] == "v-concert"


def test_index_switch_runs_xpool_by_default(client):
    _create(client, "on", enabled=True)
    wait_done(client, client.post("/v1/indexes/on/documents", json={"documents": ITEMS}).json()["job_id"])
    hits = client.post("/v1/indexes/on/search", json={"query": "q", "vector": DOG}).json()["hits"]
    assert "attention" in hits[0]["evidence"]["xpool"]
    off = client.post("/v1/indexes/on/search", json={"query": "q", "vector": DOG, "stages": {"xpool": False}}).json()
    assert all("xpool" not in h["evidence"] for h in off["hits"])


def test_bad_frames_get_a_422_and_nothing_accepted_before_is_lost(client):
    _create(client)
    wait_done(client, client.post("/v1/indexes/videos/documents", json={"documents": ITEMS[:3]}).json()["job_id"])
    good = {"_id": "fine", "vectors": [DOG]}
    cases = [
        ({"_id": "short", "vectors": [DOG, DOG[:7]]}, ["'short'", "'vectors'[1]", "dimension 7", "8"]),
        ({"_id": "huge", "vectors": [DOG, [1e6] + DOG[1:]]}, ["'huge'", "'vectors'[1][0]", "float16"]),
        ({"_id": "zero", "vectors": [[0.0] * 8]}, ["'zero'", "'vectors'[0]", "zeros"]),
        ({"_id": "many", "vectors": [DOG] * 129}, ["vectors", "128"]),
        ({"_id": "both", "vector": DOG, "vectors": [DOG]}, ["'both'", "not both"]),
    ]
    for bad, fragments in cases:
        response = client.post("/v1/indexes/videos/documents", json={"documents": [good, bad]})
        assert response.status_code == 422, (bad["_id"], response.text)
        assert all(f in response.text for f in fragments), (fragments, response.text)
    nan = '{"documents": [{"_id": "nan", "vectors": [[NaN, 0, 0, 0, 0, 0, 0, 0]]}]}'
    response = client.post("/v1/indexes/videos/documents", content=nan, headers={"content-type": "application/json"})
    assert response.status_code == 422
    # text without vectors: this index has no text encoder
    no_vectors = client.post("/v1/indexes/videos/documents", json={"documents": [{"_id": "t", "text": "words"}]})
    job = wait_done(client, no_vectors.json()["job_id"])
    assert job["failed"] == 1 and "no text encoder" in job["errors"][0]["reason"]
    stats = client.get("/v1/indexes/videos").json()
    assert stats["documents"] == 3  # nothing of a refused request was queued; what came before stays


def test_search_refusals(client, video_engine):
    _create(client)
    client.post("/v1/indexes", json={"name": "plain", "config": {"encoder": {"model": "none", "dimension": 8}}})
    for index, body, fragment in [
        ("videos", {"query": "dog"}, "no text encoder"),
        ("videos", {"query": "dog", "vector": DOG[:3]}, "dimension 3"),
        ("videos", {"query": "dog", "vector": [0.0] * 8}, "zeros"),
        ("videos", {"query": "dog", "vector": DOG, "stages": {"warp": True}}, "unknown stage"),
        ("plain", {"query": "dog", "vector": DOG, "stages": {"xpool": True}}, "xpool.model"),
    ]:
        response = client.post(f"/v1/indexes/{index}/search", json=body)
        assert response.status_code == 422 and fragment in response.text, (body, response.text)
    missing = client.post("/v1/indexes", json={"name": "x", "config": {"encoder": {"model": "none"}}})
    assert missing.status_code == 422 and "encoder.dimension" in missing.text


def test_jsonl_vector_items_keep_the_good_lines(video_engine, tmp_path):
    from foveal.pipeline.ingest import ingest_file

    collection = video_engine.create_index("jsonl", {"encoder": {"model": "none", "dimension": 8}})
    path = tmp_path / "items.jsonl"
    bad = {"_id": "bad", "vectors": [DOG, [float("inf")] + DOG[1:]]}
    lines = [json.dumps(i) for i in ITEMS[:2]] + [json.dumps(bad)] + [json.dumps(i) for i in ITEMS[2:]]
    path.write_text("\n".join(lines) + "\n")
    report = ingest_file(collection, path)
    assert report.accepted == len(ITEMS)
    assert len(report.errors) == 1 and report.errors[0][0] == 3 and "'vectors'[1][0]" in report.errors[0][1]
    key = collection.store.get_by_id("v-concert").doc_key
    assert len(collection.store.vector_sets([key], "frames")[key]) == 3
    collection.delete(["v-concert"])
    assert collection.store.vector_sets([key], "frames") == {}


def test_sigkill_mid_ingest_keeps_items_and_frames_together(home, tmp_path):
    """A real ``foveal ingest`` of vector items (batches of 2, no model to load) SIGKILLed right after its first
    store commit: the committed items have their frames, nothing else is stored, and a re-run completes both."""
    import os
    import subprocess
    import sys

    from foveal.engine import Engine
    from tests.conftest import ROOT
    from tests.killharness import kill_at_hook

    engine = Engine(home)
    engine.create_index("killv", {"encoder": {"model": "none", "dimension": 8}})
    hooks = tmp_path / "hooks.log"
    env = dict(os.environ, FOVEAL_TEST_HOOKS=str(hooks), FOVEAL_TEST_HOOK_PAUSE_S="120")
    command = [sys.executable, "-m", "foveal.cli", "ingest", str(VIDEO / "items.jsonl"), "--index", "killv",
               "--batch-size", "2"]
    kill_at_hook(command, env, hooks, cwd=ROOT)
    collection = engine.get("killv")
    collection.refresh()
    store = collection.store
    keys = [d.doc_key for batch in store.iter_documents() for d in batch]
    assert len(keys) == 2 and set(store.vector_sets(keys, "frames")) == set(keys)
    env.pop("FOVEAL_TEST_HOOKS")
    subprocess.run(command, env=env, cwd=ROOT, check=True, capture_output=True)
    collection.refresh()
    assert store.count() == len(ITEMS) == store.vector_set_stats("frames")["documents"] == len(collection.vectors)
    engine.close()
