"""The LLM path against a local process speaking the OpenAI chat protocol with scripted replies (real HTTP)."""

import asyncio

import pytest

from foveal.agents import LLMConfig, build_agent
from foveal.agents.llm import ChatClient, LLMError
from foveal.errors import ConfigError
from tests.agents.conftest import CITATION
from tests.agents.scripted_llm import ScriptedLLM

PLAN = ('{"nodes": [{"name": "bread", "content": "How does yeast make bread rise?"},'
        ' {"name": "tides", "content": "What causes ocean tides?"}], "edges": []}')


def test_llm_planner_and_searchers_end_to_end(engine, tiny, scripted_llm):
    with scripted_llm(PLAN) as llm:
        config = LLMConfig(url=llm.url, model="scripted", api_key="secret", timeout=10)
        agent = build_agent(engine.pipeline("tiny"), planner="llm", llm=config)
        events = asyncio.run(agent.run("Why does bread rise and what moves the sea?"))
    final = events[-1]["data"]
    assert events[-1]["event"] == "final" and final["status"] == "ok", events
    nodes = final["graph"]["nodes"]
    assert {"root", "bread", "tides", "response"} == set(nodes)
    assert nodes["bread"]["queries"] == ["yeast dough rises", "bread fermentation"]
    # the model's invented citations ([[9]] in node answers, [[77]] in the response) are dropped
    assert "[[9]]" not in nodes["bread"]["answer"] and "[[77]]" not in final["answer"]
    assert final["answer"].startswith("Yeast makes bread rise [[1]] and the moon raises tides [[2]]")
    assert {int(n) for n in CITATION.findall(final["answer"])} == {int(k) for k in final["references"]}
    assert final["references"]["1"]["doc_id"] == "bread" and final["references"]["2"]["doc_id"] == "tides"
    assert all(h.get("authorization") == "Bearer secret" for h in llm.headers)
    assert all(r["model"] == "scripted" for r in llm.requests)


@pytest.mark.parametrize("reply", ["graph.add_node('x', 'y')  # code, not a plan", '{"nodes": [{"name": "root"}]}'])
def test_an_invalid_plan_is_an_error_event_then_the_final_event(engine, tiny, scripted_llm, reply):
    with scripted_llm(reply) as llm:
        agent = build_agent(engine.pipeline("tiny"), planner="llm", llm=LLMConfig(url=llm.url, model="m"))
        events = asyncio.run(agent.run("Why does bread rise?"))
    assert [e["event"] for e in events][-2:] == ["error", "final"]
    assert events[-2]["data"]["type"] == "PlanError" and "plan" in events[-2]["data"]["message"]
    assert events[-1]["data"]["status"] == "error"


def test_client_retries_server_errors_then_succeeds():
    replies = iter([503, 500, "hello"])
    with ScriptedLLM(lambda messages: next(replies)) as llm:
        client = ChatClient(LLMConfig(url=llm.url, model="m", retries=2, timeout=5))
        assert client.complete([{"role": "user", "content": "hi"}]) == "hello"
    assert len(llm.requests) == 3


def test_client_gives_up_with_a_clear_error():
    with ScriptedLLM(lambda messages: 400) as llm:
        client = ChatClient(LLMConfig(url=llm.url, model="m", retries=2, timeout=5))
        with pytest.raises(LLMError, match="answered 400"):
            client.complete([{"role": "user", "content": "hi"}])
    assert len(llm.requests) == 1  # a client error is not retried


def test_llm_config_from_env_names_what_is_missing(monkeypatch):
    monkeypatch.delenv("FOVEAL_LLM_URL", raising=False)
    monkeypatch.setenv("FOVEAL_LLM_MODEL", "m")
    with pytest.raises(ConfigError, match="FOVEAL_LLM_URL"):
        LLMConfig.from_env()
    monkeypatch.setenv("FOVEAL_LLM_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("FOVEAL_LLM_API_KEY", "k")
    assert LLMConfig.from_env() == LLMConfig(url="http://127.0.0.1:9/v1", model="m", api_key="k")
