"""Metadata / id / timestamp filters are applied inside retrieval (k hits come back when k documents match)."""

import pytest
from pydantic import ValidationError

from foveal.documents import parse_document
from foveal.pipeline.request import SearchRequest


def _ids(engine, **kwargs):
    return [h.id for h in engine.search("tiny", SearchRequest(**kwargs)).hits]


@pytest.mark.parametrize("pipeline", ["bm25", "dense", "hybrid"])
def test_metadata_equality_returns_k_matches(engine, tiny, pipeline):
    # "coffee roasting" ranks the cooking documents first unfiltered; the filter must still give 2 science docs
    ids = _ids(engine, query="coffee roasting beans", k=2, pipeline=pipeline, filter={"metadata": {"topic": "science"}})
    if pipeline == "bm25":  # BM25 only matches documents sharing a term; none of the science docs do
        assert ids == []
    else:
        assert sorted(ids) == ["tides", "volcano"]


def test_any_of_ids_and_timestamp_range(engine, tiny):
    ids = _ids(engine, query="food", k=10, pipeline="dense", filter={"metadata": {"topic": ["cooking", "games"]}})
    assert sorted(ids) == ["bread", "chess", "coffee"]
    assert _ids(engine, query="x", k=10, pipeline="dense", filter={"ids": ["chess", "nope"]}) == ["chess"]
    assert _ids(engine, query="sea", k=10, pipeline="dense", filter={"timestamp": {"gte": "2024-01-01"}}) == ["tides"]
    assert _ids(engine, query="sea", k=10, pipeline="dense", filter={"timestamp": {"lt": 1704412800}}) == []
    # typed equality: the number 1 does not match the string "1"
    tiny.upsert([parse_document({"_id": "n1", "text": "numbered", "metadata": {"n": 1, "flag": True}})])
    assert _ids(engine, query="numbered", k=5, filter={"metadata": {"n": 1}}) == ["n1"]
    assert _ids(engine, query="numbered", k=5, filter={"metadata": {"n": "1"}}) == []
    assert _ids(engine, query="numbered", k=5, filter={"metadata": {"flag": True}}) == ["n1"]


@pytest.mark.parametrize(
    "bad",
    [
        {"timestamp": {}},
        {"timestamp": {"gte": "yesterday-ish"}},
        {"metadata": {"bad key!": 1}},
        {"metadata": {"topic": {"nested": 1}}},
        {"metadata": {"topic": []}},
        {"colour": "red"},
    ],
)
def test_malformed_filters_are_refused(bad):
    with pytest.raises(ValidationError):
        SearchRequest(query="x", filter=bad)
