"""The trainable cross-attention layer of the event stage (:mod:`foveal.events`, :mod:`foveal.events_train`)."""

from __future__ import annotations

import gzip
import json
import math
from types import SimpleNamespace

import numpy as np

from foveal.config import EventsConfig
from foveal.events import LAYER_FILE, CrossAttentionLayer, EventStage
from foveal.pipeline.request import SearchRequest

DIM = 8


def _identity(alpha=0.5):
    eye = np.eye(DIM, dtype=np.float32)
    return {"wq": eye, "wk": eye, "wv": eye, "wo": eye, "alpha": np.float32(alpha),
            "ln_gain": np.ones(DIM, np.float32), "ln_bias": np.zeros(DIM, np.float32)}


def test_identity_layer_is_the_papers_equation():
    rng = np.random.default_rng(0)
    q = rng.standard_normal(DIM)
    q /= np.linalg.norm(q)
    E = rng.standard_normal((3, DIM))
    recency = np.array([1.0, 0.5, 0.25])
    out, weights = CrossAttentionLayer(_identity(0.5))(q, E, recency)
    logits = E @ q / math.sqrt(DIM) + np.log(recency)
    a = np.exp(logits - logits.max())
    a /= a.sum()
    z = q + 0.5 * (a @ E)
    z = (z - z.mean()) / math.sqrt(z.var() + 1e-5)  # Z = LN(H_q + MHA(H_q, H_e, H_e)), then normalize
    assert np.allclose(weights, a, atol=1e-6) and np.allclose(out, z / np.linalg.norm(z), atol=1e-5)


def test_a_registered_layer_is_used_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("FOVEAL_MODELS_DIR", str(tmp_path))
    (tmp_path / "ev").mkdir()
    np.savez(tmp_path / "ev" / LAYER_FILE, **_identity())
    rng = np.random.default_rng(1)
    events = rng.standard_normal((2, DIM)).astype(np.float32)
    events /= np.linalg.norm(events, axis=1, keepdims=True)
    part = type("Part", (), {"keys": np.array([1, 2]), "timestamps": np.array([0.0, 0.0]), "vectors": events,
                             "__len__": lambda self: 2})()
    config = EventsConfig(enabled=True, gate=-1.0, window_days=None, model="ev")
    collection = SimpleNamespace(event_part=part, store=SimpleNamespace(get_events=lambda k: {}),
                                 config=SimpleNamespace(events=config))
    out, evidence = EventStage(collection).apply(SearchRequest(query="q", now="1970-01-02T00:00:00Z"), events[0])
    assert evidence["attention"] == "trained" and abs(np.linalg.norm(out) - 1) < 1e-5


def test_train_events_registers_a_layer(tmp_path, encoder):
    from foveal.events_train import EventsTrainOptions, train_events

    data = tmp_path / "data"
    (data / "qrels").mkdir(parents=True)
    topics = ["volcano erupts", "election results", "storm floods city", "stock market falls", "team wins final",
              "new vaccine approved", "wildfire spreads", "summit on climate", "rocket launch", "bank merger"]
    with gzip.open(data / "corpus.jsonl.gz", "wt") as f:
        for i, topic in enumerate(topics):
            day = f"2021-03-{i + 1:02d}"
            f.write(json.dumps({"_id": f"ev-{i}", "text": f"Evidence: {topic} today.",
                                "metadata": {"date": day, "kind": "quiz_evidence"}}) + "\n")
            f.write(json.dumps({"_id": f"news-{i}", "title": f"News: {topic}", "text": f"Report on {topic}.",
                                "metadata": {"date": day, "kind": "news_search_result"}}) + "\n")
    with open(data / "queries.jsonl", "w") as f:
        for i, topic in enumerate(topics):
            f.write(json.dumps({"_id": str(i), "text": f"Which {topic}?", "metadata": {"date": f"2021-03-{i + 2:02d}"}})
                    + "\n")
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                             "".join(f"{i}\tev-{i}\t1\n" for i in range(len(topics))))
    record = train_events(data, tmp_path / "out", EventsTrainOptions(epochs=2, gate=-1.0, batch_size=4),
                          log=lambda m: None)
    assert record["gate_open"] == len(topics) and (tmp_path / "out" / LAYER_FILE).exists()
    layer = CrossAttentionLayer.load(tmp_path / "out")
    q = np.random.default_rng(2).standard_normal(layer.dimension)
    out, _ = layer(q / np.linalg.norm(q), np.eye(layer.dimension)[:3], np.ones(3))
    assert abs(np.linalg.norm(out) - 1) < 1e-5
