"""The rule-based path end to end on the tiny index, and the executor's failure handling."""

import asyncio
import threading

import pytest

from foveal.agents import Agent, AgentSettings, RulePlanner, build_agent
from foveal.agents.graph import Reference
from foveal.agents.searchers import SearcherResult
from tests.agents.conftest import CITATION

QUESTION = "How does yeast make bread rise, and what causes ocean tides?"


def run(agent, question=QUESTION):
    return asyncio.run(agent.run(question))


def test_rule_path_end_to_end(engine, tiny):
    events = run(build_agent(engine.pipeline("tiny"), planner="rule"))
    assert [e["event"] for e in events].count("final") == 1 and events[-1]["event"] == "final"
    final = events[-1]["data"]
    assert final["status"] == "ok"
    nodes = final["graph"]["nodes"]
    assert nodes["root"]["type"] == "root" and nodes["response"]["type"] == "response"
    assert [n["content"] for n in nodes.values() if n["type"] == "searcher"] == [
        "How does yeast make bread rise?", "what causes ocean tides?"]
    assert all(n["state"] == "done" for n in nodes.values())
    # every citation resolves to a reference, and the references are the passages cited
    cited = {int(n) for n in CITATION.findall(final["answer"])}
    assert cited and cited == {int(k) for k in final["references"]}
    cited_docs = {r["doc_id"] for r in final["references"].values()}
    assert {"bread", "tides"} <= cited_docs
    # node answers come as events, each citing its own references
    node_events = [e["data"]["node"] for e in events if e["event"] == "node"]
    assert {n["name"] for n in node_events} == {"q1", "q2"}
    for node in node_events:
        assert {int(n) for n in CITATION.findall(node["answer"])} == {r["id"] for r in node["references"]}


def test_the_graph_grows_state_by_state(engine, tiny):
    events = run(build_agent(engine.pipeline("tiny"), planner="rule"))
    states = [e["data"]["graph"]["nodes"]["q1"]["state"] for e in events
              if e["event"] == "graph" and "q1" in e["data"]["graph"]["nodes"]]
    assert states[0] == "not_started" and "running" in states and states[-1] == "done"
    assert states.index("running") < states.index("done")


def test_bridge_follow_up_runs_after_its_parent(engine, tiny):
    events = run(build_agent(engine.pipeline("tiny"), planner="rule"), "Which gas makes the loaf rise in bread?")
    graph = events[-1]["data"]["graph"]
    assert "bridge" in graph["nodes"] and {"start": "q1", "end": "bridge"} in graph["edges"]
    first = {r["doc_id"] for r in graph["nodes"]["q1"]["references"]}
    second = {r["doc_id"] for r in graph["nodes"]["bridge"]["references"]}
    assert first and not first & second  # a follow-up does not cite again what its parent cited


class FlakySearcher:
    """Answers every sub-question from one fixed passage, except those containing 'fail' (raise) or 'hang'."""

    def __init__(self):
        self.release = threading.Event()
        self.active = 0
        self.most_active = 0
        self.lock = threading.Lock()
        self.started = []

    def run(self, question, topic, history, exclude=frozenset(), focus=None):
        with self.lock:
            self.started.append(question)
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            if "fail" in question:
                raise RuntimeError("search backend exploded")
            if "hang" in question:
                self.release.wait(10)
            self.release.wait(0.05)
            return SearcherResult(answer=f"About {question} [[1]]",
                                  references=[Reference(1, f"doc-{question}", "t", "text", 1.0)])
        finally:
            with self.lock:
                self.active -= 1


def test_failed_and_timed_out_nodes_leave_a_partial_answer():
    searcher = FlakySearcher()
    agent = Agent(RulePlanner(follow_bridges=False), searcher, AgentSettings(node_timeout=0.5))
    try:
        events = run(agent, "Where is alpha? Does beta fail? Does gamma hang?")
    finally:
        searcher.release.set()
    final = events[-1]["data"]
    assert final["status"] == "partial"
    nodes = final["graph"]["nodes"]
    assert nodes["q1"]["state"] == "done"
    assert nodes["q2"]["state"] == "failed" and "exploded" in nodes["q2"]["error"]
    assert nodes["q3"]["state"] == "failed" and "timed out" in nodes["q3"]["error"]
    assert "About Where is alpha?" in final["answer"] and list(final["references"]) == ["1"]


def test_concurrency_cap_is_respected():
    searcher = FlakySearcher()
    agent = Agent(RulePlanner(follow_bridges=False), searcher, AgentSettings(concurrency=2))
    final = run(agent, "A one? B two? C three? D four? E five?")[-1]["data"]
    assert final["status"] == "ok" and len(final["references"]) == 5
    assert searcher.most_active <= 2


def test_closing_the_stream_cancels_the_run():
    searcher = FlakySearcher()
    agent = Agent(RulePlanner(follow_bridges=False), searcher, AgentSettings(concurrency=1, node_timeout=30))

    async def consume_until_running():
        stream = agent.stream("Does alpha hang? Where is beta?")
        async for event in stream:
            if event["event"] == "graph" and event["data"]["graph"]["nodes"].get("q1", {}).get("state") == "running":
                break
        await stream.aclose()  # what the API does when the client goes away
        searcher.release.set()  # q1 can finish now; had the run not been cancelled, q2 would start next
        for _ in range(20):
            await asyncio.sleep(0.02)

    try:
        asyncio.run(consume_until_running())
    finally:
        searcher.release.set()
    assert "Where is beta?" not in searcher.started


def test_a_planner_that_crashes_still_ends_with_the_final_event():
    class BrokenPlanner(RulePlanner):
        def plan(self, question):
            raise RuntimeError("planner down")

    events = run(Agent(BrokenPlanner(), FlakySearcher()), "anything?")
    assert [e["event"] for e in events][-2:] == ["error", "final"]
    assert events[-2]["data"]["message"] == "planner down"
    assert events[-1]["data"]["status"] == "error" and events[-1]["data"]["answer"] == ""


@pytest.mark.parametrize("question", ["", "   "])
def test_empty_question_gives_no_nodes_but_a_final_event(question):
    events = run(Agent(RulePlanner(), FlakySearcher()), question)
    assert events[-1]["event"] == "final"


class BudgetSearcher(FlakySearcher):
    """Records the ``select`` each node was run with (a planner's per-node budget)."""

    def __init__(self):
        super().__init__()
        self.selects = {}

    def run(self, question, topic, history, exclude=frozenset(), focus=None, select=None):
        self.selects[question] = select
        return super().run(question, topic, history, exclude, focus)


def test_a_planners_per_node_budget_reaches_the_searcher():
    searcher = BudgetSearcher()
    agent = Agent(RulePlanner(whole_select=6, bridge_select=1, follow_bridges=False), searcher)
    run(agent, "Who wrote Dune?")
    assert searcher.selects == {"Who wrote Dune?": 6}
    # a searcher written before budgets existed is still called the old way
    old = FlakySearcher()
    assert run(Agent(RulePlanner(follow_bridges=False), old), "Who wrote Dune?")[-1]["data"]["status"] == "ok"


def test_a_bridge_node_cites_the_entitys_own_document_first(engine, tiny):
    from foveal.agents.searchers import PipelineSearcher, titles_match

    searcher = PipelineSearcher(engine.pipeline("tiny"))
    plain = searcher.run("What rises in the loaf?", topic="x", history=[])
    assert plain.references[0].doc_id == "bread" and len(plain.references) > 1
    # the focus names a document's title: that document is cited first, and select=1 cites it alone
    result = searcher.run("What rises in the loaf?", topic="x", history=[], focus="Volcanoes", select=1)
    assert [r.doc_id for r in result.references] == ["volcano"]
    assert titles_match("Alien (film)", "alien") and titles_match("I&quot;s", 'I"s')
    assert not titles_match("Alien (film)", "Aliens") and not titles_match(None, "x")


def test_searcher_nodes_switch_regularization_off_and_keep_the_rest_of_the_index_fusion(engine, tiny):
    """A node's searches change only what NODE_FUSION names in the index's fusion (chosen on HotpotQA dev150
    questions 1-75, docs/robust.md); ``fusion=None`` leaves the index's fusion as it is."""
    from foveal.agents.searchers import NODE_FUSION, PipelineSearcher, merged_fusion
    from foveal.config import FusionConfig

    pipeline = engine.pipeline("tiny")
    seen = []
    search_many = pipeline.search_many
    pipeline.search_many = lambda requests: seen.extend(requests) or search_many(requests)
    PipelineSearcher(pipeline).run("What rises in the loaf?", topic="x", history=[])
    fusion = seen[-1].fusion
    assert fusion is not None and fusion.regularize.enabled is False
    index = pipeline.collection.config.fusion
    assert fusion.model_dump(exclude={"regularize"}) == index.model_dump(exclude={"regularize"})
    assert fusion.regularize.model_dump(exclude={"enabled"}) == index.regularize.model_dump(exclude={"enabled"})
    PipelineSearcher(pipeline, fusion=None).run("What rises in the loaf?", topic="x", history=[])
    assert seen[-1].fusion is None
    custom = FusionConfig(method="rrf", regularize={"weight": 0.5})
    merged = merged_fusion(custom, NODE_FUSION)
    assert merged.method.value == "rrf" and merged.regularize.weight == 0.5 and not merged.regularize.enabled
    assert merged_fusion(custom, {}) is None
