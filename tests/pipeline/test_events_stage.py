"""Event-aware queries and freshness (issue 13): the invariants of :mod:`foveal.events` and :mod:`foveal.freshness`.

The stage tests run on a stand-in collection (random unit vectors, no model); the search tests use documents with
precomputed vectors (only queries go through the session's encoder).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from foveal.config import EventsConfig, FreshnessConfig
from foveal.documents import parse_document
from foveal.events import EventStage, training_free
from foveal.freshness import decay_factor
from foveal.index.derived import EventPart
from foveal.pipeline.request import SearchRequest

DIM = 16
DAY = 86_400.0
T0 = datetime(2022, 6, 1, tzinfo=timezone.utc).timestamp()


def _unit(rng, n):
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _collection(vectors: np.ndarray, stamps: np.ndarray, config: EventsConfig):
    part = EventPart.__new__(EventPart)
    part.keys = np.arange(1, len(vectors) + 1, dtype=np.int64)
    part.timestamps = np.asarray(stamps, dtype=np.float64)
    part.vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, DIM)
    store = SimpleNamespace(get_events=lambda keys: {})
    return SimpleNamespace(event_part=part, store=store, config=SimpleNamespace(events=config))


def _request(now: float | None = T0, query: str = "storm report", **kwargs) -> SearchRequest:
    moment = None if now is None else datetime.fromtimestamp(now, tz=timezone.utc)
    return SearchRequest(query=query, now=moment, **kwargs)


OPEN = EventsConfig(enabled=True, gate=-1.0, window_days=None)


def test_an_empty_event_store_returns_the_query_vector_exactly():
    query = _unit(np.random.default_rng(0), 1)[0]
    stage = EventStage(_collection(np.zeros((0, DIM)), np.zeros(0), OPEN))
    out, evidence = stage.apply(_request(), query)
    assert out is query and evidence["gate_open"] is False and evidence["events"] == []
    stage = EventStage(SimpleNamespace(event_part=None, store=None, config=SimpleNamespace(events=OPEN)))
    assert stage.apply(_request(), query)[0] is query


def test_a_closed_gate_or_alpha_zero_returns_the_query_vector_exactly():
    rng = np.random.default_rng(1)
    query, events = _unit(rng, 1)[0], _unit(rng, 5)
    stamps = np.full(5, T0 - DAY)
    closed = EventsConfig(enabled=True, gate=1.0, window_days=None)
    out, evidence = EventStage(_collection(events, stamps, closed)).apply(_request(), query)
    assert out is query and evidence["gate_open"] is False and "gate" in evidence["reason"]
    out, evidence = EventStage(_collection(events, stamps, OPEN.model_copy(update={"alpha": 0.0}))).apply(
        _request(), query)
    assert np.array_equal(out, query) and evidence["gate_open"] is True


def test_an_open_gate_moves_the_vector_towards_the_event_and_keeps_it_unit_norm():
    rng = np.random.default_rng(2)
    query, noise = _unit(rng, 1)[0], _unit(rng, 3)
    event = query + 0.3 * noise[0]
    events = np.stack([event / np.linalg.norm(event), noise[1], noise[2]])
    out, evidence = EventStage(_collection(events, np.full(3, T0 - DAY), OPEN)).apply(_request(), query)
    assert abs(np.linalg.norm(out) - 1) < 1e-5
    assert float(out @ events[0]) > float(query @ events[0])
    assert evidence["gate_open"] and len(evidence["events"]) == 3
    assert abs(sum(e["weight"] for e in evidence["events"]) - 1) < 1e-5


def test_the_stage_is_off_unless_the_index_or_the_request_switches_it_on():
    rng = np.random.default_rng(3)
    query, events = _unit(rng, 1)[0], _unit(rng, 2)
    off = EventsConfig(enabled=False, gate=-1.0, window_days=None)
    stage = EventStage(_collection(events, np.full(2, T0), off))
    assert stage.apply(_request(), query) == (query, None)
    assert stage.apply(_request(stages={"events": True}), query)[1]["gate_open"]
    on = EventStage(_collection(events, np.full(2, T0), OPEN))
    assert on.apply(_request(stages={"events": False}), query) == (query, None)


@settings(max_examples=150, deadline=None)
@given(days=st.lists(st.floats(-400, 400, allow_nan=False), min_size=1, max_size=12),
       now_days=st.floats(-300, 300, allow_nan=False), seed=st.integers(0, 2**16),
       window=st.sampled_from([None, 30.0, 365.0]))
def test_no_event_dated_after_now_is_ever_used(days, now_days, seed, window):
    """Adding events dated after ``now`` changes nothing: neither the vector nor the attended events."""
    rng = np.random.default_rng(seed)
    query, events = _unit(rng, 1)[0], _unit(rng, len(days))
    stamps = T0 + np.asarray(days) * DAY
    now = T0 + now_days * DAY
    config = EventsConfig(enabled=True, gate=-1.0, window_days=window, top_k=4)
    full = EventStage(_collection(events, stamps, config))
    chosen = full.select(query, now)
    if chosen is not None:
        assert (chosen["timestamps"] <= now).all()
    keep = stamps <= now
    past = EventStage(_collection(events[keep], stamps[keep], config))
    a, ev_a = full.apply(_request(now), query)
    b, ev_b = past.apply(_request(now), query)
    assert np.array_equal(a, b)
    assert [e["timestamp"] for e in ev_a["events"]] == [e["timestamp"] for e in ev_b["events"]]


def test_training_free_matches_the_method_notes():
    rng = np.random.default_rng(4)
    query, events = _unit(rng, 1)[0], _unit(rng, 3)
    relevance = np.array([0.5, 0.2, 0.1])
    out, weights = training_free(query, events, relevance, temperature=0.1, alpha=0.4)
    a = np.exp(relevance / 0.1) / np.exp(relevance / 0.1).sum()
    want = query + 0.4 * (a @ events)
    assert np.allclose(out, want / np.linalg.norm(want), atol=1e-6) and np.allclose(weights, a)


# -- freshness -------------------------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(function=st.sampled_from(["exp", "gauss", "linear"]), scale=st.floats(0.01, 1000),
       offset=st.floats(0, 100), decay=st.floats(0.01, 0.99), floor=st.floats(0, 1),
       age=st.floats(-1000, 1e5, allow_nan=False))
def test_freshness_factor_is_one_within_offset_and_never_below_floor(function, scale, offset, decay, floor, age):
    config = FreshnessConfig(function=function, scale_days=scale, offset_days=offset, decay=decay, floor=floor)
    assert decay_factor(0.0, config) == 1.0
    assert decay_factor(offset * DAY * 0.999, config) == 1.0
    f = decay_factor(age * DAY, config)
    assert floor <= f <= 1.0
    assert decay_factor(age * DAY + DAY, config) <= f  # never grows with age
    if floor < decay:
        assert math.isclose(decay_factor((offset + scale) * DAY, config), decay, rel_tol=1e-6)


# -- search: the now cutoff on documents, freshness on hits ------------------------------------------------------
@pytest.fixture(scope="module")
def dated(tmp_path_factory, encoder):
    from foveal.engine import Engine

    engine = Engine(tmp_path_factory.mktemp("dated"))
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((60, encoder.dimension)).astype(np.float32)
    docs = []
    for i in range(60):
        doc = {"_id": f"d{i:02d}", "text": f"storm report number {i}", "vector": vectors[i].tolist()}
        if i % 6:  # every sixth undated
            doc["timestamp"] = T0 + float(rng.uniform(-300, 300)) * DAY
        docs.append(parse_document(doc))
    collection = engine.create_index("dated")
    collection.upsert(docs)
    collection.flush()
    yield engine
    engine.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(now_days=st.floats(-320, 320, allow_nan=False), pipeline=st.sampled_from(["bm25", "dense", "hybrid"]))
def test_no_document_dated_after_a_requested_now_is_returned(dated, now_days, pipeline):
    now = T0 + now_days * DAY
    response = dated.search("dated", _request(now, k=60, pipeline=pipeline, fields=None))
    stored = dated.get("dated").store
    for hit in response.hits:
        stamp = stored.get_by_id(hit.id).timestamp
        assert stamp is None or stamp <= now, (hit.id, stamp, now)
    hidden = sum(1 for d in stored.iter_documents() for x in d if x.timestamp is not None and x.timestamp > now)
    if pipeline == "bm25":
        assert len(response.hits) == 60 - hidden  # every other document still matches


def test_without_now_ordinary_search_keeps_future_documents(dated):
    response = dated.search("dated", SearchRequest(query="storm report", k=60, pipeline="bm25"))
    assert len(response.hits) == 60 and "cutoff" not in response.query_info


def test_freshness_records_its_factor_and_pages_stay_consistent(dated):
    fresh = {"function": "gauss", "scale_days": 60, "floor": 0.1}
    whole = dated.search("dated", _request(T0 + 400 * DAY, k=30, freshness=fresh))
    assert all("freshness" in h.evidence for h in whole.hits)
    for h in whole.hits:
        assert 0.1 <= h.evidence["freshness"]["factor"] <= 1.0
    pages = []
    for offset in range(0, 30, 7):
        pages += [h.id for h in dated.search("dated", _request(T0 + 400 * DAY, k=7, offset=offset,
                                                               freshness=fresh)).hits][: 30 - offset]
    assert pages[:30] == [h.id for h in whole.hits]
    off = dated.search("dated", _request(T0 + 400 * DAY, k=30, freshness=fresh, stages={"freshness": False}))
    assert all("freshness" not in h.evidence for h in off.hits)


def test_unknown_stage_names_are_refused():
    with pytest.raises(ValueError, match="unknown stage"):
        SearchRequest(query="q", stages={"nope": True})
    assert SearchRequest(query="q", stages={"rerank": False}).rerank is False


@pytest.mark.parametrize("pipeline", ["dense", "hybrid"])
def test_requests_of_one_batch_each_keep_their_own_cutoff(dated, pipeline):
    """``search_many`` (and the server's micro-batcher) sends the vector searches of a batch to FAISS as one matrix,
    grouped by allow-list. Requests with different ``now`` have different allow-lists: each used to get the first
    request's, so a later ``now`` lost documents and an earlier one could see documents dated after it."""
    nows = [T0 - 250 * DAY, T0 + 250 * DAY, T0 - 100 * DAY, T0 + 20 * DAY]
    # a window of 3: every request fetches the same number of passages, so all four land in one FAISS call
    requests = [_request(now, k=3, pipeline=pipeline, fields=None, fusion={"window": 3, "rocchio": {"enabled": False}})
                for now in nows]
    batch = dated.pipeline("dated").search_many(requests)
    stored = dated.get("dated").store
    for now, request, response in zip(nows, requests, batch):
        alone = dated.search("dated", request)
        assert [h.id for h in response.hits] == [h.id for h in alone.hits]
        for hit in response.hits:
            stamp = stored.get_by_id(hit.id).timestamp
            assert stamp is None or stamp <= now, (hit.id, stamp, now)
