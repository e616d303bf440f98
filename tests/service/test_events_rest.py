"""Events over REST (issue 13): add (write scope), list with paging and get (read), delete (write); bad input is a
4xx naming the event and nothing of the batch is written; search shows the events stage in ``query_info``."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from foveal.service.settings import ServiceSettings

EVENTS = [{"_id": f"e{i}", "title": f"Volcano erupts near village {i}", "text": "Lava and ash fall on the town.",
           "source": "wire", "timestamp": f"2024-01-0{i + 1}T12:00:00Z"} for i in range(3)]


@pytest.fixture()
def client(engine, tiny):
    from foveal.api.app import create_app

    with TestClient(create_app(engine, settings=ServiceSettings())) as c:
        yield c


def test_add_list_get_delete(client):
    response = client.post("/v1/indexes/tiny/events", json={"events": EVENTS})
    assert response.status_code == 200, response.text
    assert response.json() == {"added": ["e0", "e1", "e2"], "updated": [], "unchanged": [], "expired": []}
    assert client.post("/v1/indexes/tiny/events", json={"events": EVENTS[:1]}).json()["unchanged"] == ["e0"]
    page = client.get("/v1/indexes/tiny/events", params={"limit": 2}).json()
    assert [e["_id"] for e in page["events"]] == ["e0", "e1"] and page["next_after"] is not None
    rest = client.get("/v1/indexes/tiny/events", params={"limit": 2, "after": page["next_after"]}).json()
    assert [e["_id"] for e in rest["events"]] == ["e2"] and rest["next_after"] is None
    one = client.get("/v1/indexes/tiny/events/e1").json()
    assert one == {"_id": "e1", "title": EVENTS[1]["title"], "text": EVENTS[1]["text"], "source": "wire",
                   "timestamp": "2024-01-02T12:00:00Z"}
    assert client.delete("/v1/indexes/tiny/events/e1").json() == {"deleted": "e1"}
    assert client.get("/v1/indexes/tiny/events/e1").status_code == 404
    assert client.delete("/v1/indexes/tiny/events/e1").status_code == 404
    assert client.get("/v1/indexes/tiny").json()["events"] == 2


def test_search_shows_the_attended_events_and_the_gate(client):
    client.post("/v1/indexes/tiny/events", json={"events": EVENTS})
    body = {"query": "volcano eruption", "now": "2024-01-04T00:00:00Z", "stages": {"events": True}}
    info = client.post("/v1/indexes/tiny/search", json=body).json()["query_info"]
    stage = info["stages"]["events"]
    assert stage["gate_open"] is True and {e["id"] for e in stage["events"]} == {"e0", "e1", "e2"}
    assert abs(sum(e["weight"] for e in stage["events"]) - 1) < 1e-5
    early = client.post("/v1/indexes/tiny/search", json={**body, "now": "2024-01-02T00:00:00Z"}).json()
    assert [e["id"] for e in early["query_info"]["stages"]["events"]["events"]] == ["e0"]  # later ones unseen
    evergreen = client.post("/v1/indexes/tiny/search", json={**body, "query": "list comprehension in python"}).json()
    assert evergreen["query_info"]["stages"]["events"]["gate_open"] is False
    plain = client.post("/v1/indexes/tiny/search", json={"query": "volcano eruption"}).json()
    assert "events" not in plain["query_info"].get("stages", {})  # off by default (rocchio, a fusion stage, may speak)


@pytest.mark.parametrize("body, fragment", [
    ({"events": EVENTS[:1] + [{"_id": "bad", "title": "x", "timestamp": "next friday"}]}, "event 'bad': timestamp"),
    ({"events": EVENTS[:1] + [{"_id": "bad", "title": "x"}]}, "missing 'timestamp'"),
    ({"events": EVENTS[:1] + [{"title": "x", "timestamp": "2024-01-01"}]}, "event 1: missing '_id'"),
    ({"events": EVENTS[:1] + [{"_id": "bad", "title": "x", "timestamp": "2024-01-01", "url": "u"}]}, "unknown"),
    ({"events": []}, "events"),
])
def test_bad_events_refuse_the_batch_and_write_nothing(client, body, fragment):
    response = client.post("/v1/indexes/tiny/events", json=body)
    assert response.status_code == 422, response.text
    assert fragment in response.json()["error"]["message"]
    assert client.get("/v1/indexes/tiny/events").json()["events"] == []


def test_unknown_index_and_bad_requests(client):
    response = client.post("/v1/indexes/nope/events", json={"events": EVENTS})
    assert response.status_code == 404 and "index 'nope'" in response.json()["error"]["message"]
    assert client.get("/v1/indexes/nope/events").status_code == 404
    for body, fragment in [({"query": "x", "stages": {"nope": True}}, "unknown stage"),
                           ({"query": "x", "now": "yesterday"}, "now"),
                           ({"query": "x", "freshness": {"scale_days": 0}}, "scale_days"),
                           ({"query": "x", "freshness": {"function": "cubic"}}, "function")]:
        response = client.post("/v1/indexes/tiny/search", json=body)
        assert response.status_code == 422 and fragment in response.text, response.text
    response = client.post("/v1/indexes", json={"name": "z", "config": {"events": {"top_k": 0}}})
    assert response.status_code == 422 and "events.top_k" in response.text
    response = client.post("/v1/indexes", json={"name": "z", "config": {"events": {"model": "/etc/passwd"}}})
    assert response.status_code == 422 and "events.model" in response.text


def test_search_freshness_per_request(client):
    body = {"query": "ocean tides moon", "now": "2024-03-05T00:00:00Z", "freshness": {"scale_days": 10, "floor": 0.3}}
    hits = client.post("/v1/indexes/tiny/search", json=body).json()["hits"]
    tides = next(h for h in hits if h["id"] == "tides")
    assert abs(tides["evidence"]["freshness"]["age_days"] - 60) < 1e-6
    assert tides["evidence"]["freshness"]["factor"] == 0.3  # far past scale: the floor
    assert all(h["evidence"]["freshness"]["factor"] == 1.0 for h in hits if h["id"] != "tides")  # undated
