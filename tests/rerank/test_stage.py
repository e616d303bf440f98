"""The rerank stage in the search pipeline: off without weights, on with them, window and budget respected."""

from __future__ import annotations

import pytest

from foveal.config import IndexConfig, RerankConfig
from foveal.pipeline.request import SearchRequest
from foveal.pipeline.search import SearchPipeline
from foveal.rerank.stage import MODEL_ENV, PyramidReranker, default_rerankers


@pytest.fixture()
def saved_model(tiny_ranker, tmp_path):
    tiny_ranker.settings.combination = {"first_stage": 0.5, "pyramid": 0.5}
    return tiny_ranker.save(tmp_path / "pyramid-model")


def test_without_weights_the_stage_is_off(tiny, monkeypatch):
    monkeypatch.delenv(MODEL_ENV, raising=False)
    assert default_rerankers(RerankConfig()) == []
    assert default_rerankers(RerankConfig(model="/nonexistent/folder")) == []
    response = SearchPipeline(tiny).search(SearchRequest(query="moon tides", k=3, rerank=True))
    assert response.hits[0].id == "tides"
    assert all("pyramid" not in hit.evidence for hit in response.hits)


def test_weights_from_the_environment_turn_the_stage_on(tiny, saved_model, monkeypatch):
    monkeypatch.setenv(MODEL_ENV, str(saved_model))
    searcher = SearchPipeline(tiny)
    assert [stage.name for stage in searcher.rerankers] == ["pyramid"]
    response = searcher.search(SearchRequest(query="moon tides", k=6))
    scores = [hit.score for hit in response.hits]
    assert scores == sorted(scores, reverse=True)
    for hit in response.hits:
        evidence = hit.evidence["pyramid"]
        assert 0.0 < evidence["score"] < 1.0
        assert evidence["summary"] and evidence["summary"] in hit.text
        assert evidence["combined"] == pytest.approx(hit.score)
        assert evidence["combined"] == pytest.approx(
            sum(evidence["weights"][f] * evidence["features"][f] for f in evidence["weights"]))
    # off per request: the plain hybrid ranking, without the stage's evidence
    plain = searcher.search(SearchRequest(query="moon tides", k=6, rerank=False))
    assert all("pyramid" not in hit.evidence for hit in plain.hits)
    assert plain.hits[0].score != response.hits[0].score


def test_window_and_budget_keep_first_stage_order_for_the_rest(tiny, saved_model):
    first = SearchPipeline(tiny, rerankers=[]).search(SearchRequest(query="rises", k=6)).hits
    stage = PyramidReranker(RerankConfig(model=str(saved_model), window=2))
    hits = SearchPipeline(tiny, rerankers=[stage]).search(SearchRequest(query="rises", k=6)).hits
    assert {h.id for h in hits[:2]} == {h.id for h in first[:2]}
    assert [h.id for h in hits[2:]] == [h.id for h in first[2:]]
    assert all(h.evidence["pyramid"]["skipped"] == "outside the rerank window" for h in hits[2:])
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)

    # a budget already spent after the first batch: the second batch is not scored
    stage = PyramidReranker(RerankConfig(model=str(saved_model), window=6, batch_size=2, budget_ms=1e-9))
    hits = SearchPipeline(tiny, rerankers=[stage]).search(SearchRequest(query="rises", k=6)).hits
    assert sum("score" in h.evidence["pyramid"] for h in hits) == 2
    assert [h.id for h in hits[2:]] == [h.id for h in first[2:]]
    assert all(h.evidence["pyramid"]["skipped"] == "latency budget" for h in hits[2:])


def test_stage_off_by_config_runs_when_a_request_asks(tiny, saved_model):
    stage = PyramidReranker(RerankConfig(model=str(saved_model), enabled=False))
    searcher = SearchPipeline(tiny, rerankers=[stage])
    assert all("pyramid" not in h.evidence for h in searcher.search(SearchRequest(query="lava", k=3)).hits)
    assert all("pyramid" in h.evidence for h in searcher.search(SearchRequest(query="lava", k=3, rerank=True)).hits)
    # the same switch by stage name (`stages`), which wins over the older option
    on = searcher.search(SearchRequest(query="lava", k=3, stages={"rerank": True}))
    assert all("pyramid" in h.evidence for h in on.hits)
    off = searcher.search(SearchRequest(query="lava", k=3, stages={"rerank": False}))
    assert all("pyramid" not in h.evidence for h in off.hits)


def test_rerank_config_is_validated():
    from foveal.errors import ConfigError

    with pytest.raises(ConfigError, match="rerank.window"):
        IndexConfig.parse({"rerank": {"window": 0}})
    assert IndexConfig.parse({"rerank": {"window": 20, "budget_ms": 50}}).rerank.window == 20
    assert IndexConfig.parse({"rerank": {"gate": 0.6}}).rerank.gate == 0.6
    with pytest.raises(ConfigError, match="rerank.gate"):
        IndexConfig.parse({"rerank": {"gate": 1.5}})


def test_train_cli_explains_a_missing_index(tmp_path):
    from typer.testing import CliRunner

    from foveal.cli import app

    data = tmp_path / "data"
    (data / "qrels").mkdir(parents=True)
    (data / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (data / "queries.jsonl").write_text('{"_id": "q1", "text": "moon"}\n')
    (data / "corpus.jsonl").write_text('{"_id": "d1", "title": "t", "text": "moon"}\n')
    result = CliRunner().invoke(app, ["train", "rerank", "--data", str(data), "--home", str(tmp_path / "home"),
                                      "--out", str(tmp_path / "model")])
    assert result.exit_code == 2
    assert "does not exist" in result.output and "ingest" in result.output
    result = CliRunner().invoke(app, ["train", "rerank", "--data", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "no train qrels" in result.output


def test_a_closed_gate_keeps_the_first_stage_order_and_says_why(tiny, saved_model, tiny_ranker):
    first = SearchPipeline(tiny, rerankers=[]).search(SearchRequest(query="moon tides", k=6)).hits
    open_stage = PyramidReranker(RerankConfig(model=str(saved_model), gate=0.0))
    reranked = SearchPipeline(tiny, rerankers=[open_stage]).search(SearchRequest(query="moon tides", k=6)).hits
    best = max(h.evidence["pyramid"]["score"] for h in reranked)
    assert all("gated" not in h.evidence["pyramid"] for h in reranked)
    assert [h.score for h in reranked] != [h.score for h in first]

    # a gate above the query's best calibrated score: nothing moves, every hit says why
    closed = PyramidReranker(RerankConfig(model=str(saved_model), gate=min(1.0, best + 1e-3)))
    hits = SearchPipeline(tiny, rerankers=[closed]).search(SearchRequest(query="moon tides", k=6)).hits
    assert [(h.id, h.score) for h in hits] == [(h.id, h.score) for h in first]
    for h in hits:
        assert h.evidence["pyramid"]["gated"] == {"confidence": pytest.approx(best, abs=1e-6), "gate": closed.gate()}
        assert h.evidence["pyramid"]["score"] == pytest.approx(
            next(r.evidence["pyramid"]["score"] for r in reranked if r.id == h.id))
    # a gate just below it: the query is reranked as without a gate
    below = PyramidReranker(RerankConfig(model=str(saved_model), gate=max(0.0, best - 1e-3)))
    again = SearchPipeline(tiny, rerankers=[below]).search(SearchRequest(query="moon tides", k=6)).hits
    assert [(h.id, h.score) for h in again] == [(h.id, h.score) for h in reranked]


def test_the_model_carries_its_gate_and_the_config_overrides_it(tiny_ranker, tmp_path):
    tiny_ranker.settings.gate = 0.75
    path = tiny_ranker.save(tmp_path / "gated-model")
    assert PyramidReranker(RerankConfig(model=str(path))).gate() == 0.75
    assert PyramidReranker(RerankConfig(model=str(path), gate=0.0)).gate() == 0.0
    tiny_ranker.settings.gate = None
    assert PyramidReranker(RerankConfig(model=str(tiny_ranker.save(tmp_path / "plain")))).gate() is None
