"""foveal.client against a real server (uvicorn on a loopback port): every operation, typed errors carrying the
server's envelope, Bearer keys (also from FOVEAL_API_KEY), and Retry-After honoured within its bound."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

import foveal.client as fc
from foveal.client import AsyncClient, Client
from tests.client.conftest import SECRET, serve
from tests.conftest import TINY_CORPUS


def test_public_surface():
    assert sorted(fc.__all__) == sorted(
        ["API_KEY_ENV", "APIError", "AsyncClient", "AuthenticationError", "BadRequestError", "Client", "ClientError",
         "ConflictError", "IndexSummary", "InternalServerError", "InvalidInputError", "Job", "JobAccepted", "JobError",
         "NotFoundError", "PayloadTooLargeError", "PermissionDeniedError", "RateLimitedError", "TransportError",
         "UnavailableError"])


def test_sync_round_trip_and_typed_errors(server):
    with Client(server.url, api_key=SECRET) as client:
        assert client.health()["status"] == "ok"
        assert client.create_index("docs") == fc.IndexSummary("docs", 0)
        with pytest.raises(fc.ConflictError) as exists:
            client.create_index("docs")
        assert exists.value.type == "IndexExistsError" and exists.value.status_code == 409
        assert exists.value.envelope["error"]["message"] == exists.value.message and exists.value.request_id

        odd = {"_id": "a/b%c", "text": "an id with a slash and a percent sign", "metadata": {"topic": "odd"}}
        accepted = client.add_documents("docs", TINY_CORPUS + [odd, {"_id": "empty", "text": ""}])
        assert isinstance(accepted, fc.JobAccepted) and (accepted.total, accepted.rejected) == (8, 1)
        job = client.wait_job(accepted.job_id, timeout=60)
        assert (job.state, job.done, job.failed) == ("done", 7, 1) and job.errors == (fc.JobError("empty", job.errors[0].reason),)
        assert [s.name for s in client.list_indexes()] == ["docs"]
        assert client.index_stats("docs")["documents"] == 7

        hits = client.search("docs", "roasting coffee beans", k=2, pipeline="bm25")["hits"]
        assert hits[0]["id"] == "coffee"
        assert client.get_document("docs", "a/b%c")["metadata"] == {"topic": "odd"}
        assert client.get_documents("docs", ["tides", "nope"])["missing"] == ["nope"]
        assert client.delete_document("docs", "a/b%c") is None
        with pytest.raises(fc.NotFoundError) as missing:
            client.get_document("docs", "a/b%c")
        assert missing.value.type == "DocumentNotFoundError" and missing.value.details["id"] == "a/b%c"
        assert client.delete_documents("docs", ["tides", "nope"]) == {"deleted": ["tides"], "missing": ["nope"]}

        with pytest.raises(fc.InvalidInputError) as invalid:
            client.search("docs", "x", k=0)
        assert invalid.value.details[0]["field"] == "k"
        with pytest.raises(fc.PayloadTooLargeError):
            client.add_documents("docs", [{"_id": str(i), "text": "x"} for i in range(1001)])

        events = list(client.ask("Who roasts coffee beans?", "docs", planner="rule"))
        assert events[-1]["event"] == "final" and {e["event"] for e in events} >= {"graph", "final"}

        client.delete_index("docs")
        with pytest.raises(fc.NotFoundError):
            client.index_stats("docs")


def test_api_key_from_the_environment_and_auth_errors(server, monkeypatch):
    with Client(server.url, api_key="") as anonymous:
        with pytest.raises(fc.AuthenticationError) as refused:
            anonymous.list_indexes()
    assert refused.value.status_code == 401 and refused.value.type == "AuthenticationError"
    monkeypatch.setenv("FOVEAL_API_KEY", SECRET)
    with Client(server.url) as client:
        assert client.list_indexes() == []
    with Client("http://127.0.0.1:9", timeout=2) as nowhere, pytest.raises(fc.TransportError):
        nowhere.health()


def test_retry_after_is_honoured_within_its_bound(engine):
    # 1 request a second, bursts of 2: the third request at once is a 429 with Retry-After: 1
    with serve(engine, api_keys=f"tester admin {SECRET}", rate_limit_rps=1.0) as live:
        with Client(live.url, api_key=SECRET, max_retry_wait=0) as impatient:
            with pytest.raises(fc.RateLimitedError) as limited:
                for _ in range(4):
                    impatient.list_indexes()
            assert limited.value.retry_after >= 1 and limited.value.type == "RateLimitedError"
        time.sleep(2.1)
        with Client(live.url, api_key=SECRET, max_retry_wait=10) as patient:
            for _ in range(4):  # waits the second the server asks for instead of failing
                assert patient.list_indexes() == []


def test_retry_stops_at_max_retries():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers.get("authorization"))
        return httpx.Response(503, headers={"Retry-After": "0"},
                              json={"error": {"type": "OverloadedError", "message": "busy", "details": {"retry_after": 0}}})

    with Client("http://foveal.test", api_key="k", max_retries=2, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(fc.UnavailableError) as busy:
            client.add_documents("docs", [{"_id": "a", "text": "x"}])
    assert len(calls) == 3 and calls[0] == "Bearer k" and busy.value.message == "busy"


def test_async_client(server):
    async def scenario():
        async with AsyncClient(server.url, api_key=SECRET) as client:
            await client.create_index("docs")
            accepted = await client.add_documents("docs", TINY_CORPUS)
            job = await client.wait_job(accepted.job_id, timeout=60)
            assert (job.done, job.failed) == (6, 0)
            found = await asyncio.gather(*(client.search("docs", q, k=1, pipeline="bm25")
                                           for q in ("coffee beans", "lava and ash")))
            assert [r["hits"][0]["id"] for r in found] == ["coffee", "volcano"]
            with pytest.raises(fc.NotFoundError):
                await client.get_document("docs", "nope")
            events = [e async for e in client.ask("What erupts as lava?", "docs", planner="rule")]
            assert events[-1]["event"] == "final"

    asyncio.run(scenario())
