"""Paraformer served: the index's ``paraformer`` section, ``stages`` per request, stored sentence vectors, the query
vector handed to rerankers, and ``foveal train paraformer --sentences pooled``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from foveal.config import IndexConfig
from foveal.documents import parse_document
from foveal.errors import ConfigError, InvalidInputError
from foveal.pipeline.request import SearchRequest
from foveal.pipeline.search import SearchPipeline
from foveal.rerank.paraformer import (
    EncodeSentences, ParaformerHead, ParaformerSettings, PoolSentenceSpans, StoredSentences,
)
from tests.conftest import TINY_CORPUS
from tests.test_train_stages import runner, scifact_like  # noqa: F401  (fixture)


@pytest.fixture()
def models(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    monkeypatch.setenv("FOVEAL_MODELS_DIR", str(folder))
    torch.manual_seed(0)
    ParaformerHead(ParaformerSettings(hidden_size=384, sentences="pooled")).save(folder / "para-t")
    return folder


def _index(engine, name: str, **paraformer):
    config = {"sentence_vectors": {"enabled": True, "max_sentences": 8},
              "paraformer": {"model": "para-t", "window": 3, **paraformer}}
    collection = engine.create_index(name, config)
    collection.upsert([parse_document(d) for d in TINY_CORPUS])
    return collection


def test_stages_are_checked_by_name():
    with pytest.raises(ValidationError, match="unknown stage"):
        SearchRequest(query="x", stages={"paraformer": True, "nope": True})
    with pytest.raises(ValidationError, match="disagree"):
        SearchRequest(query="x", rerank=True, stages={"rerank": False})
    request = SearchRequest(query="x", stages={"paraformer": False})
    assert request.stage_on("paraformer", True) is False and request.stage_on("xpool", True) is True
    assert SearchRequest(query="x", rerank=False).stage_on("rerank", True) is False


def test_rerankers_that_ask_get_the_pipelines_query_vector(tiny, encoder):
    seen = []

    class Wants:
        name, needs_query_vector = "wants", True

        def rerank(self, request, candidates, collection, query_vector=None):
            seen.append(query_vector)
            return list(candidates)

    class Old:  # the three-argument seam keeps working
        name = "old"

        def rerank(self, request, candidates, collection):
            return list(candidates)

    searcher = SearchPipeline(tiny, rerankers=[Old(), Wants()])
    assert searcher.search(SearchRequest(query="moon and tides")).hits
    np.testing.assert_allclose(seen[0], encoder.encode_queries(["moon and tides"]).vectors[0], atol=1e-6)
    searcher.search(SearchRequest(query="moon and tides", pipeline="bm25"))
    assert seen[1] is None  # nothing was encoded: the stage encodes the query itself if it needs it


def test_paraformer_served_from_the_index_config_reads_stored_sentences(engine, models, monkeypatch):
    collection = _index(engine, "served")

    def no_encoding(*args, **kwargs):
        raise AssertionError("stored sentence vectors are read, not encoded")

    monkeypatch.setattr(EncodeSentences, "__call__", no_encoding)
    monkeypatch.setattr(PoolSentenceSpans, "__call__", no_encoding)
    searcher = engine.pipeline("served")
    plain = searcher.search(SearchRequest(query="why does the sea rise", k=6))
    assert all("paraformer" not in hit.evidence for hit in plain.hits)  # enabled: false by default

    asked = searcher.search(SearchRequest(query="why does the sea rise", k=6, stages={"paraformer": True}))
    scored = [hit for hit in asked.hits if "score" in hit.evidence["paraformer"]]
    assert len(scored) == 3 and all(h.evidence["paraformer"].get("skipped") for h in asked.hits[3:])
    for hit in scored:
        evidence = hit.evidence["paraformer"]
        full = f"{hit.title}\n{hit.text}"
        assert evidence["sentences"] and all(s["text"] in full for s in evidence["sentences"])
        assert abs(sum(s["weight"] for s in evidence["sentences"]) - 1) < 1e-4
        assert evidence["weights"] == {"first_stage": 0.9, "paraformer": 0.1}  # the checkpoint's
    assert [h.score for h in asked.hits] == sorted((h.score for h in asked.hits), reverse=True)


def test_config_weight_and_enabled(engine, models):
    _index(engine, "weighted", enabled=True, weight=1.0)
    hits = engine.pipeline("weighted").search(SearchRequest(query="volcano lava", k=3)).hits
    scores = [h.evidence["paraformer"]["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)  # weight 1: Paraformer's order alone
    assert hits[0].evidence["paraformer"]["weights"] == {"first_stage": 0.0, "paraformer": 1.0}
    off = engine.pipeline("weighted").search(SearchRequest(query="volcano lava", k=3, stages={"paraformer": False}))
    assert all("paraformer" not in h.evidence for h in off.hits)


def test_a_stage_the_index_lacks_is_refused(tiny, models):
    with pytest.raises(InvalidInputError, match="paraformer.model"):
        SearchPipeline(tiny).search(SearchRequest(query="tides", stages={"paraformer": True}))
    with pytest.raises(ConfigError, match="paraformer.enabled needs paraformer.model"):
        IndexConfig.parse({"paraformer": {"enabled": True}})
    with pytest.raises(ConfigError, match="paraformer.model"):
        IndexConfig.parse({"paraformer": {"model": "/etc/passwd"}}, source="rest")
    IndexConfig.parse({"paraformer": {"model": "para-t"}}, source="rest")  # a registered name is fine
    with pytest.raises(ConfigError, match="weight"):
        IndexConfig.parse({"paraformer": {"model": "para-t", "weight": 1.5}})


def test_stored_vectors_equal_the_ones_encoded_at_query_time(engine, encoder, models):
    stored = _index(engine, "stored")
    plain = engine.create_index("plain")
    plain.upsert([parse_document(d) for d in TINY_CORPUS])
    keys = [stored.get(d["_id"]).doc_key for d in TINY_CORPUS]
    from_store = StoredSentences(EncodeSentences(encoder, 8))(stored, keys)
    encoded = StoredSentences(PoolSentenceSpans(encoder, 8))(plain, [plain.get(d["_id"]).doc_key for d in TINY_CORPUS])
    for key, other in zip(keys, encoded.values()):
        assert from_store[key].texts == other.texts
        np.testing.assert_allclose(from_store[key].vectors, other.vectors, atol=2e-3)


def test_train_paraformer_on_pooled_sentence_vectors(scifact_like, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("FOVEAL_MODELS_DIR", str(tmp_path / "models"))
    result = runner.invoke(app_cli(), ["train", "paraformer", "--data", str(scifact_like), "--epochs", "1",
                                       "--negatives-from-top", "2", "--sentences", "pooled", "--name", "para-p"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["sentences"] == "pooled" and record["pairs"] > 0
    assert ParaformerHead.load(tmp_path / "models" / "para-p").settings.sentences == "pooled"
    bad = runner.invoke(app_cli(), ["train", "paraformer", "--data", str(scifact_like), "--sentences", "mean"])
    assert bad.exit_code == 2 and "'faithful' or 'pooled'" in bad.output


def app_cli():
    from foveal.cli import app

    return app


def test_rest_refuses_what_the_index_cannot_do(engine, tiny, models):
    from fastapi.testclient import TestClient

    from foveal.api.app import create_app

    with TestClient(create_app(engine)) as client:
        refused = client.post("/v1/indexes", json={"name": "es-sv", "config": {
            "sentence_vectors": {"enabled": True}, "docstore": {"backend": "elasticsearch"}}})
        assert refused.status_code == 422 and "needs docstore.backend 'sqlite'" in refused.text
        unknown = client.post("/v1/indexes/tiny/search", json={"query": "tides", "stages": {"bogus": True}})
        assert unknown.status_code == 422 and "unknown stage" in unknown.text
        missing = client.post("/v1/indexes/tiny/search", json={"query": "tides", "stages": {"paraformer": True}})
        assert missing.status_code == 422 and "paraformer.model" in missing.text
