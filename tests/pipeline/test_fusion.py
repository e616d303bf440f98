import pytest

from foveal.config import FusionConfig, Normalization
from foveal.pipeline.fusion import collect_sources, fuse, linear_fusion, normalize_scores, reciprocal_rank_fusion

LISTS = {"bm25": [("a", 10.0), ("b", 5.0), ("c", 1.0)], "dense": [("c", 0.9), ("a", 0.8)]}


def test_rrf_formula():
    fused = dict(reciprocal_rank_fusion(LISTS, rank_constant=60))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["b"] == pytest.approx(1 / 62)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)


def test_rrf_weights_and_window():
    fused = dict(reciprocal_rank_fusion(LISTS, rank_constant=0, weights={"bm25": 2.0, "dense": 0.5}, window=1))
    assert fused == {"a": pytest.approx(2.0), "c": pytest.approx(0.5)}


def test_rrf_order_and_ties_are_deterministic():
    ranked = reciprocal_rank_fusion({"x": [("p", 1.0)], "y": [("q", 1.0)]})
    assert [k for k, _ in ranked] == ["p", "q"]


def test_minmax_and_zscore():
    assert normalize_scores([1.0, 3.0, 2.0], Normalization.minmax) == [0.0, 1.0, 0.5]
    z = normalize_scores([1.0, 3.0], Normalization.zscore)
    assert z == pytest.approx([-1.0, 1.0])
    assert normalize_scores([2.0, 2.0], Normalization.minmax) == [1.0, 1.0]


def test_linear_fusion_minmax():
    fused = dict(linear_fusion(LISTS, Normalization.minmax))
    # bm25: a=1, b=4/9, c=0; dense: c=1, a=0; missing -> 0
    assert fused["a"] == pytest.approx(1.0)
    assert fused["b"] == pytest.approx(4 / 9)
    assert fused["c"] == pytest.approx(1.0)


def test_linear_fusion_zscore_floor_for_missing():
    fused = dict(linear_fusion({"x": [("a", 3.0), ("b", 1.0)], "y": [("a", 1.0), ("c", 3.0)]}, Normalization.zscore))
    # b is missing from y: it gets y's floor (-1), as does a in y
    assert fused["b"] == pytest.approx(-1.0 + -1.0)
    assert fused["c"] == pytest.approx(-1.0 + 1.0)


def test_fuse_dispatches_on_config():
    rrf = fuse(LISTS, FusionConfig(method="rrf"))
    linear = fuse(LISTS, FusionConfig(method="linear"))
    assert rrf != linear


def test_sources_keep_rank_and_score():
    sources = collect_sources(LISTS)
    assert sources["c"] == {"bm25": {"rank": 3, "score": 1.0}, "dense": {"rank": 1, "score": 0.9}}
