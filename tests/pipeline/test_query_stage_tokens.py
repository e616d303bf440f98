"""Query stages that ask for tokens get them from the encoder's pass; two-argument stages keep working."""

from __future__ import annotations

import numpy as np

from foveal.pipeline.request import SearchRequest
from foveal.pipeline.search import SearchPipeline


class _Recorder:
    name = "recorder"
    needs_tokens = True

    def __init__(self):
        self.seen = []

    def apply(self, request, vector, tokens=None):
        self.seen.append((vector.copy(), tokens))
        return vector, {"tokens": 0 if tokens is None else len(tokens.ids)}


class _Plain:
    """The old two-argument shape of QueryStage.apply."""

    name = "plain"

    def apply(self, request, vector):
        return vector, {"ok": True}


def test_stage_gets_tokens_of_the_same_pass(tiny, encoder):
    recorder = _Recorder()
    pipeline = SearchPipeline(tiny, query_stages=[_Plain(), recorder], rerankers=[])
    response = pipeline.search(SearchRequest(query="moon and sea", pipeline="dense", k=2))
    assert response.query_info["stages"]["plain"] == {"ok": True}
    vector, tokens = recorder.seen[0]
    assert tokens is not None
    assert tokens.ids.tolist() == encoder.model.tokenizer("moon and sea")["input_ids"]
    pooled = tokens.states.mean(0)
    np.testing.assert_allclose(pooled / np.linalg.norm(pooled), vector, atol=1e-6)
    assert response.query_info["stages"]["recorder"] == {"tokens": len(tokens.ids)}


def test_no_tokens_asked_when_no_stage_needs_them(tiny, monkeypatch):
    calls = []
    encoder = tiny.encoder
    real = encoder.encode_queries

    def spy(texts, **kwargs):
        calls.append(kwargs)
        return real(texts, **kwargs)

    monkeypatch.setattr(encoder, "encode_queries", spy)
    SearchPipeline(tiny, query_stages=[_Plain()], rerankers=[]).search(SearchRequest(query="moon", pipeline="dense", k=1))
    assert calls == [{}]
