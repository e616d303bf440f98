"""A MindSearch-style agent over foveal's own indexes.

After "MindSearch: Mimicking Human Minds Elicits Deep AI Searcher" (Chen et al., 2024): a planner decomposes a
question into sub-questions (the nodes of a graph), searchers answer the nodes in parallel with foveal's search
pipeline, and the response cites the passages used.

::

    graph.py      SearchGraph: root, searcher nodes, response; edges; node states, answers and references
    plan.py       Plan (JSON nodes and edges), validated; PlanError
    planners.py   Planner protocol; RulePlanner (no model) and LLMPlanner (OpenAI-compatible chat)
    searchers.py  Searcher protocol; PipelineSearcher = rewrite + search + select + write (rule or LLM)
    executor.py   Agent: concurrent nodes, timeouts, follow-ups, response, the event stream
    llm.py        ChatClient over httpx (timeouts, retries), LLMConfig from FOVEAL_LLM_* variables

Example::

    >>> agent = build_agent(engine.pipeline("wiki"), planner="rule")                      # doctest: +SKIP
    >>> events = asyncio.run(agent.run("Were Ed Wood and Scott Derrickson of the same nationality?"))  # doctest: +SKIP
    >>> events[-1]["data"]["answer"]                                                        # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

from foveal.agents.executor import Agent, AgentSettings, compose_answer
from foveal.agents.graph import Node, NodeState, NodeType, Reference, SearchGraph
from foveal.agents.llm import ChatClient, LLMConfig, LLMError
from foveal.agents.plan import Plan, PlanError, parse_plan
from foveal.agents.planners import LLMPlanner, Planner, RulePlanner
from foveal.agents.searchers import (
    ExtractiveWriter,
    LLMRewriter,
    LLMWriter,
    NODE_FUSION,
    PipelineSearcher,
    RuleRewriter,
    Searcher,
)

Mode = Literal["rule", "llm"]


def build_agent(
    pipeline,
    planner: Mode = "rule",
    searcher: Mode | None = None,
    settings: AgentSettings | None = None,
    llm: LLMConfig | None = None,
    select: int = 4,
    node_fusion: Mapping[str, Any] | None = NODE_FUSION,
) -> Agent:
    """An agent over one index's search pipeline; ``searcher`` defaults to the planner's mode.

    The LLM modes read ``FOVEAL_LLM_URL`` / ``FOVEAL_LLM_MODEL`` / ``FOVEAL_LLM_API_KEY`` unless ``llm`` is given
    (a :class:`~foveal.errors.ConfigError` names what is missing). ``select``: passages each searcher node may
    cite (MindSearch selects at most 4); the rule planner spends the same budget of two nodes differently on a
    question it does not split (:meth:`RulePlanner.for_budget`). ``node_fusion``: what the searcher nodes change in
    the index's fusion (:data:`~foveal.agents.searchers.NODE_FUSION`: regularization off; None or ``{}``: nothing).
    """
    searcher = searcher or planner
    client = None
    if "llm" in (planner, searcher):
        client = ChatClient(llm or LLMConfig.from_env())
    chosen_planner: Planner = LLMPlanner(client) if planner == "llm" else RulePlanner.for_budget(select)
    if searcher == "llm":
        chosen_searcher = PipelineSearcher(pipeline, LLMRewriter(client), LLMWriter(client), select=select,
                                           fusion=node_fusion)
    else:
        chosen_searcher = PipelineSearcher(pipeline, select=select, fusion=node_fusion)
    agent = Agent(chosen_planner, chosen_searcher, settings)
    if client is not None:
        agent.resources.append(client)
    return agent


__all__ = [
    "Agent", "AgentSettings", "ChatClient", "ExtractiveWriter", "LLMConfig", "LLMError", "LLMPlanner",
    "LLMRewriter", "LLMWriter", "NODE_FUSION", "Node", "NodeState", "NodeType", "PipelineSearcher", "Plan",
    "PlanError", "Planner", "Reference", "RulePlanner", "RuleRewriter", "SearchGraph", "Searcher", "build_agent", "compose_answer",
    "parse_plan",
]
