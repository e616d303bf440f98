"""POST /v1/agent/ask: server-sent events straight from the API process."""

import json
import re

import pytest
from fastapi.testclient import TestClient

from foveal.api.app import create_app
from tests.agents.conftest import llm_script
from tests.agents.scripted_llm import ScriptedLLM

CITATION = re.compile(r"\[\[(\d+)\]\]")


@pytest.fixture()
def client(engine, tiny):
    with TestClient(create_app(engine)) as c:
        yield c


def parse_sse(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def test_ask_streams_the_graph_and_a_cited_answer(client):
    body = {"question": "How does yeast make bread rise, and what causes ocean tides?", "index": "tiny"}
    with client.stream("POST", "/v1/agent/ask", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(response.read().decode())
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "graph" and kinds[-1] == "final" and kinds.count("final") == 1 and "node" in kinds
    final = events[-1][1]
    assert final["status"] == "ok"
    types = [n["type"] for n in final["graph"]["nodes"].values()]
    assert types.count("root") == 1 and types.count("searcher") >= 1 and types.count("response") == 1
    cited = set(CITATION.findall(final["answer"]))
    assert cited and cited == set(final["references"])


def test_unknown_index_is_404_before_streaming(client):
    response = client.post("/v1/agent/ask", json={"question": "x?", "index": "nope"})
    assert response.status_code == 404 and "index 'nope' does not exist" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"question": "", "index": "tiny"}, "question"),
        ({"question": "x", "index": "tiny", "planner": "oracle"}, "planner"),
        ({"question": "x", "index": "tiny", "concurrency": 0}, "concurrency"),
        ({"question": "x"}, "index"),
    ],
)
def test_bad_requests_say_why(client, body, fragment):
    response = client.post("/v1/agent/ask", json=body)
    assert response.status_code == 422 and fragment in response.json()["error"]["message"]


def test_llm_planner_without_configuration_is_422(client, monkeypatch):
    monkeypatch.delenv("FOVEAL_LLM_URL", raising=False)
    monkeypatch.delenv("FOVEAL_LLM_MODEL", raising=False)
    response = client.post("/v1/agent/ask", json={"question": "x?", "index": "tiny", "planner": "llm"})
    assert response.status_code == 422 and "FOVEAL_LLM_URL" in response.json()["error"]["message"]


def test_invalid_llm_plan_is_an_error_event_then_final(client, monkeypatch):
    with ScriptedLLM(llm_script("exec('import os')")) as llm:
        monkeypatch.setenv("FOVEAL_LLM_URL", llm.url)
        monkeypatch.setenv("FOVEAL_LLM_MODEL", "scripted")
        with client.stream("POST", "/v1/agent/ask",
                           json={"question": "Why does bread rise?", "index": "tiny", "planner": "llm"}) as response:
            assert response.status_code == 200
            events = parse_sse(response.read().decode())
    assert [kind for kind, _ in events][-2:] == ["error", "final"]
    assert events[-2][1]["type"] == "PlanError" and "not JSON" in events[-2][1]["message"]
    assert events[-1][1]["status"] == "error"
