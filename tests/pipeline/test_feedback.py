"""Pseudo-relevance feedback invariants (foveal.pipeline.feedback)."""

import numpy as np
import pytest

from foveal.index.base import LexicalDocument
from foveal.index.tantivy_index import TantivyLexicalIndex
from foveal.pipeline.feedback import query_model, rm3, rocchio


def test_rm3_without_feedback_documents_is_the_original_query():
    terms = ["tide", "moon", "tide"]
    assert rm3(terms, []) == query_model(terms) == {"tide": pytest.approx(2 / 3), "moon": pytest.approx(1 / 3)}
    # documents with no terms are no feedback either; an original weight of 1 keeps the query as it is
    assert rm3(terms, [([], 3.0)]) == query_model(terms)
    assert rm3(terms, [(["ocean", "pull"], 3.0)], original_weight=1.0) == query_model(terms)


def test_rm3_expands_with_feedback_terms_and_weights_sum_to_one():
    feedback = [(["ocean", "gravity", "tide", "ocean"], 4.0), (["gravity", "orbit"], 1.0)]
    expanded = rm3(["tide", "moon"], feedback, fb_terms=3, original_weight=0.5)
    assert sum(expanded.values()) == pytest.approx(1.0)
    assert expanded["ocean"] > 0 and expanded["gravity"] > 0
    assert expanded["moon"] == pytest.approx(0.25)  # only in the query: half of its query-model weight
    assert "orbit" not in expanded  # fb_terms=3 keeps ocean, gravity, tide


def test_rocchio_weight_zero_returns_the_original_vector():
    rng = np.random.default_rng(0)
    q = rng.normal(size=8).astype(np.float32)
    q /= np.linalg.norm(q)
    feedback = rng.normal(size=(3, 8)).astype(np.float32)
    assert rocchio(q, feedback, 0.0) is q
    assert rocchio(q, None, 0.5) is q
    moved = rocchio(q, feedback, 0.5)
    assert np.linalg.norm(moved) == pytest.approx(1.0, abs=1e-5)
    expected = q + 0.5 * feedback.mean(axis=0)
    np.testing.assert_allclose(moved, expected / np.linalg.norm(expected), rtol=1e-5)


def test_weighted_lexical_search_with_the_query_model_equals_plain_search():
    index = TantivyLexicalIndex(None)
    index.upsert([LexicalDocument(1, "d1", "Tides", "The moon pulls the oceans"),
                  LexicalDocument(2, "d2", "Orbits", "The moon orbits the earth, the moon"),
                  LexicalDocument(3, "d3", "Gravity", "Ocean tides and gravity")])
    index.commit()
    plain = index.search("moon tide", 10)
    # uniform weights of 1 are the plain query; RM3's query model scales every term alike, so the order is the same
    assert index.search("", 10, term_weights={"moon": 1.0, "tide": 1.0}) == plain
    weighted = index.search_weighted(rm3(index.analyze("moon tide"), []), 10)
    assert [k for k, _ in weighted] == [k for k, _ in plain]
    # a heavier expansion term moves its documents up
    boosted = index.search_weighted({"moon": 0.1, "tide": 0.1, "graviti": 5.0}, 10)
    assert boosted[0][0] == 3
