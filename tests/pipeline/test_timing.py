"""Stage timings: one mechanism feeds explain, SearchResponse.timings and foveal_stage_seconds."""

from prometheus_client import CollectorRegistry, generate_latest

from foveal.pipeline import timing
from foveal.pipeline.request import SearchRequest
from foveal.pipeline.search import SearchPipeline


def test_recorder_buckets_are_cumulative_and_counted():
    recorder = timing.StageRecorder(buckets=(0.01, 0.1))
    for seconds in (0.005, 0.01, 0.05, 3.0):
        recorder.observe("fetch", seconds)
    snap = recorder.snapshot()["fetch"]
    assert snap["buckets"] == [(0.01, 2), (0.1, 3), (float("inf"), 4)]
    assert snap["count"] == 4 and abs(snap["sum"] - 3.065) < 1e-9


def test_collector_serves_the_histogram_by_stage():
    recorder = timing.StageRecorder()
    times = timing.StageTimes()
    times.add("query_encode", 0.002)
    times.add("retrieve_bm25", 0.001)
    recorder.record(times)
    registry = CollectorRegistry()
    registry.register(timing.collector(recorder))
    text = generate_latest(registry).decode()
    assert 'foveal_stage_seconds_count{stage="query_encode"} 1.0' in text
    assert 'foveal_stage_seconds_bucket{le="0.0025",stage="retrieve_bm25"} 1.0' in text


def test_search_reports_each_stage_in_explain_and_in_the_histogram(tiny):
    searcher = SearchPipeline(tiny, rerankers=[])
    before = timing.snapshot().get("retrieve_bm25", {}).get("count", 0)
    response = searcher.search(SearchRequest(query="moon ocean tides", k=2, explain=True,
                                             filter={"metadata": {"topic": "science"}}))
    stages = response.query_info["timings_ms"]
    assert list(stages)[:2] == ["queue_wait", "query_encode"]
    assert {"filter", "retrieve_bm25", "retrieve_dense", "fuse", "fetch"} <= set(stages)
    assert response.timings == stages and all(v >= 0 for v in stages.values())
    assert timing.snapshot()["retrieve_bm25"]["count"] == before + 1
    plain = searcher.search(SearchRequest(query="moon ocean tides", k=2, pipeline="bm25"))
    assert "timings_ms" not in plain.query_info and "query_encode" not in plain.timings
