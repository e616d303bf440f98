"""Score completion and score regularization (issue 15): invariants of the pure functions and of the stages in the
pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from foveal.config import FusionConfig, Normalization, RegularizeConfig
from foveal.pipeline.fusion import completion_keys, fuse, linear_fusion, regularize
from foveal.pipeline.request import SearchRequest
from foveal.pipeline.search import SearchPipeline

BM25 = [("a", 9.0), ("b", 7.0), ("c", 4.0), ("d", 1.0)]
DENSE = [("c", 0.9), ("e", 0.8), ("a", 0.5), ("f", 0.4)]


def test_completion_keys_are_what_the_other_windows_hold():
    lacking = completion_keys({"bm25": BM25, "dense": DENSE}, window=3)
    assert lacking == {"bm25": ["e"], "dense": ["b"]}
    # only the windows count: fetching the lists deeper changes nothing
    deeper = completion_keys({"bm25": BM25 + [("x", 0.5)], "dense": DENSE + [("y", 0.1)]}, window=3)
    assert deeper == lacking


def test_completion_of_lists_that_hold_every_candidate_changes_nothing():
    bm25 = [("a", 9.0), ("b", 7.0), ("c", 4.0)]
    dense = [("c", 0.9), ("b", 0.6), ("a", 0.5)]
    lists = {"bm25": bm25, "dense": dense}
    assert completion_keys(lists) == {"bm25": [], "dense": []}
    for normalization in Normalization:
        assert linear_fusion(lists, normalization, completed={"bm25": {}, "dense": {}}) == linear_fusion(lists, normalization)


def test_completed_scores_are_normalized_with_the_list():
    """A completed list fuses exactly as the list would if the retriever had returned those scores itself."""
    lists = {"bm25": BM25[:3], "dense": DENSE[:3]}
    completed = {"bm25": {"e": 8.5}, "dense": {"b": 0.1}}
    whole = {"bm25": [("a", 9.0), ("e", 8.5), ("b", 7.0), ("c", 4.0)], "dense": DENSE[:3] + [("b", 0.1)]}
    config = FusionConfig()
    assert fuse(lists, config, completed) == fuse(whole, config)
    # without completion a missing score is the list's floor: e, which BM25 scores nearly as well as a, stays third
    assert [k for k, _ in fuse(lists, config, completed)] == ["e", "a", "c", "b"]
    assert [k for k, _ in fuse(lists, config)] == ["a", "c", "e", "b"]


def _vectors(keys, groups):
    """Unit vectors: keys in the same group point the same way."""
    out = {}
    for key in keys:
        v = np.zeros(4, np.float32)
        v[groups[key]] = 1.0
        out[key] = v
    return out


def test_regularization_with_weight_zero_changes_nothing():
    fused = [(k, float(10 - i)) for i, k in enumerate("abcdefgh")]
    vectors = _vectors("abcdefgh", {k: i % 4 for i, k in enumerate("abcdefgh")})
    assert regularize(fused, vectors, 0.0, 6, 2) == (fused, 0)


def test_regularization_lifts_a_document_whose_neighbours_score_well():
    # e sits just below d; e's neighbours are a and b (the best), d's are g and h (the worst): e passes d
    fused = [(k, float(10 - i)) for i, k in enumerate("abcdefgh")]
    groups = {"a": 0, "b": 0, "e": 0, "c": 1, "f": 1, "d": 2, "g": 2, "h": 2}
    out, moved = regularize(fused, _vectors("abcdefgh", groups), 0.3, 8, 2)
    order = [k for k, _ in out]
    assert order.index("e") < order.index("d") and moved > 0
    assert sorted(order) == sorted("abcdefgh")


def test_regularization_keeps_the_tail_below_the_head_and_scores_monotone():
    fused = [(k, float(10 - i)) for i, k in enumerate("abcdefghij")]
    groups = {k: (0 if k in "ab" else 1 if k in "cd" else 2) for k in "abcdefghij"}
    out, _ = regularize(fused, _vectors("abcdefghij", groups), 0.9, 6, 2)
    assert [k for k, _ in out[6:]] == list("ghij")  # the tail keeps its order
    assert set(k for k, _ in out[:6]) == set("abcdef")
    scores = [s for _, s in out]
    assert all(x > y for x, y in zip(scores, scores[1:]))


def test_a_key_without_a_vector_keeps_its_score():
    fused = [(k, float(10 - i)) for i, k in enumerate("abcdef")]
    vectors = _vectors("abcde", {"a": 0, "b": 0, "c": 1, "d": 1, "e": 2})
    out, _ = regularize(fused, vectors, 0.5, 6, 2)
    assert dict(out)["f"] == pytest.approx(5.0)  # f's z is unchanged, so is its score


def test_regularize_config_validates():
    with pytest.raises(ValueError, match="neighbours"):
        RegularizeConfig(depth=3, neighbours=3)


# -- in the pipeline ---------------------------------------------------------------------------------------------
@pytest.fixture()
def searcher(tiny):
    return SearchPipeline(tiny)


@pytest.mark.parametrize("query, window", [("ocean bread", 1), ("moon", 2)])
def test_completed_scores_are_each_retrievers_own(searcher, query, window):
    """Each list's completion for a document is the score that retriever gives it when asked for more (BM25's own
    score; the dense side's best-passage cosine, MaxP), and 0 BM25 where no query term matches. "ocean bread": the
    two first hits differ, each list completes the other's; "moon": dense's second has no query term."""
    vector = searcher.collection.encoder.encode_queries([query]).vectors[0]
    lists = {"bm25": searcher._lexical(query, window, None), "dense": searcher._dense(vector, window)[0]}
    completed, evidence = searcher._complete(query, lists, window, vector, None, {})
    deep_bm25 = dict(searcher._lexical(query, 100, None))
    deep_dense = dict(searcher._dense(vector, 100)[0])
    lacking = completion_keys(lists, window)
    if query == "ocean bread":
        assert evidence["bm25"] == 1 and evidence["dense"] == 1 and completed["bm25"][lacking["bm25"][0]] > 0
    else:
        assert completed["bm25"] == {lacking["bm25"][0]: 0.0}
    assert evidence == {"bm25": len(lacking["bm25"]), "dense": len(lacking["dense"])}
    assert lacking["bm25"] or lacking["dense"]
    for key, score in completed.get("bm25", {}).items():
        assert score == pytest.approx(deep_bm25.get(key, 0.0))
    for key, score in completed.get("dense", {}).items():
        assert score == pytest.approx(deep_dense[key], abs=1e-5)


def test_stages_report_their_evidence(searcher):
    info = searcher.search(SearchRequest(query="moon ocean tides", k=3)).query_info
    assert set(info["stages"]["completion"]) <= {"bm25", "dense"}
    assert info["stages"]["regularize"]["depth"] == 50 and info["stages"]["regularize"]["weight"] == 0.3
    for pipeline in ("bm25", "dense"):
        info = searcher.search(SearchRequest(query="moon ocean tides", k=3, pipeline=pipeline)).query_info
        assert "completion" not in info.get("stages", {}) and "regularize" not in info.get("stages", {})
    info = searcher.search(SearchRequest(query="moon ocean tides", k=3, fusion={"method": "rrf"})).query_info
    assert "completion" not in info.get("stages", {}) and "regularize" not in info.get("stages", {})  # RRF fuses ranks


def test_switched_off_the_stages_give_the_plain_fusion(searcher):
    off = {"complete": False, "regularize": {"enabled": False}}
    a = searcher.search(SearchRequest(query="ocean", k=6, fusion=off))
    b = searcher.search(SearchRequest(query="ocean", k=6, fusion={**off, "regularize": {"weight": 0.0}}))
    assert [(h.id, h.score) for h in a.hits] == [(h.id, h.score) for h in b.hits]
    assert "completion" not in a.query_info.get("stages", {})


def test_hybrid_pages_are_slices_of_one_ranking_with_both_stages(searcher):
    full = searcher.search(SearchRequest(query="science ocean moon bread", k=8)).hits
    for offset in (0, 2, 5):
        page = searcher.search(SearchRequest(query="science ocean moon bread", k=3, offset=offset)).hits
        assert [(h.id, round(h.score, 9)) for h in page] == [(h.id, round(h.score, 9)) for h in full[offset:offset + 3]]


@pytest.mark.parametrize("query", ["moon ocean tides", "bread dough", "volcano lava science"])
def test_tantivy_scores_of_equals_a_restricted_search(searcher, query):
    """scores_of (score completion's BM25, a disjunction of doc_key terms) scores as search(allowed=...) does (a
    term-set restriction), and leaves out what no query term matches."""
    lexical = searcher.collection.lexical
    keys = sorted(searcher.collection.store.filter_keys())
    scores = lexical.scores_of(query, keys)
    assert scores == pytest.approx(dict(lexical.search(query, len(keys), allowed=keys)))
    assert 0 < len(scores) < len(keys)  # some documents match no term of the query, and are left out
    some = keys[::2]
    assert lexical.scores_of(query, some) == pytest.approx({k: v for k, v in scores.items() if k in set(some)})
    weights = {t: 0.5 for t in lexical.analyze(query)}
    assert lexical.scores_of("", keys, weights) == pytest.approx(dict(lexical.search_weighted(weights, len(keys), allowed=keys)))
