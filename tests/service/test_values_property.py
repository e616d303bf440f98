"""Property test: no document and no search request, however odd its values, gets a 500 or leaves the index
unsearchable.

Documents go in through ``POST /v1/indexes/{name}/documents`` (the queue and its worker, as in production) with
generated timestamps (floats, huge ints, ISO text with offsets at the ends of the calendar), vectors (components
at and beyond float32's limits, NaN, infinities), metadata (NaN, huge ints, nesting) and text. After every write,
accepted or refused: the job ends, the document's GET answers 200 when it was accepted and 404 when refused, and
a search of each pipeline, and the GET of a document that was there before, still answer 200. Search requests are
generated the same way (weights, filters, bounds, k, offset, now) and must answer 200 or a 4xx with the error body.
"""

from __future__ import annotations

import json
import math
from urllib.parse import quote
from datetime import datetime, timedelta, timezone

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings, strategies as st

from foveal.service.settings import ServiceSettings

from tests.service.helpers import wait_done as _wait

DIM = 384  # the default encoder's
EXAMPLES = 40

odd_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e39, -1e39, 3.4e38, 3.5e38, 1e-40, -1e-46, 1.2e-38, 1e-30, 1e20, 1e18, 0.0, -0.0, 5e-324]),
)
odd_ints = st.one_of(st.integers(-2**70, 2**70), st.sampled_from([2**63, -2**63 - 1, 10**30, 253402300800]))
zones = st.sampled_from([timezone.utc, timezone(timedelta(hours=-5)), timezone(timedelta(hours=14)),
                         timezone(timedelta(hours=-12, minutes=-30)), None])
iso = st.builds(
    lambda moment, zone, z: (moment.replace(tzinfo=zone).isoformat() + ("Z" if zone is None and z else "")),
    st.one_of(st.datetimes(), st.sampled_from([datetime(9999, 12, 31, 23, 59, 59), datetime(1, 1, 1),
                                               datetime(9999, 12, 31, 23, 59, 59, 999999)])),
    zones, st.booleans())
timestamps = st.one_of(st.none(), odd_floats, odd_ints, iso, st.text(max_size=12), st.booleans())
scalars = st.one_of(odd_floats, odd_ints, st.text(max_size=8), st.booleans(), st.none())
metadata = st.dictionaries(st.sampled_from(["topic", "n", "x", "deep", "é"]),
                           st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                                        | st.dictionaries(st.text(max_size=3), inner, max_size=2), max_leaves=5),
                           max_size=3)
vectors = st.one_of(
    st.none(),
    st.builds(lambda head, fill: head + [fill] * (DIM - len(head)),
              st.lists(odd_floats, max_size=4), st.sampled_from([0.0, 0.1, -0.2, 1e-30, 1e-39, 1e20, 1e39])),
    st.lists(st.floats(-1, 1), min_size=1, max_size=4),  # the wrong dimension
)
documents = st.fixed_dictionaries(
    {"_id": st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)},
    optional={"title": st.text(max_size=20), "text": st.sampled_from(["ledger entry", "", "ledger", "x y z"]),
              "timestamp": timestamps, "metadata": metadata, "vector": vectors},
)
bounds = st.dictionaries(st.sampled_from(["gte", "gt", "lte", "lt"]), timestamps.filter(lambda v: v is not None),
                         max_size=2)
search_requests = st.fixed_dictionaries(
    {"query": st.sampled_from(["ledger", "entry ledger", "zebra", "x"])},
    optional={
        "k": st.one_of(st.integers(-2, 1100), odd_floats),
        "offset": st.integers(-2, 10_050),
        "pipeline": st.sampled_from(["bm25", "dense", "hybrid", "other"]),
        "fusion": st.fixed_dictionaries({}, optional={
            "method": st.sampled_from(["rrf", "linear", "x"]),
            "weights": st.dictionaries(st.sampled_from(["bm25", "dense"]), odd_floats, max_size=2),
            "window": st.integers(-1, 20_000),
            "normalization": st.sampled_from(["minmax", "zscore"]),
            "rank_constant": odd_ints}),
        "filter": st.fixed_dictionaries({}, optional={
            "metadata": st.dictionaries(st.sampled_from(["topic", "n", "x"]),
                                        scalars | st.lists(scalars, min_size=1, max_size=3), max_size=2),
            "timestamp": bounds,
            "ids": st.lists(st.text(max_size=5), max_size=3)}),
        "now": timestamps,
        "rerank": st.booleans(),
    },
)


def _body(value) -> dict:
    # NaN and Infinity written as Python's json writes them: what a careless client sends
    return {"content": json.dumps(value), "headers": {"content-type": "application/json"}}




def _still_serving(client) -> None:
    for pipeline in ("bm25", "dense", "hybrid"):
        response = client.post("/v1/indexes/prop/search", json={"query": "ledger", "pipeline": pipeline, "k": 50})
        assert response.status_code == 200, response.text
        assert "anchor" in {h["id"] for h in response.json()["hits"]}
    assert client.get("/v1/indexes/prop/documents/anchor").status_code == 200
    assert client.get("/v1/indexes").status_code == 200 and client.get("/readyz").status_code == 200


def test_no_document_or_search_gives_a_500_or_breaks_the_index(engine):
    from foveal.api.app import create_app

    engine.create_index("prop")
    with TestClient(create_app(engine, settings=ServiceSettings(max_doc_bytes=100_000)),
                    raise_server_exceptions=False) as client:
        job = client.post("/v1/indexes/prop/documents", json={"documents": [
            {"_id": "anchor", "text": "the anchor ledger", "timestamp": "2024-01-01T00:00:00Z",
             "metadata": {"topic": "a", "n": 1}}]}).json()
        assert _wait(client, job["job_id"])["done"] == 1
        accepted = {"anchor"}

        @given(doc=documents)
        @example(doc={"_id": "y10k", "text": "ledger", "timestamp": "9999-12-31T23:59:59-05:00"})
        @example(doc={"_id": "huge", "text": "ledger", "timestamp": 1e300})
        @example(doc={"_id": "over", "vector": [1e39] + [0.1] * (DIM - 1)})
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        def write_then_read(doc):
            response = client.post("/v1/indexes/prop/documents", **_body({"documents": [doc]}))
            assert response.status_code < 500, response.text
            if response.status_code == 202:
                job = _wait(client, response.json()["job_id"])
                assert job["state"] == "done", job
                assert job["done"] + job["failed"] == 1, job
                doc_id = doc["_id"].strip()
                if job["done"]:
                    accepted.add(doc_id)
                if doc_id and "/" not in doc_id:
                    fetched = client.get(f"/v1/indexes/prop/documents/{quote(doc_id, safe='')}")
                    # a refused version never replaces the one accepted before it
                    assert fetched.status_code == (200 if doc_id in accepted else 404), (doc, fetched.text)
                    if fetched.status_code == 200:
                        stamp = fetched.json()["timestamp"]
                        assert stamp is None or datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            else:
                assert "error" in response.json()
            _still_serving(client)

        @given(request=search_requests)
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow])
        def search(request):
            response = client.post("/v1/indexes/prop/search", **_body(request))
            assert response.status_code < 500, (request, response.text)
            if response.status_code == 200:
                assert all(math.isfinite(h["score"]) for h in response.json()["hits"]), response.text
            else:
                assert "error" in response.json()

        write_then_read()
        search()
        _still_serving(client)
