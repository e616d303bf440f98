import pytest

from foveal.pipeline.request import SearchRequest
from foveal.pipeline.search import SearchPipeline


@pytest.fixture()
def searcher(tiny):
    return SearchPipeline(tiny)


@pytest.mark.parametrize("pipeline", ["bm25", "dense", "hybrid"])
def test_each_pipeline_finds_the_answer(searcher, pipeline):
    response = searcher.search(SearchRequest(query="why does bread dough rise", pipeline=pipeline, k=3))
    assert response.hits[0].id == "bread"
    assert [h.rank for h in response.hits] == list(range(1, len(response.hits) + 1))


def test_dense_finds_a_paraphrase_bm25_cannot(searcher):
    query = "what makes the sea go up and down"
    dense = searcher.search(SearchRequest(query=query, pipeline="dense", k=1))
    assert dense.hits[0].id == "tides"


def test_hybrid_hits_carry_evidence(searcher):
    # the old default fusion, asked for by request (issue 15 made z-score + Rocchio the default; pinned below)
    old = {"normalization": "minmax", "rocchio": {"enabled": False}, "complete": False, "regularize": {"enabled": False}}
    hit = searcher.search(SearchRequest(query="moon ocean tides", k=1, fusion=old)).hits[0]
    assert hit.id == "tides"
    ev = hit.evidence
    assert ev["bm25"]["rank"] == 1 and ev["bm25"]["score"] > 0
    assert ev["dense"]["rank"] == 1 and 0 < ev["dense"]["score"] <= 1 and ev["dense"]["passage"] == 0
    # linear fusion of min-max normalized scores: first in both lists -> 1 + 1
    assert ev["fused"]["method"] == "linear" and ev["fused"]["score"] == pytest.approx(2.0)
    assert hit.score == ev["fused"]["score"]
    assert hit.passage.text.startswith("Ocean tides")
    assert hit.metadata == {"topic": "science"} and hit.timestamp == "2024-01-05T00:00:00Z"


def test_paging_with_offset(searcher):
    full = searcher.search(SearchRequest(query="science", k=6, pipeline="dense")).hits
    page = searcher.search(SearchRequest(query="science", k=2, offset=2, pipeline="dense")).hits
    assert [h.id for h in page] == [h.id for h in full[2:4]]
    assert [h.rank for h in page] == [3, 4]


def test_explain_adds_query_analysis(searcher):
    response = searcher.search(SearchRequest(query="The Roasting of coffee", explain=True, k=1))
    assert response.query_info["bm25_terms"] == ["roast", "coffe"]
    assert response.hits[0].evidence["matched_terms"] == ["coffe", "roast"]


def test_fusion_override_per_request(searcher):
    request = SearchRequest(query="lava", k=3, fusion={"method": "rrf"})
    hit = searcher.search(request).hits[0]
    assert hit.id == "volcano" and hit.evidence["fused"]["method"] == "rrf"
    assert hit.evidence["fused"]["score"] == pytest.approx(2 / 61)


def test_bm25_only_query_with_no_terms_returns_nothing(searcher):
    assert searcher.search(SearchRequest(query="the of and", pipeline="bm25")).hits == []


def test_long_document_hit_names_the_matching_passage(engine):
    from foveal.documents import parse_document

    filler = " ".join(f"Paragraph sentence {i} is about gardening and soil." for i in range(60))
    text = filler + " The final passage explains how submarines dive using ballast tanks."
    collection = engine.create_index("long")
    collection.upsert([parse_document({"_id": "long", "title": "A long text", "text": text})])
    hit = SearchPipeline(collection).search(SearchRequest(query="submarine ballast tanks", k=1)).hits[0]
    stored = collection.get("long")
    assert len(stored.passages) > 1
    assert hit.passage.index == len(stored.passages) - 1 and "ballast" in hit.passage.text
    assert hit.evidence["dense"]["passage"] == hit.passage.index


# -- pseudo-relevance feedback in the pipeline (issue 15) ----------------------------------------------------
from foveal.config import FusionConfig  # noqa: E402

PLAIN = {"rm3": {"enabled": False}, "rocchio": {"enabled": False}}


def _ranking(searcher, fusion, pipeline="hybrid"):
    response = searcher.search(SearchRequest(query="moon ocean tides", k=6, pipeline=pipeline,
                                             fusion=FusionConfig(**fusion)))
    return [(h.id, round(h.score, 6)) for h in response.hits], response.query_info


def test_feedback_with_no_feedback_documents_changes_nothing(searcher):
    plain, info = _ranking(searcher, PLAIN)
    assert "rm3" not in info.get("stages", {}) and "rocchio" not in info.get("stages", {})
    same, info = _ranking(searcher, {"rm3": {"enabled": True, "fb_docs": 0}, "rocchio": {"enabled": True, "beta": 0.0}})
    assert same == plain
    assert info["stages"]["rm3"] == {"feedback_docs": 0, "terms": [["moon", 0.3333], ["ocean", 0.3333],
                                                                  ["tide", 0.3333]], "applied": False}
    assert info["stages"]["rocchio"]["applied"] is False


@pytest.mark.parametrize("pipeline", ["bm25", "dense"])
def test_feedback_belongs_to_hybrid_fusion_only(searcher, pipeline):
    on = {"rm3": {"enabled": True}, "rocchio": {"enabled": True}}
    assert _ranking(searcher, on, pipeline) == _ranking(searcher, PLAIN, pipeline)


def test_feedback_expands_and_reports_evidence(searcher):
    hits, info = _ranking(searcher, {"rm3": {"enabled": True}, "rocchio": {"enabled": True}})
    assert hits[0][0] == "tides"
    rm3_info, rocchio_info = info["stages"]["rm3"], info["stages"]["rocchio"]
    assert rm3_info["applied"] and rm3_info["feedback_docs"] >= 1 and len(rm3_info["terms"]) > 3
    assert rocchio_info["applied"] and rocchio_info["feedback_docs"] >= 1 and rocchio_info["beta"] == 0.25


def test_default_hybrid_is_zscore_fusion_with_rocchio(searcher):
    response = searcher.search(SearchRequest(query="moon ocean tides", k=3))
    assert response.hits[0].id == "tides"
    assert response.query_info["stages"]["rocchio"]["applied"] is True
    assert "rm3" not in response.query_info["stages"]
    # z-scored lists: the fused score is no longer bounded by the number of lists
    assert response.hits[0].evidence["fused"]["method"] == "linear"


def test_a_filters_equality_conditions_reach_the_lexical_index_and_change_no_hit(tiny, monkeypatch):
    """A filtered bm25/hybrid search hands tantivy the filter's metadata conditions (``within``), so the
    restriction happens inside the index; the hits are those of the same search without them (the allow-list
    alone), also through RM3's second BM25 search."""
    from foveal.pipeline.request import SearchRequest
    from foveal.pipeline.search import SearchPipeline

    lexical = tiny.lexical
    seen: list = []
    real = type(lexical).search

    def spy(self, query, k, allowed=None, term_weights=None, within=None):
        seen.append(within)
        return real(self, query, k, allowed, term_weights=term_weights, within=within)

    monkeypatch.setattr(type(lexical), "search", spy)
    pipeline = SearchPipeline(tiny)
    flt = {"metadata": {"topic": ["science", "cooking"]}, "not": {"ids": ["tides"]}}
    for body in ({"query": "rises", "pipeline": "bm25"},
                 {"query": "rises through dough", "fusion": {"rm3": {"enabled": True}}}):
        seen.clear()
        inside = pipeline.search(SearchRequest(**body, k=5, filter=flt))
        assert seen and all(w == {"topic": ["science", "cooking"]} for w in seen)
        monkeypatch.setattr(lexical, "indexes_metadata", False)  # the allow-list alone, as before
        seen.clear()
        alone = pipeline.search(SearchRequest(**body, k=5, filter=flt))
        monkeypatch.setattr(lexical, "indexes_metadata", True)
        assert seen and all(w is None for w in seen)
        assert [(h.id, round(h.score, 6)) for h in inside.hits] == [(h.id, round(h.score, 6)) for h in alone.hits]
        assert {h.id for h in inside.hits} <= {"bread", "volcano", "coffee"} and inside.hits
