"""The REST example of docs/xpool.md, run for real on the synthetic video fixture (samples/video), in-process (the
ASGI app behind ``foveal serve``, a throw-away FOVEAL_HOME): trains X-Pool on the fixture's pairs, creates an
index of vector items, ingests the six videos, and searches with a query vector with and without X-Pool.

    .venv/bin/python bench/xpool_video.py          # prints each request and the answer (cut to what matters)

A few seconds of CPU. What it prints is what docs/xpool.md shows.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VIDEO = ROOT / "samples" / "video"


def show(method: str, path: str, body, response) -> None:
    print(f"$ {method} {path}")
    if body is not None:
        print(json.dumps(body) if len(json.dumps(body)) < 300 else json.dumps(body)[:200] + " ...")
    print(f"-> {response.status_code}")
    answer = response.json()
    if "hits" in answer:  # one line per hit: what the first stage and X-Pool said
        print(json.dumps({k: answer[k] for k in ("query_info",)}))
        for hit in answer["hits"]:
            print(json.dumps({"rank": hit["rank"], "id": hit["id"], "score": round(hit["score"], 4),
                              **{k: _round(v) for k, v in hit["evidence"].items()}}))
    else:
        print(json.dumps(answer))
    print()


def _round(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="foveal-video-"))
    os.environ["FOVEAL_HOME"] = str(home)
    os.environ["FOVEAL_MODELS_DIR"] = str(home / "models")
    from fastapi.testclient import TestClient

    from foveal.api.app import create_app
    from foveal.engine import Engine
    from foveal.models_dir import register_model
    from foveal.rerank.xpool import XPoolTrainOptions, read_pairs, train_xpool

    # what `foveal train xpool --pairs samples/video/pairs.jsonl --name xpool-video` does
    texts, items = read_pairs(VIDEO / "pairs.jsonl")
    model, record = train_xpool(texts, items, XPoolTrainOptions(epochs=8, batch_size=6, learning_rate=3e-3,
                                                                threads=1))
    register_model(model.save, "xpool-video")
    print(f"trained xpool-video on {record['pairs']} pairs in {record['train_seconds']} s\n")

    engine = Engine(home)
    with TestClient(create_app(engine)) as client:
        body = {"name": "videos", "config": {"encoder": {"model": "none", "dimension": 8},
                                             "xpool": {"model": "xpool-video"}}}
        show("POST", "/v1/indexes", body, client.post("/v1/indexes", json=body))
        documents = [json.loads(line) for line in (VIDEO / "items.jsonl").read_text().splitlines()]
        response = client.post("/v1/indexes/videos/documents", json={"documents": documents})
        show("POST", "/v1/indexes/videos/documents", {"documents": documents}, response)
        job = response.json()["status_url"]
        while client.get(job).json()["state"] not in ("done", "failed"):
            pass
        for stages in (None, {"xpool": True}):
            body = {"query": "a dog", "vector": [1, 0, 0, 0, 0, 0, 0, 0], "pipeline": "dense", "k": 3,
                    "fields": ["title", "evidence"]}
            if stages:
                body["stages"] = stages
            response = client.post("/v1/indexes/videos/search", json=body)
            show("POST", "/v1/indexes/videos/search", body, response)
        bad = {"documents": [{"_id": "v-bad", "vectors": [[1, 0, 0, 0, 0, 0, 0, 0], [0.5, 0.5, 0, 0, 0, 0, 0]]}]}
        show("POST", "/v1/indexes/videos/documents", bad, client.post("/v1/indexes/videos/documents", json=bad))
    engine.close()


if __name__ == "__main__":
    main()
