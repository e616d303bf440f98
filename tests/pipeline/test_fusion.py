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
    ranked = reciprocal_rank_fusion(LISTS, rank_constant=0, weights={"bm25": 2.0, "dense": 0.5}, window=1)
    # only the first entry of each list scores; the rest are still returned, after them, with score 0
    assert ranked == [("a", pytest.approx(2.0)), ("c", pytest.approx(0.5)), ("b", 0.0)]


@pytest.mark.parametrize("method", ["rrf", "linear", "adaptive"])
def test_window_bounds_scoring_not_results(method):
    """Issue 10 finding 2: fuse() cut each list to the window, so paging past it found nothing."""
    bm25 = [(f"b{i}", 100.0 - i) for i in range(50)]
    dense = [(f"d{i}", 1.0 - i / 100) for i in range(50)]
    fused = fuse({"bm25": bm25, "dense": dense}, FusionConfig(method=method, window=5))
    assert len(fused) == 100 and len({k for k, _ in fused}) == 100


@pytest.mark.parametrize("method", ["rrf", "linear", "adaptive"])
@pytest.mark.parametrize("normalization", ["minmax", "zscore"])
def test_fused_order_does_not_depend_on_list_depth(method, normalization):
    import random

    rng = random.Random(7)
    keys = list(range(400))
    full = {name: sorted(((k, rng.random()) for k in rng.sample(keys, 300)), key=lambda kv: -kv[1])
            for name in ("bm25", "dense")}
    config = FusionConfig(method=method, window=20, normalization=normalization)
    deep = fuse(full, config)
    for depth in (20, 37, 100, 250):
        shallow = fuse({name: ranked[:depth] for name, ranked in full.items()}, config)
        assert [k for k, _ in shallow[:depth]] == [k for k, _ in deep[:depth]]


def test_ties_break_by_key_not_by_input_order():
    a = reciprocal_rank_fusion({"x": [(2, 1.0)], "y": [(1, 1.0)]})
    b = reciprocal_rank_fusion({"y": [(1, 1.0)], "x": [(2, 1.0)]})
    assert a == b == [(1, pytest.approx(1 / 61)), (2, pytest.approx(1 / 61))]


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


# -- adaptive fusion (issue 15) ------------------------------------------------------------------------------
from foveal.pipeline.fusion import adaptive_signals, adaptive_weights, fuse_explained  # noqa: E402


@pytest.mark.parametrize("weights", [{"bm25": 1.0, "dense": 1.0}, {"bm25": 0.5, "dense": 2.5}, {"bm25": 3.0, "dense": 0.0}])
@pytest.mark.parametrize("coefficients", [None, {"bias": 5.0, "endorsement": -3.0}, {"overlap": 100.0, "bias": 100.0}])
def test_adaptive_weights_sum_to_the_configured_total(weights, coefficients):
    config = FusionConfig(method="adaptive", weights=weights, coefficients=coefficients)
    got, signals = adaptive_weights(LISTS, config)
    assert got["bm25"] + got["dense"] == pytest.approx(sum(weights.values()))
    assert min(got.values()) >= 0
    assert set(signals) == {"bias", "endorsement", "overlap", "bm25_drop", "dense_drop"}


def test_adaptive_with_zero_coefficients_is_plain_linear_fusion():
    zero = {"bias": 0.0, "endorsement": 0.0, "overlap": 0.0, "bm25_drop": 0.0, "dense_drop": 0.0}
    for normalization in Normalization:
        config = FusionConfig(method="adaptive", weights={"bm25": 1.0, "dense": 3.0}, coefficients=zero,
                              normalization=normalization)
        fused, info = fuse_explained(LISTS, config)
        assert fused == linear_fusion(LISTS, normalization, weights={"bm25": 1.0, "dense": 3.0})
    assert info["weights"] == {"bm25": pytest.approx(1.0), "dense": pytest.approx(3.0)}


def test_adaptive_signals():
    signals = adaptive_signals(LISTS)
    # dense's first two (c, a) get bm25 min-max 0 and 1; bm25's three (a, b, c) get dense 0, (absent) 0, 1
    assert signals["endorsement"] == pytest.approx(0.5 - 1 / 3)
    assert signals["overlap"] == pytest.approx(0.2)
    assert signals["bm25_drop"] == pytest.approx(1.0) and signals["dense_drop"] == pytest.approx(1.0)
    # a positive endorsement coefficient moves weight to dense when bm25 confirms dense more than the reverse
    config = FusionConfig(method="adaptive", coefficients={"endorsement": 6.0})
    weights, _ = adaptive_weights(LISTS, config)
    assert weights["dense"] > 1.0 > weights["bm25"]


def test_adaptive_with_one_list_keeps_the_configured_weights():
    weights, _ = adaptive_weights({"bm25": LISTS["bm25"], "dense": []}, FusionConfig(method="adaptive"))
    assert weights == {"bm25": 1.0, "dense": 1.0}


def test_adaptive_coefficients_are_validated():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown signal"):
        FusionConfig(method="adaptive", coefficients={"nonsense": 1.0})
    with pytest.raises(ValidationError, match="-100..100"):
        FusionConfig(method="adaptive", coefficients={"bias": 1e9})
