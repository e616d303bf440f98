"""The LexSemBridge switches: the ``lexsem`` index-config section and a request's ``stages: {"lexsem": ...}``."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from foveal.config import IndexConfig
from foveal.documents import parse_document
from foveal.errors import ConfigError
from foveal.pipeline.request import SearchRequest
from tests.conftest import TINY_CORPUS

QUERY = "moon and the sea"


@pytest.fixture()
def modulation(home, encoder):
    """Random (non-zero) SLR weights registered as model 'mod' in FOVEAL_MODELS_DIR (= $FOVEAL_HOME/models)."""
    from foveal.encoders.lexsem import LexSemBridge
    from foveal.models_dir import register_model

    bridge = LexSemBridge.for_encoder(encoder.model, "slr")
    with torch.no_grad():
        bridge.modulation.weight.normal_(0, 5.0, generator=torch.Generator().manual_seed(0))
    register_model(bridge.save, "mod")
    return "mod"


def _index(engine, name, lexsem=None):
    config = {"lexsem": lexsem} if lexsem is not None else None
    collection = engine.create_index(name, config)
    collection.upsert([parse_document(d) for d in TINY_CORPUS])
    collection.flush()
    return collection


def _scores(response):
    return [(h.id, round(h.score, 6)) for h in response.hits]


def test_config_section_bounds_and_rest_names(home):
    assert IndexConfig().lexsem.enabled is False and IndexConfig().lexsem.modulation is None
    with pytest.raises(ConfigError, match="lexsem.top"):
        IndexConfig.parse({"lexsem": {"top": 65}})
    with pytest.raises(ConfigError, match="lexsem.paradigm"):
        IndexConfig.parse({"lexsem": {"paradigm": "xyz"}})
    with pytest.raises(ConfigError, match="lexsem.modulation") as caught:  # REST: names only
        IndexConfig.parse({"lexsem": {"modulation": "/etc/passwd"}}, source="rest")
    assert caught.value.details.get("field") == "lexsem.modulation"


def test_request_stages_shape():
    assert SearchRequest(query="x", stages={"lexsem": True}).stage_wanted("lexsem", False) is True
    assert SearchRequest(query="x").stage_wanted("lexsem", True) is True
    assert SearchRequest(query="x", rerank=False).stage_wanted("rerank", True) is False
    assert SearchRequest(query="x", stages={"rerank": True}).stage_wanted("rerank", False) is True
    with pytest.raises(ValidationError, match="disagree"):  # the two switches for one stage must agree
        SearchRequest(query="x", rerank=False, stages={"rerank": True})
    with pytest.raises(ValidationError, match="unknown stage"):
        SearchRequest(query="x", stages={"bogus": True})
    with pytest.raises(ValidationError):
        SearchRequest(query="x", stages={"lexsem": "yes"})


def test_default_index_keeps_working_without_weights(engine):
    collection = _index(engine, "plain")
    assert all(stage.name != "lexsem" for stage in engine.pipeline("plain").query_stages)
    response = engine.search("plain", SearchRequest(query=QUERY, pipeline="dense", stages={"lexsem": True}))
    assert response.query_info["stages"]["lexsem"]["applied"] is False
    assert "names no lexsem.modulation" in response.query_info["stages"]["lexsem"]["why"]
    assert response.hits and collection.store.count() == len(TINY_CORPUS)


def test_config_default_and_request_override(engine, modulation):
    _index(engine, "plain")
    _index(engine, "off", {"modulation": modulation})
    _index(engine, "on", {"modulation": modulation, "enabled": True, "paradigm": "slr", "top": 3})
    dense = dict(query=QUERY, pipeline="dense", k=6)
    plain = _scores(engine.search("plain", SearchRequest(**dense)))

    off = engine.search("off", SearchRequest(**dense))
    assert _scores(off) == plain
    assert off.query_info["stages"]["lexsem"] == {
        "applied": False, "why": "off in the index config (switch it on per request with stages)"}

    forced = engine.search("off", SearchRequest(**dense, stages={"lexsem": True}))
    info = forced.query_info["stages"]["lexsem"]
    assert info["applied"] is True and info["modulation"] == "mod" and info["paradigm"] == "slr"
    assert _scores(forced) != plain

    on = engine.search("on", SearchRequest(**dense))
    assert on.query_info["stages"]["lexsem"]["applied"] is True and len(on.query_info["stages"]["lexsem"]["tokens"]) == 3
    assert _scores(on) == _scores(forced)
    switched_off = engine.search("on", SearchRequest(**dense, stages={"lexsem": False}))
    assert _scores(switched_off) == plain
    assert switched_off.query_info["stages"]["lexsem"] == {"applied": False, "why": "off for this request"}


def test_wrong_paradigm_or_missing_weights_keep_the_index_serving(engine, modulation):
    """A bad checkpoint never takes search down: the stage passes the vector unchanged and says why."""
    _index(engine, "plain")
    plain = _scores(engine.search("plain", SearchRequest(query=QUERY, pipeline="dense")))
    for name, lexsem, why in (("wrong", {"modulation": modulation, "paradigm": "llr", "enabled": True},
                               "trained as 'slr'"),
                              ("missing", {"modulation": "nothing-here"}, "holds no LexSemBridge weights")):
        _index(engine, name, lexsem)
        response = engine.search(name, SearchRequest(query=QUERY, pipeline="dense", stages={"lexsem": True}))
        info = response.query_info["stages"]["lexsem"]
        assert info["applied"] is False and why in info["why"] and _scores(response) == plain


def test_rest_stages(engine, modulation):
    from fastapi.testclient import TestClient

    from foveal.api.app import create_app

    _index(engine, "off", {"modulation": modulation})
    with TestClient(create_app(engine)) as client:
        bad = client.post("/v1/indexes/off/search", json={"query": QUERY, "stages": {"lexsem": True, "magic": True}})
        assert bad.status_code == 422 and "unknown stage" in bad.json()["error"]["message"]
        good = client.post("/v1/indexes/off/search", json={"query": QUERY, "stages": {"lexsem": True}})
        assert good.status_code == 200 and good.json()["query_info"]["stages"]["lexsem"]["applied"] is True
        created = client.post("/v1/indexes", json={"name": "x", "config": {"lexsem": {"modulation": "mod"}}})
        assert created.status_code == 201, created.text
        refused = client.post("/v1/indexes", json={"name": "y", "config": {"lexsem": {"modulation": "/tmp/mod"}}})
        assert refused.status_code == 422 and "lexsem.modulation" in refused.text


@pytest.mark.parametrize("paradigm", ["slr", "llr", "clr"])
def test_sparse_inference_path_equals_the_full_product(paradigm):
    """Without gradients SLR/LLR multiply only W's columns at the query's ids: the same z as the full product."""
    from foveal.encoders.lexsem import LexSemBridge, LexSemConfig

    bridge = LexSemBridge(LexSemConfig(paradigm=paradigm, vocab_size=500, hidden_size=16))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        bridge.modulation.weight.normal_(0, 1.0, generator=generator)
    ids = torch.tensor([[101, 7, 42, 42, 9, 102, 0, 0], [101, 300, 102, 0, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    states = torch.randn(2, 8, 16, generator=generator)
    with torch.no_grad():
        w = bridge.vocabulary_vector(ids, mask, states)
        fast = bridge.dimension_weights(w)
        full = torch.softmax(bridge.modulation(w), dim=-1)
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-7)
    assert torch.allclose(fast.sum(-1), torch.ones(2)) and bool((fast > 0).all())
